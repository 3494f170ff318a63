"""Celery's canvas (chain, group, chord, link, link_error) under the migration shim, end to end.

A real Redis broker and result backend, a real worker. Each canvas is applied the old
way (``canvas.apply_async()`` with the shim on) and the new way
(``airlock.enqueue(canvas)``), inside a scope that flushes and one that is discarded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery, chain, chord, group
from celery.result import AsyncResult
from celery.signals import before_task_publish

import airlock
from airlock import DropAll
from airlock.integrations.celery import CeleryShimWarning, shim
from airlock.integrations.executors.celery import celery_executor
from airlock.signals import intent_dispatched
from tests.celery_support import CANVAS_IDLE_QUEUE, JOURNAL, WAIT, Canvas, new_token, running_canvas_worker

pytestmark = pytest.mark.filterwarnings(
    # Celery's Redis result backend still calls setex, which redis-py 6+ marks deprecated.
    "ignore:Call to deprecated setex:DeprecationWarning",
)

# A canvas, the options to apply it with, and the result to wait on (None: what applying it returns).
Built = tuple[Any, dict[str, Any], "AsyncResult | None"]
Build = Callable[[Canvas], Built]


@pytest.fixture(scope="module")
def canvas() -> Iterator[Canvas]:
    with running_canvas_worker() as running:
        yield running


class Publishes:
    """Every task message published while a test runs, from any thread, as Celery reports it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, float]] = []

    def __call__(self, sender: str, **kwargs: Any) -> None:
        self.seen.append((sender, threading.get_ident(), time.time()))

    def here(self) -> list[str]:
        """The names published from the test's thread (the worker's thread sends the canvas's later steps)."""
        return [name for name, thread, _ in self.seen if thread == threading.get_ident()]

    def times(self, name: str) -> list[float]:
        return [at for sender, _, at in self.seen if sender == name]


@pytest.fixture
def published(canvas: Canvas) -> Iterator[Publishes]:
    publishes = Publishes()
    before_task_publish.connect(publishes, weak=False)
    try:
        yield publishes
    finally:
        before_task_publish.disconnect(publishes)


def _chain(c: Canvas) -> Built:
    return chain(c.add.s(1, 2), c.mul.s(10), c.add.s(5)), {}, None


def _pipe(c: Canvas) -> Built:
    return c.add.s(1, 2) | c.mul.s(10), {}, None


def _group(c: Canvas) -> Built:
    return group(c.add.s(number, number) for number in range(4)), {}, None


def _chord(c: Canvas) -> Built:
    return chord((c.add.s(number, number) for number in range(4)), c.total.s()), {}, None


def _link(c: Canvas) -> Built:
    callback = c.mul.s(10)
    return c.add.s(2, 3), {"link": callback}, callback.freeze()


def _chain_into_chord(c: Canvas) -> Built:
    # Celery turns a group followed by a task into a chord, inside a chain.
    return chain(c.add.s(1, 1), group(c.mul.s(2), c.mul.s(3)), c.total.s()), {}, None


def _link_error(c: Canvas) -> Built:
    return c.fail.s(7), {"link_error": c.on_error.s(token="unused")}, None


# (builder, what the worker computes, how many messages the flush itself publishes)
RUNS: dict[str, tuple[Build, Any, int]] = {
    "chain": (_chain, 35, 1),
    "pipe": (_pipe, 30, 1),
    "group": (_group, [0, 2, 4, 6], 4),
    "chord": (_chord, 12, 4),
    "link": (_link, 50, 1),
    "chain-into-chord": (_chain_into_chord, 10, 1),
}
DISCARDED: dict[str, tuple[Build, int]] = {name: (build, messages) for name, (build, _, messages) in RUNS.items()}
DISCARDED["link_error"] = (_link_error, 1)


def apply(form: str, canvas: Any, options: dict[str, Any]) -> Any:
    """Apply ``canvas`` in the active scope, the old way (shim) or the new (enqueue)."""
    if form == "shim":
        with pytest.warns(CeleryShimWarning):
            return canvas.apply_async(**options)
    airlock.enqueue(canvas, _dispatch_options=options or None)
    return None


def dispatched_results() -> list[Any]:
    results: list[Any] = []
    intent_dispatched.connect(lambda scope, intent, result: results.append(result), weak=False)
    return results


@pytest.mark.parametrize("form", ["shim", "enqueue"])
@pytest.mark.parametrize("case", list(RUNS))
def test_canvas_applied_in_a_scope_runs_on_the_worker_only_after_the_flush(
    canvas: Canvas, published: Publishes, form: str, case: str
) -> None:
    build, expected, messages = RUNS[case]
    applied, options, awaited = build(canvas)
    dispatched = dispatched_results()
    with shim(), airlock.scope(executor=celery_executor):
        returned = apply(form, applied, options)
        assert published.here() == []
    # Only the canvas's first messages leave at the flush; the worker sends the rest.
    assert len(published.here()) == messages
    if awaited is None:
        (awaited,) = dispatched if form == "enqueue" else (returned,)
    with shim():  # the worker, a thread of this process, runs with the shim on too
        assert awaited.get(timeout=WAIT) == expected


