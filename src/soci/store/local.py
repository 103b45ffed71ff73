"""The snapshotter's root directory: ``content/`` (OCI layout of SOCI artifacts) and the artifacts database."""

from __future__ import annotations

import os
from pathlib import Path

from soci.paths import DEFAULT_ROOT
from soci.store.artifacts import DB_FILE, ArtifactsDB
from soci.store.content import ContentStore


class LocalStore:
    def __init__(self, root: Path = DEFAULT_ROOT) -> None:
        self.root = Path(root)
        if not self.root.exists():
            self.root.mkdir(parents=True, mode=0o700)
            os.chmod(self.root, 0o700)
        self.content = ContentStore(self.root / "content")
        self.artifacts = ArtifactsDB(self.root / DB_FILE)

    def close(self) -> None:
        self.artifacts.close()

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
