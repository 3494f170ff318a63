"""The README's demo command works, and each scene does what it says.

The demo runs once per queue in a subprocess (it configures Django for itself),
keeping its SQLite files in a directory of the test's. The scenes' outcomes are
read back from those files (the shop's rows written by the consumer, what is
left in Huey's storage) and, where only the output can tell, from the output.
"""

from __future__ import annotations

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
BACKLOG = 6  # demo/scenes.py: orders placed while the consumer is stopped


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
    lines = run.scene(1).splitlines()

    def offset(label: str) -> float:
        line = next(line for line in lines if label in line and " ms " in line)
        return float(re.match(r"\s*([\d.]+) ms", line).group(1))  # type: ignore[union-attr]

    assert offset("◆ enqueue send_confirmation") < offset("COMMIT")
    assert offset("COMMIT") < offset("send send_confirmation") < offset("process send_confirmation")
    assert offset("process send_confirmation") < offset("send notify_warehouse") < offset("process notify_warehouse")
    assert re.search(
        r"in=consumer level=info event=airlock\.intent\.dispatched .*intent_name=notify_warehouse", run.out
    )


def test_a_failed_checkout_sends_nothing(run: Run) -> None:
    assert run.rows("select count(*) from shop_order where customer = 'bob'") == [(0,)]
    missing = "order_id is not null and found = ''"
    assert run.rows(f"select count(*) from shop_delivery where found like '%bob%' or ({missing})") == [(0,)]
    scene = run.scene(2)
    assert re.search(r"messages that reached .* for this request: 0\n", scene)
    assert "event=airlock.scope.discarded" in scene
    assert "airlock.intent.dispatched" not in scene


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


def test_orders_placed_while_the_consumer_is_stopped_are_all_delivered_when_it_is_back(run: Run) -> None:
    orders = [run.order(f"dan-{i}") for i in range(1, BACKLOG + 1)]
    for order in orders:
        assert [task for task, found, _ in run.deliveries(order) if found] == ["send_confirmation", "notify_warehouse"]
    scene = run.scene(5)
    assert re.search(rf"{BACKLOG} orders committed; messages waiting in .*: {BACKLOG}\n", scene)
    assert re.search(r"delivering: \d/6 orders done", scene)
    assert f"every order delivered: {BACKLOG}/{BACKLOG}, 0 messages waiting" in scene
    assert "outbox" not in run.out.lower()  # not on this branch: the demo must not claim one
    if run.queue == "huey":
        with sqlite3.connect(run.data / "huey.sqlite3") as db:
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