@pytest.mark.parametrize("form", ["shim", "enqueue"])
@pytest.mark.parametrize("case", list(DISCARDED))
def test_canvas_in_a_discarded_scope_never_reaches_the_broker(
    canvas: Canvas, published: Publishes, form: str, case: str
) -> None:
    build, messages = DISCARDED[case]
    applied, options, _ = build(canvas)
    options = {**options, "queue": CANVAS_IDLE_QUEUE}
    with pytest.raises(RuntimeError), shim(), airlock.scope(executor=celery_executor):
        apply(form, applied, options)
        raise RuntimeError("the unit of work failed")
    assert published.here() == []
    assert canvas.depth(CANVAS_IDLE_QUEUE) == 0
    # The same probe sees the messages of the same canvas once its scope flushes.
    applied, options, _ = build(canvas)
    with shim(), airlock.scope(executor=celery_executor):
        apply(form, applied, {**options, "queue": CANVAS_IDLE_QUEUE})
    assert canvas.depth(CANVAS_IDLE_QUEUE) == messages
    canvas.purge(CANVAS_IDLE_QUEUE)


@pytest.mark.parametrize("form", ["shim", "enqueue"])
def test_link_error_runs_the_errback_on_the_worker_after_the_flush(
    canvas: Canvas, published: Publishes, form: str
) -> None:
    token = new_token()
    failing = canvas.fail.s(7)
    with shim(), airlock.scope(executor=celery_executor):
        apply(form, failing, {"link_error": canvas.on_error.s(token=token), "task_id": token})
        assert published.here() == []
    (errback,) = JOURNAL.wait_for(token, 1, "errback")
    assert errback["failed_id"] == token
    assert errback["error"] == "failed on purpose with 7"


@pytest.mark.filterwarnings("ignore::airlock.integrations.celery.CeleryShimWarning")  # raised in the worker's thread
@pytest.mark.parametrize("fails", [False, True], ids=["body-returns", "body-raises"])
def test_chord_applied_in_an_airlock_task_body_leaves_only_after_the_body_succeeded(
    canvas: Canvas, published: Publishes, fails: bool
) -> None:
    airlock.configure(executor=celery_executor)
    token = new_token()
    with shim():
        run = canvas.fan_out.delay(token, [1, 2, 3], fails)  # no scope here: straight to the broker
        # The result is stored once the run's scope has flushed or been discarded.
        run.get(timeout=WAIT, propagate=False)
        if fails:
            assert published.times(canvas.add.name) == []
            return
        (body,) = JOURNAL.wait_for(token, 1)
    (done,) = JOURNAL.of(token, "body_done")
    assert body["args"] == ([2, 4, 6],)
    assert min(published.times(canvas.add.name)) >= done["at"]


# -- what the shim says about a canvas (no broker: Celery's in-memory transport) ------

local = Celery("airlock_canvas_local", set_as_current=False)
local.conf.update(broker_url="memory://", result_backend="cache+memory://")


@local.task(name="canvas_local.add", shared=False)
def add(x: int, y: int) -> int:
    return x + y


LOCAL_CANVASES: dict[str, Callable[[], Any]] = {
    "chain": lambda: chain(add.s(1, 2), add.s(3)),
    "group": lambda: group(add.s(number, number) for number in range(3)),
    # This backend has no native chords: Celery also applies its celery.chord_unlock task.
    "chord": lambda: chord((add.s(number, number) for number in range(3)), add.s(0)),
}


@pytest.mark.parametrize("kind", list(LOCAL_CANVASES))
def test_shim_warning_on_a_canvas_points_at_the_call_and_says_to_enqueue_the_canvas(kind: str) -> None:
    applied = LOCAL_CANVASES[kind]()
    with shim(), airlock.scope(DropAll()), pytest.warns(CeleryShimWarning) as warned:
        applied.apply_async()
    assert {record.filename for record in warned} == {__file__}
    advice = (
        f"by the Celery shim as part of a Celery {kind}; enqueue the whole {kind} instead: "
        f"airlock.enqueue({kind}(...)), which celery_executor applies at the flush"
    )
    assert all(advice in str(record.message) for record in warned), [str(record.message) for record in warned]


def test_shim_warning_on_a_signature_points_at_the_call_and_keeps_user_options() -> None:
    with shim(), airlock.scope(DropAll()), pytest.warns(CeleryShimWarning) as warned:
        add.s(1, 2).apply_async(countdown=5)
    (record,) = warned
    assert record.filename == __file__
    assert str(record.message).endswith("write airlock.enqueue(add, 1, 2, _dispatch_options={'countdown': 5}) instead")
