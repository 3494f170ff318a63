"""The outbox's promise where users deploy it: each project of ``tests/projects/`` as real processes.

Each project is a ``django-admin startproject`` site with the settings its queue's
docs give (``tests/projects/_common.py`` says what they share). A module-scoped
stack per project: its own PostgreSQL database and Redis, gunicorn
(``gunicorn proj.wsgi -w 2``), the queue's own worker CLI and ``python manage.py
airlock_relay``, each a fresh interpreter in the project's folder. The tasks are
imported lazily (in the views and the model's ``save()``), so a relay that does
not discover them as the worker does delivers nothing.

Every scenario counts each committed order's tasks on the real worker (a row
per run in ``shop_delivery``) and checks that nothing of a rolled-back order
arrived:

- tasks imported lazily: delivered once, by the fast path and by the relay alone;
- a broker outage of the test's own: what committed meanwhile arrives once it is back;
- where the broker is the project's database (django-tasks-db), no worker running
  while orders commit instead: the fast path and the relay hand every row to the
  backend's table, and the restarted worker runs each task once;
- a web worker SIGKILLed after its commit, before its scope decided: its rows are
  recovered by the relay within seconds, with no person in the loop (the recovery
  times are printed; ``python -m bench projects_recovery`` measures p50/p99 over 20 kills);
- the relay SIGKILLed mid-batch: every row delivered (duplicates counted);
- a rollback: nothing arrives;
- a soak: requests in a loop while the broker is frozen, killed and restarted, and
  web workers and relays are SIGKILLed; then everything heals and the counts are
  checked.

``AIRLOCK_SOAK_SECONDS`` sets the soak's length (default 40). ``AIRLOCK_SKIP_PROJECTS=1``
skips the module.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest

from tests.projects._common import PROJECTS, Project, Stack, new_token, percentile, require, started
from tests.servers.harness import Server, _admin_dsn

if os.environ.get("AIRLOCK_SKIP_PROJECTS") == "1":
    pytest.skip("AIRLOCK_SKIP_PROJECTS=1: the deployment-shaped projects run in another lane", allow_module_level=True)

ORDERS = 6  # per variant of a scenario: small, the processes are real
SOAK_SECONDS = float(os.environ.get("AIRLOCK_SOAK_SECONDS", "40"))
# A relay killed mid-batch leaves its claim to its lease (60 s by default): the
# scenarios that kill relays run theirs with a short one.
SHORT_LEASE = {"LEASE": 2.0}


@pytest.fixture(scope="module", params=PROJECTS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    project: Project = request.param
    require(project)
    with started(project, tmp_path_factory.mktemp(project.name)) as running:
        yield running


@pytest.fixture
def healthy(stack: Stack) -> Iterator[Stack]:
    """The stack with everything up, before and after each scenario; nothing of a rollback arrived."""
    stack.heal()
    yield stack
    leaked = stack.rollbacks_arrived()
    stack.heal()
    assert not leaked, f"rows or runs of orders that never committed: {leaked[:5]}"


def web_without_fast_path(stack: Stack) -> Server:
    """A second gunicorn whose outbox has ``FAST_PATH: "off"``: every row is the relay's to send."""
    found = getattr(stack, "_off", None)
    if found is None or found.process.poll() is not None:
        found = stack.start_web(workers=1, outbox={"FAST_PATH": "off"})
        stack._off = found  # type: ignore[attr-defined]
    return found


def assert_once(stack: Stack, order_ids: list[int], delivered: dict[tuple[int, str], int]) -> None:
    twice = {key: n for key, n in delivered.items() if n > 1}
    assert not twice, f"delivered more than once: {twice}"
    assert set(delivered) == stack.expected(order_ids)


# -- the scenarios ---------------------------------------------------------------------------


