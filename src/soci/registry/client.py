"""``RegistryClient``: the OCI distribution API for one registry domain, over its mirrors and server.

Reads try each endpoint able to serve them (``hosts.toml`` order); a mirror that is down or lacks the
object is skipped. Whole blobs and manifests are digest-verified before they are returned. Descriptors
are plain dicts with OCI keys (``mediaType``, ``digest``, ``size``, ``artifactType``, ``annotations``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from soci.errors import DataLoss, FormatError, InvalidArgument, NotFound, Unavailable
from soci.formats import gojson
from soci.formats.digest import digest_hex, parse_digest, sha256_digest
from soci.registry.auth import Authorizer
from soci.registry.credentials import CredentialProvider
from soci.registry.hosts import CAP_PULL, CAP_PUSH, CAP_RESOLVE, RegistryHost, resolve_hosts
from soci.registry.reference import check_repository, check_tag_or_digest
from soci.registry.transport import (
    AiohttpTransport,
    Body,
    BrokenBody,
    RegistryError,
    RegistryNotFound,
    RegistryUnauthenticated,
    RegistryUnavailable,
    RegistryUnsupported,
    Response,
    TransportOptions,
    backoff_sec,
    error_from_response,
    is_retryable_status,
    parse_error_body,
    raise_for_status,
    redact_url,
    retry_corrupt,
)

log = logging.getLogger(__name__)

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_MEDIA_TYPES: Final = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)
MAX_MANIFEST_BYTES: Final = 4 << 20
"""Larger manifests are refused (containerd's limit), so a hostile registry cannot exhaust memory."""
ECR_EXPIRED_TOKEN_MESSAGE: Final = "Your authorization token has expired. Reauthenticate and try again."

PushOutcome = Literal["exists", "mounted", "uploaded"]


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Behaviour above the HTTP layer."""

    monolithic_upload_max_bytes: int = 128 << 20
    """Blobs up to this size go in one PUT; larger ones in PATCH chunks."""
    upload_chunk_bytes: int = 16 << 20
    referrers_settle_sec: float = 0.25
    """After writing the referrers fallback index, wait this long before checking no writer overwrote it."""
    referrers_max_attempts: int = 8
    host_cooloff_sec: float = 30.0
    """An endpoint that failed is tried after the others for this long."""
    tags_page_size: int = 1000


class RegistryClient:
    """Client for one registry domain (``docker.io``, ``127.0.0.1:5000``).

    Args:
        domain: registry domain from the image reference.
        hosts: endpoints to use; default: ``resolve_hosts(domain, hosts_dir=..., plain_http=..., skip_verify=...)``.
        credentials: where to find credentials when a registry asks; None means anonymous.
        transport: a shared transport; by default the client makes (and closes) its own.
        clock: monotonic seconds for token expiry (injectable for tests).
    """

    def __init__(
        self,
        domain: str,
        *,
        hosts: Sequence[RegistryHost] | None = None,
        hosts_dir: Path | None = None,
        plain_http: bool = False,
        skip_verify: bool = False,
        credentials: CredentialProvider | None = None,
        transport: AiohttpTransport | None = None,
        transport_options: TransportOptions | None = None,
        options: ClientOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.domain = domain
        self.hosts: tuple[RegistryHost, ...] = tuple(
            hosts
            if hosts is not None
            else resolve_hosts(domain, hosts_dir=hosts_dir, plain_http=plain_http, skip_verify=skip_verify)
        )
        self._owns_transport = transport is None
        self._transport = transport or AiohttpTransport(transport_options)
        self.options = options or ClientOptions()
        self.authorizer = Authorizer(self._transport, credentials, clock=clock)
        self._down_until: dict[str, float] = {}
        self._referrers_api: dict[str, bool] = {}
        self._referrer_locks: dict[tuple[str, str], asyncio.Lock] = {}

    @property
    def transport_options(self) -> TransportOptions:
        return self._transport.options

    async def aclose(self) -> None:
        if self._owns_transport:
            await self._transport.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ---- API root ------------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Check that the registry speaks the v2 API and that our credentials (if asked for) work."""
        _, response = await self._request(CAP_PULL, "GET", "/", scopes=())
        async with response:
            await raise_for_status(response)

    # ---- manifests -----------------------------------------------------------------------------------

    async def get_manifest(
        self, repo: str, reference: str, accept: Sequence[str] = MANIFEST_MEDIA_TYPES
    ) -> tuple[bytes, str, str]:
        """Fetch a manifest or index by tag or digest: ``(bytes, media_type, digest)``, digest-verified.

        A mismatching answer is fetched again (``CORRUPT_ANSWER_RETRIES`` times, with backoff).

        Raises:
            NotFound: no endpoint has it.
            DataLoss: the bytes do not match the requested digest or the registry's ``Docker-Content-Digest``.
        """
        return await retry_corrupt(
            lambda: self._get_manifest_once(repo, reference, accept),
            f"manifest {repo}@{reference}",
            self.transport_options,
        )

    async def _get_manifest_once(self, repo: str, reference: str, accept: Sequence[str]) -> tuple[bytes, str, str]:
        check_repository(repo)
        check_tag_or_digest(reference)
        by_digest = ":" in reference
        if by_digest:
            parse_digest(reference)
        capability = CAP_PULL if by_digest else CAP_RESOLVE
        path = f"/{repo}/manifests/{reference}"
        headers = {"Accept": ", ".join(accept)}
        for attempt in range(self._body_attempts()):
            _, response = await self._request(capability, "GET", path, scopes=_pull(repo), headers=headers)
            try:
                async with response:
                    await raise_for_status(response)
                    data = await response.read(MAX_MANIFEST_BYTES)
            except BrokenBody as exc:
                await self._body_retry_wait(exc, attempt)
                continue
            digest = sha256_digest(data)
            where = f"manifest {repo}@{reference} from {redact_url(response.url)}"
            if by_digest and digest != reference:
                raise DataLoss(f"{where}: content digest {digest} does not match the requested digest")
            announced = response.headers.get("Docker-Content-Digest")
            if announced and announced.startswith("sha256:") and announced != digest:
                raise DataLoss(f"{where}: content digest {digest} does not match Docker-Content-Digest {announced}")
            return data, _manifest_media_type(response.content_type, data), digest
        raise AssertionError("unreachable")

    async def head_manifest(self, repo: str, reference: str) -> dict[str, Any]:
        """The descriptor (``mediaType``, ``digest``, ``size``) of a manifest, without its body if possible."""
        check_repository(repo)
        check_tag_or_digest(reference)
        capability = CAP_PULL if ":" in reference else CAP_RESOLVE
        headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        path = f"/{repo}/manifests/{reference}"
        _, response = await self._request(capability, "HEAD", path, scopes=_pull(repo), headers=headers)
        async with response:
            await raise_for_status(response)
            digest = response.headers.get("Docker-Content-Digest") or (reference if ":" in reference else "")
            length = response.headers.get("Content-Length")
            media_type = response.content_type
        if not digest or not length or media_type not in MANIFEST_MEDIA_TYPES:
            data, media_type, digest = await self.get_manifest(repo, reference)
            return {"mediaType": media_type, "digest": digest, "size": len(data)}
        return {"mediaType": media_type, "digest": digest, "size": int(length)}

    async def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """Upload a manifest under a tag or its digest; returns its digest.

        Raises:
            InvalidArgument: ``reference`` is a digest that ``data`` does not hash to.
            DataLoss: the registry reports a different digest than the bytes sent.
        """
        check_repository(repo)
        check_tag_or_digest(reference)
        digest = sha256_digest(data)
        if ":" in reference and reference != digest:
            raise InvalidArgument(f"manifest for {repo}@{reference} hashes to {digest}, not the given digest")
        path = f"/{repo}/manifests/{reference}"
        headers = {"Content-Type": media_type}
        _, response = await self._request(CAP_PUSH, "PUT", path, scopes=_push(repo), headers=headers, body=bytes(data))
        async with response:
            await raise_for_status(response, ok=(200, 201, 202))
            announced = response.headers.get("Docker-Content-Digest")
        if announced and announced.startswith("sha256:") and announced != digest:
            raise DataLoss(f"registry stored manifest {repo}:{reference} as {announced}, but its bytes are {digest}")
        return digest

    async def delete_manifest(self, repo: str, digest: str) -> None:
        check_repository(repo)
        parse_digest(digest)
        _, response = await self._request(CAP_PUSH, "DELETE", f"/{repo}/manifests/{digest}", scopes=_delete(repo))
        async with response:
            await raise_for_status(response, ok=(200, 202, 204))

    async def list_tags(self, repo: str) -> list[str]:
        """Every tag of ``repo``, following ``Link`` pagination."""
        check_repository(repo)
        host, response = await self._request(
            CAP_RESOLVE, "GET", f"/{repo}/tags/list?n={self.options.tags_page_size}", scopes=_pull(repo)
        )
        tags: list[str] = []
        while True:
            async with response:
                await raise_for_status(response)
                document = gojson.unmarshal_object(await response.read(MAX_MANIFEST_BYTES), f"tag list of {repo}")
                next_url = _next_link(response)
            page = document.get("tags") or []
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise FormatError(f"tag list of {repo}: 'tags' is not a list of strings")
            tags += page
            if next_url is None:
                return tags
            response = await self._send(host, "GET", next_url, scopes=_pull(repo))

    # ---- blobs ---------------------------------------------------------------------------------------

    async def blob_exists(self, repo: str, digest: str) -> bool:
        try:
            await self._head_blob(repo, digest)
        except NotFound:
            return False
        return True

    async def blob_size(self, repo: str, digest: str) -> int:
        """Size of a blob: HEAD, or when HEAD is refused, a one-byte ranged GET."""
        try:
            return await self._head_blob(repo, digest)
        except NotFound:
            raise
        except RegistryError as exc:
            if isinstance(exc, RegistryUnauthenticated) or exc.temporary:
                raise
            log.debug("HEAD of blob %s refused (%s); trying a ranged GET", digest, exc.status)
        headers = {"Range": "bytes=0-0", "Accept-Encoding": "identity"}
        _, response = await self._request(
            CAP_PULL, "GET", _blob_path(repo, digest), scopes=_pull(repo), headers=headers
        )
        async with response:
            await raise_for_status(response, ok=(200, 206))
            if response.status == 206:
                _, _, total = _parse_content_range(response)
                if total is not None:
                    return total
            length = response.headers.get("Content-Length")
            if response.status == 200 and length is not None:
                return int(length)
        raise FormatError(f"registry gave no size for blob {repo}@{digest}")

    async def _head_blob(self, repo: str, digest: str) -> int:
        check_repository(repo)
        parse_digest(digest)
        _, response = await self._request(CAP_PULL, "HEAD", _blob_path(repo, digest), scopes=_pull(repo))
        async with response:
            await raise_for_status(response)
            length = response.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RegistryUnsupported(f"HEAD of blob {repo}@{digest} has no Content-Length", status=200)
        return int(length)

    async def get_blob(self, repo: str, digest: str, size: int | None = None) -> bytes:
        """The whole blob, digest-verified (resuming with a Range request if the connection breaks); a blob that
        arrives whole but wrong is fetched again (``CORRUPT_ANSWER_RETRIES`` times, with backoff)."""

        async def once() -> bytes:
            return b"".join([chunk async for chunk in self.open_blob_stream(repo, digest, size)])

        return await retry_corrupt(once, f"blob {repo}@{digest}", self.transport_options)

    async def open_blob_stream(self, repo: str, digest: str, size: int | None = None) -> AsyncGenerator[bytes, None]:
        """Yield a blob's bytes in chunks; the digest is checked before the last chunk is yielded.

        Use ``contextlib.aclosing`` when stopping early. A broken connection is resumed from the byte
        where it stopped.

        Raises:
            DataLoss: the bytes (or their count, when ``size`` is given) do not match.
        """
        check_repository(repo)
        parse_digest(digest)
        hasher = hashlib.sha256()
        received = 0
        pending: bytes | None = None
        failures = 0
        while True:
            headers = {"Accept-Encoding": "identity"}
            if received:
                headers["Range"] = f"bytes={received}-"
            try:
                _, response = await self._request(
                    CAP_PULL, "GET", _blob_path(repo, digest), scopes=_pull(repo), headers=headers
                )
                async with response:
                    await raise_for_status(response, ok=(200, 206) if received else (200,))
                    skip = received if response.status == 200 else 0
                    if response.status == 206:
                        first, _, _ = _parse_content_range(response)
                        if first != received:
                            raise BrokenBody(f"blob {repo}@{digest}: server resumed at byte {first}, not {received}")
                    async for chunk in response.iter_chunks():
                        if skip:
                            dropped = min(skip, len(chunk))
                            chunk, skip = chunk[dropped:], skip - dropped
                            if not chunk:
                                continue
                        hasher.update(chunk)
                        received += len(chunk)
                        failures = 0
                        if pending is not None:
                            yield pending
                        pending = chunk
                break
            except BrokenBody as exc:
                failures += 1
                if failures > self.transport_options.max_retries:
                    raise
                log.debug("blob %s: %s; resuming at byte %d", digest, exc, received)
                await asyncio.sleep(backoff_sec(failures - 1, self.transport_options, exc.retry_after_sec))
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest:
            raise DataLoss(f"blob {repo}@{digest}: content digest {actual} does not match")
        if size is not None and received != size:
            raise DataLoss(f"blob {repo}@{digest}: got {received} bytes, expected {size}")
        if pending is not None:
            yield pending

    async def read_blob_range(self, repo: str, digest: str, offset: int, length: int) -> bytes:
        """``length`` bytes of a blob from ``offset`` (fewer only where the blob ends).

        Unverifiable by itself: callers check span digests. A body that breaks is resumed with a new
        Range request for the remainder; a server that ignores Range (200) is sliced correctly.
        """
        check_repository(repo)
        parse_digest(digest)
        if offset < 0 or length < 0:
            raise InvalidArgument(f"invalid blob range offset={offset} length={length}")
        out = bytearray()
        failures = 0
        end = offset + length  # exclusive; shrinks if the blob turns out shorter
        while offset + len(out) < end:
            start = offset + len(out)
            headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
            try:
                _, response = await self._request(
                    CAP_PULL, "GET", _blob_path(repo, digest), scopes=_pull(repo), headers=headers
                )
                async with response:
                    await raise_for_status(response, ok=(200, 206))
                    skip = start if response.status == 200 else 0
                    if response.status == 206:
                        first, _, total = _parse_content_range(response)
                        if first != start:
                            raise BrokenBody(f"blob {repo}@{digest}: asked for byte {start}, got {first}")
                        if total is not None:
                            end = min(end, total)
                    before = len(out)
                    async for chunk in response.iter_chunks():
                        if skip:
                            dropped = min(skip, len(chunk))
                            chunk, skip = chunk[dropped:], skip - dropped
                        out += chunk[: max(0, end - offset - len(out))]
                        if offset + len(out) >= end:
                            break
                    if len(out) == before or (response.status == 200 and offset + len(out) < end):
                        # a clean answer that adds nothing (or a whole blob ending early): the blob ends here
                        end = offset + len(out)
                failures = 0
            except BrokenBody as exc:
                failures += 1
                if failures > self.transport_options.max_retries:
                    raise
                log.debug("blob %s range: %s; resuming at byte %d", digest, exc, offset + len(out))
                await asyncio.sleep(backoff_sec(failures - 1, self.transport_options, exc.retry_after_sec))
        return bytes(out)

    async def push_blob(
        self,
        repo: str,
        digest: str,
        data: bytes | bytearray | memoryview | Path | AsyncIterable[bytes],
        size: int | None = None,
        *,
        mount_from: str | None = None,
    ) -> PushOutcome:
        """Upload a blob unless it is already there; mount it from ``mount_from`` (same registry) if possible.

        Bytes and files are retried as a whole on connection failures; an async iterable is sent once.

        Raises:
            InvalidArgument: ``size`` is missing for a stream or does not match the data.
            DataLoss: the registry computed a different digest.
        """
        check_repository(repo)
        parse_digest(digest)
        if mount_from is not None:
            check_repository(mount_from)
        size = _body_size(data, size)
        if await self.blob_exists(repo, digest):
            return "exists"
        replayable = isinstance(data, bytes | bytearray | memoryview | Path)
        attempts = 1 + (self.transport_options.max_retries if replayable else 0)
        for attempt in range(attempts):
            try:
                return await self._push_blob_once(repo, digest, data, size, mount_from)
            except Unavailable as exc:
                if attempt + 1 >= attempts:
                    raise
                log.debug("pushing blob %s: %s; starting the upload again", digest, exc)
                await asyncio.sleep(backoff_sec(attempt, self.transport_options))
        raise AssertionError("unreachable")

    async def _push_blob_once(
        self,
        repo: str,
        digest: str,
        data: bytes | bytearray | memoryview | Path | AsyncIterable[bytes],
        size: int,
        mount_from: str | None,
    ) -> PushOutcome:
        scopes = list(_push(repo))
        path = f"/{repo}/blobs/uploads/"
        if mount_from and mount_from != repo:
            scopes.append(f"repository:{mount_from}:pull")
            path += "?" + urlencode({"mount": digest, "from": mount_from})
        host, response = await self._request(CAP_PUSH, "POST", path, scopes=scopes, headers={"Content-Length": "0"})
        async with response:
            await raise_for_status(response, ok=(201, 202))
            if response.status == 201:
                return "mounted"
            location = _location(response)
        if size > self.options.monolithic_upload_max_bytes:
            location = await self._upload_chunks(host, repo, location, data, size, scopes)
            body: Body = None
            headers = {"Content-Length": "0"}
        else:
            body = data if isinstance(data, Path | AsyncIterable) else bytes(data)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        url = _with_query(location, digest=digest)
        response = await self._send(host, "PUT", url, scopes=scopes, headers=headers, body=body, retry=False)
        async with response:
            await raise_for_status(response, ok=(201, 204))
        return "uploaded"

    async def _upload_chunks(
        self,
        host: RegistryHost,
        repo: str,
        location: str,
        data: bytes | bytearray | memoryview | Path | AsyncIterable[bytes],
        size: int,
        scopes: Sequence[str],
    ) -> str:
        sent = 0
        async for chunk in _rechunk(data, self.options.upload_chunk_bytes):
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{sent}-{sent + len(chunk) - 1}",
                "Content-Length": str(len(chunk)),
            }
            response = await self._send(
                host, "PATCH", location, scopes=scopes, headers=headers, body=chunk, retry=False
            )
            async with response:
                await raise_for_status(response, ok=(202, 204))
                location = _location(response)
            sent += len(chunk)
        if sent != size:
            raise InvalidArgument(f"blob upload to {repo}: data has {sent} bytes, size says {size}")
        return location

    # ---- referrers -----------------------------------------------------------------------------------

    async def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[dict[str, Any]]:
        """Descriptors of manifests whose ``subject`` is ``digest``, optionally of one ``artifactType``.

        Uses the OCI referrers API; where it is missing (404), reads the ``sha256-<hex>`` fallback tag. Until
        the registry has said which it serves for ``repo``, both are asked at once: a registry without the API
        then costs no extra round trip, and one with it an extra tag lookup, once.
        """
        check_repository(repo)
        parse_digest(digest)
        found: list[dict[str, Any]] | None = None
        supported = self._referrers_api.get(repo)
        if supported is None:
            found = await self._referrers_either_way(repo, digest, artifact_type)
        elif supported:
            found = await self._referrers_from_api(repo, digest, artifact_type)
        if found is None:
            found, _ = await self._read_referrers_index(repo, referrers_tag(digest))
        if artifact_type is not None:
            found = [d for d in found if d.get("artifactType") == artifact_type]
        return found

    async def referrers_api_supported(self, repo: str, digest: str) -> bool:
        """Whether the registry serves ``/referrers/`` for ``repo`` (probed with ``digest``, then cached)."""
        if repo not in self._referrers_api:
            await self._referrers_from_api(repo, digest, None)
        return self._referrers_api[repo]

    async def _referrers_either_way(self, repo: str, digest: str, artifact_type: str | None) -> list[dict[str, Any]]:
        """The API's answer, or the fallback tag's where the API is missing; both requests sent at once."""
        fallback = asyncio.ensure_future(self._read_referrers_index(repo, referrers_tag(digest)))
        try:
            found = await self._referrers_from_api(repo, digest, artifact_type)
            return found if found is not None else (await fallback)[0]
        finally:
            fallback.cancel()  # unless done: the API answered, or failed
            await asyncio.gather(fallback, return_exceptions=True)

    async def _referrers_from_api(
        self, repo: str, digest: str, artifact_type: str | None
    ) -> list[dict[str, Any]] | None:
        path = f"/{repo}/referrers/{digest}"
        if artifact_type:
            path += "?" + urlencode({"artifactType": artifact_type})
        headers = {"Accept": OCI_INDEX}
        host, response = await self._request(CAP_PULL, "GET", path, scopes=_pull(repo), headers=headers)
        found: list[dict[str, Any]] = []
        while True:
            async with response:
                if response.status in (404, 400, 405, 501) or (
                    response.status == 200 and response.content_type != OCI_INDEX
                ):
                    body = await response.read(64 << 10)
                    error = error_from_response("GET", response.url, response.status, response.reason, body)
                    if "NAME_UNKNOWN" in error.codes:
                        raise error
                    self._referrers_api[repo] = False
                    return None
                await raise_for_status(response)
                document = gojson.unmarshal_object(await response.read(MAX_MANIFEST_BYTES), f"referrers of {digest}")
                next_url = _next_link(response)
            self._referrers_api[repo] = True
            found += _descriptor_list(document, f"referrers of {digest}")
            if next_url is None:
                return found
            response = await self._send(host, "GET", next_url, scopes=_pull(repo), headers=headers)

    async def add_referrer(self, repo: str, subject_digest: str, descriptor: Mapping[str, Any]) -> None:
        """Add ``descriptor`` to the ``sha256-<hex>`` fallback index of ``subject_digest``.

        For registries without the referrers API. Other writers may update the same tag at the same time:
        after writing, the index is read back after ``referrers_settle_sec`` and the update redone if
        another writer's stale copy replaced it (bounded by ``referrers_max_attempts``).
        """
        parse_digest(str(descriptor.get("digest", "")))
        entry = dict(descriptor)
        await self._update_referrers_index(repo, subject_digest, add=entry, remove=None)

    async def remove_referrer(self, repo: str, subject_digest: str, referrer_digest: str) -> None:
        """Drop ``referrer_digest`` from the fallback index of ``subject_digest`` (no-op if absent)."""
        parse_digest(referrer_digest)
        await self._update_referrers_index(repo, subject_digest, add=None, remove=referrer_digest)

    async def _update_referrers_index(
        self, repo: str, subject: str, *, add: dict[str, Any] | None, remove: str | None
    ) -> None:
        check_repository(repo)
        tag = referrers_tag(subject)
        target = add["digest"] if add is not None else remove

        def satisfied(manifests: list[dict[str, Any]]) -> bool:
            present = any(d.get("digest") == target for d in manifests)
            return present if add is not None else not present

        lock = self._referrer_locks.setdefault((repo, tag), asyncio.Lock())
        async with lock:  # writers in this process take turns; other processes are caught by the re-read
            for attempt in range(self.options.referrers_max_attempts):
                manifests, index_digest = await self._read_referrers_index(repo, tag)
                if not satisfied(manifests):
                    if add is not None:
                        manifests = [d for d in manifests if d.get("digest") != target] + [add]
                    else:
                        manifests = [d for d in manifests if d.get("digest") != target]
                    await self._write_referrers_index(repo, tag, manifests, index_digest)
                elif attempt == 0:
                    return
                await asyncio.sleep(self.options.referrers_settle_sec * random.uniform(1.0, 1.5))
                after, _ = await self._read_referrers_index(repo, tag)
                if satisfied(after):
                    return
                log.debug("referrers index %s:%s lost a concurrent update; redoing it", repo, tag)
        raise Unavailable(
            f"referrers index {repo}:{tag} kept losing concurrent updates after "
            f"{self.options.referrers_max_attempts} attempts"
        )

    async def _read_referrers_index(self, repo: str, tag: str) -> tuple[list[dict[str, Any]], str | None]:
        try:
            data, media_type, digest = await self.get_manifest(repo, tag, accept=(OCI_INDEX,))
        except NotFound:
            return [], None
        if media_type != OCI_INDEX:
            raise FormatError(f"referrers fallback tag {repo}:{tag} holds {media_type}, not an OCI index")
        return _descriptor_list(gojson.unmarshal_object(data, f"referrers index {repo}:{tag}"), f"{repo}:{tag}"), digest

    async def _write_referrers_index(
        self, repo: str, tag: str, manifests: list[dict[str, Any]], old_digest: str | None
    ) -> None:
        if not manifests and old_digest is not None:
            # an empty fallback index is deleted, as ORAS does; registries that refuse deletes keep it empty
            try:
                await self.delete_manifest(repo, old_digest)
                return
            except (RegistryUnsupported, NotFound) as exc:
                log.debug("cannot delete empty referrers index %s:%s (%s); writing it empty", repo, tag, exc)
        await self.put_manifest(repo, tag, encode_index(manifests), OCI_INDEX)

    # ---- request plumbing ----------------------------------------------------------------------------

    def _hosts_for(self, capability: str) -> list[RegistryHost]:
        now = time.monotonic()
        able = [h for h in self.hosts if h.can(capability)]
        up = [h for h in able if self._down_until.get(h.base_url, 0.0) <= now]
        return up + [h for h in able if h not in up]

    async def _request(
        self,
        capability: str,
        method: str,
        path: str,
        *,
        scopes: Sequence[str],
        headers: Mapping[str, str] | None = None,
        body: Body = None,
    ) -> tuple[RegistryHost, Response]:
        """Send to the first endpoint that answers; 404s and outages on mirrors move on to the next."""
        candidates = self._hosts_for(capability)
        if not candidates:
            raise RegistryUnsupported(f"no endpoint configured for {self.domain} can {capability}")
        for index, host in enumerate(candidates):
            last = index == len(candidates) - 1
            try:
                url = host.base_url + path
                response = await self._send(host, method, url, scopes=scopes, headers=headers, body=body)
            except RegistryUnavailable as exc:
                self._mark_down(host)
                if last:
                    raise
                log.info("registry endpoint %s failed (%s); trying the next one", host.base_url, exc)
                continue
            if not last and capability != CAP_PUSH and (response.status == 404 or is_retryable_status(response.status)):
                if response.status != 404:
                    self._mark_down(host)
                log.debug("registry endpoint %s answered %d; trying the next one", host.base_url, response.status)
                response.release()
                continue
            self._down_until.pop(host.base_url, None)
            return host, response
        raise AssertionError("unreachable")

    async def _send(
        self,
        host: RegistryHost,
        method: str,
        url: str,
        *,
        scopes: Sequence[str],
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        retry: bool = True,
    ) -> Response:
        """One request to one endpoint, answering authentication challenges (at most twice)."""
        merged = dict(host.headers)
        merged.update(headers or {})
        authorization = await self.authorizer.authorization(host, scopes)
        for _ in range(3):
            request_headers = dict(merged)
            if authorization:
                request_headers["Authorization"] = authorization
            response = await self._transport.request(
                method, url, headers=request_headers, body=body, ssl_context=host.ssl_context, retry=retry
            )
            challenges = response.header_values("WWW-Authenticate")
            if response.status == 403:
                error_body = await response.read(64 << 10)
                response.release()
                _, messages = parse_error_body(error_body)
                if ECR_EXPIRED_TOKEN_MESSAGE not in messages:
                    raise error_from_response(method, response.url, 403, response.reason, error_body)
                challenges = [f'Basic realm="https://{host.host}/",service="ecr.amazonaws.com"']
            elif response.status != 401:
                return response
            retry_with = await self.authorizer.on_unauthorized(host, scopes, challenges, authorization)
            if retry_with is None or not _can_resend(body):
                return response
            response.release()
            authorization = retry_with
        return response

    def _mark_down(self, host: RegistryHost) -> None:
        if len(self.hosts) > 1:
            self._down_until[host.base_url] = time.monotonic() + self.options.host_cooloff_sec

    def _body_attempts(self) -> int:
        return 1 + self.transport_options.max_retries

    async def _body_retry_wait(self, exc: BrokenBody, attempt: int) -> None:
        if attempt + 1 >= self._body_attempts():
            raise exc
        await asyncio.sleep(backoff_sec(attempt, self.transport_options, exc.retry_after_sec))


