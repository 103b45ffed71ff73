"""A fault-injecting HTTP proxy (aiohttp, in the test's event loop) in front of a real registry.

Each queued ``Fault`` applies to the next requests whose path contains ``match``: answer a status
(optionally with ``Retry-After``), cut the body after some bytes, flip a bit, ignore ``Range``,
or redirect elsewhere. Every request is recorded (method, path, headers) for assertions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from aiohttp import web

FaultKind = Literal["status", "drop", "flip", "ignore_range", "redirect"]

_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}
_COPY_BACK = ("Content-Type", "Content-Range", "Docker-Content-Digest", "Location", "WWW-Authenticate", "Accept-Ranges")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Fault:
    kind: FaultKind
    match: str = "/blobs/sha256:"
    method: str = "GET"
    times: int = 1
    status: int = 500
    retry_after: str | None = None
    after_bytes: int = 1000
    """For ``drop``: bytes sent before the connection is cut."""
    flip_at: int = 0
    """For ``flip``: index of the body byte whose lowest bit is flipped."""
    location: str = ""
    """For ``redirect``: base URL the request is redirected to (path kept)."""


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class FaultProxy:
    """Forwards to ``upstream`` (``http://host:port``), injecting queued faults."""

    def __init__(self, upstream: str, *, require_basic: str | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.require_basic = require_basic
        """If set, an ``Authorization`` value every request must carry (else 401 with a Basic challenge)."""
        self.faults: list[Fault] = []
        self.seen: list[SeenRequest] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add(self, fault: Fault) -> FaultProxy:
        self.faults.append(fault)
        return self

    def requests_to(self, fragment: str, method: str = "GET") -> list[SeenRequest]:
        return [r for r in self.seen if fragment in r.path and r.method == method]

    async def __aenter__(self) -> FaultProxy:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _take_fault(self, request: web.Request) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.match in request.path_qs and fault.method == request.method:
                fault.times -= 1
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(SeenRequest(request.method, request.path_qs, dict(request.headers)))
        if self.require_basic is not None and request.headers.get("Authorization") != self.require_basic:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="fault-proxy"'})
        fault = self._take_fault(request)
        if fault is not None and fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return web.Response(status=fault.status, headers=headers, text="injected failure")
        if fault is not None and fault.kind == "redirect":
            return web.Response(status=307, headers={"Location": fault.location.rstrip("/") + request.path_qs})
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        if fault is not None and fault.kind == "ignore_range":
            headers.pop("Range", None)
        body = await request.read()
        assert self._session is not None
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body or None, allow_redirects=False
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
            back = {k: upstream.headers[k] for k in _COPY_BACK if k in upstream.headers}
            upstream_length = upstream.headers.get("Content-Length")
        if fault is not None and fault.kind == "flip" and payload:
            index = min(fault.flip_at, len(payload) - 1)
            payload = payload[:index] + bytes([payload[index] ^ 1]) + payload[index + 1 :]
        if fault is not None and fault.kind == "drop":
            response = web.StreamResponse(status=status, headers=back)
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload[: fault.after_bytes])
            assert request.transport is not None
            request.transport.close()
            return response
        if request.method == "HEAD":
            response = web.StreamResponse(status=status, headers=back)
            if upstream_length is not None:
                response.content_length = int(upstream_length)
            return response
        return web.Response(status=status, headers=back, body=payload)
