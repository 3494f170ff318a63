"""The Redis keys the consumer task counts into, shared by the task and the tests (no Django needed)."""

from __future__ import annotations


def delivered_key(token: str) -> str:
    """Hash: task id -> how many times it was delivered (duplicates included)."""
    return f"airlock-servers:{token}:delivered"


def ran_key(token: str) -> str:
    """Hash: task id -> how many times it ran after dropping duplicates (never more than once)."""
    return f"airlock-servers:{token}:ran"
