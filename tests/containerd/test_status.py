"""Error classes ⇄ gRPC status codes (containerd's errdefs mapping)."""

from __future__ import annotations

import grpc
import pytest

from soci.containerd.status import Unknown, grpc_code
from soci.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    FormatError,
    InvalidArgument,
    NoIndexError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (NoIndexError("x"), grpc.StatusCode.NOT_FOUND),
        (AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (FormatError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (DataLoss("x"), grpc.StatusCode.DATA_LOSS),
        (Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
        (RuntimeError("x"), grpc.StatusCode.UNKNOWN),
        (Unknown("x"), grpc.StatusCode.UNKNOWN),
    ],
)
def test_error_classes_map_to_codes(error: Exception, code: grpc.StatusCode) -> None:
    assert grpc_code(error) == code
