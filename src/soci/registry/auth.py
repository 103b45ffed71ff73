"""Registry authorization: ``WWW-Authenticate`` challenges, Basic, and Bearer tokens cached per scope.

The first request to a host goes out anonymously; its 401 challenge teaches the scheme, and every later
request is authorized up front. Tokens are refreshed when they expire (``expires_in``/``issued_at``) and
when the registry answers 401 to a token we sent.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode, urlsplit

from soci.errors import FormatError, Unauthenticated
from soci.formats import gojson
from soci.registry.credentials import CredentialProvider, Credentials
from soci.registry.hosts import RegistryHost
from soci.registry.transport import AiohttpTransport, RegistryError, raise_for_status, redact_url

log = logging.getLogger(__name__)

DEFAULT_TOKEN_LIFETIME_SEC = 60.0
TOKEN_REFRESH_MARGIN_SEC = 5.0
"""Refresh a token this long before it expires, so it does not expire in flight."""
OAUTH_CLIENT_ID = "soci-py"
_MAX_TOKEN_RESPONSE_BYTES = 1 << 20

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNQUOTED_RE = re.compile(r"[^,\s]*")


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge from ``WWW-Authenticate``: lowercase scheme and its parameters (keys lowercase)."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)


def parse_www_authenticate(values: Iterable[str]) -> list[Challenge]:
    """Parse every challenge in the given header values (RFC 7235 syntax, quoted strings with escapes)."""
    challenges: list[Challenge] = []
    for value in values:
        challenges.extend(_parse_one_header(value))
    return challenges


def _parse_one_header(text: str) -> list[Challenge]:
    challenges: list[Challenge] = []
    pos, end = 0, len(text)
    current: dict[str, str] | None = None

    def skip(chars: str) -> None:
        nonlocal pos
        while pos < end and text[pos] in chars:
            pos += 1

    while pos < end:
        skip(" \t,")
        match = _TOKEN_RE.match(text, pos)
        if not match:
            break
        token = match.group()
        after = match.end()
        look = after
        while look < end and text[look] in " \t":
            look += 1
        if look < end and text[look] == "=" and current is not None:
            pos = look + 1
            skip(" \t")
            value, pos = _read_value(text, pos)
            current[token.lower()] = value
        else:
            current = {}
            challenges.append(Challenge(token.lower(), current))
            pos = after
    return challenges


def _read_value(text: str, pos: int) -> tuple[str, int]:
    if pos < len(text) and text[pos] == '"':
        out: list[str] = []
        pos += 1
        while pos < len(text) and text[pos] != '"':
            if text[pos] == "\\" and pos + 1 < len(text):
                pos += 1
            out.append(text[pos])
            pos += 1
        return "".join(out), pos + 1
    # unquoted: RFC 7235 wants a token, but registries send URLs unquoted too; read up to a separator
    match = _UNQUOTED_RE.match(text, pos)
    assert match is not None
    return match.group(), match.end()


def basic_authorization(credentials: Credentials) -> str:
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


@dataclass(slots=True)
class _Token:
    value: str = field(repr=False)
    expires_at: float
    """On the monotonic clock."""


class Authorizer:
    """Produces ``Authorization`` header values for requests to registry hosts.

    Args:
        transport: sends token requests (without registry authorization).
        credentials: looked up by host when a challenge asks for them; None means anonymous only.
        clock: monotonic seconds, injectable so token expiry is testable without sleeping.
        wall_clock: Unix seconds, to interpret ``issued_at``.
    """

    def __init__(
        self,
        transport: AiohttpTransport,
        credentials: CredentialProvider | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._transport = transport
        self._credentials = credentials
        self._clock = clock
        self._wall_clock = wall_clock
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, str, str, tuple[str, ...]], _Token] = {}
        self._inflight: dict[tuple[str, str, str, tuple[str, ...]], asyncio.Future[_Token]] = {}
        self.tokens_fetched = 0
        """How many tokens were requested from token servers (for tests and metrics)."""

    async def authorization(self, host: RegistryHost, scopes: Sequence[str]) -> str | None:
        """The header value to send now, or None before any challenge (or for anonymous hosts)."""
        challenge = self._challenges.get(_host_key(host))
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            credentials = await self._lookup(host)
            return basic_authorization(credentials) if credentials and credentials.username else None
        given = await self._registry_token(host)
        if given is not None:
            return given
        token = await self._token(host, challenge, scopes, force=False)
        return f"Bearer {token.value}"

    async def on_unauthorized(
        self, host: RegistryHost, scopes: Sequence[str], headers: Iterable[str], sent: str | None
    ) -> str | None:
        """Learn from a 401's challenges; the header value to retry with, or None if retrying is pointless.

        Args:
            headers: the response's ``WWW-Authenticate`` values.
            sent: the Authorization value the refused request carried.
        """
        challenges = parse_www_authenticate(headers)
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if chosen is None:
            return None
        self._challenges[_host_key(host)] = chosen
        if chosen.scheme == "basic":
            if sent is not None and sent.startswith("Basic "):
                return None
            credentials = await self._lookup(host)
            if credentials is None or not credentials.username:
                return None
            return basic_authorization(credentials)
        given = await self._registry_token(host)
        if given is not None:
            # a token handed to us cannot be refreshed: a refusal of it is final
            return None if given == sent else given
        wanted = list(scopes)
        extra = chosen.params.get("scope", "")
        for scope in extra.split():
            if scope not in wanted:
                wanted.append(scope)
        # a concurrent request may already have refreshed the token that was refused
        token = await self._token(host, chosen, wanted, force=False)
        if f"Bearer {token.value}" == sent:
            token = await self._token(host, chosen, wanted, force=True)
        header = f"Bearer {token.value}"
        return None if header == sent else header

    async def _lookup(self, host: RegistryHost) -> Credentials | None:
        if self._credentials is None:
            return None
        return await self._credentials.get(host.host)

    async def _registry_token(self, host: RegistryHost) -> str | None:
        """``Bearer <registry token>`` when the credentials are one, skipping the token server."""
        credentials = await self._lookup(host)
        if credentials is None or not credentials.registry_token:
            return None
        return f"Bearer {credentials.registry_token}"

    async def _token(self, host: RegistryHost, challenge: Challenge, scopes: Sequence[str], force: bool) -> _Token:
        realm = challenge.params.get("realm", "")
        if not realm:
            raise Unauthenticated(f"registry {host.host} sent a Bearer challenge without a realm")
        service = challenge.params.get("service", "")
        key = (_host_key(host), realm, service, tuple(sorted(set(scopes))))
        cached = self._tokens.get(key)
        if cached is not None and not force and self._clock() < cached.expires_at - TOKEN_REFRESH_MARGIN_SEC:
            return cached
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Token] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            token = await self._fetch_token(host, realm, service, key[3])
        except BaseException as exc:
            future.set_exception(exc)
            # mark retrieved so an unawaited future does not warn; waiters re-raise it themselves
            future.exception()
            raise
        else:
            self._tokens[key] = token
            future.set_result(token)
            return token
        finally:
            del self._inflight[key]

    async def _fetch_token(self, host: RegistryHost, realm: str, service: str, scopes: Sequence[str]) -> _Token:
        credentials = await self._lookup(host)
        ssl_context = host.ssl_context if urlsplit(realm).netloc == host.host else True
        self.tokens_fetched += 1
        if credentials is not None and credentials.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": credentials.identity_token,
                "service": service,
                "client_id": OAUTH_CLIENT_ID,
            }
            if scopes:
                form["scope"] = " ".join(scopes)
            body = urlencode(form).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            response = await self._transport.request("POST", realm, headers=headers, body=body, ssl_context=ssl_context)
        else:
            query: list[tuple[str, str]] = []
            if service:
                query.append(("service", service))
            query += [("scope", s) for s in scopes]
            url = realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm
            headers = {}
            if credentials is not None and credentials.username:
                headers["Authorization"] = basic_authorization(credentials)
            response = await self._transport.request("GET", url, headers=headers, ssl_context=ssl_context)
        try:
            async with response:
                await raise_for_status(response)
                raw = await response.read(_MAX_TOKEN_RESPONSE_BYTES)
        except RegistryError as exc:
            if exc.status in (401, 403):
                raise Unauthenticated(
                    f"token server {redact_url(realm)} refused the credentials for {host.host} ({exc.status})"
                ) from exc
            raise
        return self._parse_token_response(raw, realm)

    def _parse_token_response(self, raw: bytes, realm: str) -> _Token:
        try:
            document = gojson.loads(raw, "token response")
        except FormatError:
            raise Unauthenticated(f"token server {redact_url(realm)} answered with invalid JSON") from None
        if not isinstance(document, dict):
            raise Unauthenticated(f"token server {redact_url(realm)} answered with a non-object")
        value = document.get("token") or document.get("access_token")
        if not isinstance(value, str) or not value:
            raise Unauthenticated(f"token server {redact_url(realm)} answered without a token")
        lifetime = document.get("expires_in")
        lifetime_sec = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else None
        if lifetime_sec is None:
            lifetime_sec = DEFAULT_TOKEN_LIFETIME_SEC
        remaining = lifetime_sec
        issued_at = document.get("issued_at")
        if isinstance(issued_at, str):
            try:
                issued = datetime.fromisoformat(issued_at.replace("Z", "+00:00")).timestamp()
                remaining = min(lifetime_sec, issued + lifetime_sec - self._wall_clock())
            except ValueError:
                pass
        return _Token(value, self._clock() + remaining)


def _host_key(host: RegistryHost) -> str:
    return f"{host.scheme}://{host.host}"
