"""Print finished spans as a waterfall in the terminal: deferred dispatch at a glance."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterable
from typing import IO, Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

__all__ = ["format_waterfall", "print_waterfall"]

_UNICODE = {"bar": "█", "mark": "◆", "pipe": "│", "tee": "├─ ", "elbow": "└─ ", "blank": "   ", "pad": " "}
_ASCII = {"bar": "#", "mark": "*", "pipe": "|", "tee": "+- ", "elbow": "`- ", "blank": "   ", "pad": " "}

# Events worth a row of their own, and how to label them.
_EVENT_LABELS = {
    "airlock.enqueue": "enqueue",
    "airlock.capture": "captured",
    "airlock.drop": "dropped",
    "exception": "exception",
}


def format_waterfall(spans: Iterable[ReadableSpan], *, width: int = 32, ascii: bool = False) -> str:
    """Render finished spans as one waterfall per trace.

    Each row shows the offset from the start of the trace, the duration, the span
    in its parent/child tree, and a bar on a shared time axis. airlock's enqueue,
    capture and drop events appear as marks on the span they happened in.

    Args:
        spans: Finished SDK spans, e.g. ``InMemorySpanExporter().get_finished_spans()``.
        width: Width of the time axis, in characters.
        ascii: Draw with ASCII only (for terminals without UTF-8).

    Returns:
        The text, one line per span or event, traces separated by a blank line.

    .. versionadded:: 0.1
    """
    by_trace: dict[int, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        if span.context is not None and span.start_time is not None:
            by_trace[span.context.trace_id].append(span)
    glyphs = _ASCII if ascii else _UNICODE
    traces = sorted(by_trace.values(), key=lambda group: min(_start(s) for s in group))
    return "\n\n".join(_format_trace(group, width, glyphs) for group in traces)


def print_waterfall(
    spans: Iterable[ReadableSpan], file: IO[str] | None = None, *, width: int = 32, ascii: bool | None = None
) -> None:
    """Print :func:`format_waterfall` to ``file`` (default: standard output).

    Args:
        spans: Finished SDK spans.
        file: Where to write.
        width: Width of the time axis, in characters.
        ascii: ASCII only; by default, only when ``file`` does not take UTF-8.

    .. versionadded:: 0.1
    """
    out = sys.stdout if file is None else file
    if ascii is None:
        ascii = not (getattr(out, "encoding", None) or "utf-8").lower().replace("-", "").startswith("utf")
    print(format_waterfall(spans, width=width, ascii=ascii), file=out)


def _start(span: ReadableSpan) -> int:
    return span.start_time or 0


def _end(span: ReadableSpan) -> int:
    return span.end_time or _start(span)


def _format_trace(spans: list[ReadableSpan], width: int, glyphs: dict[str, str]) -> str:
    ids = {span.context.span_id for span in spans if span.context is not None}
    children: dict[int | None, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children[parent if parent in ids else None].append(span)
    origin = min(_start(span) for span in spans)
    total = max(max(_end(span) for span in spans) - origin, 1)

    rows: list[tuple[int, int | None, str]] = []  # (offset ns, duration ns or None, label)

    def walk(span: ReadableSpan, prefix: str, last: bool, depth: int) -> None:
        branch = "" if depth == 0 else prefix + (glyphs["elbow"] if last else glyphs["tee"])
        rows.append((_start(span) - origin, _end(span) - _start(span), branch + _describe(span)))
        inner = "" if depth == 0 else prefix + (glyphs["blank"] if last else glyphs["pipe"] + "  ")
        items: list[tuple[int, Any]] = [(_start(child), child) for child in children[span.context.span_id]]
        items += [(event.timestamp, event) for event in span.events if event.name in _EVENT_LABELS]
        items.sort(key=lambda item: item[0])
        for index, (_, item) in enumerate(items):
            is_last = index == len(items) - 1
            if isinstance(item, Event):
                branch = inner + (glyphs["elbow"] if is_last else glyphs["tee"])
                rows.append((item.timestamp - origin, None, f"{branch}{glyphs['mark']} {_describe_event(item)}"))
            else:
                walk(item, inner, is_last, depth + 1)

    for root in sorted(children[None], key=_start):
        walk(root, "", True, 0)

    label_width = min(max(len(label) for _, _, label in rows), 56)
    trace_id = format(spans[0].context.trace_id, "032x")
    lines = [
        f"trace {trace_id}  {total / 1e6:.2f} ms, {len(spans)} spans",
        f"{'offset':>10} {'duration':>10}  {'':<{label_width}}  {'0':<{width // 2}}{_ms(total):>{width - width // 2}}",
    ]
    for offset, duration, label in rows:
        lines.append(
            f"{_ms(offset):>10} {'' if duration is None else _ms(duration):>10}  "
            f"{label[:label_width]:<{label_width}}  {_bar(offset, duration, total, width, glyphs)}"
        )
    return "\n".join(lines)


def _bar(offset: int, duration: int | None, total: int, width: int, glyphs: dict[str, str]) -> str:
    start = min(int(offset * width / total), width - 1)
    if duration is None:
        return " " * start + glyphs["mark"]
    length = max(1, round(duration * width / total))
    return " " * start + glyphs["bar"] * min(length, width - start)


def _ms(nanoseconds: int) -> str:
    return f"{nanoseconds / 1e6:.2f} ms"


def _describe(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    parts = [span.name]
    if span.kind is not SpanKind.INTERNAL:
        parts.append(f"[{span.kind.name.lower()}]")
    outcome = attributes.get("airlock.scope.outcome")
    if outcome is not None:
        parts.append(str(outcome))
    held = attributes.get("airlock.intent.held_ms")
    if isinstance(held, float):
        parts.append(f"held {held:.2f} ms")
    if span.status.status_code is StatusCode.ERROR:
        parts.append("ERROR")
    return " ".join(parts)


def _describe_event(event: Event) -> str:
    attributes = event.attributes or {}
    label = _EVENT_LABELS[event.name]
    detail = attributes.get("airlock.intent.name") or attributes.get("exception.type")
    return f"{label} {detail}" if detail else label
