"""The one table between our error classes and gRPC status codes, in both directions.

containerd's errdefs travel as gRPC codes: a snapshotter answers NOT_FOUND for a missing key and
ALREADY_EXISTS when Prepare finished a remote snapshot; clients turn codes back into classes.
"""

from __future__ import annotations

from typing import Any, Final

import grpc

from soci.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SociError,
    Unauthenticated,
    Unavailable,
)

# Order matters: the first class an error is an instance of wins (subclasses before bases).
_TO_GRPC: Final[tuple[tuple[type[SociError], Any], ...]] = (
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (DataLoss, grpc.StatusCode.DATA_LOSS),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
)

_FROM_GRPC: Final[dict[Any, type[SociError]]] = {code: cls for cls, code in _TO_GRPC}
_FROM_GRPC[grpc.StatusCode.DEADLINE_EXCEEDED] = Unavailable
_FROM_GRPC[grpc.StatusCode.OUT_OF_RANGE] = InvalidArgument


class Unknown(SociError):
    """An RPC failed with a status that has no class of its own (UNKNOWN, INTERNAL, ...)."""


def grpc_code(exc: BaseException) -> Any:
    """The gRPC status code for ``exc``; UNKNOWN for anything that is not one of our classes."""
    for cls, code in _TO_GRPC:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.UNKNOWN


def error_from_rpc(exc: grpc.aio.AioRpcError, what: str) -> SociError:
    """Our error class for a failed call; ``what`` names the operation in the message."""
    cls = _FROM_GRPC.get(exc.code(), Unknown)
    details = exc.details() or exc.code().name.lower()
    return cls(f"{what}: {details}")
