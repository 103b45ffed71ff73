"""The one errno table of the FUSE handlers."""

from __future__ import annotations

import errno

import pyfuse3
import pytest

from soci.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    FormatError,
    InvalidArgument,
    NotFound,
    NoZtocError,
    PermissionDenied,
    SpanDigestMismatch,
    Unauthenticated,
    Unavailable,
)
from soci.fs.ops import fuse_errors


@pytest.mark.parametrize(
    ("exc", "number"),
    [
        (NotFound("x"), errno.ENOENT),
        (NoZtocError("x"), errno.ENOENT),
        (AlreadyExists("x"), errno.EEXIST),
        (InvalidArgument("x"), errno.EINVAL),
        (FormatError("x"), errno.EINVAL),
        (FailedPrecondition("x"), errno.EIO),
        (Unavailable("x"), errno.EIO),
        (DataLoss("x"), errno.EIO),
        (SpanDigestMismatch(1, "a", "b"), errno.EIO),
        (Unauthenticated("x"), errno.EACCES),
        (PermissionDenied("x"), errno.EACCES),
        (RuntimeError("unexpected"), errno.EIO),
        (pyfuse3.FUSEError(errno.ENOTDIR), errno.ENOTDIR),
    ],
)
async def test_errors_become_errno(exc: BaseException, number: int) -> None:
    @fuse_errors
    async def handler() -> None:
        raise exc

    with pytest.raises(pyfuse3.FUSEError) as info:
        await handler()
    assert info.value.errno == number
