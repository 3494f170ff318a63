"""Management commands and scripts in a scope, and the dry run that lists what would go."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command

import airlock
from airlock.integrations.django import AirlockCommand, command_scope
from airlock.testing import capture
from tests.djangoproject.checks import require_database
from tests.djangoproject.shop import tasks
from tests.djangoproject.shop.models import Order

require_database()

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def orders() -> list[int]:
    return [Order.objects.create(sku=sku).pk for sku in ("tea", "jam", "tea")]


@pytest.fixture
def sent() -> list[str]:
    sent: list[str] = []
    airlock.configure(executor=lambda intent: sent.append(intent.task(*intent.args)))
    return sent


def test_a_command_runs_in_a_scope_and_sends_at_its_end(orders, sent):
    out = io.StringIO()
    result = call_command("remind_orders", stdout=out)
    assert sent == ["tea", "jam", "tea"]
    assert result == "3 order(s), dry run: False"
    assert out.getvalue() == "3 order(s), dry run: False\n"


@pytest.mark.parametrize(
    ("args", "kwargs"), [([], {"dry_run": True}), (["--dry-run"], {})], ids=["call_command-keyword", "command-line"]
)
def test_dry_run_sends_nothing_and_lists_what_would_go(orders, sent, args, kwargs):
    out = io.StringIO()
    with capture(dispatch=True) as captured:
        call_command("remind_orders", *args, "--sku", "tea", stdout=out, **kwargs)
    assert sent == []
    assert len(captured.dropped) == 2  # each drop is an event observers see
    lines = out.getvalue().splitlines()
    assert lines[0] == "2 order(s), dry run: True"
    assert lines[1:] == [
        "airlock dry run: 2 intent(s) would have been sent",
        f"  send_confirmation({orders[0]})",
        f"  send_confirmation({orders[2]})",
    ]


def test_a_failing_command_discards_everything(orders, sent):
    with capture() as captured, pytest.raises(RuntimeError, match="failed after enqueueing"):
        call_command("remind_orders", "--fail", stdout=io.StringIO())
    assert sent == [] and len(captured.discarded) == 3


class OwnDryRun(AirlockCommand):
    airlock_dry_run_flag = "--airlock-dry-run"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--dry-run", action="store_true", dest="own_dry_run")

    def handle(self, *args: Any, **options: Any) -> None:
        airlock.enqueue(tasks.notify_warehouse, 7)
        self.stdout.write(f"own dry run: {options['own_dry_run']}")


def test_a_command_with_its_own_dry_run_renames_airlocks(sent):
    out = io.StringIO()
    call_command(OwnDryRun(), "--dry-run", stdout=out)
    assert sent == [7] and out.getvalue() == "own dry run: True\n"
    out = io.StringIO()
    call_command(OwnDryRun(), "--airlock-dry-run", stdout=out)
    assert sent == [7]
    assert out.getvalue().splitlines()[1:] == [
        "airlock dry run: 1 intent(s) would have been sent",
        "  notify_warehouse(7)",
    ]


@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_command_scope_serves_scripts(orders, sent, dry_run):
    out = io.StringIO()
    with command_scope(dry_run=dry_run, stdout=out) as scope:
        for order in Order.objects.filter(sku="jam"):
            airlock.enqueue(tasks.send_confirmation, order.pk)
        assert sent == [] and airlock.get_current_scope() is scope
    assert sent == ([] if dry_run else ["jam"])
    listing = f"airlock dry run: 1 intent(s) would have been sent\n  send_confirmation({orders[1]})\n"
    assert out.getvalue() == (listing if dry_run else "")


def test_command_scope_discards_on_an_exception(orders, sent):
    with pytest.raises(KeyError), command_scope():
        airlock.enqueue(tasks.send_confirmation, orders[0])
        raise KeyError("stop")
    assert sent == []
