"""Small helpers for asyncio futures shared between tasks."""

from __future__ import annotations

import asyncio
from typing import Any


def mark_retrieved(future: asyncio.Future[Any]) -> None:
    """Done callback for a future several waiters share: its exception counts as seen, so asyncio does not log
    "exception was never retrieved" when every waiter gave up (each waiter that remains re-raises it itself)."""
    if not future.cancelled():
        future.exception()
