"""Content digests in OCI form: ``sha256:<64 lowercase hex>``."""

from __future__ import annotations

import hashlib
import re

from soci.errors import DataLoss, FormatError

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def sha256_digest(data: bytes | bytearray | memoryview) -> str:
    """The OCI digest string of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_digest(value: str) -> str:
    """Return ``value`` if it is a well-formed sha256 digest, else raise FormatError naming it."""
    if not isinstance(value, str) or not _DIGEST_RE.match(value):
        raise FormatError(f"invalid digest {value!r}: want sha256:<64 lowercase hex digits>")
    return value


def is_digest(value: str) -> bool:
    return bool(_DIGEST_RE.match(value))


def digest_hex(digest: str) -> str:
    """The hex part of a parsed digest."""
    return parse_digest(digest).split(":", 1)[1]


def verify_digest(data: bytes | bytearray | memoryview, expected: str, what: str) -> None:
    """Raise DataLoss unless ``data`` hashes to ``expected``; ``what`` names the content in the message."""
    actual = sha256_digest(data)
    if actual != expected:
        raise DataLoss(f"{what}: content digest {actual} does not match expected {expected}")
