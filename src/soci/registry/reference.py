"""Image references: ``[host[:port]/]repo[:tag][@digest]``, normalised the way containerd and docker do.

A first path component is a registry host when it contains ``.`` or ``:``, is ``localhost``, or holds an
uppercase letter (repository names are lowercase). Without a host the reference lives on ``docker.io``,
and a single-component repository there gets the ``library/`` prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from soci.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255

_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_DOMAIN_COMPONENT_RE = re.compile(r"^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$")
_PORT_RE = re.compile(r"^[0-9]+$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_SHA256_HEX_RE = re.compile(r"^[a-f0-9]{64}$")


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed, normalised image reference."""

    domain: str
    """Registry host as named in the reference (``docker.io``, ``127.0.0.1:5000``), not the API endpoint."""
    path: str
    """Repository path inside the registry (``library/ubuntu``)."""
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``domain/path``, the reference without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def object(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag (default ``latest``)."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, self.tag, _check_digest(digest, str(self)))

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text


def parse_reference(text: str) -> Reference:
    """Parse and normalise ``text``; an absent tag and digest leave the tag as ``latest``.

    Raises:
        InvalidArgument: ``text`` is not a valid reference.
    """
    if not text or text != text.strip():
        raise InvalidArgument(f"invalid image reference {text!r}: empty or surrounded by whitespace")
    remainder, _, digest = text.partition("@")
    digest_value = _check_digest(digest, text) if digest else None

    tag: str | None = None
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidArgument(f"invalid image reference {text!r}: bad tag {tag!r}")

    domain, path = _split_domain(remainder)
    _check_domain(domain, text)
    for component in path.split("/"):
        if not _COMPONENT_RE.match(component):
            raise InvalidArgument(f"invalid image reference {text!r}: bad repository component {component!r}")
    if len(domain) + 1 + len(path) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"invalid image reference {text!r}: name longer than {MAX_NAME_LENGTH} characters")
    if tag is None and digest_value is None:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest_value)


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and (("." in first or ":" in first) or first == "localhost" or first.lower() != first):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    return domain, path


def _check_domain(domain: str, text: str) -> None:
    host, port = domain, ""
    if domain.startswith("["):
        # IPv6 literal: [::1]:5000
        end = domain.find("]")
        if end < 0:
            raise InvalidArgument(f"invalid image reference {text!r}: bad registry host {domain!r}")
        host, port = domain[: end + 1], domain[end + 1 :].removeprefix(":")
        if domain[end + 1 : end + 2] not in ("", ":"):
            raise InvalidArgument(f"invalid image reference {text!r}: bad registry host {domain!r}")
        return _check_port(port, domain, text)
    if ":" in domain:
        host, port = domain.rsplit(":", 1)
        _check_port(port, domain, text)
    if not host or not all(_DOMAIN_COMPONENT_RE.match(part) for part in host.split(".")):
        raise InvalidArgument(f"invalid image reference {text!r}: bad registry host {domain!r}")


def _check_port(port: str, domain: str, text: str) -> None:
    if port and not (_PORT_RE.match(port) and 0 < int(port) < 65536):
        raise InvalidArgument(f"invalid image reference {text!r}: bad port in registry host {domain!r}")


def _check_digest(digest: str, text: str) -> str:
    if not _DIGEST_RE.match(digest):
        raise InvalidArgument(f"invalid image reference {text!r}: bad digest {digest!r}")
    algorithm, _, hex_part = digest.partition(":")
    if algorithm == "sha256" and not _SHA256_HEX_RE.match(hex_part):
        raise InvalidArgument(f"invalid image reference {text!r}: sha256 digest needs 64 lowercase hex digits")
    return digest


def check_repository(repo: str) -> str:
    """Return ``repo`` if it is a valid repository path (``library/ubuntu``), else raise InvalidArgument."""
    if not repo or len(repo) > MAX_NAME_LENGTH or not all(_COMPONENT_RE.match(c) for c in repo.split("/")):
        raise InvalidArgument(f"invalid repository name {repo!r}")
    return repo


def check_tag_or_digest(value: str) -> str:
    """Return ``value`` if it is a valid tag or digest, else raise InvalidArgument."""
    if _TAG_RE.match(value):
        return value
    return _check_digest(value, value)
