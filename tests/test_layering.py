"""Imports between ``soci``'s packages flow one way: each package imports only packages of lower layers.

The layers, lowest first, are the architecture of docs/architecture.md; a new import that goes the other way
(for example ``soci.fs`` importing ``soci.snapshotter``) fails here with the module and the line.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "soci"

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "paths"}),  # paths: default locations, plain constants
    frozenset({"futures", "systemd", "system"}),  # asyncio helpers, systemd's protocols, the host's mounts
    frozenset({"formats"}),  # bytes in, documents out
    frozenset({"registry", "store", "cache", "codec"}),  # where bytes come from and are kept
    frozenset({"fs", "index", "testing"}),  # the lazy filesystem; building indexes
    frozenset({"loadorder", "containerd", "config", "cri"}),
    frozenset({"snapshotter"}),
    frozenset({"daemon", "cli"}),  # the two programs
)
"""``soci``'s packages and top-level modules, lowest first: a module imports only from lower layers."""


def _layer(name: str) -> int:
    for rank, members in enumerate(LAYERS):
        if name in members:
            return rank
    raise AssertionError(f"soci.{name} is in no layer of tests/test_layering.py; add it where it belongs")


def _is_ours(name: str) -> bool:
    return (SRC / name).is_dir() or (SRC / f"{name}.py").exists()


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, package)`` for every import of another ``soci`` package, function-level imports included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module] if node.module != "soci" else [f"soci.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "soci" and len(parts) > 1 and _is_ours(parts[1]):
                found.append((node.lineno, parts[1]))
    return found


def test_every_package_is_in_a_layer() -> None:
    for entry in SRC.iterdir():
        if not entry.name.startswith(("_", ".")) and (entry.is_dir() or entry.suffix == ".py"):
            _layer(entry.name.removesuffix(".py"))


def test_imports_go_down_the_layers_only() -> None:
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        package = path.relative_to(SRC).parts[0].removesuffix(".py")
        if package.startswith("_"):
            continue
        for line, target in _imports(path):
            if target != package and _layer(target) >= _layer(package):
                wrong.append(f"{path.relative_to(SRC.parent)}:{line}: soci.{package} imports soci.{target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)
