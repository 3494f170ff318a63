"""airlock's lint rule on real-looking code: what it reports, what it says, and what it leaves alone.

The samples in tests/lint_samples/ mark each line that must be reported with
``# expect: AIRnnn``; every other line must not be.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.lint import CODES, check_file, check_source, main

SAMPLES = Path(__file__).resolve().parent / "lint_samples"
ROOT = SAMPLES.parent.parent


def _expected(path: Path) -> set[tuple[int, str]]:
    expected = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if match := re.search(r"# expect: (.*)$", line):
            expected |= {(number, code) for code in match.group(1).split()}
    return expected


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_reports_exactly_the_expected_lines(sample: Path) -> None:
    found = {(finding.line, finding.code) for finding in check_file(sample)}
    assert found == _expected(sample)


def test_every_code_is_exercised_by_a_sample() -> None:
    exercised = {code for sample in SAMPLES.glob("*.py") for _, code in _expected(sample)}
    assert exercised == set(CODES)


def test_the_false_positives_sample_has_lookalikes_of_every_method() -> None:
    text = (SAMPLES / "not_tasks.py").read_text()
    for lookalike in ["sock.send(", "sock.sendall(", "order_paid.send(sender=", "user_logged_in.send(", "gen.send("]:
        assert lookalike in text
    assert check_file(SAMPLES / "not_tasks.py") == []


def _messages(source: str) -> list[str]:
    return [f"{f.code} {f.message}" for f in check_source(source)]


@pytest.mark.parametrize(
    ("call", "suggestion"),
    [
        ("send_email.delay(7, template='x')", "airlock.enqueue(send_email, 7, template='x')"),
        (
            "send_email.apply_async((7,), {'a': 1}, countdown=60)",
            "airlock.enqueue(send_email, 7, a=1, _dispatch_options={'countdown': 60})",
        ),
        ("send_email.apply_async(args, kw)", "airlock.enqueue(send_email, *args, **kw)"),
        (
            "send_email.send_with_options(args=(7,), kwargs={'b': 2}, delay=500)",
            "airlock.enqueue(send_email, 7, b=2, _dispatch_options={'delay': 500})",
        ),
        ("send_email.schedule((7,), delay=30)", "airlock.enqueue(send_email, 7, _dispatch_options={'delay': 30})"),
        ("send_email.enqueue(7, b=2)", "airlock.enqueue(send_email, 7, b=2)"),
        (
            "send_email.using(priority=5).enqueue(7)",
            "airlock.enqueue(send_email, 7, _dispatch_options={'priority': 5})",
        ),
        ("send_email.delay_on_commit(7)", "airlock.enqueue(send_email, 7)"),
        ("transaction.on_commit(lambda: send_email.delay(7))", "airlock.enqueue(send_email, 7)"),
        ("on_commit(partial(send_email.enqueue, 7, b=2))", "airlock.enqueue(send_email, 7, b=2)"),
    ],
    ids=[
        "delay",
        "apply_async",
        "apply_async-variables",
        "send_with_options",
        "schedule",
        "enqueue",
        "enqueue-using",
        "delay_on_commit",
        "on_commit-lambda",
        "on_commit-partial",
    ],
)
def test_each_finding_shows_the_line_to_write(call: str, suggestion: str) -> None:
    source = f"from shop.tasks import send_email\n{call}\n"
    [message] = _messages(source)
    assert message.endswith(f"write: {suggestion}")
    assert call.split("(")[0].split(".")[-1] in message  # it names the call it found


def test_model_instance_finding_suggests_the_primary_key() -> None:
    source = (
        "import airlock\n"
        "def f(pk):\n"
        "    order = Order.objects.get(pk=pk)\n"
        "    airlock.enqueue(index, order, by=request.user)\n"
    )
    [message] = _messages(source)
    assert message.startswith("AIR020 order, request.user looks like a model instance")
    assert message.endswith("airlock.enqueue(index, order.pk, by=request.user.pk)")


@pytest.mark.parametrize(
    ("call", "code", "suggestion"),
    [
        (
            "send_email.delay(order, by=request.user)",
            "AIR001",
            "airlock.enqueue(send_email, order.pk, by=request.user.pk)",
        ),
        (
            "send_email.apply_async((order,), countdown=5)",
            "AIR002",
            "airlock.enqueue(send_email, order.pk, _dispatch_options={'countdown': 5})",
        ),
        ("transaction.on_commit(lambda: send_email.delay(order))", "AIR010", "airlock.enqueue(send_email, order.pk)"),
        ("send_email.delay(order.pk)", "AIR001", "airlock.enqueue(send_email, order.pk)"),
    ],
    ids=["delay", "apply_async", "on_commit", "already-the-pk"],
)
def test_the_bypass_suggestion_passes_the_primary_key_that_air020_asks_for(
    call: str, code: str, suggestion: str
) -> None:
    """AIR001 and AIR020 on one line suggest the same fix, not one that AIR020 would report again."""
    source = f"from shop.tasks import send_email\ndef f(pk):\n    order = Order.objects.get(pk=pk)\n    {call}\n"
    messages = _messages(source)
    [bypass] = [message for message in messages if message.startswith(code)]
    assert bypass.endswith(f"write: {suggestion}")
    assert [m.split()[0] for m in messages] == ([code] if call.endswith(".pk)") else [code, "AIR020"])
    assert _messages(f"from shop.tasks import send_email\ndef f(order):\n    {suggestion}\n") == []


NOQA_SAMPLE = """\
from shop.tasks import t


