"""Measuring what a test or benchmark left on disk, independently of the code under test's own accounting."""

from __future__ import annotations

from pathlib import Path


def file_bytes_under(root: Path) -> int:
    """Apparent size of every regular file below ``root``, read while other threads add and delete files."""
    total = 0
    for path in root.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except FileNotFoundError:
            continue  # evicted or renamed while we looked
    return total
