"""Fixtures for the lazy filesystem tests; makes the ``fs_*`` helper modules next to this file importable."""

from __future__ import annotations

import os
import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


import itertools  # noqa: E402

import pytest  # noqa: E402

_counter = itertools.count()


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name no other test uses."""
    cleaned = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")[:40].strip("-")
    return f"fs/{cleaned or 'repo'}-{os.getpid()}-{next(_counter)}"