# ---- helpers ---------------------------------------------------------------------------------------------


def referrers_tag(digest: str) -> str:
    """The fallback tag that indexes the referrers of ``digest``: ``sha256-<hex>``."""
    return "sha256-" + digest_hex(digest)


_DESCRIPTOR_KEYS = ("mediaType", "digest", "size", "urls", "annotations", "data", "platform", "artifactType")
_GO_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))
_PLATFORM_KEYS = ("architecture", "os", "os.version", "os.features", "variant", "features")


def encode_index(manifests: Sequence[Mapping[str, Any]]) -> bytes:
    """An OCI image index listing ``manifests``, serialised as Go's ``json.Marshal(ocispec.Index)`` would."""
    entries = [_go_order(d, _DESCRIPTOR_KEYS) for d in manifests]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    text = json.dumps(index, separators=(",", ":"), ensure_ascii=False)
    # Go escapes these in strings; they appear nowhere else in JSON
    for char, escape in _GO_ESCAPES:
        text = text.replace(char, escape)
    return text.encode()


def _go_order(descriptor: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    ordered: dict[str, Any] = {}
    for key in keys:
        value = descriptor.get(key)
        if value in (None, "", [], {}) and key not in ("mediaType", "digest", "size"):
            continue
        if key == "annotations" and isinstance(value, Mapping):
            value = dict(sorted(value.items()))
        elif key == "platform" and isinstance(value, Mapping):
            value = _go_order(value, _PLATFORM_KEYS)
        ordered[key] = value
    return ordered


def _pull(repo: str) -> tuple[str, ...]:
    return (f"repository:{repo}:pull",)


def _push(repo: str) -> tuple[str, ...]:
    return (f"repository:{repo}:pull,push",)


def _delete(repo: str) -> tuple[str, ...]:
    return (f"repository:{repo}:delete",)


def _blob_path(repo: str, digest: str) -> str:
    return f"/{repo}/blobs/{digest}"


def _can_resend(body: Body) -> bool:
    return body is None or isinstance(body, bytes | bytearray | memoryview | Path)


def _manifest_media_type(content_type: str, data: bytes) -> str:
    if content_type in MANIFEST_MEDIA_TYPES:
        return content_type
    try:
        document = gojson.loads(data, "manifest")
    except FormatError:
        document = None
    if isinstance(document, dict):
        declared = document.get("mediaType")
        if isinstance(declared, str) and declared:
            return declared
        if "manifests" in document:
            return OCI_INDEX
        if "layers" in document or "config" in document:
            return OCI_MANIFEST
    return content_type or "application/octet-stream"


def _descriptor_list(document: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
    manifests = document.get("manifests") or []
    if not isinstance(manifests, list) or not all(isinstance(d, dict) for d in manifests):
        raise FormatError(f"{what}: 'manifests' is not a list of descriptors")
    return [dict(d) for d in manifests]


def _parse_content_range(response: Response) -> tuple[int, int, int | None]:
    """``(first, last, total)`` from ``Content-Range: bytes a-b/total`` (total None for ``*``)."""
    value = response.headers.get("Content-Range", "")
    try:
        unit, _, spec = value.strip().partition(" ")
        span, _, total = spec.partition("/")
        first, _, last = span.partition("-")
        if unit != "bytes":
            raise ValueError(value)
        return int(first), int(last), (None if total == "*" else int(total))
    except ValueError:
        raise BrokenBody(
            f"GET {redact_url(response.url)}: 206 with unreadable Content-Range {value!r}", status=206
        ) from None


def _next_link(response: Response) -> str | None:
    """The absolute URL of a ``Link: <...>; rel="next"`` header, if any."""
    for value in response.header_values("Link"):
        for part in value.split(","):
            target, _, params = part.partition(";")
            if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
                return urljoin(response.url, target.strip().strip("<>"))
    return None


def _location(response: Response) -> str:
    location = response.headers.get("Location")
    if not location:
        raise RegistryNotFound(f"{response.method} {redact_url(response.url)}: upload answer has no Location")
    return urljoin(response.url, location)


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def _body_size(data: bytes | bytearray | memoryview | Path | AsyncIterable[bytes], size: int | None) -> int:
    if isinstance(data, bytes | bytearray | memoryview):
        actual = len(data)
    elif isinstance(data, Path):
        actual = data.stat().st_size
    else:
        if size is None:
            raise InvalidArgument("push_blob needs the size of a streamed blob")
        return size
    if size is not None and size != actual:
        raise InvalidArgument(f"push_blob was told size {size}, but the data has {actual} bytes")
    return actual


async def _rechunk(
    data: bytes | bytearray | memoryview | Path | AsyncIterable[bytes], chunk_bytes: int
) -> AsyncIterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        for start in range(0, len(view), chunk_bytes):
            yield bytes(view[start : start + chunk_bytes])
        return
    if isinstance(data, Path):
        with data.open("rb") as file:
            while chunk := await asyncio.to_thread(file.read, chunk_bytes):
                yield chunk
        return
    buffer = bytearray()
    async for piece in data:
        buffer += piece
        while len(buffer) >= chunk_bytes:
            yield bytes(buffer[:chunk_bytes])
            del buffer[:chunk_bytes]
    if buffer:
        yield bytes(buffer)
