"""TOML documents (config.toml, hosts.toml) read into plain dicts, with every failure as a FormatError."""

from __future__ import annotations

import tomllib
from typing import Any

from soci.errors import FormatError


def loads(text: str, where: str) -> dict[str, Any]:
    """Parse `text`; `where` names the document in the error (a path, or "config")."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FormatError(f"{where}: invalid TOML: {exc}") from None
    except RecursionError:
        # tomllib recurses once per nested array or inline table; Python's stack is the only limit
        raise FormatError(f"{where}: invalid TOML: arrays or inline tables nest too deep") from None
