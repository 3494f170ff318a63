"""A Django request that commits one row and sends five Celery tasks: what publishing costs it.

The served project of ``tests/servers/`` (PostgreSQL, a database of the bench's
own; Celery on the local Redis, into a queue and key prefix of the bench's own,
deleted afterwards: the shared Redis is never flushed).

(a) One process, the request called through Django's WSGI handler directly (no
    HTTP), its response time (what the background publisher was handed is drained
    between requests, untimed), the variants taking turns in one run: no tasks; airlock with a plain
    ``DjangoScope``; the outbox publishing inline; the outbox publishing in the
    background; Celery's own ``delay_on_commit``. Each as a ratio to the no-task
    request, in each of ``RUNS_A`` runs one after the other; the figure is the
    median, and every run's ratio is printed beside it. Goals: background <= 2.0x
    no tasks; inline <= 1.15x plain airlock.
(b) Load: gunicorn with 2 sync workers and ``wrk`` (32 connections, 20 s; 5 s with
    ``--quick``), the outbox in the background against ``delay_on_commit``, one
    after the other in the same run: requests per second and p99 latency; goal
    >= 2x the requests per second. Every task is counted on the broker afterwards.
    A full run also loads the no-task request and the outbox inline, for context.
Beside (b): the CPU the publisher spends per message (Celery's own ``apply_async``,
    inside the Redis pipeline, in the one-process child), against what (b)'s goal
    leaves a request above the no-task one on these cores (half ``delay_on_commit``'s
    CPU per request, minus the no-task request's).
(c) Under that load, the time from the row's write (just before the commit) to its
    ``sent_at``: p50 and p99.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

from bench._harness import Figure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDIS = "redis://127.0.0.1:6379/0"
TASKS = 5
VARIANTS = ("none", "plain", "inline", "background", "delay_on_commit")
RUNS_A = 5  # the one-process part, run this many times (a full run): each ratio is the median
# Under load: (AIRLOCK_SERVERS_MODE, path). The first two are the goal's; the others
# say where the time goes.
LOAD_VARIANTS = {
    "background": ("background", "/order/"),
    "delay_on_commit": ("inline", "/order/celery/"),
    "none": ("inline", "/order/none/"),
    "inline": ("inline", "/order/"),
}


# -- (a) one process -------------------------------------------------------------------------


def _in_process(quick: bool) -> dict[str, Any]:
    """Runs in a child whose environment names the database, queue and key prefix."""
    import io

    import django

    django.setup()
    from django.core.handlers.wsgi import WSGIHandler

    import airlock
    from airlock.integrations.django import DjangoScope
    from airlock.integrations.django import outbox as outbox_module
    from airlock.integrations.django.outbox import OutboxScope, configure_outbox, outbox_options

    handler = WSGIHandler()
    base = dict(outbox_options().values)
    token = uuid.uuid4().hex[:12]
    paths = {
        "none": "/order/none/",
        "plain": "/order/",
        "inline": "/order/",
        "background": "/order/",
        "delay_on_commit": "/order/celery/",
    }
    sent: dict[str, int] = dict.fromkeys(VARIANTS, 0)

    def use(variant: str) -> None:
        if variant == "plain":
            airlock.configure(scope_cls=DjangoScope)
        else:
            airlock.configure(scope_cls=OutboxScope)
            configure_outbox({**base, "FAST_PATH": "inline" if variant != "background" else "background"})

    def call(variant: str) -> None:
        environ = {
            "REQUEST_METHOD": "GET", "PATH_INFO": paths[variant], "QUERY_STRING": f"token={token}-{variant}",
            "SERVER_NAME": "bench", "SERVER_PORT": "80", "HTTP_HOST": "bench", "wsgi.input": io.BytesIO(),
            "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        }  # fmt: skip
        statuses: list[str] = []
        response = handler(environ, lambda status, headers, exc_info=None: statuses.append(status))
        b"".join(response)
        response.close()
        assert statuses == ["200 OK"], statuses

    def settle() -> None:
        publisher = getattr(outbox_module, "background_publisher", lambda: None)()
        if publisher is not None:
            publisher.drain(10.0)

    number = 20 if quick else 50
    rounds = 5 if quick else 15
    for variant in VARIANTS:  # warm every path: connections, imports, the publisher thread
        use(variant)
        for _ in range(5):
            call(variant)
        sent[variant] += 5
    settle()
    # The response time: each request timed on its own, and what it handed to the
    # background publisher drained before the next one, untimed (a server that is
    # not saturated). Back-to-back requests would time the publisher's work too,
    # which shares the process (and its GIL); the load figures (b) count that.
    best = dict.fromkeys(VARIANTS, float("inf"))
    for _ in range(rounds):
        for variant in VARIANTS:
            use(variant)
            spent = 0.0
            for _ in range(number):
                started = time.perf_counter()
                call(variant)
                spent += time.perf_counter() - started
                settle()
            best[variant] = min(best[variant], spent / number)
            sent[variant] += number
    use("inline")
    publisher = getattr(outbox_module, "background_publisher", lambda: None)()
    carrier_messages = 200 if quick else 1000
    return {
        "best": best,
        "requests": sent,
        "token": token,
        "has_publisher": publisher is not None,
        "carrier_cpu": _carrier_cpu(token, carrier_messages),
        "carrier_messages": carrier_messages,
    }


def _carrier_cpu(token: str, number: int) -> float:
    """CPU seconds per message of the publisher's own path: Celery's ``apply_async`` inside the Redis pipeline."""
    from tests.servers.tasks import record

    from airlock.integrations.django.outbox._carriers import carrier_for
    from airlock.integrations.executors.celery import celery_executor

    carrier = carrier_for(celery_executor)
    options = carrier.stored_options(record, None)
    started = time.process_time()
    with carrier.batch() as push:
        for number_sent in range(number):
            carrier.send(record, [f"{token}-carrier", number_sent], {}, options, uuid.uuid4().hex)
            if number_sent % 100 == 99:
                push()
        push()
    return (time.process_time() - started) / number


# -- (b) and (c) under load -------------------------------------------------------------------------


def _wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    done = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    out = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"\s99%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    p50 = _seconds(re.search(r"\s50%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p99": p99, "p50": p50, "requests": total, "non_2xx": int(errors.group(1)) if errors else 0}


def _seconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def _load(db: str, prefix: str, queue: str, variant: str, seconds: int, connections: int) -> dict[str, Any]:
    from tests.servers.harness import Processes, environment, psql, wait_until_due

    token = uuid.uuid4().hex[:12]
    mode, path = LOAD_VARIANTS[variant]
    env = environment(db, REDIS, queue, mode, AIRLOCK_SERVERS_KEYPREFIX=prefix, AIRLOCK_SERVERS_CONN_MAX_AGE="600")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="airlock-bench-request-") as logs, Processes(Path(logs)) as processes:
        server = processes.serve("gunicorn-sync", env, workers=2)
        measured = _wrk(f"{server.url}{path}?token={token}", seconds, connections)
        server.signal(signal.SIGTERM)  # the background publisher drains at exit
        server.wait(60)
        left = psql(db, "SELECT count(*) FROM airlock_outbox WHERE state <> 'sent'")[0][0]
        if mode != "plain":
            wait_until_due(db)
            relay = processes.command(env, "airlock_relay", "--once")
            assert relay.returncode == 0, relay.stderr[-2000:]
    orders = psql(db, "SELECT count(*) FROM shop_order WHERE sku = %s", [token])[0][0]
    measured.update(orders=orders, left_at_exit=left, token=token)
    if variant == "background":
        lags = [
            row[0]
            for row in psql(
                db,
                "SELECT sent_at - created_at FROM airlock_outbox WHERE payload LIKE %s AND state = 'sent' ORDER BY 1",
                [f'[["{token}",%'],
            )
        ]
        measured["lag_p50"] = lags[len(lags) // 2] if lags else float("nan")
        measured["lag_p99"] = lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else float("nan")
        measured["rows"] = len(lags)
    return measured


def _queued(prefix: str, queue: str) -> int:
    import redis

    client = redis.Redis.from_url(REDIS)
    try:
        # kombu keeps one list per priority step: the queue's name, then three suffixed ones.
        suffixes = ("", "\x06\x163", "\x06\x166", "\x06\x169")
        return sum(int(client.llen(f"{prefix}{queue}{suffix}")) for suffix in suffixes)
    finally:
        client.close()


def _clean(prefix: str) -> None:
    from tests.celery_support import delete_keys

    delete_keys(REDIS, prefix)


def run(quick: bool = False) -> list[Figure]:
    sys.path.insert(0, ROOT)
    from tests.servers.harness import database, environment

    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk); the load figures need it")
    prefix = f"airlock-bench-request-{os.getpid()}-{uuid.uuid4().hex[:6]}:"
    queue = "bench-request"
    try:
        with database("airlock_bench_request") as db:
            env = environment(
                db, REDIS, queue, "background", AIRLOCK_SERVERS_KEYPREFIX=prefix, AIRLOCK_SERVERS_CONN_MAX_AGE="600"
            )
            # The one-process part runs RUNS_A times, one child after another: the machine's
            # disk flushes (every commit waits for one) drift from one minute to the next,
            # and the outbox writes more than its baselines, so each ratio is the median.
            runs_a = []
            for _ in range(1 if quick else RUNS_A):
                child = subprocess.run(
                    [sys.executable, "-m", "bench.bench_request", "quick" if quick else "full"],
                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                )  # fmt: skip
                if child.returncode:
                    raise RuntimeError(f"bench.bench_request failed: {child.stderr[-3000:]}")
                runs_a.append(json.loads(child.stdout.strip().splitlines()[-1]))
            time.sleep(0.5)
            expected_a = TASKS * sum(n for a in runs_a for variant, n in a["requests"].items() if variant != "none")
            expected_a += sum(a["carrier_messages"] for a in runs_a)
            queued_a = _queued(prefix, queue)
            _clean(prefix)
            seconds, connections = (5, 32) if quick else (20, 32)
            variants = list(LOAD_VARIANTS) if not quick else ["background", "delay_on_commit"]
            load = {v: _load(db, prefix, queue, v, seconds, connections) for v in variants}
            queued_b = _queued(prefix, queue)
            expected_b = TASKS * sum(m["orders"] for v, m in load.items() if v != "none")
    finally:
        _clean(prefix)
    ms = 1e3
    bg, doc = load["background"], load["delay_on_commit"]
    background_note = "" if runs_a[-1]["has_publisher"] else " (no background publisher yet: it published inline)"

    def ratio(top: str, bottom: str) -> tuple[float, str]:
        """The median over the runs of (a), and every run's ratio."""
        ratios = sorted(a["best"][top] / a["best"][bottom] for a in runs_a)
        return ratios[len(ratios) // 2], ", ".join(f"{value:.2f}" for value in ratios)

    def times(variant: str) -> str:
        return "/".join(f"{a['best'][variant] * ms:.2f}" for a in runs_a) + " ms"

    plain, plain_all = ratio("plain", "none")
    inline, inline_all = ratio("inline", "plain")
    background, background_all = ratio("background", "none")
    celery, celery_all = ratio("delay_on_commit", "none")
    runs = f"median of {len(runs_a)} runs" if len(runs_a) > 1 else "one run"
    return [
        Figure("(a) no tasks: one row, PostgreSQL", 1.0, "-", None, f"{times('none')} per request ({runs})"),
        Figure("(a) airlock DjangoScope, 5 tasks, vs no tasks", plain, "-", None, f"{plain_all}; {times('plain')}"),
        Figure("(a) outbox inline vs plain airlock", inline, "<= 1.15x", inline <= 1.15,
               f"{inline_all}; {times('inline')}"),
        Figure("(a) outbox background vs no tasks", background, "<= 2.0x", background <= 2.0,
               f"{background_all}; {times('background')}{background_note}"),
        Figure("(a) Celery delay_on_commit vs no tasks", celery, "-", None,
               f"{celery_all}; {times('delay_on_commit')}"),
        Figure("(a) every task of (a) on the broker", queued_a / expected_a, "= 1x", queued_a == expected_a,
               f"{queued_a} of {expected_a} messages"),
        Figure(f"(b) gunicorn 2 workers, wrk {connections} conns {seconds}s: req/s background vs delay_on_commit",
               bg["rps"] / doc["rps"], ">= 2x", bg["rps"] / doc["rps"] >= 2.0,
               f"{bg['rps']:.0f} vs {doc['rps']:.0f} req/s; p99 {bg['p99'] * ms:.1f} vs {doc['p99'] * ms:.1f} ms; "
               f"p50 {bg['p50'] * ms:.1f} vs {doc['p50'] * ms:.1f} ms"),
        Figure("(b) p99 latency background vs delay_on_commit", bg["p99"] / doc["p99"], "-", None,
               f"non-2xx {bg['non_2xx']} / {doc['non_2xx']}; rows left at exit {bg['left_at_exit']}"),
        Figure("(b) every task of (b) on the broker", queued_b / expected_b, "= 1x", queued_b == expected_b,
               f"{queued_b} of {expected_b} messages for the requests that committed tasks"),
        *[
            Figure(f"(b) req/s {variant} vs delay_on_commit", load[variant]["rps"] / doc["rps"], "-", None,
                   f"{load[variant]['rps']:.0f} req/s; p99 {load[variant]['p99'] * ms:.1f} ms")
            for variant in load if variant not in ("background", "delay_on_commit")
        ],
        _budget(runs_a, load),
        Figure("(c) commit to publish under load, p50", bg["lag_p50"] * ms, "-", None,
               f"p99 {bg['lag_p99'] * ms:.1f} ms over {bg['rows']} rows", unit="ms"),
    ]  # fmt: skip


def _budget(runs_a: list[dict[str, Any]], load: dict[str, dict[str, Any]]) -> Figure:
    """What five messages cost in CPU, against what (b)'s goal leaves a request above the no-task one.

    Under load the two cores are saturated, so a request's CPU is cores / req/s.
    Twice ``delay_on_commit``'s requests per second leaves half its CPU per request;
    the no-task request's CPU is spent before any task is sent.
    """
    cpu = sorted(a["carrier_cpu"] for a in runs_a)[len(runs_a) // 2]
    detail = f"{cpu * 1e6:.0f} us per message, {TASKS * cpu * 1e3:.2f} ms for {TASKS}"
    cores = os.cpu_count() or 1
    if "none" in load:
        budget = cores / (2 * load["delay_on_commit"]["rps"]) - cores / load["none"]["rps"]
        detail += f"; (b)'s goal leaves {budget * 1e3:.2f} ms of CPU per request above the no-task request"
    return Figure("(b) CPU of 5 messages through Celery in the pipeline, ms", TASKS * cpu * 1e3, "-", None,
                  detail, unit="ms")  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    print(json.dumps(_in_process(sys.argv[1] == "quick")))
