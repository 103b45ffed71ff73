"""Pull credentials the kubelet sent with CRI ``PullImage``, kept per image reference until they expire.

The CRI image service proxy (``soci.cri.proxy``) records them; the daemon's registry clients for that image
(manifest, SOCI index, zTOCs, span reads, background fetch, local unpack) ask for them by image reference.
Nothing here logs or formats a secret (``Credentials`` hides them from ``repr``).

Expiry: credentials are dropped ``ttl_sec`` after the last ``PullImage`` that carried them (the daemon uses
``[resolver] auth_client_ttl_sec``, default 3600 s; negative: never). The kubelet sends credentials with every
pull, so a node that keeps starting pods keeps them fresh; a layer still being read after expiry goes on with
the registry token it already holds until that token expires.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from soci.errors import InvalidArgument
from soci.registry.credentials import CredentialProvider, Credentials, same_registry
from soci.registry.reference import parse_reference

log = logging.getLogger(__name__)

MAX_ENTRIES: Final = 4096
"""Image references remembered at most (oldest dropped first), so a busy node's memory stays bounded."""


@dataclass(frozen=True, slots=True)
class _Entry:
    credentials: Credentials
    host: str
    expires_at: float | None
    """On the monotonic clock; None: never."""


def normalise(image: str) -> tuple[str, str]:
    """``(full reference, repository)`` of ``image``, both normalised, so ``host/repo`` means ``host/repo:latest``.

    Raises:
        InvalidArgument: ``image`` is not an image reference.
    """
    reference = parse_reference(image)
    return str(reference), reference.name


class CriKeychain:
    """Credentials per image reference, from CRI ``PullImage``.

    Lookups try the exact reference first, then the newest credentials sent for the same repository: containerd
    labels snapshots with the reference it was asked to pull, and the kubelet may ask for the same repository by
    tag in one pod and by digest in another.

    Args:
        ttl_sec: lifetime of credentials after the pull that sent them; None: they never expire.
        clock: monotonic seconds (injectable, so expiry is testable without sleeping).
    """

    def __init__(self, ttl_sec: float | None = 3600.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_sec = ttl_sec
        self._clock = clock
        self._by_ref: OrderedDict[str, _Entry] = OrderedDict()
        self._by_repo: dict[str, str] = {}
        # the proxy's handlers and the registry clients share it; a lock keeps both maps consistent
        self._lock = threading.Lock()

    def remember(self, image: str, credentials: Credentials) -> None:
        """Keep ``credentials`` for ``image`` (replacing older ones and restarting their lifetime)."""
        ref, repo = normalise(image)
        expires_at = None if self._ttl_sec is None else self._clock() + self._ttl_sec
        with self._lock:
            self._by_ref.pop(ref, None)
            self._by_ref[ref] = _Entry(credentials, parse_reference(ref).domain, expires_at)
            self._by_repo[repo] = ref
            while len(self._by_ref) > MAX_ENTRIES:
                old_ref, _ = self._by_ref.popitem(last=False)
                self._forget_repo(old_ref)
        log.info("keeping CRI pull credentials", extra={"image": ref})

    def forget(self, image: str) -> None:
        ref, _ = normalise(image)
        with self._lock:
            if self._by_ref.pop(ref, None) is not None:
                self._forget_repo(ref)

    def credentials(self, image: str, host: str | None = None) -> Credentials | None:
        """The live credentials for ``image`` (exact reference, then same repository), or None.

        Args:
            host: the registry host being asked; credentials are never handed to another host (a mirror from
                ``hosts.toml`` or ``[resolver]`` gets none of them).
        """
        try:
            ref, repo = normalise(image)
        except InvalidArgument:
            return None
        with self._lock:
            for key in (ref, self._by_repo.get(repo)):
                if key is None:
                    continue
                entry = self._by_ref.get(key)
                if entry is None:
                    continue
                if entry.expires_at is not None and self._clock() >= entry.expires_at:
                    del self._by_ref[key]
                    self._forget_repo(key)
                    continue
                if host is not None and not same_registry(host, entry.host):
                    return None
                return entry.credentials
        return None

    def __len__(self) -> int:
        return len(self._by_ref)

    def provider(self, image: str) -> CredentialProvider:
        """A credential provider for one image's registry client."""
        return _ImageCredentials(self, image)

    def _forget_repo(self, ref: str) -> None:
        repo = parse_reference(ref).name
        if self._by_repo.get(repo) == ref:
            del self._by_repo[repo]


class _ImageCredentials:
    def __init__(self, keychain: CriKeychain, image: str) -> None:
        self._keychain = keychain
        self._image = image

    async def get(self, host: str) -> Credentials | None:
        return self._keychain.credentials(self._image, host)