def f(pk):
    order = O.objects.get(pk=pk)
    t.delay(order)  {comment}
"""


@pytest.mark.parametrize(
    ("comment", "left"),
    [
        ("", ["AIR001", "AIR020"]),
        ("# noqa", []),
        ("# noqa: AIR020", ["AIR001"]),
        ("# NOQA:AIR001,AIR020", []),
        ("# noqa: E501", ["AIR001", "AIR020"]),
    ],
    ids=["none", "bare", "one-code", "two-codes", "other-code"],
)
def test_noqa_silences_only_the_codes_it_names(comment: str, left: list[str]) -> None:
    assert [f.code for f in check_source(NOQA_SAMPLE.format(comment=comment))] == left


def test_cli_exit_codes_and_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(SAMPLES / "not_tasks.py")]) == 0
    assert capsys.readouterr().out == ""
    assert main([str(SAMPLES)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == sum(len(_expected(p)) for p in SAMPLES.glob("*.py"))
    assert any(
        re.match(r".*celery_views\.py:20:\d+: AIR001 send_confirmation\.delay\(order\.id\) sends at once", line)
        for line in out
    )


def test_cli_as_a_module_without_flake8(tmp_path: Path) -> None:
    """``python -m airlock.lint`` runs with flake8 unimportable, and exits 1 on findings."""
    bad = tmp_path / "bad.py"
    bad.write_text("from app.tasks import ping\nping.delay()\n")
    code = (
        "import sys, runpy; sys.modules['flake8'] = None; sys.argv = ['airlock.lint', *sys.argv[1:]]; "
        "runpy.run_module('airlock.lint', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stderr
    assert (
        f"{bad}:2:1: AIR001 ping.delay() sends at once, bypassing airlock's scope; write: airlock.enqueue(ping)"
        in result.stdout
    )
    bad.write_text("ping = 1\n")
    assert subprocess.run([sys.executable, "-m", "airlock.lint", str(bad)], check=False).returncode == 0


def test_cli_reports_a_file_it_cannot_parse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")
    assert main([str(broken)]) == 1
    assert "cannot parse" in capsys.readouterr().err


def test_flake8_plugin_entry_point() -> None:
    """flake8 finds the plugin through its entry point and applies noqa itself."""
    pytest.importorskip("flake8")
    sample = SAMPLES / "celery_views.py"
    result = subprocess.run(
        [sys.executable, "-m", "flake8", "--select", "AIR", "--isolated", str(sample)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    found = {(int(line.split(":")[1]), line.split()[1]) for line in result.stdout.splitlines()}
    assert found == _expected(sample)


def test_pre_commit_hook_definition() -> None:
    text = (ROOT / ".pre-commit-hooks.yaml").read_text()
    assert "id: airlock-lint" in text
    assert "entry: python -m airlock.lint" in text
    assert "language: python" in text
    assert "types: [python]" in text
