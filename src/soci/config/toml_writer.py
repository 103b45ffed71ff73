"""Write a config dataclass as TOML in the layout upstream's ``config dump`` prints (go-toml v2 with
indented tables): top-level keys, then one table per section, nested tables indented two more spaces,
strings single-quoted where possible, empty maps left out."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def dump_toml(config: Any) -> str:
    lines: list[str] = []
    _table(config, [], lines)
    return "\n".join(lines).rstrip("\n") + "\n"


def _key(name: str) -> str:
    if _BARE_KEY.match(name):
        return name
    return _string(name)


def _string(text: str) -> str:
    if "'" not in text and "\n" not in text and all(c.isprintable() for c in text):
        return f"'{text}'"
    return json.dumps(text)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if dataclasses.is_dataclass(value):
        items = [f"{_key(f.name)} = {_scalar(getattr(value, f.name))}" for f in dataclasses.fields(value)]
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _is_table(value: Any) -> bool:
    return dataclasses.is_dataclass(value) or isinstance(value, dict)


def _items(value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return list(value.items())
    return [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]


def _table(value: Any, path: list[str], lines: list[str]) -> None:
    indent = "  " * max(len(path) - 1, 0)
    inner = "  " * len(path)
    items = _items(value)
    if path:
        lines.append(f"{indent}[{'.'.join(_key(p) for p in path)}]")
    for name, item in items:
        if not _is_table(item):
            lines.append(f"{inner if path else ''}{_key(name)} = {_scalar(item)}")
    for name, item in items:
        if _is_table(item) and not (isinstance(item, dict) and not item):
            if lines and lines[-1] != "" and not lines[-1].lstrip().startswith("["):
                lines.append("")
            _table(item, [*path, name], lines)
    if lines and lines[-1] != "":
        lines.append("")
