"""``AirlockMiddleware``: one scope per request, for WSGI and ASGI stacks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase  # type: ignore[import-untyped]  # Django ships no type hints

import airlock
from airlock import Scope
from airlock.integrations.django._after_response import NO_WINDOW, response_window, run_after
from airlock.integrations.django._settings import configure_without_app
from airlock.integrations.django.checks import is_app_installed

__all__ = ["AirlockMiddleware"]


class AirlockMiddleware:
    """Run each request in its own scope: 1xx-3xx responses flush, the rest discard.

    Works in sync (WSGI) and async (ASGI) stacks. In an async stack the scope is
    entered and left on the event loop, where the request's context lives, and a
    flush that has anything to send runs in Django's sync thread through
    ``sync_to_async``, so an executor's network I/O never blocks the loop.

    The scope comes from :func:`airlock.scope`, so ``settings.AIRLOCK`` applies;
    when nothing configured a scope class, the middleware still uses
    :class:`DjangoScope`. Override :meth:`should_flush` or :meth:`make_scope` in
    a subclass to change the choices.

    With the outbox's background publisher, the request's rows are handed to the
    publisher once Django closes the response (after the server sent it), or at
    once for a streaming response.

    .. versionadded:: 0.1
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        if not is_app_installed():
            # The middleware alone (no app in INSTALLED_APPS) still honours
            # settings.AIRLOCK for requests; what it cannot honour fails here.
            configure_without_app()
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def make_scope(self, request: HttpRequest) -> Scope:
        """The scope for one request. Default: :func:`airlock.scope` with the configured defaults."""
        if airlock.get_configuration()["scope_cls"] is None:
            from airlock.integrations.django._scope import DjangoScope

            return airlock.scope(_cls=DjangoScope)
        return airlock.scope()

    def should_flush(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        """Flush for 1xx-3xx responses, discard for 4xx and 5xx."""
        return bool(response.status_code < 400)

    @staticmethod
    def _window(scope: Scope) -> Any:
        # Only an outbox scope holds work back until the response is closed.
        return response_window() if getattr(scope, "outbox", False) else NO_WINDOW

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        scope = self.make_scope(request).enter()
        with self._window(scope) as held:  # the outbox hands its rows over once the response is out
            try:
                response = self.get_response(request)
            except BaseException as error:
                scope.exit()
                scope.discard(error)
                raise
            scope.exit()
            if self.should_flush(request, response):
                scope.flush()
            else:
                scope.discard()
        run_after(response, held)
        return response

    async def _acall(self, request: HttpRequest) -> Any:
        get_response: Callable[[HttpRequest], Awaitable[Any]] = self.get_response
        # Entered and exited here, in the request task's context, so the
        # contextvar token is reset where it was set.
        scope = self.make_scope(request).enter()
        with self._window(scope) as held:
            try:
                response = await get_response(request)
            except BaseException as error:
                scope.exit()
                scope.discard(error)
                raise
            scope.exit()
            if not self.should_flush(request, response):
                scope.discard()
            elif scope.intents:
                await sync_to_async(scope.flush)()
            else:
                scope.flush()  # nothing to send: no reason to leave the loop
        run_after(response, held)
        return response
