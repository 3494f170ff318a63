"""The brokers that fault-injection tests start, break and clean up themselves.

Never the shared services: every server here listens on a free port of its own
and is stopped, frozen (SIGSTOP) or killed by its own pid.

- :class:`OwnRedis`: a ``redis-server`` of our own, daemonized with a pidfile.
- :class:`OwnRabbitMQ`: a RabbitMQ node of our own (slow to boot: one per test module).
- :class:`ClosedPort`: a port nothing listens on (held bound, so nobody takes it).
- :class:`Proxy`: a TCP proxy we control in front of a real broker, which we can
  stop (connections reset, new ones refused) or freeze (connections accepted,
  nothing answered), like a broker that dies or hangs. ``bench faults`` puts one
  in front of the shared RabbitMQ (never touched itself) rather than boot a node.

Each is a context manager that always cleans up; the fault tests and
``bench/bench_faults.py`` both use them.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "FAULTS",
    "ClosedPort",
    "Outcome",
    "OwnRabbitMQ",
    "OwnRedis",
    "Proxy",
    "cases",
    "fault",
    "flush_into",
    "free_port",
    "target",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for(condition: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise RuntimeError(f"gave up after {timeout}s waiting for {what}")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class _Owned:
    """Context-manager plumbing: ``close()`` always runs on the way out."""

    def __enter__(self) -> _Owned:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class OwnRedis(_Owned):
    """A ``redis-server`` of our own on a free port, with no persistence.

    ``appendonly=True``: with an append-only file fsynced at every write, as a
    deployment keeps its broker (docs/reliability.md); what it acknowledged
    survives ``stop()``, ``kill()`` and ``start()``.
    """

    def __init__(self, *, appendonly: bool = False) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed; install it to run the fault tests")
        self.appendonly = appendonly
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="airlock-redis-"))
        self._pidfile = self._dir / "redis.pid"
        self.pid: int | None = None
        self._is_frozen = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> OwnRedis:
        try:
            self.start()
        except BaseException:
            self.close()  # __exit__ will not run: clean up what start() left
            raise
        return self

    def start(self) -> None:
        """Start the server (again, after ``stop()`` or ``kill()``) and wait until it answers."""
        subprocess.run(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--daemonize", "yes",
                "--pidfile", str(self._pidfile),
                "--dir", str(self._dir),
                "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always",
                "--logfile", str(self._dir / "redis.log"),
            ],
            check=True,
        )  # fmt: skip
        _wait_for(lambda: self._pidfile.exists() and self._pidfile.read_text().strip(), "redis's pidfile")
        self.pid = int(self._pidfile.read_text())
        _wait_for(lambda: _accepts(self.port), f"redis on port {self.port}")

    def stop(self) -> None:
        """Shut the server down (SIGTERM) and wait until it is gone."""
        self._signal(signal.SIGTERM)
        self._wait_gone()

    def kill(self) -> None:
        """SIGKILL the server and wait until it is gone."""
        self._signal(signal.SIGKILL)
        self._wait_gone()

    def freeze(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing ever answers."""
        self._signal(signal.SIGSTOP)
        self._is_frozen = True

    def thaw(self) -> None:
        """SIGCONT after ``freeze()``."""
        self._signal(signal.SIGCONT)
        self._is_frozen = False

    def _signal(self, number: int) -> None:
        if self.pid is None:
            raise RuntimeError(f"redis on port {self.port} is not running")
        os.kill(self.pid, number)

    def _wait_gone(self) -> None:
        pid = self.pid
        if self._is_frozen:
            self.thaw()  # a stopped process cannot act on SIGTERM
        _wait_for(lambda: not _is_alive(pid), f"redis pid {pid} to exit")
        self.pid = None
        with contextlib.suppress(FileNotFoundError):
            self._pidfile.unlink()

    def close(self) -> None:
        try:
            if self.pid is not None and _is_alive(self.pid):
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGKILL)
                self._wait_gone()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


def _is_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A daemon's parent is init, which may be slow to reap it: a zombie is gone.
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" not in status


