"""Shared set-up for the interop tests."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).parent
for _helpers in (_HERE, _HERE.parent / "e2e"):  # interop_stack here; the e2e_* stack and image helpers
    if str(_helpers) not in sys.path:
        sys.path.insert(0, str(_helpers))


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
