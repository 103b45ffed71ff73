"""Error classes shared by every package.

Errors differ by class, never by message: callers branch on the class (as containerd's errdefs),
and each boundary (CLI exit codes, gRPC status, FUSE errno) maps classes in exactly one table.
"""

from __future__ import annotations


class SociError(Exception):
    """Base of every error this project raises on purpose."""


class NotFound(SociError):
    """A named thing (blob, index, entry, snapshot) does not exist."""


class AlreadyExists(SociError):
    """A thing that must be new already exists."""


class InvalidArgument(SociError):
    """The caller passed something malformed."""


class FailedPrecondition(SociError):
    """The request is well formed but the state does not allow it."""


class Unavailable(SociError):
    """A retryable failure: connection errors, 429, 5xx, timeouts."""


class DataLoss(SociError):
    """Bytes failed a digest or integrity check."""


class Unauthenticated(SociError):
    """Credentials are missing or were refused."""


class PermissionDenied(SociError):
    """Credentials were accepted but do not allow the operation."""


class FormatError(InvalidArgument):
    """Malformed bytes: a zTOC, checkpoint blob, tar stream, manifest or index."""


class UnsupportedEntry(FormatError):
    """A tar entry type that SOCI cannot index (upstream: "unsupported input tar entry")."""


class NoIndexError(NotFound):
    """The image has no SOCI index; containerd should pull it normally."""


class NoZtocError(NotFound):
    """The layer has no zTOC in the index; it must be fetched and unpacked whole."""


class SpanDigestMismatch(DataLoss):
    """A fetched span does not hash to the digest recorded in the zTOC."""

    def __init__(self, span_id: int, expected: str, actual: str) -> None:
        super().__init__(f"span {span_id}: digest {actual} does not match expected {expected}")
        self.span_id = span_id
        self.expected = expected
        self.actual = actual