class OwnRabbitMQ(_Owned):
    """A RabbitMQ node of our own: its own ports, epmd, cookie, data and logs, in a temp dir.

    It takes 6 to 20 s to boot here, so a test module starts one for all its tests
    (tests/test_django_outbox_rabbitmq.py); ``bench faults`` uses it when
    ``AIRLOCK_BENCH_OWN_RABBITMQ=1``, and the proxy otherwise. ``stop()`` then
    ``start()`` restarts the same node (its queues are kept); ``freeze()`` and
    ``thaw()`` SIGSTOP and SIGCONT its Erlang VM.
    """

    def __init__(self) -> None:
        self.port, self._dist_port, self._epmd_port = free_port(), free_port(), free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="airlock-rabbitmq-"))
        (self._dir / "home").mkdir()
        (self._dir / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        self._env = {
            **os.environ,
            "HOME": str(self._dir / "home"),  # its own Erlang cookie
            "RABBITMQ_NODENAME": f"airlock-{os.getpid()}-{self.port}@localhost",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self._dist_port),
            "ERL_EPMD_PORT": str(self._epmd_port),  # its own epmd, not the shared one
            "RABBITMQ_CONFIG_FILE": str(self._dir / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self._dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self._dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self._dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self._dir / "rabbitmq.pid"),
        }
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def __enter__(self) -> OwnRabbitMQ:
        try:
            self.start()
        except BaseException:
            self.close()  # __exit__ will not run: clean up what start() left
            raise
        return self

    def start(self, timeout: float = 90.0) -> None:
        with open(self._dir / "server.out", "ab") as out:
            self._process = subprocess.Popen(
                [_rabbitmq_server()], env=self._env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        _wait_for(lambda: _accepts(self.port), f"rabbitmq on port {self.port}", timeout)

    @property
    def pid(self) -> int | None:
        """The Erlang VM's pid, while the node runs."""
        pidfile = self._dir / "rabbitmq.pid"
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        return int(text) if text else None

    def freeze(self) -> None:
        """SIGSTOP the VM: the kernel still accepts connections, nothing ever answers."""
        pid = self.pid
        if pid is None:
            raise RuntimeError(f"rabbitmq on port {self.port} is not running")
        os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after ``freeze()``."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the node (SIGTERM to the Erlang VM) and wait until it is gone."""
        pidfile = self._dir / "rabbitmq.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)  # a frozen VM cannot act on SIGTERM
                os.kill(pid, signal.SIGTERM)
            _wait_for(lambda: not _is_alive(pid), f"rabbitmq pid {pid} to exit", 30)
            pidfile.unlink(missing_ok=True)  # a restart writes its own
        if self._process is not None:
            self._process.wait(30)
            self._process = None

    def close(self) -> None:
        try:
            self.stop()
        finally:
            subprocess.run(["epmd", "-kill"], env=self._env, capture_output=True, check=False)
            shutil.rmtree(self._dir, ignore_errors=True)


def _rabbitmq_server() -> str:
    """The server script itself: Debian's ``rabbitmq-server`` is a wrapper that runs
    it as the rabbitmq user, with the shared node's log files."""
    found = shutil.which("rabbitmq-server")
    if found is None:
        raise RuntimeError("rabbitmq-server is not installed")
    text = Path(found).read_text(errors="replace")
    if "su rabbitmq" not in text:
        return found
    behind = re.search(r"(/\S+)/\$\{SCRIPT\}", text)
    if behind is None:
        raise RuntimeError(f"cannot find the server script behind the wrapper {found}")
    return f"{behind.group(1)}/rabbitmq-server"


class ClosedPort(_Owned):
    """A port held bound but not listening: every connection is refused at once."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]

    def url(self, scheme: str = "redis") -> str:
        return {
            "redis": f"redis://127.0.0.1:{self.port}/0",
            "amqp": f"amqp://guest:guest@127.0.0.1:{self.port}//",
        }[scheme]

    def __enter__(self) -> ClosedPort:
        return self

    def close(self) -> None:
        self._socket.close()


class Proxy(_Owned):
    """A TCP proxy on a free port to ``upstream``, which a test can stop or freeze.

    - ``stop()``: every open connection is reset and the port refuses new ones,
      as when the broker's process dies.
    - ``freeze()``: connections are still accepted (by the kernel) but no byte
      goes either way until ``thaw()``, as with a broker under SIGSTOP.
    - ``drop()``: every open connection is reset but new ones are served, as
      after a broker restart.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port: int = self._listener.getsockname()[1]
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._is_frozen = threading.Event()
        self._is_closed = threading.Event()
        self._is_dropping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name=f"airlock-proxy-{self.port}", daemon=True)
        self._thread.start()

    def __enter__(self) -> Proxy:
        return self

    def freeze(self) -> None:
        self._is_frozen.set()
        self._wake()

    def thaw(self) -> None:
        self._is_frozen.clear()
        self._wake()

    def stop(self) -> None:
        """Reset every connection and refuse new ones (``close()`` with no way back)."""
        self.close()

    def drop(self) -> None:
        """Reset every open connection, and keep serving new ones."""
        self._is_dropping.set()
        self._wake()
        _wait_for(lambda: not self._is_dropping.is_set(), "the proxy to drop its connections")

    def close(self) -> None:
        if self._is_closed.is_set():
            return
        self._is_closed.set()
        self._wake()
        self._thread.join(5)
        self._reset_all()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def _reset_all(self) -> None:
        for sock in list(self._pairs):
            with contextlib.suppress(OSError):
                # SO_LINGER 0: close with a reset, as a dead process's sockets are.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
        self._pairs.clear()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            while not self._is_closed.is_set():
                if self._is_dropping.is_set():
                    for sock in list(self._pairs):
                        with contextlib.suppress(KeyError):
                            selector.unregister(sock)
                    self._reset_all()
                    self._is_dropping.clear()
                self._watch(selector)
                for key, _ in selector.select(timeout=0.5):
                    sock = key.fileobj
                    if sock is self._wake_r:
                        self._wake_r.recv(4096)
                    elif sock is self._listener:
                        self._accept()
                    else:
                        self._relay(sock)  # type: ignore[arg-type]

    def _watch(self, selector: selectors.BaseSelector) -> None:
        wanted = {self._wake_r}
        if not self._is_frozen.is_set():
            wanted |= {self._listener, *self._pairs}
        for key in list(selector.get_map().values()):
            if key.fileobj not in wanted:
                selector.unregister(key.fileobj)
        for sock in wanted:
            if sock not in selector.get_map():
                with contextlib.suppress(KeyError, ValueError):
                    selector.register(sock, selectors.EVENT_READ)

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        self._pairs[client] = server
        self._pairs[server] = client

    def _relay(self, sock: socket.socket) -> None:
        other = self._pairs.get(sock)
        if other is None:
            return
        try:
            data = sock.recv(65536)
            if data:
                other.sendall(data)
                return
        except OSError:
            pass
        for end in (sock, other):
            self._pairs.pop(end, None)
            end.close()


