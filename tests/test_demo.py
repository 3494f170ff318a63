"""The README's demo command works, and each scene does what it says.

The demo runs once per queue in a subprocess (it configures Django for itself),
keeping its SQLite files in a directory of the test's. The scenes' outcomes are
read back from those files (the shop's rows written by the consumer, the outbox
table next to them, what is left in Huey's storage) and, where only the output
can tell, from the output.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_service

ROOT = Path(__file__).resolve().parent.parent
BACKLOG = 6  # demo/scenes.py: orders placed while the queue is unreachable
LEASE = 60.0  # the relay's default lease: a row it claimed has available_at pushed this far


@dataclass
class Run:
    queue: str
    out: str
    data: Path

    def rows(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.data / "shop.sqlite3") as db:
            return db.execute(sql, params).fetchall()

    def order(self, customer: str) -> int:
        (order_id,) = self.rows("select id from shop_order where customer = ?", customer)[0]
        return int(order_id)  # type: ignore[call-overload]

    def deliveries(self, order_id: int) -> list[tuple[str, str, str]]:
        rows = self.rows('select task, found, "where" from shop_delivery where order_id = ? order by id', order_id)
        return [(str(task), str(found), str(where)) for task, found, where in rows]

    def outbox(self, task: str) -> list[tuple[int, str, float, float, int]]:
        """The outbox rows of ``task``: ``(order id, state, created_at, available_at, attempts)``."""
        rows = self.rows(
            "select payload, state, created_at, available_at, attempts from airlock_outbox "
            "where task = ? or task like ? order by id",
            task,
            f"%.{task}",  # Huey registers tasks as module.name
        )
        found = []
        for payload, state, created, available, attempts in rows:
            args = json.loads(str(payload))[0]
            found.append((int(args[0]) if args else 0, str(state), float(created), float(available), int(attempts)))  # type: ignore[arg-type]
        return found

    def scene(self, number: int) -> str:
        """The output of one scene, up to the next."""
        return re.split(r"\n━+\n", self.out)[number]


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "demo", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module", params=["huey", "celery"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    if request.param == "celery":
        require_service("redis")
    data = tmp_path_factory.mktemp(f"demo-{request.param}")
    result = demo("--data-dir", str(data), *(["--celery"] if request.param == "celery" else []))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return Run(request.param, result.stdout, data)


def test_the_checkout_is_delivered_after_the_commit_and_the_consumer_finds_the_order(run: Run) -> None:
    order = run.order("ada")
    found = f"order {order} for ada"
    assert run.deliveries(order) == [
        ("send_confirmation", found, "consumer"),
        ("notify_warehouse", found, "consumer"),  # the follow-up, sent by the first run's scope
    ]
    # One outbox row each, written in the shop's database, and sent by the background publisher.
    assert [(order_id, state) for order_id, state, *_ in run.outbox("send_confirmation")][:1] == [(order, "sent")]
    assert [(order_id, state) for order_id, state, *_ in run.outbox("notify_warehouse")][:1] == [(order, "sent")]
    scene = run.scene(1)
    assert re.search(r"send_confirmation +sent\n +notify_warehouse +sent\n", scene)
    # Published by the web process's publisher thread, in the request's trace, which the consumer's runs join.
    assert re.search(
        r"in=publisher level=info event=airlock\.intent\.dispatched .*intent_name=send_confirmation", scene
    )
    trace = scene.split("the trace:", 1)[1]
    assert trace.count("\ntrace ") == 1, trace
    for span in ("send send_confirmation [producer]", "process send_confirmation [consumer]", "send notify_warehouse"):
        assert span in trace


def test_a_failed_checkout_sends_nothing(run: Run) -> None:
    assert run.rows("select count(*) from shop_order where customer = 'bob'") == [(0,)]
    missing = "order_id is not null and found = ''"
    assert run.rows(f"select count(*) from shop_delivery where found like '%bob%' or ({missing})") == [(0,)]
    scene = run.scene(2)
    assert re.search(r"messages that reached .* for this request: 0\n", scene)
    assert "event=airlock.scope.discarded" in scene
    assert "airlock.intent.dispatched" not in scene
    # Its row went with the rollback: one send_confirmation row per order that exists.
    orders = {order_id for (order_id,) in run.rows("select id from shop_order")}
    assert sorted(order_id for order_id, *_ in run.outbox("send_confirmation")) == sorted(orders)  # type: ignore[type-var]
    assert "outbox rows left by this request: none" in scene


def test_the_admin_dry_run_sends_nothing_and_the_quiet_run_only_what_is_not_blocked(run: Run) -> None:
    tasks = dict(run.rows("select task, count(*) from shop_delivery group by task"))
    assert "send_reminder" not in tasks
    assert tasks["refresh_stock"] == 1
    scene = run.scene(3)
    dry_run, quiet = scene.split("mode=quiet")
    assert "dry-run: 2 held back by DropAll, 0 to send" in dry_run
    assert re.search(r"messages that reached .*: 0\n", dry_run)
    assert "quiet: 1 held back by BlockTasks, 1 to send" in quiet
    assert re.search(r"messages that reached .*: 1\n", quiet)
    # A refused intent never gets a row; the one that went has one, sent.
    assert run.outbox("send_reminder") == []
    assert [state for _, state, *_ in run.outbox("refresh_stock")] == ["sent"]
    assert "outbox rows written: 0 (" in dry_run
    assert "outbox rows written: 1 (refresh_stock sent)" in quiet


def test_nested_services_wait_for_the_request_and_keep_their_executor(run: Run) -> None:
    order = run.order("carol")
    ran = {task: where for task, found, where in run.deliveries(order) if found == f"order {order} for carol"}
    assert ran == {
        "send_confirmation": "consumer",
        "notify_warehouse": "consumer",
        "award_points": "consumer",  # the loyalty scope chose no executor: the request's queue
        "write_audit": "web",  # the audit scope chose the sync executor, and kept it
    }
    scene = run.scene(4)
    assert "(messages sent by then: 0)" in scene
    queue_executor = f"{run.queue}_executor"
    assert re.search(rf"award_points\({order}, 42\) +captured from a service's scope +via {queue_executor}", scene)
    assert re.search(rf"write_audit\({order}, 'checkout'\) +captured from a service's scope +via sync_executor", scene)
    assert "event=airlock.intent.captured" in scene
    assert [(order_id, state) for order_id, state, *_ in run.outbox("award_points")] == [(order, "sent")]
    assert run.outbox("write_audit") == []  # the sync executor, in-process: no row


def test_orders_committed_while_the_queue_is_unreachable_are_delivered_once_each_by_the_relay(run: Run) -> None:
    orders = [run.order(f"dan-{i}") for i in range(1, BACKLOG + 1)]
    for order in orders:
        assert [task for task, found, _ in run.deliveries(order) if found] == ["send_confirmation", "notify_warehouse"]
    rows = {order_id: row for order_id, *row in run.outbox("send_confirmation")}
    for order in orders:
        state, created, available, attempts = rows[order]
        assert state == "sent"
        # Claimed by a relay (a claim moves available_at to the end of its lease; the fast
        # path never touches it), and no attempt spent while the queue was unreachable.
        assert available >= created + LEASE - 1, (order, created, available)
        assert attempts == 0
    assert run.rows("select state, count(*) from airlock_outbox group by state") == [
        ("sent", len(run.rows("select id from airlock_outbox")))
    ]
    scene = run.scene(5)
    assert re.search(r"the queue cannot be reached: ", scene)
    assert re.search(
        rf"{BACKLOG} orders committed, and no request failed; the outbox holds {BACKLOG} rows ready\n", scene
    )
    tried = rf"the relay tries: 0 sent, the queue is unreachable \(.+\),\n +{BACKLOG} rows released for later"
    assert re.search(tried + r", attempts spent on them: 0\n", scene)
    progress = re.findall(rf"relay: (\d+) rows left, (\d+) sent; orders delivered: (\d)/{BACKLOG}", scene)
    assert progress, scene
    assert progress[-1][0] == "0" and int(progress[-1][1]) >= BACKLOG and progress[-1][2] == str(BACKLOG)
    assert f"every order delivered exactly once: {BACKLOG}/{BACKLOG}" in scene
    if run.queue == "huey":
        with sqlite3.connect(run.data / "queue" / "huey.sqlite3") as db:
            assert db.execute("select count(*) from task").fetchone() == (0,)


def test_a_redis_that_is_down_gives_one_readable_line() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    result = demo("--celery", "--redis-url", f"redis://127.0.0.1:{port}/0")
    if "needs Celery" in result.stderr:
        pytest.skip("Celery is not installed")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"--celery needs Redis on redis://127.0.0.1:{port}/0" in result.stderr
    assert "make demo" in result.stderr


def test_a_missing_extra_names_the_install_command() -> None:
    code = "import sys; sys.modules['huey'] = None; from demo.__main__ import main; sys.exit(main([]))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "pip install -e '.[django,otel,huey,structlog]'" in result.stderr
