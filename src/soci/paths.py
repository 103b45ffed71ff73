"""The programs' default locations (upstream's), in a module of their own: the CLI needs them at startup without
importing the store or the daemon's config."""

from __future__ import annotations

from pathlib import Path
from typing import Final

DEFAULT_ROOT: Final = Path("/var/lib/soci-snapshotter-grpc")
"""The daemon's state and the CLI's local store."""
DEFAULT_CONFIG_PATH: Final = Path("/etc/soci-snapshotter-grpc/config.toml")
DEFAULT_CONTAINERD_ADDRESS: Final = "/run/containerd/containerd.sock"