# -- a flush of intents into a broken broker, for the tests and the bench ---------------

FAULTS = ("closed port", "redis stopped mid-flush", "redis frozen", "rabbitmq stopped mid-flush")
"""Every fault, by name. RabbitMQ faults go through a :class:`Proxy` to the shared one."""

QUEUES = ("celery", "dramatiq", "huey")
RABBITMQ_QUEUES = ("celery", "dramatiq")  # Huey has no RabbitMQ storage
RABBITMQ = ("127.0.0.1", 5672)
STOP_AFTER = 3  # mid-flush: the broker goes away once this many intents were sent


def cases() -> list[tuple[str, str]]:
    """Every (queue, fault) pair the issue asks to prove."""
    return [
        (queue, fault) for fault in FAULTS for queue in (RABBITMQ_QUEUES if fault.startswith("rabbitmq") else QUEUES)
    ]


@dataclass
class Outcome:
    """What one flush of ``count`` intents into a fault did."""

    seconds: float  # the flush, less the time spent breaking the broker
    breaking: float = 0.0  # waiting, mid-flush, for the broker to be gone
    dispatched: list[Any] = field(default_factory=list)  # intents sent
    failed: list[tuple[Any, BaseException]] = field(default_factory=list)  # (intent, error) reported
    raised: BaseException | None = None  # what the flush raised, if anything
    finished: bool = True  # False: still blocked when the cap ran out

    @property
    def accounted(self) -> int:
        return len(self.dispatched) + len(self.failed)


