"""Shared fixtures: a clean airlock for every test, and access to real services."""

from __future__ import annotations

import os
import socket
import sys

import pytest

import airlock
from airlock import _context, signals

pytest_plugins = ["pytester"]  # tests/test_pytest_plugin.py runs pytest on small projects

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

SERVICES = {
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
    "postgres": ("127.0.0.1", 5432),
    "mariadb": ("127.0.0.1", 3306),
}


def pytest_collection_modifyitems(config, items):
    """Under ``AIRLOCK_ONE_LANE_ELSEWHERE=1`` (noxfile.py), leave ``one_lane`` tests to the lane that runs them."""
    if os.environ.get("AIRLOCK_ONE_LANE_ELSEWHERE") != "1":
        return
    elsewhere = pytest.mark.skip(reason="AIRLOCK_ONE_LANE_ELSEWHERE=1: another lane runs this version-independent test")
    for item in items:
        if item.get_closest_marker("one_lane") is not None:
            item.add_marker(elsewhere)


def pytest_report_header(config):
    from tests.djangoproject import settings

    if settings.ENGINE == "sqlite" and not os.environ.get("AIRLOCK_TEST_DB"):
        return "airlock: PostgreSQL is not reachable on 127.0.0.1:5432, so the Django tests run on SQLite"
    return f"airlock: Django tests run on {settings.ENGINE}"


def require_service(name: str) -> None:
    """Skip (or, under CI=true, fail) the calling test when a service is not reachable."""
    host, port = SERVICES[name]
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as error:
        reason = f"{name} is not reachable on {host}:{port} ({error}); start it to run this test"
        if IN_CI:
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)


def _publisher():
    """The outbox's background publisher of this process, if a test started one."""
    module = sys.modules.get("airlock.integrations.django.outbox._background")
    return None if module is None else module.background_publisher()


@pytest.fixture(autouse=True)
def _clean_airlock():
    """Reset configuration and disconnect receivers a test connected."""
    before = {signal: dict(signal.receivers) for signal in signals.ALL}
    airlock.reset_configuration()
    yield
    publisher = _publisher()
    if publisher is not None:  # what a test handed over is published in that test, not the next
        assert publisher.drain(10), f"the outbox's background publisher did not drain: {publisher!r}"
    airlock.reset_configuration()
    _context.hooks.executor_override = None
    _context.hooks.capture_trace_context = None
    for signal, receivers in before.items():
        for receiver_id in list(signal.receivers):
            if receiver_id not in receivers:
                signal._disconnect(receiver_id, 0)
    assert _context.current.get() is None, "a test left an airlock scope active"


@pytest.fixture
def redis_url() -> str:
    require_service("redis")
    return "redis://127.0.0.1:6379"


@pytest.fixture
def rabbitmq_url() -> str:
    require_service("rabbitmq")
    return "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def postgres_available() -> None:
    require_service("postgres")
