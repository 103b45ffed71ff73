"""JSON encoding identical to Go's ``encoding/json`` Marshal.

Upstream serialises every manifest and index with Go's encoder, and the snapshotter re-encodes what it
fetches and checks the digest, so our bytes must match Go's exactly: compact output, struct fields in
declaration order (callers build dicts in that order), map keys sorted bytewise (callers use ``GoMap``),
and Go's string escaping (``<``, ``>``, ``&``, U+2028 and U+2029 escaped; other non-ASCII written raw).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from soci.errors import FormatError


class GoMap(dict[str, Any]):
    """A Go map: encoded with its keys sorted bytewise by UTF-8, as Go does."""


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    return f"\\u{ord(ch):04x}"


def _needs_escape(ch: str) -> bool:
    o = ord(ch)
    return o < 0x20 or ch in '"\\<>&' or o in (0x2028, 0x2029)


def encode_string(value: str) -> str:
    """A Go-escaped JSON string literal, quotes included."""
    if not any(_needs_escape(c) for c in value):
        return f'"{value}"'
    return '"' + "".join(_escape_char(c) if _needs_escape(c) else c for c in value) + '"'


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(encode_string(value))
    elif isinstance(value, GoMap):
        out.append("{")
        for i, key in enumerate(sorted(value, key=lambda k: k.encode("utf-8", "surrogatepass"))):
            if i:
                out.append(",")
            out.append(encode_string(key))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, Mapping):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            out.append(encode_string(key))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as Go JSON")


def marshal(value: Any) -> bytes:
    """Encode ``value`` as Go's json.Marshal would (no trailing newline)."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8", "surrogatepass")


def marshal_indent(value: Any, indent: str = "  ") -> str:
    """Pretty form as Go's json.MarshalIndent(value, "", indent), for human-facing output."""
    import json

    # Go's indent output matches Python's with these separators, apart from escaping, which we redo.
    raw = marshal(value).decode("utf-8")
    return json.dumps(json.loads(raw), indent=len(indent), ensure_ascii=False, separators=(",", ": "))


def pretty(value: Any) -> str:
    """A parsed document re-indented for people: any JSON value (floats, lone surrogates) prints."""
    import json

    text = json.dumps(value, indent=2, ensure_ascii=False, separators=(",", ": "))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # a lone surrogate from a \ud800 escape cannot be written as UTF-8; keep it escaped
        text = json.dumps(value, indent=2, separators=(",", ": "))
    return text


# Go's decoder allows 10,000 levels; ours must stay well under CPython's recursion limit (1,000) because
# the C decoder and our encoders recurse once per level. Real manifests, indexes and configs nest under 10.
MAX_JSON_DEPTH = 256

# unrolled ("normal* (special normal*)*"): one class match per run of plain characters, not one alternation per
# character, which made a 4.6 MB load order document's check take 0.19 s instead of 0.03 s
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def check_depth(data: bytes | str, what: str, limit: int = MAX_JSON_DEPTH) -> None:
    """Reject JSON nested deeper than ``limit`` before any recursive decoder sees it."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return  # cannot nest deeper than its number of openers: the common case costs two C-speed counts
    depth = 0
    for token in _BRACKET.findall(_JSON_STRING.sub(b"", raw)):
        if token in b"[{":
            depth += 1
            if depth > limit:
                raise FormatError(f"{what}: JSON nests deeper than {limit} levels")
        else:
            depth -= 1


def loads(data: bytes | bytearray | str, what: str) -> Any:
    """Parse JSON with a nesting limit, raising FormatError naming ``what`` on any problem."""
    import json

    if isinstance(data, bytearray):
        data = bytes(data)
    check_depth(data, what)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise FormatError(f"{what}: invalid JSON: {exc}") from None


def unmarshal_object(data: bytes | bytearray | str, what: str) -> dict[str, Any]:
    """Parse a JSON object, raising FormatError naming ``what`` on any problem."""
    value = loads(data, what)
    if not isinstance(value, dict):
        raise FormatError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def field(obj: Mapping[str, Any], name: str) -> Any:
    """Look up a struct field as Go's decoder does: exact key first, then a case-insensitive match."""
    if name in obj:
        return obj[name]
    folded = name.casefold()
    found: Any = None
    for key, value in obj.items():
        if key.casefold() == folded:
            found = value
    return found
