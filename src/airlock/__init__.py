"""airlock: every side effect of a unit of work behind one door.

Domain code says what it wants (``airlock.enqueue(send_email, order_id=7)``);
the surrounding scope decides when and whether it leaves the process.
"""

from __future__ import annotations

from airlock import _compat
from airlock._api import enqueue, get_current_scope, policy, scope, scoped
from airlock._config import configure, get_configuration, reset_configuration
from airlock._errors import (
    AirlockError,
    DispatchError,
    NoScopeError,
    PolicyEnqueueError,
    PolicyViolation,
    ScopeStateError,
    UsageError,
)
from airlock._intent import Intent
from airlock._policies import AllowAll, AssertNoEffects, BlockTasks, DropAll, LogOnFlush
from airlock._scope import Scope
from airlock.typing import Executor, Policy

__version__ = "0.1.0"

__all__ = [
    "AirlockError",
    "AllowAll",
    "AssertNoEffects",
    "BlockTasks",
    "DispatchError",
    "DropAll",
    "Executor",
    "Intent",
    "LogOnFlush",
    "NoScopeError",
    "Policy",
    "PolicyEnqueueError",
    "PolicyViolation",
    "Scope",
    "ScopeStateError",
    "UsageError",
    "configure",
    "enqueue",
    "get_configuration",
    "get_current_scope",
    "policy",
    "reset_configuration",
    "scope",
    "scoped",
]

_compat.warn_if_greenlet_shares_context()
