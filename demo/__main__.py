"""The airlock demo: ``make demo`` (or ``python -m demo``), on embedded defaults.

A small Django shop on SQLite sends its side effects through a real queue with a
real consumer: Huey on its SQLite storage by default (no server needed), or
Celery on the local Redis with ``--celery``. The outbox is on, on the shop's
SQLite database. Five scenes, each with airlock's log lines and the trace waterfall:

1. a checkout whose effects go out after the commit and run on the consumer;
2. a failed checkout whose effects are discarded;
3. an admin dry run (``DropAll``), and a run that blocks only e-mails (``BlockTasks``);
4. a checkout calling services that open scopes of their own;
5. the queue unreachable while orders commit, then the relay delivering every order.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REDIS_URL = "redis://127.0.0.1:6379/0"
EXTRAS = "pip install -e '.[django,otel,huey,structlog]' (make demo does it for you)"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description="airlock's demo: a Django shop on a real queue")
    parser.add_argument("--celery", action="store_true", help="run on Celery with the local Redis (127.0.0.1:6379)")
    parser.add_argument("--redis-url", default=REDIS_URL, help=f"the Redis for --celery (default {REDIS_URL})")
    parser.add_argument("--data-dir", type=Path, help="keep the SQLite files here instead of a temporary directory")
    parser.add_argument("--traceback", action="store_true", help="show the traceback of an unexpected error")
    return parser.parse_args(argv)


def run(options: argparse.Namespace, directory: Path) -> None:
    from demo import queues

    backend: queues.Backend = (
        queues.CeleryBackend(options.redis_url) if options.celery else queues.HueyBackend(directory)
    )
    try:
        queues.use(backend)
        from demo import web

        web.setup(directory, backend.executor, backend.outbox)
        import demo.shop.tasks  # noqa: F401  # declares the tasks before the consumer starts
        from demo.observe import Observer
        from demo.scenes import SCENES, Stage

        observer = Observer()
        print(f"airlock demo: a Django shop on SQLite; its tasks go through {backend.description}")
        backend.start_consumer()
        stage = Stage(backend, observer)
        for scene in SCENES:
            scene(stage)
        observer.close()
    finally:
        backend.close()


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    started = time.monotonic()
    try:
        import django  # noqa: F401
        import huey  # noqa: F401
        import opentelemetry.sdk  # noqa: F401
        import structlog  # noqa: F401
    except ImportError as error:
        print(f"demo: a package is missing ({error}); {EXTRAS}", file=sys.stderr)
        return 2
    from demo.queues import DemoError

    if options.data_dir is not None:
        directory = options.data_dir
        if directory.exists() and any(directory.iterdir()):
            print(f"demo: --data-dir {directory} is not empty; give a new or empty directory", file=sys.stderr)
            return 2
        directory.mkdir(parents=True, exist_ok=True)
    else:
        directory = Path(tempfile.mkdtemp(prefix="airlock-demo-"))
    try:
        run(options, directory)
    except DemoError as error:
        print(f"\ndemo: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if options.traceback:
            raise
        print(
            f"\ndemo failed: {type(error).__name__}: {error} (run `python -m demo --traceback` for details)",
            file=sys.stderr,
        )
        return 1
    finally:
        if options.data_dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    print(f"\ndemo done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
