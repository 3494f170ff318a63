"""A griffe extension for the API reference: the docstrings' reST bits, read as Markdown.

The docstrings follow the Python convention of ``.. versionadded::`` and
``:class:`~airlock.Scope``` roles, which the Google-style parser shows raw. This
turns the directive into a sentence and each role into inline code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_VERSION = re.compile(r"^(\s*)\.\. version(added|changed):: *(\S+)", re.M)
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


def _version(match: re.Match[str]) -> str:
    what = "Added" if match.group(2) == "added" else "Changed"
    return f"{match.group(1)}*{what} in version {match.group(3)}.*"


class RstToMarkdown(griffe.Extension):
    """Rewrite reST directives and roles in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_role, _VERSION.sub(_version, obj.docstring.value))
