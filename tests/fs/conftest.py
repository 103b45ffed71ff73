"""Fixtures for the lazy filesystem tests; makes the ``fs_*`` helper modules next to this file importable."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
