"""The examples in docs/ are executed, so they cannot rot."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(path for path in DOCS.glob("*.md") if ">>> " in path.read_text())


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_doc_examples_run(page):
    result = doctest.testfile(
        str(page),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        raise_on_error=False,
        verbose=False,
    )
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} example(s) failed in {page.name}; run python -m doctest -v {page}"


def test_getting_started_first_example_runs(capsys):
    """The first example of the getting-started page is a script (CI runs it against the built wheel too)."""
    page = DOCS / "getting_started.md"
    first = re.search(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)
    assert first is not None and ">>>" not in first.group(1)
    exec(compile(first.group(1), f"{page.name}, first python example", "exec"), {"__name__": "__example__"})
    assert capsys.readouterr().out == "email for order 7\n"


def test_the_readme_first_example_runs(capsys):
    """The README opens with a runnable example (CI also runs it against the built wheel)."""
    import re

    readme = (DOCS.parent / "README.md").read_text()
    first = re.findall(r"^```python\n(.*?)^```", readme, flags=re.S | re.M)[0]
    exec(compile(first, "README.md, first python example", "exec"), {"__name__": "__example__"})
    assert capsys.readouterr().out == "email for order 7\n"
