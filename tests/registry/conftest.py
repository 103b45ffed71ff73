"""Fixtures: docker-registry instances shared per module, unique repository names per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from soci.testing.registry_server import RegistryServer, registry_available

_counter = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if registry_available():
        return
    skip = pytest.mark.skip(reason="docker-registry is not installed")
    for item in items:
        if "registry" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name no other test uses."""
    name = request.node.name.lower()
    cleaned = "".join(c if c.isalnum() else "-" for c in name).strip("-")[:40].strip("-")
    return f"test/{cleaned or 'repo'}-{os.getpid()}-{next(_counter)}"


@pytest.fixture(scope="module")
def plain_registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server
