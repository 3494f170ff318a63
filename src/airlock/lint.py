"""A lint rule for code bases moving to airlock: find the task calls that bypass it.

Use it as a flake8 plugin (installed with the package, codes ``AIR``) or on its
own, with no dependency but the standard library::

    python -m airlock.lint src/            # exits 1 when it finds something

Every finding says what to write instead. ``# noqa: AIR001`` (or a bare
``# noqa``) on the line silences it.

========  =============================================================
code      what it finds
========  =============================================================
AIR001    ``task.delay(...)`` (Celery)
AIR002    ``task.apply_async(...)`` (Celery)
AIR003    ``actor.send(...)`` (Dramatiq)
AIR004    ``actor.send_with_options(...)`` (Dramatiq)
AIR005    ``task.schedule(...)`` (Huey)
AIR006    ``task.enqueue(...)`` (Django Tasks, ``django.tasks``)
AIR007    ``task.delay_on_commit(...)`` / ``apply_async_on_commit`` (Celery)
AIR010    ``transaction.on_commit(lambda: task.delay(...))`` and
          ``on_commit(partial(task.enqueue, ...))``
AIR020    a Django model instance passed as a task argument
========  =============================================================

How sure it is. ``.delay()``, ``.apply_async()``, ``.send_with_options()`` and
``delay_on_commit`` are distinctive names, so any call of them is reported, except
``pool.apply_async(...)`` of :mod:`multiprocessing`. ``.send()``, ``.schedule()``
and ``.enqueue()`` are everywhere (sockets, signals, generators, schedulers, other
queues), so they are reported only when the object is known to be a task: a
function of the same file decorated as one (``@app.task``, ``@shared_task``,
``@dramatiq.actor``, ``@huey.task()``, ``@db_task``, ``@task``, ...), or a name
imported from a module called ``tasks``, ``actors`` or ``jobs``. A ``.send()``
with a ``sender=`` argument is a Django signal and never reported.

AIR020 is a heuristic that stays on the safe side: it reports ``self`` inside a
method of a class deriving from ``models.Model`` (or ``Model``), ``request.user``,
and a local name assigned from ``X.objects.get/create/get_or_create/first/last/
latest/earliest(...)`` or ``get_object_or_404(...)`` in the same function, when
passed to ``airlock.enqueue`` or to one of the calls above. A model instance
cannot cross a queue safely (it is pickled stale or not at all): pass its ``pk``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import ast
import re
import sys
import tokenize
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["CODES", "Finding", "Flake8Checker", "check_file", "check_source", "main"]

CODES = {
    "AIR001": "delay",
    "AIR002": "apply_async",
    "AIR003": "send",
    "AIR004": "send_with_options",
    "AIR005": "schedule",
    "AIR006": "enqueue",
    "AIR007": "delay_on_commit",
    "AIR010": "on_commit",
    "AIR020": "model instance",
}

_METHOD_CODES = {
    "delay": "AIR001",
    "apply_async": "AIR002",
    "send": "AIR003",
    "send_with_options": "AIR004",
    "schedule": "AIR005",
    "enqueue": "AIR006",
    "delay_on_commit": "AIR007",
    "apply_async_on_commit": "AIR007",
}
# Names that are (nearly) always a task queue's: any receiver is reported.
_DISTINCTIVE = frozenset({"delay", "apply_async", "send_with_options", "delay_on_commit", "apply_async_on_commit"})
_TASK_DECORATORS = frozenset(
    {"task", "shared_task", "actor", "db_task", "periodic_task", "db_periodic_task", "lock_task"}
)
_TASK_MODULES = re.compile(r"(^|[._])(tasks|actors|jobs)$")
_ORM_GETTERS = frozenset({"get", "create", "get_or_create", "update_or_create", "first", "last", "latest", "earliest"})
_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?", re.IGNORECASE)
# How each bypassing method spells its options, so the suggestion keeps them.
_POSITIONAL_PACKS = {"apply_async": True, "apply_async_on_commit": True, "send_with_options": False, "schedule": True}


@dataclass(frozen=True)
class Finding:
    """One reported call: where, its code, and the message with the line to write."""

    line: int
    col: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.line}:{self.col + 1}: {self.code} {self.message}"


def check_source(source: str, filename: str = "<source>") -> list[Finding]:
    """Lint Python source text and return its findings, ``# noqa`` already applied."""
    tree = ast.parse(source, filename)
    findings = _Visitor(tree).run()
    silenced = _noqa_lines(source)
    return [f for f in findings if not _is_silenced(f, silenced)]


