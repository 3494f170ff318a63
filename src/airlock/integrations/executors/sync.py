"""The default executor: call the task in this process."""

from __future__ import annotations

from airlock._executors import sync_executor

__all__ = ["sync_executor"]