def report(request: pytest.FixtureRequest, line: str) -> None:
    """Write ``line`` to the terminal, captured or not: CI's log keeps the counts and times of each run."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(f"\n{line}", flush=True)


def test_lazily_imported_tasks_run_once(healthy: Stack) -> None:
    """Through the default fast path, and through the relay alone (``FAST_PATH: "off"``).

    While the relay is stopped, ``airlock_relay --check`` (a deploy pipeline's, in a
    fresh interpreter) finds every task name the waiting rows carry.
    """
    stack = healthy
    fast, relayed = new_token("fast"), new_token("relayed")
    stack.stop(stack.relay)
    stack.orders(fast, ORDERS)
    stack.orders(relayed, ORDERS, server=web_without_fast_path(stack))
    fast_ids, relayed_ids = stack.committed(fast), stack.committed(relayed)
    assert len(fast_ids) == len(relayed_ids) == ORDERS
    check = stack.manage("airlock_relay", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(stack.project.tasks)} task name(s) in undelivered rows, 0 " in check.stdout, check.stdout
    stack.relay = stack.start_relay()
    stack.wait_delivered(fast_ids + relayed_ids)
    stack.wait_sent()
    stack.barrier()
    assert_once(stack, fast_ids, stack.deliveries(fast_ids))
    assert_once(stack, relayed_ids, stack.deliveries(relayed_ids))


def test_rolled_back_orders_send_nothing(healthy: Stack) -> None:
    stack = healthy
    token = new_token("rollback")
    statuses = {stack.rolled_back(token) for _ in range(ORDERS)}
    statuses |= {stack.rolled_back(token, server=web_without_fast_path(stack)) for _ in range(2)}
    assert statuses <= {200, 500}, statuses
    assert stack.committed(token) == []
    stack.barrier()  # anything sent for them would have run by now
    assert stack.rollbacks_arrived() == []


def test_broker_outage(healthy: Stack, request: pytest.FixtureRequest) -> None:
    """Orders commit while the broker is stopped; every task arrives once it is back."""
    stack = healthy
    if stack.broker is None:
        pytest.skip(f"{stack.project.name}'s broker is its database; test_worker_stopped_while_orders_commit covers it")
    token = new_token("outage")
    stack.broker.stop()
    try:
        stack.orders(token, ORDERS)
        for _ in range(2):
            stack.rolled_back(token)
        ids = stack.committed(token)
        assert len(ids) == ORDERS
        assert not stack.deliveries(ids), "ran while the broker was down?"
    finally:
        stack.broker.start()
    delivered = stack.wait_delivered(ids, timeout=60)
    stack.wait_sent()
    stack.barrier()
    assert_once(stack, ids, stack.deliveries(ids))
    report(
        request,
        f"{stack.project.name}: {len(delivered)} tasks of {ORDERS} orders committed during the outage, each ran once",
    )


def test_worker_stopped_while_orders_commit(healthy: Stack, request: pytest.FixtureRequest) -> None:
    """A database backend's "outage": no worker runs while orders commit; each task runs once one starts.

    Where the broker is the project's own database (django-tasks-db) it cannot be down
    while the outbox commits, so this is the relay's part instead: with no worker
    running, the fast path, the relay alone (``FAST_PATH: "off"``) and the relay after
    a web worker killed past its commit all hand every row to the backend's table;
    ``airlock_relay --check`` resolves every name; the restarted worker runs each once.
    """
    stack = healthy
    if stack.broker is not None:
        pytest.skip(f"{stack.project.name} has a broker of its own: test_broker_outage stops it")
    token = new_token("noworker")
    stack.stop(stack.worker)
    stack.orders(token, ORDERS)
    stack.orders(token, 2, server=web_without_fast_path(stack))
    stack.order(token, crash=True)
    stack.web.wait_ready("/ping/")  # type: ignore[union-attr]  # gunicorn replaced the worker
    ids = stack.committed(token)
    assert len(ids) == ORDERS + 3
    stack.wait_sent()
    assert not stack.deliveries(ids), "ran with no worker running?"
    check = stack.manage("airlock_relay", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    stack.worker = stack.start_worker()
    stack.wait_delivered(ids, timeout=60)
    stack.barrier()
    assert_once(stack, ids, stack.deliveries(ids))
    report(request, f"{stack.project.name}: {len(ids)} orders committed with no worker running, each task ran once")


def test_web_worker_killed_after_its_commit(healthy: Stack, request: pytest.FixtureRequest) -> None:
    """Its scope never decided; the relay learns the writer died and delivers its rows (no person)."""
    stack = healthy
    kills = 3
    killed: dict[str, float] = {}
    for number in range(kills):
        token = new_token(f"killed{number}")
        killed[token] = stack.order(token, crash=True)
        stack.web.wait_ready("/ping/")  # type: ignore[union-attr]  # gunicorn replaced the worker
    ids = {token: stack.committed(token) for token in killed}
    assert all(len(found) == 1 for found in ids.values()), f"each killed request committed one order: {ids}"
    every = [order_id for found in ids.values() for order_id in found]
    stack.wait_delivered(every, timeout=60)
    stack.wait_sent()
    stack.barrier()
    assert_once(stack, every, stack.deliveries(every))
    ran = stack.ran_at(every)
    recovery = [ran[ids[token][0]] - when for token, when in killed.items()]
    report(
        request,
        f"{stack.project.name}: {kills} web workers killed after their commit; kill to task run: "
        f"{', '.join(f'{seconds:.2f}s' for seconds in recovery)} (p50 {percentile(recovery, 0.5):.2f}s)",
    )


def test_relay_killed_mid_batch(healthy: Stack, request: pytest.FixtureRequest) -> None:
    """Many ready rows; the relay SIGKILLed while it publishes them; another takes over: none lost."""
    stack = healthy
    stack.stop(stack.relay)
    token = new_token("relaykill")
    stack.orders(token, 60, server=web_without_fast_path(stack), concurrency=4)
    ids = stack.committed(token)
    rows = len(stack.expected(ids))
    mid_batch = None
    for _ in range(5):
        relay = stack.start_relay("--batch-size", "10", outbox=SHORT_LEASE)
        mid_batch = kill_while_publishing(stack, relay)
        if mid_batch is None or mid_batch[1]:
            break
    assert mid_batch is not None, f"the relay published nothing: {stack.describe()}"
    sent_before, claimed = mid_batch
    assert claimed, "the relay was never caught holding a claimed batch"
    assert sent_before < rows, "every row was sent before the kill"
    stack.relay = stack.start_relay(outbox=SHORT_LEASE)
    stack.wait_delivered(ids, timeout=60)
    stack.wait_sent()
    stack.barrier()
    delivered = stack.deliveries(ids)
    assert set(delivered) == stack.expected(ids)
    twice = sum(1 for n in delivered.values() if n > 1)
    report(
        request,
        f"{stack.project.name}: relay SIGKILLed holding {claimed} claimed row(s), {sent_before} of {rows} sent "
        f"before it; all {rows} delivered, {twice} twice (published, not yet marked)",
    )
    stack.stop(stack.relay)  # the next scenario gets a relay at the defaults


def kill_while_publishing(stack: Stack, relay: Server) -> tuple[int, int] | None:
    """SIGKILL ``relay`` once it has sent a batch and claimed another; (rows sent, rows it held claimed) at the kill.

    Between two batches there is a moment with nothing claimed (the next claim's
    commit): the caller starts another relay and tries again if the kill fell there.
    """
    query = (
        "SELECT count(*) FILTER (WHERE state = 'sent'), "
        "count(*) FILTER (WHERE state = 'ready' AND claimed_by <> '') FROM airlock_outbox"
    )
    with psycopg.connect(_admin_dsn(stack.db), autocommit=True) as connection:
        (base, _), *_ = connection.execute(query).fetchall()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if relay.process.poll() is not None:
                raise AssertionError(f"the relay exited: {relay.log()[-3000:]}")
            (sent, claimed), *_ = connection.execute(query).fetchall()
            if sent > base and claimed:
                os.kill(relay.process.pid, signal.SIGKILL)
                relay.wait()
                (sent, claimed), *_ = connection.execute(query).fetchall()
                return sent - base, claimed
            time.sleep(0.002)
    raise AssertionError(f"the relay sent nothing in 30s: {stack.describe()}")


# -- the soak ---------------------------------------------------------------------------------


class Chaos:
    """Faults at random, one at a time, each undone before the next: the broker, web workers, relays."""

    def __init__(self, stack: Stack, seed: int) -> None:
        self.stack = stack
        self.random = random.Random(seed)
        self.done: dict[str, int] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        faults = [self.freeze_broker, self.kill_broker, self.stop_broker, self.kill_web_worker, self.kill_relay]
        while not self.stopping.wait(self.random.uniform(0.5, 2.0)):
            fault = self.random.choice(faults)
            fault()
            self.done[fault.__name__] = self.done.get(fault.__name__, 0) + 1

    def pause(self) -> None:
        self.stopping.wait(self.random.uniform(0.3, 2.5))

    def freeze_broker(self) -> None:
        self.stack.broker.freeze()  # type: ignore[union-attr]
        self.pause()
        self.stack.broker.thaw()  # type: ignore[union-attr]

    def kill_broker(self) -> None:
        self.stack.broker.kill()  # type: ignore[union-attr]
        self.pause()
        self.stack.broker.start()  # type: ignore[union-attr]

    def stop_broker(self) -> None:
        self.stack.broker.stop()  # type: ignore[union-attr]
        self.pause()
        self.stack.broker.start()  # type: ignore[union-attr]

    def kill_web_worker(self) -> None:
        workers = self.stack.web.children()  # type: ignore[union-attr]
        if workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.random.choice(workers), signal.SIGKILL)

    def kill_relay(self) -> None:
        relay = self.stack.relay
        if relay is not None:
            relay.signal(signal.SIGKILL)
            relay.wait()
        self.pause()
        self.stack.relay = self.stack.start_relay(outbox=SHORT_LEASE)


def test_soak(healthy: Stack, request: pytest.FixtureRequest) -> None:
    """Requests in a loop under random faults; then heal: every committed order's tasks ran, none of a rollback."""
    stack = healthy
    if not stack.project.soak:
        pytest.skip(f"the soak runs on the projects marked soak=True (CI time), not {stack.project.name}")
    assert stack.broker is not None
    stack.stop(stack.relay)
    stack.relay = stack.start_relay(outbox=SHORT_LEASE)
    seed = random.randrange(2**32)
    chaos = Chaos(stack, seed)
    token, crashed, rolled = new_token("soak"), new_token("soakcrash"), new_token("soakrb")
    requests = {"order": 0, "crash": 0, "rolled_back": 0, "failed": 0}
    stopping = threading.Event()

    def client(number: int) -> None:
        pick = random.Random(seed + number)
        while not stopping.is_set():
            kind = pick.choices(["order", "crash", "rolled_back"], weights=[8, 1, 1])[0]
            path = {"order": f"/order/?token={token}", "crash": f"/order/?token={crashed}&crash=after-commit"}.get(
                kind, f"/order/rolled-back/?token={rolled}"
            )
            requests[kind] += 1
            try:
                with urllib.request.urlopen(stack.web.url + path, timeout=15) as response:  # type: ignore[union-attr]
                    response.read()
            except urllib.error.HTTPError:
                pass  # a rollback's 500
            except (OSError, http.client.HTTPException):
                requests["failed"] += 1  # killed by us (crash, or chaos), or no worker up yet
                stopping.wait(0.05)

    clients = [threading.Thread(target=client, args=(number,)) for number in range(2)]
    faults = threading.Thread(target=chaos.run)
    started_at = time.monotonic()
    for thread in [*clients, faults]:
        thread.start()
    try:
        stopping.wait(SOAK_SECONDS)
    finally:
        stopping.set()
        chaos.stopping.set()
        for thread in [*clients, faults]:
            thread.join(60)
    soaked = time.monotonic() - started_at
    stack.heal()
    ids = stack.committed(token) + stack.committed(crashed)
    assert ids, "no order committed during the soak"
    healed = time.monotonic()
    stack.wait_sent(timeout=90)  # every row on the broker
    deadline = healed + 120
    while True:
        with contextlib.suppress(AssertionError):  # what never ran is judged below
            stack.wait_delivered(ids, timeout=20)
        left = stack.intent_ids(stack.expected(ids) - set(stack.deliveries(ids)))
        # Still on the broker (a worker's prefetch, unacknowledged until the visibility timeout): it comes.
        if not stack.broker_holds(left.values()) or time.monotonic() > deadline:
            break
    stack.barrier()
    delivered = stack.deliveries(ids)
    assert stack.committed(rolled) == []
    assert stack.rollbacks_arrived() == []
    # A task that never ran: either the outbox never got it onto the broker (the
    # failure this test is for), or the broker took it and lost it on its way to
    # the worker. Celery's Redis transport pops a message (BRPOP) before it records
    # it as unacknowledged, so a broker killed in between loses that one message;
    # the broker's append-only file tells the two apart.
    never = stack.intent_ids(stack.expected(ids) - set(delivered))
    assert len(never) == len(stack.expected(ids) - set(delivered)), "a committed order's task has no outbox row"
    taken = stack.broker_took(never.values())
    not_taken = {key: intent_id for key, intent_id in never.items() if intent_id not in taken}
    assert not not_taken, f"committed tasks whose message never reached the broker: {not_taken}: {stack.describe()}"
    waiting = stack.broker_holds(never.values())
    assert not waiting, f"messages still waiting on the broker (another queue?): {waiting}: {stack.describe()}"
    twice = {key: n for key, n in delivered.items() if n > 1}
    report(
        request,
        f"{stack.project.name} soak (seed {seed}): {soaked:.0f}s, requests {requests}, faults {chaos.done}; "
        f"{len(ids)} orders committed ({len(stack.committed(crashed))} by requests killed after their commit); "
        f"every task reached the broker, {len(delivered)} ran, {len(twice)} of them more than once "
        f"({sum(twice.values())} runs), {len(never)} taken by the broker and lost on the way to the worker "
        f"({sorted(never.values())}); nothing of {requests['rolled_back']} rollbacks arrived; "
        f"healed in {time.monotonic() - healed:.1f}s",
    )
    stack.stop(stack.relay)
