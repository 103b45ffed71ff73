from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from soci.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from soci.registry.transport import (
    RegistryError,
    TransportOptions,
    backoff_sec,
    error_from_response,
    is_retryable_status,
    parse_error_body,
    redact_url,
    retry_after_sec,
    same_origin,
)


def test_redact_url_drops_credentials_query_and_fragment() -> None:
    url = "https://user:pw@r.example:5000/v2/a/blobs/uploads/x?_state=SECRET&digest=sha256:1#frag"
    assert redact_url(url) == "https://r.example:5000/v2/a/blobs/uploads/x"


def test_same_origin() -> None:
    assert same_origin("https://a.example/x", "https://a.example/y")
    assert not same_origin("https://a.example/x", "http://a.example/x")
    assert not same_origin("https://a.example/x", "https://b.example/x")
    assert not same_origin("http://127.0.0.1:1/x", "http://127.0.0.1:2/x")


@pytest.mark.parametrize(
    ("status", "codes", "kind", "temporary"),
    [
        (401, (), Unauthenticated, False),
        (403, ("DENIED",), PermissionDenied, False),
        (404, ("BLOB_UNKNOWN",), NotFound, False),
        (408, (), Unavailable, True),
        (429, ("TOOMANYREQUESTS",), Unavailable, True),
        (500, (), Unavailable, True),
        (503, (), Unavailable, True),
        (501, (), FailedPrecondition, False),
        (405, ("UNSUPPORTED",), FailedPrecondition, False),
        (400, ("DIGEST_INVALID",), DataLoss, False),
        (400, ("MANIFEST_INVALID",), InvalidArgument, False),
        (416, (), InvalidArgument, False),
    ],
)
def test_status_maps_to_error_class(
    status: int, codes: tuple[str, ...], kind: type[Exception], temporary: bool
) -> None:
    body = json.dumps({"errors": [{"code": c, "message": "m", "detail": {"x": 1}} for c in codes]}).encode()
    error = error_from_response("GET", "https://r.example/v2/a/blobs/x?token=SECRET", status, "Reason", body)
    assert isinstance(error, kind) and isinstance(error, RegistryError)
    assert error.status == status and error.codes == codes
    assert error.temporary is temporary
    assert is_retryable_status(status) is temporary
    assert "SECRET" not in str(error) and "token=" not in error.url
    assert str(error).startswith(f"GET https://r.example/v2/a/blobs/x: {status}")


def test_parse_error_body_tolerates_non_json() -> None:
    assert parse_error_body(b"404 page not found") == ((), ())
    assert parse_error_body(b'{"errors": "nope"}') == ((), ())
    assert parse_error_body(b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known"}]}') == (
        ("NAME_UNKNOWN",),
        ("repository name not known",),
    )


def test_retry_after_forms() -> None:
    assert retry_after_sec({"Retry-After": "7"}) == 7.0
    assert retry_after_sec({}) is None
    assert retry_after_sec({"Retry-After": "soon"}) is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25.0 <= (retry_after_sec({"Retry-After": later}) or 0.0) <= 31.0


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    options = TransportOptions(min_wait_msec=100, max_wait_msec=1_000)
    for attempt, base in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (10, 1.0)]:
        for _ in range(20):
            assert base <= backoff_sec(attempt, options) <= base * 1.125
    assert 3.0 > backoff_sec(0, TransportOptions(max_wait_msec=10_000), retry_after=2.0) >= 2.0
    assert backoff_sec(0, options, retry_after=60.0) <= 1.0 * 1.125
