"""AirlockMiddleware through Django's test clients (WSGI and ASGI), on real transactions."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections
from django.test import AsyncClient, Client

import airlock
from airlock import Scope
from airlock.integrations.django import AirlockMiddleware, DjangoScope
from airlock.testing import capture
from tests.djangoproject.checks import require_database
from tests.djangoproject.shop.models import Order
from tests.djangoproject.shop.worker import ThreadWorker

require_database()

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = ["sync", "async"]


def get(kind: str, path: str, **query: object):
    """One request through the WSGI (``sync``) or ASGI (``async``) handler, to the matching view."""
    if kind == "async":
        path = path.replace("/orders/", "/orders/async/")
        return async_to_sync(_async_get)(path, query)
    return Client(raise_request_exception=False).get(path, query)


async def _async_get(path: str, query: dict[str, object]):
    # Django 4.2's AsyncClient.get is a plain method returning a coroutine, which
    # async_to_sync warns about; an async def wrapper works on every version.
    return await AsyncClient(raise_request_exception=False).get(path, query)


@pytest.fixture
def worker() -> ThreadWorker:
    worker = ThreadWorker()
    airlock.configure(executor=worker)
    yield worker
    worker.wait_idle()


@pytest.fixture
def atomic_requests(request):
    """Switch ATOMIC_REQUESTS on "default" for one test (Django reads it per request)."""
    settings_dict = connections["default"].settings_dict
    before = settings_dict["ATOMIC_REQUESTS"]
    settings_dict["ATOMIC_REQUESTS"] = request.param
    yield request.param
    settings_dict["ATOMIC_REQUESTS"] = before


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize(
    ("status", "flushed"),
    [(200, True), (201, True), (302, True), (400, False), (404, False), (500, False)],
    ids=["200", "201", "302", "400", "404", "500"],
)
def test_status_decides_flush_or_discard(kind, status, flushed):
    with capture() as captured:
        response = get(kind, "/orders/", status=status)
    assert response.status_code == status
    assert len(captured.enqueued) == 1
    assert [i.name for i in captured.dispatched] == (["send_confirmation"] if flushed else [])
    assert [i.name for i in captured.discarded] == ([] if flushed else ["send_confirmation"])


@pytest.mark.parametrize("kind", CLIENTS)
def test_an_exception_in_the_view_discards(kind):
    with capture() as captured:
        response = get(kind, "/orders/", fail=1)
    assert response.status_code == 500
    assert captured.dispatched == [] and len(captured.discarded) == 1


@pytest.mark.parametrize("kind", CLIENTS)
def test_the_request_scope_is_a_django_scope_unless_configured(kind):
    with capture() as captured:
        get(kind, "/orders/")
    assert type(captured.of("scope_entered")[0].sender) is DjangoScope
    airlock.configure(scope_cls=Scope)
    with capture() as captured:
        get(kind, "/orders/")
    assert type(captured.of("scope_entered")[0].sender) is Scope


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_rolled_back_transaction_in_the_view_dispatches_nothing(kind):
    with capture() as captured:
        response = get(kind, "/orders/atomic/", rollback=1)
    assert response.status_code == 201  # the view itself succeeded
    assert captured.dispatched == [] and len(captured.enqueued) == 1
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    "atomic_requests", [True, False], ids=["ATOMIC_REQUESTS-on", "ATOMIC_REQUESTS-off"], indirect=True
)
def test_outside_and_inside_the_request_transaction(worker, atomic_requests):
    """On: the view's writes commit (or roll back) with the request; off: each write autocommits.

    Either way a 2xx request dispatches after its data is committed, and a failing
    request dispatches nothing; only the rows a failing request leaves behind differ.
    """
    response = get("sync", "/orders/", sku="ok")
    worker.wait_idle()
    assert response.status_code == 201
    assert worker.results == ["ok"]

    response = get("sync", "/orders/", sku="failed", fail=1)
    worker.wait_idle()
    assert response.status_code == 500
    assert worker.results == ["ok"]
    assert Order.objects.filter(sku="failed").exists() is not atomic_requests


ITERATIONS = 15


@pytest.mark.parametrize(
    ("kind", "path", "atomic_requests"),
    [
        ("sync", "/orders/atomic/", False),
        ("sync", "/orders/", True),
        ("async", "/orders/", False),
        ("async", "/orders/atomic/", False),
    ],
    ids=["sync-atomic-block", "sync-ATOMIC_REQUESTS", "async-autocommit", "async-atomic-block"],
    indirect=["atomic_requests"],
)
def test_a_worker_started_after_the_commit_always_finds_the_row(worker, kind, path, atomic_requests):
    for i in range(ITERATIONS):
        assert get(kind, path, sku=f"sku-{i}").status_code == 201
    worker.wait_idle()
    assert sorted(worker.results) == sorted(f"sku-{i}" for i in range(ITERATIONS))


def test_naive_dispatch_inside_the_transaction_misses_the_row(worker):
    """The contrast: the same worker, handed the task before the commit, cannot see the row."""
    for i in range(3):
        assert get("sync", "/orders/naive/", sku=f"sku-{i}").status_code == 201
    worker.wait_idle()
    assert len(worker.results) == 3
    assert all(isinstance(result, Order.DoesNotExist) for result in worker.results)
    assert Order.objects.count() == 3  # the rows were there after all, just not yet


class FlushOn4xx(AirlockMiddleware):
    def should_flush(self, request, response):
        return response.status_code < 500


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_subclass_decides_what_flushes(kind, settings):
    settings.MIDDLEWARE = [f"{__name__}.FlushOn4xx"]
    with capture() as captured:
        get(kind, "/orders/", status=404)
        get(kind, "/orders/", status=503)
    assert len(captured.dispatched) == 1 and len(captured.discarded) == 1


@pytest.fixture
async def async_db():
    """Close the connection the async views opened on asgiref's ORM thread, so the
    test database can be dropped (the test client keeps Django from closing it)."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.mark.usefixtures("async_db")
async def test_an_async_view_never_blocks_the_event_loop_on_airlock():
    """The flush (and so the executor's I/O) runs off the loop; the scope is left on it."""
    seen = []

    def executor(intent):
        try:
            asyncio.get_running_loop()
            seen.append("on the event loop")
        except RuntimeError:
            seen.append(threading.current_thread().name)

    airlock.configure(executor=executor)
    response = await AsyncClient().get("/orders/async/", {"sku": "tea"})
    assert response.status_code == 201
    assert len(seen) == 1 and seen[0] != "on the event loop"
    assert airlock.get_current_scope() is None


@pytest.mark.usefixtures("async_db")
async def test_async_requests_do_not_share_a_scope():
    with capture() as captured:
        client = AsyncClient()
        responses = await asyncio.gather(*(client.get("/orders/async/", {"sku": f"s{i}"}) for i in range(5)))
    assert [r.status_code for r in responses] == [201] * 5
    senders = {id(event.sender) for event in captured.of("intent_enqueued")}
    assert len(senders) == 5
    assert sorted(i.args for i in captured.dispatched) == sorted(i.args for i in captured.enqueued)
