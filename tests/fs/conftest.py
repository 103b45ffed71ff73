"""Fixtures for the lazy filesystem tests; makes the ``fs_*`` helper modules next to this file importable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


import itertools  # noqa: E402

import pytest  # noqa: E402

from soci.testing.registry_server import RegistryServer  # noqa: E402

_counter = itertools.count()


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    """A docker-registry on loopback, one per test module."""
    with RegistryServer() as server:
        yield server


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name no other test uses."""
    cleaned = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")[:40].strip("-")
    return f"fs/{cleaned or 'repo'}-{os.getpid()}-{next(_counter)}"


@pytest.fixture(scope="module")
def debian_layers(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Blob files of the Debian base layer and the python3 layer on top (scripts/build-debian-image.sh)."""
    out = tmp_path_factory.mktemp("debian") / "oci"
    script = Path(__file__).resolve().parents[2] / "scripts" / "build-debian-image.sh"
    env = {**os.environ, "SOCI_IMAGE_PACKAGES": "python3"}  # the base layer and a python3 layer
    result = subprocess.run(["bash", str(script), str(out)], capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        pytest.skip(f"cannot build the Debian image: {result.stderr.strip()[-300:]}")
    index = json.loads((out / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((out / "blobs" / "sha256" / manifest_digest).read_text())
    return [out / "blobs" / "sha256" / layer["digest"].split(":", 1)[1] for layer in manifest["layers"]]
