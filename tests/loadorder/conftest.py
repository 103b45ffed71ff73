"""Fixtures for the load order tests; makes ``lo_*`` helpers here and the ``e2e_*`` stack helpers importable."""

from __future__ import annotations

import sys
from pathlib import Path

for _path in (Path(__file__).parent, Path(__file__).parent.parent / "e2e"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
