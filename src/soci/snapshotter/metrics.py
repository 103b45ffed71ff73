"""What the snapshotter reports, and to whom: a sink the daemon implements with Prometheus metrics.

Operation names are upstream's ``operation_type`` values where one exists, so dashboards carry over.
"""

from __future__ import annotations

from typing import Final, Protocol

# durations (milliseconds in the exported histogram)
OP_MOUNT: Final = "mount"
OP_SOCI_INDEX_FETCH: Final = "soci_index_fetch"
OP_ZTOC_FETCH: Final = "ztoc_fetch"
OP_LOCAL_UNPACK: Final = "local_unpack"
# counts
OP_FUSE_MOUNT_FAILURE: Final = "fuse_mount_failure_count"
OP_LOCAL_MOUNT_FAILURE: Final = "local_mount_failure_count"
OP_REMOTE_FALLBACK: Final = "remote_snapshot_fallback_count"
"""A layer Prepare whose remote attempt failed (any reason but a missing index) and fell back (ours)."""

# pull modes, one per layer Prepare
MODE_REMOTE: Final = "remote"
MODE_LOCAL: Final = "local"
MODE_DEFER: Final = "defer"


class MetricsSink(Protocol):
    def observe(self, operation: str, layer: str, seconds: float) -> None: ...
    def count(self, operation: str, layer: str = "") -> None: ...
    def pull_mode(self, layer: str, mode: str) -> None: ...


class NullMetrics:
    """Reports nothing (tests, or ``no_prometheus``)."""

    def observe(self, operation: str, layer: str, seconds: float) -> None:
        pass

    def count(self, operation: str, layer: str = "") -> None:
        pass

    def pull_mode(self, layer: str, mode: str) -> None:
        pass