def target(queue: str, url: str, executor: Callable[[Any], Any] | None = None) -> tuple[Any, Any, Callable[[], None]]:
    """A task of ``queue`` on the broker at ``url``, the executor to send it, and a cleanup."""
    name = f"airlock_faults_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    if queue == "celery":
        from celery import Celery

        from airlock.integrations.executors.celery import celery_executor

        app = Celery(name, broker=url, set_as_current=False)
        app.conf.update(task_default_queue=name, broker_connection_retry_on_startup=False)
        task = app.task(name=f"{name}.job")(_job)
        return task, executor or celery_executor, app.close
    if queue == "dramatiq":
        import dramatiq
        from dramatiq.brokers.rabbitmq import RabbitmqBroker
        from dramatiq.brokers.redis import RedisBroker

        from airlock.integrations.executors.dramatiq import dramatiq_executor

        broker = RedisBroker(url=url, namespace=name) if url.startswith("redis") else RabbitmqBroker(url=url)
        actor = dramatiq.actor(_job, broker=broker, actor_name=f"{name}_job", queue_name=name)
        return actor, executor or dramatiq_executor, broker.close
    if queue == "huey":
        from huey import RedisHuey

        from airlock.integrations.executors.huey import huey_executor

        huey = RedisHuey(name, url=url)
        return huey.task(name=f"{name}_job")(_job), executor or huey_executor, lambda: huey.storage.pool.disconnect()
    raise ValueError(f"unknown queue {queue!r}; one of {QUEUES}")


def _job(number: int) -> None:
    """Never runs: no worker consumes these queues."""


@contextlib.contextmanager
def fault(queue: str, name: str) -> Iterator[tuple[str, Callable[[], None] | None, Callable[[], None] | None]]:
    """The broker for fault ``name``: (url, break_it_before_the_flush, break_it_mid_flush)."""
    if name == "closed port":
        with ClosedPort() as port:
            yield port.url("amqp" if queue == "rabbitmq" else "redis"), None, None
    elif name == "redis stopped mid-flush":
        with OwnRedis() as server:
            yield server.url, None, server.stop
    elif name == "redis frozen":
        with OwnRedis() as server:
            yield server.url, server.freeze, None
    elif name == "rabbitmq stopped mid-flush" and os.environ.get("AIRLOCK_BENCH_OWN_RABBITMQ") == "1":
        with OwnRabbitMQ() as node:
            yield node.url, None, node.stop
    elif name == "rabbitmq stopped mid-flush":
        with Proxy(RABBITMQ) as proxy:
            yield f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F", None, proxy.stop
    else:
        raise ValueError(f"unknown fault {name!r}; one of {FAULTS}")


def flush_into(
    queue: str, name: str, *, count: int = 10, cap: float = 60.0, executor: Callable[[Any], Any] | None = None
) -> Outcome:
    """Flush ``count`` intents of ``queue`` into fault ``name``; give up waiting after ``cap`` s.

    The first intent is sent before the fault (a warm connection, as in a running
    process) except for the closed port. The flush runs in a thread: a flush still
    blocked after ``cap`` seconds is reported unfinished, and the broker is then
    killed, which unblocks it.
    """
    import airlock
    from airlock import signals

    with fault(queue, name) as (url, before, mid_flush):
        task, send, close = target(queue, url, executor)
        try:
            if before is not None:
                with airlock.scope(executor=send):
                    airlock.enqueue(task, -1)  # warm: the pool now holds a live connection
                before()
            outcome = Outcome(seconds=0.0)

            def on_dispatched(scope: Any, intent: Any, result: Any) -> None:
                outcome.dispatched.append(intent)
                if mid_flush is not None and len(outcome.dispatched) == STOP_AFTER:
                    breaking = time.perf_counter()
                    mid_flush()
                    outcome.breaking = time.perf_counter() - breaking

            def on_failed(scope: Any, intent: Any, error: BaseException) -> None:
                outcome.failed.append((intent, error))

            def flush() -> None:
                try:
                    with airlock.scope(executor=send):
                        for number in range(count):
                            airlock.enqueue(task, number)
                except Exception as error:
                    outcome.raised = error

            with signals.intent_dispatched.connected_to(on_dispatched), signals.dispatch_failed.connected_to(on_failed):
                worker = threading.Thread(target=flush, daemon=True)
                start = time.perf_counter()
                worker.start()
                worker.join(cap)
                outcome.seconds = time.perf_counter() - start - outcome.breaking
                outcome.finished = not worker.is_alive()
        finally:
            with contextlib.suppress(Exception):
                close()
    if not outcome.finished:
        worker.join(30)  # the broker is gone now, so the blocked publish fails
    return outcome