def check_file(path: str | Path) -> list[Finding]:
    """Lint one file (read with its declared encoding)."""
    with tokenize.open(path) as handle:
        return check_source(handle.read(), str(path))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m airlock.lint PATH...``: print the findings, exit 1 if there are any."""
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths or any(p in {"-h", "--help"} for p in paths):
        print("usage: python -m airlock.lint PATH [PATH ...]  (files or directories)", file=sys.stderr)
        return 0 if paths else 2
    count = 0
    for path in _python_files(paths):
        try:
            findings = check_file(path)
        except SyntaxError as error:
            print(f"{path}:{error.lineno}: cannot parse: {error.msg}", file=sys.stderr)
            count += 1
            continue
        for finding in findings:
            print(f"{path}:{finding}")
        count += len(findings)
    return 1 if count else 0


class Flake8Checker:
    """The flake8 plugin (entry point ``flake8.extension``, codes ``AIR``)."""

    name = "airlock"
    version = "0.1.0"
    off_by_default: ClassVar[bool] = False

    def __init__(self, tree: ast.AST, filename: str = "") -> None:
        self._tree = tree

    def run(self) -> Iterator[tuple[int, int, str, type[Any]]]:
        # flake8 applies the noqa comments itself.
        for finding in _Visitor(self._tree).run():
            yield finding.line, finding.col, f"{finding.code} {finding.message}", type(self)


# -- the checks ---------------------------------------------------------------


class _Visitor(ast.NodeVisitor):
    def __init__(self, tree: ast.AST) -> None:
        self._tree = tree
        self._findings: list[Finding] = []
        self._tasks = _known_tasks(tree)
        self._functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        self._enqueue_names = _airlock_enqueue_names(tree)
        self._skip: set[int] = set()  # calls already reported as part of an on_commit
        self._instances: list[set[str]] = [set()]  # model instances per function
        self._model_class: list[bool] = [False]

    def run(self) -> list[Finding]:
        self.visit(self._tree)
        return sorted(self._findings, key=lambda f: (f.line, f.col, f.code))

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._model_class.append(any(_last_name(base) == "Model" for base in node.bases))
        self.generic_visit(node)
        self._model_class.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        instances = {"self"} if self._model_class[-1] else set()
        instances |= _orm_assignments(node)
        self._instances.append(instances)
        self._model_class.append(False)
        self.generic_visit(node)
        self._model_class.pop()
        self._instances.pop()

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.visit_FunctionDef(node)

    def visit_Call(self, node: ast.Call) -> None:
        if id(node) not in self._skip:
            if not self._check_on_commit(node):
                self._check_bypass(node)
            self._check_airlock_enqueue(node)
        self.generic_visit(node)

    def _check_bypass(self, node: ast.Call) -> None:
        bypass = self._bypass(node)
        if bypass is None:
            return
        method, task = bypass
        code = _METHOD_CODES[method]
        call = ast.unparse(node)
        what = (
            "waits for the commit by hand; an airlock DjangoScope already does"
            if code == "AIR007"
            else "sends at once, bypassing airlock's scope"
        )
        # One line to write for both findings: with AIR020 on the same call, pass the primary key.
        primary_keys = self._model_instances(node, method)
        self._add(node, code, f"{call} {what}; write: {_suggestion(node, method, task, primary_keys)}")
        self._check_arguments(node, task, method)

    def _check_on_commit(self, node: ast.Call) -> bool:
        if _last_name(node.func) != "on_commit" or not node.args:
            return False
        callback = node.args[0]
        inner: ast.Call | None = None
        if isinstance(callback, ast.Lambda) and isinstance(callback.body, ast.Call):
            inner = callback.body
        elif isinstance(callback, ast.Call) and _last_name(callback.func) == "partial" and callback.args:
            target = callback.args[0]
            inner = ast.Call(func=target, args=callback.args[1:], keywords=callback.keywords)
            ast.copy_location(inner, callback)
        if inner is None or (bypass := self._bypass(inner)) is None:
            return False
        method, task = bypass
        self._skip.add(id(callback.body if isinstance(callback, ast.Lambda) else callback))
        primary_keys = self._model_instances(inner, method)
        self._add(
            node,
            "AIR010",
            f"{ast.unparse(node)} waits for the commit by hand; an airlock DjangoScope already does, "
            f"and discards on rollback; write: {_suggestion(inner, method, task, primary_keys)}",
        )
        self._check_arguments(inner, task, method)
        return True

    def _check_airlock_enqueue(self, node: ast.Call) -> None:
        if not self._is_airlock_enqueue(node.func) or not node.args:
            return
        self._check_arguments(node, node.args[0], None, first=1)

    def _check_arguments(self, node: ast.Call, task: ast.expr, method: str | None, first: int = 0) -> None:
        if method is None:
            args, kwargs, options = node.args[first:], _kwargs(node), dict[str, ast.expr]()
        else:
            args, kwargs, options = _split(node, method)
        instances = self._model_instances_in(args, kwargs)
        if not instances:
            return
        fix = _enqueue_line(task, args, kwargs, options, primary_keys=set(instances))
        names = ", ".join(instances)
        self._add(
            node,
            "AIR020",
            f"{names} looks like a model instance passed to a task; pass its primary key and load it in the "
            f"task: {fix}",
        )

    def _model_instances(self, node: ast.Call, method: str) -> set[str]:
        """The arguments of a bypassing call that AIR020 reports, as source text."""
        args, kwargs, _ = _split(node, method)
        return set(self._model_instances_in(args, kwargs))

    def _model_instances_in(self, args: Sequence[ast.expr], kwargs: dict[str | None, ast.expr]) -> list[str]:
        return [ast.unparse(v) for v in [*args, *kwargs.values()] if self._is_model_instance(v)]

    def _is_model_instance(self, value: ast.expr) -> bool:
        if isinstance(value, ast.Name):
            return value.id in self._instances[-1]
        return ast.unparse(value) == "request.user"

    def _bypass(self, node: ast.Call) -> tuple[str, ast.expr] | None:
        """``(method, task)`` when the call sends a task directly."""
        if not isinstance(node.func, ast.Attribute):
            return None
        method, receiver = node.func.attr, node.func.value
        if method not in _METHOD_CODES:
            return None
        # Django Tasks: task.using(queue_name=...).enqueue(...)
        if method == "enqueue" and isinstance(receiver, ast.Call) and _last_name(receiver.func) == "using":
            if isinstance(receiver.func, ast.Attribute):
                receiver = receiver.func.value
        if not isinstance(receiver, ast.Name | ast.Attribute):
            return None  # a canvas (``chain(...).delay()``) or a call's result: not judged
        if self._is_airlock_enqueue(node.func):
            return None
        if _dotted(receiver) in self._tasks:
            if method == "send" and any(k.arg == "sender" for k in node.keywords):
                return None  # Signal.send(sender=...): a Django signal, even in a tasks module
            return method, receiver
        if method in _DISTINCTIVE and not (method == "apply_async" and self._looks_like_pool(receiver, node)):
            return method, receiver
        return None

    def _looks_like_pool(self, receiver: ast.expr, node: ast.Call) -> bool:
        # multiprocessing's Pool.apply_async(func, args): its first argument is the callable.
        if "pool" in _dotted(receiver).lower():
            return True
        return bool(node.args) and (isinstance(node.args[0], ast.Lambda) or _dotted(node.args[0]) in self._functions)

    def _is_airlock_enqueue(self, func: ast.expr) -> bool:
        return _dotted(func) in self._enqueue_names

    def _add(self, node: ast.expr, code: str, message: str) -> None:
        self._findings.append(Finding(node.lineno, node.col_offset, code, message))


def _suggestion(node: ast.Call, method: str, task: ast.expr, primary_keys: set[str]) -> str:
    return _enqueue_line(task, *_split(node, method), primary_keys=primary_keys)


def _enqueue_line(
    task: ast.expr,
    args: Sequence[ast.expr],
    kwargs: dict[str | None, ast.expr],
    options: dict[str, ast.expr],
    primary_keys: set[str] = frozenset(),  # type: ignore[assignment]  # read only
) -> str:
    """The ``airlock.enqueue(...)`` line that does what a bypassing call did."""

    def shown(value: ast.expr) -> str:
        text = ast.unparse(value)
        return f"{text}.pk" if text in primary_keys else text

    parts = [ast.unparse(task), *(shown(a) for a in args)]
    parts += [f"**{shown(v)}" if k is None else f"{k}={shown(v)}" for k, v in kwargs.items()]
    if options:
        listed = ", ".join(f"{k!r}: {ast.unparse(v)}" for k, v in options.items())
        parts.append(f"_dispatch_options={{{listed}}}")
    return f"airlock.enqueue({', '.join(parts)})"


def _split(node: ast.Call, method: str) -> tuple[list[ast.expr], dict[str | None, ast.expr], dict[str, ast.expr]]:
    """The task's positional and keyword arguments, and the queue options, of a bypassing call."""
    if method not in _POSITIONAL_PACKS:
        return list(node.args), _kwargs(node), _using_options(node)
    keywords = _kwargs(node)
    packed_args = keywords.pop("args", None)
    packed_kwargs = keywords.pop("kwargs", None)
    if _POSITIONAL_PACKS[method]:
        if node.args:
            packed_args = node.args[0]
        if len(node.args) > 1:
            packed_kwargs = node.args[1]
    args: list[ast.expr] = []
    if isinstance(packed_args, ast.Tuple | ast.List):
        args = list(packed_args.elts)
    elif packed_args is not None:
        args = [ast.Starred(value=packed_args, ctx=ast.Load())]
    kwargs: dict[str | None, ast.expr] = {}
    if isinstance(packed_kwargs, ast.Dict) and all(isinstance(k, ast.Constant) for k in packed_kwargs.keys):
        kwargs = {
            str(k.value): v
            for k, v in zip(packed_kwargs.keys, packed_kwargs.values, strict=True)
            if isinstance(k, ast.Constant)
        }
    elif packed_kwargs is not None:
        kwargs = {None: packed_kwargs}
    options = {k: v for k, v in keywords.items() if k is not None}
    return args, kwargs, options


