"""End-to-end fixtures: registry, test images, snapshotter daemon and containerd (all stopped by PID)."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # the e2e_* helper modules next to this file
