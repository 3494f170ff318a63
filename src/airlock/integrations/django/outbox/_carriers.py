"""Carriers: how a row names its task, finds it again, and publishes it with its id.

A row holds a task's *registered* name and the key of its carrier, never a
dotted path to import. Each carrier resolves names through its queue library's
own registry (Celery's ``app.tasks``, Dramatiq's broker, Huey's task registry),
or, for django-q2, ``django.tasks`` and anything else, through the explicit
``OUTBOX["TASKS"]`` list in settings. Each carrier also carries the row's intent
id to the consumer: Celery's ``task_id``, Dramatiq's ``message_id``, Huey's task
``id``, django-q2's task ``id``, and for ``django.tasks`` (whose backends choose
their own result ids) a keyword that ``airlock_task``'s wrapper takes off.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from airlock._context import hooks
from airlock._intent import Intent

__all__ = [
    "UNRESOLVED",
    "Carrier",
    "TaskNotFound",
    "carrier_for",
    "carrier_named",
    "is_unreachable",
    "register_carrier",
]


class TaskNotFound(LookupError):
    """This process cannot resolve a row's task name: its configuration's error, not the row's.

    Raised by :meth:`Carrier.resolve` (and for an unknown carrier). ``fix`` says
    the exact line to add; the relay releases the row for a relay that can
    resolve it, and reports the name once, with the fix.

    Args:
        problem: What is missing.
        fix: The line to add (a setting, an import), as a person would type it.

    .. versionadded:: 0.1
    """

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix


# What resolving a row's name raises when this process cannot find the task (a
# TaskNotFound, a carrier's own LookupError, an import inside a resolve): the
# relay's configuration, never the row's fault.
UNRESOLVED: tuple[type[BaseException], ...] = (LookupError, ImportError)

_OUTBOX = 'settings.AIRLOCK["OUTBOX"]'
_IMPORTS = f'{_OUTBOX}["IMPORTS"]'


def _module_of(name: str) -> str | None:
    """The module a task registered under a dotted path lives in (``shop.tasks`` of ``shop.tasks.send``)."""
    parts = name.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        return None
    return ".".join(parts[:-1])


def _add_import(name: str, where: str) -> str:
    """The fix for a name no registry has: import its module, unless it is imported already."""
    module = _module_of(name)
    if module is None:
        return f"add the module that defines {name!r} to {where}"
    if module in sys.modules:
        return (
            f'"{module}" is imported and registers no {name!r}: run the relay on the code its writers run '
            "(was the task renamed or removed?)"
        )
    return f'add "{module}" to {where}'


class Carrier:
    """The outbox's view of one executor. Subclass it to add a queue (``register_carrier``).

    .. versionadded:: 0.1
    """

    key = ""

    def name_of(self, task: Any) -> str:
        """The name the relay will resolve back to ``task``; ``TypeError`` if it has none."""
        raise NotImplementedError

    def resolve(self, name: str) -> Any:
        """The task registered as ``name``; ``LookupError`` if none is.

        Raise :class:`TaskNotFound` to tell the relay's operator the line to add.
        """
        raise NotImplementedError

    def stored_options(self, task: Any, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """The dispatch options as the row stores them (JSON); ``send`` gets them back as stored.

        A carrier overrides it to turn an option JSON cannot hold into one it can
        (and back, in ``send``), or to add what the task object itself carries.
        """
        return dict(options) if options else {}

    def send(self, task: Any, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any], intent_id: str) -> Any:
        """Publish one message whose id is ``intent_id``; raise on failure."""
        raise NotImplementedError

    def batch(self) -> contextlib.AbstractContextManager[Any]:
        """A block inside which many ``send`` calls share a connection, when the library can.

        A carrier may also buffer inside it: its block then yields a function
        that pushes what ``send`` buffered, and raises if that fails. A ``send``
        that returned means only "buffered" then: the outbox calls the function
        before it marks any of those rows sent, and a failure of it leaves all
        of them for the relay.
        """
        return contextlib.nullcontext()


def _not_registered(task: Any, carrier: str, how: str) -> TypeError:
    return TypeError(
        f"the airlock outbox stores a task by its registered name, and {task!r} is not a registered "
        f"{carrier} task; {how}"
    )


class CeleryCarrier(Carrier):
    key = "celery"

    def __init__(self) -> None:
        from airlock.integrations.executors.celery import buffered_publishing, celery_executor

        self._executor = celery_executor
        self._buffered = buffered_publishing

    def name_of(self, task: Any) -> str:
        name = getattr(task, "name", None)
        app = getattr(task, "app", None)
        if not isinstance(name, str) or app is None or app.tasks.get(name) is None:
            raise _not_registered(task, "Celery", "decorate it with @app.task (or @shared_task)")
        return name

    def resolve(self, name: str) -> Any:
        from celery import _state  # type: ignore[import-untyped]

        from airlock.integrations.django.outbox._discovery import project_package

        if not list(_state._get_active_apps()):
            # get_current_app() would make a default app, publishing to a broker nobody configured.
            package = project_package() or "your project package"
            raise TaskNotFound(
                f"no Celery app exists in the relay's process, so nothing registers {name!r}",
                f'the Celery app must be imported by your project package: add "from .celery import app as '
                f'celery_app" to {package}/__init__.py',
            )
        for app in [_state.get_current_app(), *_state._get_active_apps()]:
            task = app.tasks.get(name)
            if task is not None:
                return task
        raise TaskNotFound(
            f"no Celery app in this process has a task named {name!r}",
            _add_import(name, f"CELERY_IMPORTS (the app's imports), or to {_IMPORTS}"),
        )

    def send(self, task: Any, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any], intent_id: str) -> Any:
        # retry=False: a broker that is down fails at once; the relay owns retrying.
        options = {"retry": False, **options, "task_id": intent_id}
        return self._executor(Intent(task, tuple(args), kwargs, dispatch_options=options))

    def batch(self) -> contextlib.AbstractContextManager[Any]:
        # On Redis, a run's messages go in one pipeline (one round trip, one client).
        return self._buffered()


class DramatiqCarrier(Carrier):
    key = "dramatiq"

    def __init__(self) -> None:
        from airlock.integrations.executors import _deadline
        from airlock.integrations.executors.dramatiq import _bound

        self._bound = _bound
        self._deadline = _deadline

    def name_of(self, task: Any) -> str:
        name = getattr(task, "actor_name", None)
        broker = getattr(task, "broker", None)
        if not isinstance(name, str) or broker is None or broker.actors.get(name) is not task:
            raise _not_registered(task, "Dramatiq", "decorate it with @dramatiq.actor")
        return name

    def resolve(self, name: str) -> Any:
        import dramatiq

        from airlock.integrations.django.outbox._discovery import is_installed

        try:
            return dramatiq.get_broker().get_actor(name)
        except dramatiq.errors.ActorNotFound as error:
            fix = _add_import(name, f"{_IMPORTS} (the modules you pass to the dramatiq CLI)")
            if not is_installed("django_dramatiq"):
                fix = f'add "django_dramatiq" to INSTALLED_APPS (it finds task modules as rundramatiq does), or {fix}'
            raise TaskNotFound(f"the Dramatiq broker has no actor named {name!r}", fix) from error

    def send(self, task: Any, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any], intent_id: str) -> Any:
        # The executor's timeouts (pika's are 15 s per connection step, and
        # several attempts): the outbox sends past the executor, not through it.
        self._bound(task.broker, self._deadline.timeout_for(self._deadline.DEFAULT_PUBLISH_TIMEOUT))
        options = dict(options)
        delay = options.pop("delay", None)
        if hooks.inject_trace is not None:  # the publishing thread's dispatch span, as the executor does
            from airlock.integrations.executors.dramatiq import _with_trace

            options = dict(_with_trace(options) or {})
        message = task.message_with_options(args=tuple(args), kwargs=kwargs, **options).copy(message_id=intent_id)
        return task.broker.enqueue(message, delay=delay)


class HueyCarrier(Carrier):
    key = "huey"

    def __init__(self) -> None:
        self._seen: dict[int, Any] = {}  # the Huey instances this process enqueued for

    def name_of(self, task: Any) -> str:
        huey = getattr(task, "huey", None)
        task_class = getattr(task, "task_class", None)
        if huey is None or task_class is None:
            raise _not_registered(task, "Huey", "decorate it with @huey.task()")
        self._seen.setdefault(id(huey), huey)
        return str(huey._registry.task_to_string(task_class))

    def resolve(self, name: str) -> Any:
        instances = self.instances()
        for huey in instances:
            task_class = huey._registry._registry.get(name)
            if task_class is not None:
                return (huey, task_class)
        if not instances:
            raise TaskNotFound(
                f"the relay knows no Huey instance, so nothing registers {name!r}",
                f'add "huey.contrib.djhuey" to INSTALLED_APPS or list your Huey instance in {_OUTBOX}["HUEY"]',
            )
        raise TaskNotFound(f"no Huey instance the relay knows registers {name!r}", _add_import(name, _IMPORTS))

    def instances(self) -> list[Any]:
        """The Huey instances whose registries resolve names: ``OUTBOX["HUEY"]``, djhuey's, and those seen here."""
        from airlock.integrations.django.outbox._discovery import is_installed
        from airlock.integrations.django.outbox._options import outbox_options

        found = {id(huey): huey for huey in outbox_options().huey}
        if is_installed("huey.contrib.djhuey"):
            from huey.contrib import djhuey  # type: ignore[import-untyped]  # no hints

            found.setdefault(id(djhuey.HUEY), djhuey.HUEY)
        for key, huey in self._seen.items():
            found.setdefault(key, huey)
        return list(found.values())

    def send(self, task: Any, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any], intent_id: str) -> Any:
        if not isinstance(task, tuple):  # the fast path has the TaskWrapper itself
            kwargs = _with_huey_trace(task, kwargs)
            task = (task.huey, task.task_class)
        huey, task_class = task
        message = task_class(tuple(args), kwargs, **{**options, "id": intent_id})
        try:
            return huey.enqueue(message)
        except sqlite3.OperationalError as error:
            # SqliteHuey cannot open or lock its file: the broker is down, for every
            # message alike, so the relay pauses instead of spending this row's attempts.
            where = getattr(huey.storage, "filename", huey.name)
            raise ConnectionError(f"Huey's SQLite storage {where!r} cannot be used: {error}") from error