def _using_options(node: ast.Call) -> dict[str, ast.expr]:
    # Django Tasks: task.using(queue_name=..., priority=...).enqueue(...)
    receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
    if isinstance(receiver, ast.Call) and _last_name(receiver.func) == "using":
        return {k: v for k, v in _kwargs(receiver).items() if k is not None}
    return {}


def _kwargs(node: ast.Call) -> dict[str | None, ast.expr]:
    return {k.arg: k.value for k in node.keywords}


def _known_tasks(tree: ast.AST) -> set[str]:
    """Names this file knows are tasks: decorated here, or imported from a tasks module.

    A name ending in "." is a module of tasks (``from shop import tasks``,
    ``import shop.tasks``): every attribute of it counts.
    """
    known: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if _last_name(target) in _TASK_DECORATORS:
                    known.add(node.name)
        elif isinstance(node, ast.ImportFrom):
            from_tasks = bool(node.module and _TASK_MODULES.search(node.module))
            for alias in node.names:
                name = alias.asname or alias.name
                if from_tasks:
                    known.add(name)
                elif _TASK_MODULES.search(alias.name):
                    known.add(f"{name}.")
        elif isinstance(node, ast.Import):
            known.update(f"{a.asname or a.name}." for a in node.names if _TASK_MODULES.search(a.name))
    return _expand_modules(known, tree)


