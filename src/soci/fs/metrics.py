"""What the lazy filesystem reports: upstream's ``operation_type`` names, and the sink the daemon implements.

The names are upstream's (fs/metrics/common), so its dashboards and alerts carry over. The daemon's sink
(``soci.daemon.metrics.SnapshotterMetrics``) exports durations of ``MICROSECOND_OPERATIONS`` in
``soci_fs_operation_duration_microseconds`` and all others in ``..._milliseconds``.
"""

from __future__ import annotations

from typing import Final, Protocol

# durations
OP_REMOTE_REGISTRY_GET: Final = "remote_registry_get"
OP_INIT_METADATA_STORE: Final = "init_metadata_store"
OP_BACKGROUND_FETCH: Final = "background_fetch"
OP_FUSE_MOUNT: Final = "fuse_mount"
OP_NODE_READDIR: Final = "node_readdir"
OP_SYNCHRONOUS_READ: Final = "synchronous_read"
MICROSECOND_OPERATIONS: Final = frozenset({OP_NODE_READDIR, OP_SYNCHRONOUS_READ})

# counts
OP_SYNCHRONOUS_READ_COUNT: Final = "synchronous_read_count"
OP_SYNCHRONOUS_READ_REGISTRY_FETCH_COUNT: Final = "synchronous_read_remote_registry_fetch_count"
OP_BACKGROUND_SPAN_FETCH_COUNT: Final = "background_span_fetch_count"
OP_BACKGROUND_SPAN_FETCH_FAILURE_COUNT: Final = "background_span_fetch_failure_count"
OP_BACKGROUND_FETCH_WORK_QUEUE_EVICTED: Final = "background_fetch_work_queue_evicted"
OP_FUSE_UNKNOWN_FAILURE: Final = "fuse_unknown_operation_failure_count"
FUSE_FAILURE_BY_HANDLER: Final = {
    "lookup": "fuse_node_lookup_failure_count",
    "getattr": "fuse_node_getattr_failure_count",
    "listxattr": "fuse_node_listxattr_failure_count",
    "open": "fuse_node_open_failure_count",
    "opendir": "fuse_node_readdir_failure_count",
    "readdir": "fuse_node_readdir_failure_count",
    "read": "fuse_file_read_failure_count",
}
"""``Operations`` handler name -> upstream's failure counter; any other handler counts as unknown."""

# bytes (soci_fs_bytes_served)
OP_SYNCHRONOUS_BYTES_SERVED: Final = "synchronous_bytes_served"


class FsMetrics(Protocol):
    def observe(self, operation: str, layer: str, seconds: float) -> None: ...
    def count(self, operation: str, layer: str = "") -> None: ...
    def add_bytes(self, operation: str, layer: str, amount: int) -> None: ...


class NullFsMetrics:
    """Reports nothing (tests, or no metrics endpoint)."""

    def observe(self, operation: str, layer: str, seconds: float) -> None:
        pass

    def count(self, operation: str, layer: str = "") -> None:
        pass

    def add_bytes(self, operation: str, layer: str, amount: int) -> None:
        pass