def _with_huey_trace(task: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The trace context for an ``airlock_task``, as ``huey_executor`` adds it (the relay has none to add)."""
    if hooks.inject_trace is None:
        return kwargs
    from airlock._propagation import inject
    from airlock.integrations.executors.huey import TASK_RUN_MARK, TRACE_KWARG

    if not getattr(getattr(task, "func", None), TASK_RUN_MARK, False):
        return kwargs
    carrier = inject({})
    return {**kwargs, TRACE_KWARG: carrier} if carrier else kwargs


class RegistryCarrier(Carrier):
    """Tasks named in ``OUTBOX["TASKS"]``, sent by a given executor (django-q2 by default)."""

    def __init__(self, key: str, executor: Callable[[Intent], Any]) -> None:
        self.key = key
        self._executor = executor

    def name_of(self, task: Any) -> str:
        from airlock.integrations.django.outbox._options import outbox_options

        for name, registered in outbox_options().tasks.items():
            if registered is task:
                return name
        path = _dotted_path(task)
        # The line to add, as a person would type it (a lambda or a nested function has none).
        fix = (
            f'add "{path}" to settings.AIRLOCK["OUTBOX"]["TASKS"]'
            if path is not None
            else 'make it a module-level function and add its dotted path to settings.AIRLOCK["OUTBOX"]["TASKS"]'
        )
        raise TypeError(
            f"the airlock outbox sends {task!r} through {self.key} only if it is listed by dotted path in "
            f"settings.AIRLOCK['OUTBOX']['TASKS'] (the relay resolves names only through that list); {fix}"
        )

    def resolve(self, name: str) -> Any:
        from airlock.integrations.django.outbox._options import outbox_options

        task = outbox_options().tasks.get(name)
        if task is None:
            raise TaskNotFound(f"{name!r} is not listed in {_OUTBOX}['TASKS']", f'add "{name}" to {_OUTBOX}["TASKS"]')
        return task

    def send(self, task: Any, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any], intent_id: str) -> Any:
        token = _django_q_id.set(intent_id)
        try:
            return self._executor(Intent(task, tuple(args), kwargs, dispatch_options=options or None))
        finally:
            _django_q_id.reset(token)


def _dotted_path(task: Any) -> str | None:
    """The path ``OUTBOX["TASKS"]`` would list ``task`` under, if another process can import it there."""
    module, qualname = getattr(task, "__module__", None), getattr(task, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(qualname, str)):
        return None
    if module == "__main__" or not qualname.isidentifier():
        return None  # a lambda, a nested function, a method, or the script's own: no path import_string finds
    return f"{module}.{qualname}"


# The id the next django-q2 package gets (its async_task has no argument for one).
_django_q_id: ContextVar[str | None] = ContextVar("airlock.outbox.django_q_id", default=None)


def _set_django_q_id(sender: Any, task: dict[str, Any], **extra: Any) -> None:
    intent_id = _django_q_id.get()
    if intent_id is not None:
        task["id"] = intent_id


def _django_q_carrier() -> Carrier:
    from django_q.signals import pre_enqueue  # type: ignore[import-untyped]

    from airlock.integrations.executors.django_q import django_q_executor

    pre_enqueue.connect(_set_django_q_id, dispatch_uid="airlock.outbox.django_q_id")
    return RegistryCarrier("django_q", django_q_executor)


class DjangoTasksCarrier(Carrier):
    """``django.tasks`` tasks listed in ``OUTBOX["TASKS"]``, sent by ``django_tasks_executor``.

    A row names the task by the dotted path it is listed under, and the relay
    resolves it only through that list. Not through ``Task.module_path`` alone:
    importing a path read from the database would let a row run any code; and not
    through the tasks a process happens to have imported: the relay is another
    process, so what the web process imported says nothing about what the relay
    can find, and a row it could not resolve would only fail there, after the
    commit. The settings are the one registry both processes share, which is what
    makes refusing at enqueue honest.
    """

    key = "django_tasks"
    _FIELDS = ("priority", "queue_name", "backend", "run_after")

    def __init__(self) -> None:
        # The executor first: before Django 6 its ImportError says what to install.
        from airlock.integrations.executors.django_tasks import INTENT_KWARG, TASK_RUN_MARK, django_tasks_executor

        from django.tasks import Task  # type: ignore[import-untyped]  # isort: skip

        self._task_class = Task
        self._executor = django_tasks_executor
        self._intent_kwarg = INTENT_KWARG
        self._run_mark = TASK_RUN_MARK
        # (the options object it was built from, function -> (listed name, listed Task))
        self._index: tuple[Any, dict[Any, tuple[str, Any]]] = (None, {})

    def _listed(self) -> dict[Any, tuple[str, Any]]:
        from airlock.integrations.django.outbox._options import outbox_options

        options = outbox_options()
        built_from, index = self._index
        if built_from is not options:
            index = {}
            for name, listed in options.tasks.items():
                if isinstance(listed, self._task_class):
                    index.setdefault(listed.func, (name, listed))
            self._index = (options, index)
        return index

    def name_of(self, task: Any) -> str:
        if not isinstance(task, self._task_class):
            raise TypeError(
                f"the airlock outbox sends {task!r} through django_tasks_executor only if it is a django.tasks "
                "Task (the executor would call a plain function in this process, which a row cannot defer); "
                "decorate it with @django.tasks.task and list it in settings.AIRLOCK['OUTBOX']['TASKS'], or "
                "enqueue it in a scope with outbox=False"
            )
        found = self._listed().get(task.func)
        if found is None:
            raise TypeError(
                f"the airlock outbox sends the django.tasks task {task.module_path} only if it is listed in "
                f"settings.AIRLOCK['OUTBOX']['TASKS'] (the relay resolves names only through that list, and never "
                f"imports a path read from the database); add {task.module_path!r} to it"
            )
        return found[0]

    def resolve(self, name: str) -> Any:
        from airlock.integrations.django.outbox._options import outbox_options

        task = outbox_options().tasks.get(name)
        if not isinstance(task, self._task_class):
            raise TaskNotFound(
                f"{name!r} is not a django.tasks Task listed in {_OUTBOX}['TASKS']",
                f'add "{name}" to {_OUTBOX}["TASKS"]',
            )
        return task

    def stored_options(self, task: Any, options: Mapping[str, Any] | None) -> dict[str, Any]:
        stored = dict(options) if options else {}
        found = self._listed().get(getattr(task, "func", None))
        if found is not None:
            # The relay sends the listed Task: keep what task.using(...) changed on this one.
            listed = found[1]
            for name in self._FIELDS:
                value = getattr(task, name)
                if name not in stored and value != getattr(listed, name):
                    stored[name] = value
        run_after = stored.get("run_after")
        if isinstance(run_after, datetime):
            stored["run_after"] = run_after.isoformat()  # JSON has no datetime; send() parses it back
        return stored

    def send(self, task: Any, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any], intent_id: str) -> Any:
        run_after = options.get("run_after")
        if isinstance(run_after, str):
            options = {**options, "run_after": datetime.fromisoformat(run_after)}
        if getattr(task.func, self._run_mark, False):
            kwargs = {**kwargs, self._intent_kwarg: intent_id}
        return self._executor(Intent(task, tuple(args), kwargs, dispatch_options=options or None))


# executor (module, name) -> carrier factory; built lazily so nothing imports a queue
# library the project does not use.
_FACTORIES: dict[tuple[str, str], tuple[str, Callable[[], Carrier]]] = {
    ("airlock.integrations.executors.celery", "celery_executor"): ("celery", CeleryCarrier),
    ("airlock.integrations.executors.dramatiq", "dramatiq_executor"): ("dramatiq", DramatiqCarrier),
    ("airlock.integrations.executors.huey", "huey_executor"): ("huey", HueyCarrier),
    ("airlock.integrations.executors.django_q", "django_q_executor"): ("django_q", _django_q_carrier),
    ("airlock.integrations.executors.django_tasks", "django_tasks_executor"): ("django_tasks", DjangoTasksCarrier),
}
# id(executor) -> (executor, carrier): the executor is kept, so its id cannot be reused.
_by_executor: dict[int, tuple[Callable[[Intent], Any], Carrier]] = {}
_by_key: dict[str, Carrier] = {}


def register_carrier(executor: Callable[[Intent], Any], carrier: Carrier) -> None:
    """Let the outbox carry intents of ``executor``, through ``carrier``.

    .. versionadded:: 0.1
    """
    _by_executor[id(executor)] = (executor, carrier)
    _by_key[carrier.key] = carrier


def carrier_for(executor: Callable[[Intent], Any]) -> Carrier:
    """The carrier of an executor; ``TypeError`` naming the supported ones otherwise."""
    known = _by_executor.get(id(executor))
    if known is not None and known[0] is executor:
        return known[1]
    found = _FACTORIES.get((getattr(executor, "__module__", ""), getattr(executor, "__name__", "")))
    if found is None:
        raise TypeError(
            f"the airlock outbox cannot carry intents of the executor {executor!r}: it needs a queue "
            f"executor ({', '.join(key for key, _ in _FACTORIES.values())}), or a Carrier registered "
            "with airlock.integrations.django.outbox.register_carrier(); turn the outbox off for this "
            "scope with outbox=False"
        )
    carrier = carrier_named(found[0])
    _by_executor[id(executor)] = (executor, carrier)
    return carrier


def carrier_named(key: str) -> Carrier:
    """The carrier a row names; ``LookupError`` for an unknown key."""
    carrier = _by_key.get(key)
    if carrier is None:
        factories = {name: factory for name, factory in _FACTORIES.values()}
        if key not in factories:
            raise TaskNotFound(
                f"no outbox carrier is called {key!r} in this process (known: {', '.join(sorted(factories))})",
                f"register it in the relay's process too: call register_carrier() in a module listed in {_IMPORTS}",
            )
        carrier = _by_key[key] = factories[key]()
    return carrier


def _connection_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (
        ("kombu.exceptions", "OperationalError"),
        ("redis.exceptions", "ConnectionError"),
        ("redis.exceptions", "TimeoutError"),
        ("dramatiq.errors", "BrokerConnectionError"),
        ("amqp.exceptions", "ConnectionError"),
        ("pika.exceptions", "AMQPConnectionError"),
        # a step of connecting timed out (a frozen RabbitMQ); pika raises it bare
        ("pika.adapters.utils.connection_workflow", "AMQPConnectorException"),
    ):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(getattr(__import__(module, fromlist=[name]), name))
    return tuple(found)


_CONNECTION_ERRORS: tuple[type[BaseException], ...] | None = None


def is_unreachable(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the broker cannot be reached.

    A publisher-confirm nack is not: py-amqp raises ``MessageNacked`` as a
    connection error (kombu wraps it in ``OperationalError``), but the broker
    answered and refused that one message, which must spend an attempt (and be
    dead-lettered in the end) rather than pause the relay forever.
    """
    global _CONNECTION_ERRORS
    if _CONNECTION_ERRORS is None:
        _CONNECTION_ERRORS = _connection_errors()
    seen: set[int] = set()
    found = False
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if type(current).__name__ == "MessageNacked":
            return False
        found = found or isinstance(current, _CONNECTION_ERRORS)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return found


@contextlib.contextmanager
def batches(carriers: Iterator[Carrier]) -> Iterator[dict[int, Callable[[], None]]]:
    """Open every carrier's ``batch()`` block around a publish of many rows.

    Yields the ``flush`` of each carrier that buffers (by ``id()`` of the carrier).
    """
    flushes: dict[int, Callable[[], None]] = {}
    with contextlib.ExitStack() as stack:
        for carrier in carriers:
            flush = stack.enter_context(carrier.batch())
            if callable(flush):
                flushes[id(carrier)] = flush
        yield flushes