def _expand_modules(known: set[str], tree: ast.AST) -> set[str]:
    # A module prefix ("tasks.") makes every attribute of it a task: tasks.send_email.
    prefixes = tuple(name for name in known if name.endswith("."))
    if not prefixes:
        return known
    attributes = {_dotted(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    return known | {name for name in attributes if name.startswith(prefixes)}


def _airlock_enqueue_names(tree: ast.AST) -> set[str]:
    names = {"airlock.enqueue"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "airlock":
            names.update(a.asname or a.name for a in node.names if a.name == "enqueue")
        elif isinstance(node, ast.Import):
            names.update(f"{a.asname}.enqueue" for a in node.names if a.name == "airlock" and a.asname)
    return names


def _orm_assignments(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Local names assigned from an ORM query that returns one instance."""
    names: set[str] = set()
    for node in ast.walk(function):
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Call):
            continue
        func = node.value.func
        method = _last_name(func)
        is_query = (
            isinstance(func, ast.Attribute) and method in _ORM_GETTERS and ".objects" in f".{_dotted(func.value)}"
        )
        if is_query or method == "get_object_or_404":
            for target in node.targets:
                if isinstance(target, ast.Name) and method not in {"get_or_create", "update_or_create"}:
                    names.add(target.id)
                elif isinstance(target, ast.Tuple) and target.elts and isinstance(target.elts[0], ast.Name):
                    names.add(target.elts[0].id)  # obj, created = X.objects.get_or_create(...)
    return names


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _last_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _noqa_lines(source: str) -> dict[int, frozenset[str] | None]:
    """Line -> silenced codes (``None``: all), from the comments of the source."""
    silenced: dict[int, frozenset[str] | None] = {}
    lines = iter(source.splitlines(keepends=True))
    try:
        for token in tokenize.generate_tokens(lambda: next(lines, "")):
            if token.type == tokenize.COMMENT and (match := _NOQA.search(token.string)):
                codes = match.group("codes")
                silenced[token.start[0]] = None if codes is None else frozenset(re.split(r"[,\s]+", codes.upper()))
    except tokenize.TokenError:
        pass
    return silenced


def _is_silenced(finding: Finding, silenced: dict[int, frozenset[str] | None]) -> bool:
    if finding.line not in silenced:
        return False
    codes = silenced[finding.line]
    return codes is None or finding.code in codes


def _python_files(paths: Iterable[str]) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if not any(part.startswith(".") for part in p.parts))
        else:
            yield path


if __name__ == "__main__":
    sys.exit(main())
