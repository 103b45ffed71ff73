from __future__ import annotations

import pytest

from soci.errors import InvalidArgument
from soci.registry.reference import Reference, check_repository, check_tag_or_digest, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest"),
    [
        ("ubuntu", "docker.io", "library/ubuntu", "latest", None),
        ("ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", None),
        ("user/app", "docker.io", "user/app", "latest", None),
        ("docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", None),
        ("index.docker.io/user/app:v1", "docker.io", "user/app", "v1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/a/b/c:tag", "localhost:5000", "a/b/c", "tag", None),
        ("127.0.0.1:5000/test/repo", "127.0.0.1:5000", "test/repo", "latest", None),
        ("public.ecr.aws/soci/app@" + DIGEST, "public.ecr.aws", "soci/app", None, DIGEST),
        ("ghcr.io/o/r:t@" + DIGEST, "ghcr.io", "o/r", "t", DIGEST),
        ("Registry/app", "Registry", "app", "latest", None),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None),
        ("a.b/x__y-z.w/app_1", "a.b", "x__y-z.w/app_1", "latest", None),
    ],
)
def test_parse_reference_normalises_like_docker(
    text: str, domain: str, path: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)


def test_object_prefers_digest_and_str_round_trips() -> None:
    ref = parse_reference("ghcr.io/o/r:t@" + DIGEST)
    assert ref.object == DIGEST
    assert ref.name == "ghcr.io/o/r"
    assert parse_reference(str(ref)) == ref
    assert parse_reference("ghcr.io/o/r:t").object == "t"
    assert Reference("x.io", "a").object == "latest"


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ubuntu",
        "UPPER/Case",  # domain "UPPER" then path "Case" is not lowercase
        "app:bad tag",
        "app:" + "t" * 129,
        "app@sha256:abc",
        "app@nocolon",
        "host:99999/app",
        "a//b",
        "-leading/app",
        "app:ümlaut",
        "x.io/" + "a" * 260,
    ],
)
def test_invalid_references_are_rejected(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_reference(text)


def test_with_digest_validates() -> None:
    ref = parse_reference("x.io/app:1")
    assert ref.with_digest(DIGEST).digest == DIGEST
    with pytest.raises(InvalidArgument):
        ref.with_digest("sha256:XYZ")


def test_repository_and_object_checks() -> None:
    assert check_repository("a/b-c/d_e") == "a/b-c/d_e"
    assert check_tag_or_digest("v1.0") == "v1.0"
    assert check_tag_or_digest(DIGEST) == DIGEST
    for bad in ("", "A", "a/../b", "a?x=1", "a b"):
        with pytest.raises(InvalidArgument):
            check_repository(bad)
    for bad in ("../x", "a/b", "sha256:short", ""):
        with pytest.raises(InvalidArgument):
            check_tag_or_digest(bad)
