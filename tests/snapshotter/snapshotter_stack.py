"""Markers for tests that need containerd (imported by test modules of this directory)."""

from __future__ import annotations

import os

import pytest

from soci.containerd.testing import containerd_available

needs_root = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

needs_containerd = [
    pytest.mark.containerd,
    pytest.mark.root,
    pytest.mark.skipif(not containerd_available(), reason="containerd, ctr and runc are needed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]
