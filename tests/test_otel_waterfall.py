"""The terminal waterfall and the demo command that prints one."""

from __future__ import annotations

import io
import re
import subprocess
import sys

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from airlock.integrations.opentelemetry import format_waterfall, print_waterfall
from airlock.integrations.opentelemetry._demo import record_demo_trace


def rows(text: str) -> dict[str, float]:
    """Label (without tree drawing) -> offset in ms, for the rows of a waterfall."""
    found = {}
    for line in text.splitlines()[2:]:
        offset, rest = line[:10], line[23:]  # columns: offset, duration, label + bar
        label = rest.lstrip("│├└─◆|+`-* ").split("  ")[0]
        found.setdefault(label, float(offset.strip().removesuffix(" ms")))
    return found


def recording_tracer() -> tuple[InMemorySpanExporter, Tracer]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider.get_tracer("test")


def test_demo_waterfall_shows_deferred_dispatch_at_a_glance():
    spans = record_demo_trace()
    text = format_waterfall(spans)
    assert len({span.context.trace_id for span in spans}) == 1, "worker spans joined the request's trace"
    assert text.startswith(f"trace {spans[0].context.trace_id:032x}")
    offsets = rows(text)
    for label in ("POST /orders [server]", "airlock.scope flushed", "enqueue send_confirmation", "COMMIT"):
        assert label in offsets, f"{label!r} missing from\n{text}"
    send = next(label for label in offsets if label.startswith("send send_confirmation [producer] held"))
    process = "process send_confirmation [consumer]"
    # The story the picture tells: enqueued early, sent only after the commit, run after that.
    assert offsets["enqueue send_confirmation"] < offsets["COMMIT"] < offsets[send] < offsets[process]
    assert offsets["POST /orders [server]"] == 0.0


def test_tree_follows_parentage_and_bars_share_one_axis():
    exporter, tracer = recording_tracer()
    with tracer.start_as_current_span("root"):
        with tracer.start_as_current_span("child"):
            with tracer.start_as_current_span("grandchild"):
                pass
        with tracer.start_as_current_span("sibling"):
            pass
    text = format_waterfall(exporter.get_finished_spans(), width=20)
    body = text.splitlines()[2:]
    assert [re.sub(r".*?  ([├└│ ─]*)(\w+)\s.*", r"\2", line) for line in body] == [
        "root",
        "child",
        "grandchild",
        "sibling",
    ]
    assert "├─ child" in body[1] and "└─ grandchild" in body[2] and "└─ sibling" in body[3]
    root_bar = body[0].rstrip().rsplit("  ", 1)[1]
    assert root_bar == "█" * 20


def test_separate_traces_print_separately_and_ascii_mode_is_plain():
    exporter, tracer = recording_tracer()
    with tracer.start_as_current_span("first"):
        pass
    with tracer.start_as_current_span("second"):
        pass
    text = format_waterfall(exporter.get_finished_spans(), ascii=True)
    assert text.count("trace ") == 2
    assert "\n\n" in text
    assert text.isascii()
    assert format_waterfall([]) == ""


def test_print_waterfall_writes_to_the_file_and_falls_back_to_ascii():
    spans = record_demo_trace()
    unicode_out = io.StringIO()
    print_waterfall(spans, file=unicode_out)
    assert "◆" in unicode_out.getvalue()
    latin = io.TextIOWrapper(io.BytesIO(), encoding="latin-1")
    print_waterfall(spans, file=latin)
    latin.flush()
    assert latin.buffer.getvalue().decode("latin-1").isascii()


def test_demo_command_prints_a_waterfall():
    result = subprocess.run(
        [sys.executable, "-m", "airlock.integrations.opentelemetry"],
        capture_output=True,
        text=True,
        timeout=60,
        encoding="utf-8",
        env={"PYTHONIOENCODING": "utf-8", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "send notify_warehouse [producer]" in result.stdout
    assert "process notify_warehouse [consumer]" in result.stdout
