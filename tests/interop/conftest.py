"""Shared set-up for the interop tests."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def utc_zone() -> Iterator[None]:
    """Upstream renders mod_time in the local zone; the vectors were made with TZ=UTC, so build ours in UTC too."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()
