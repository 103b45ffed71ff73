"""Where registry credentials come from: ``--user``, the environment, Docker's ``config.json`` and its helpers.

Nothing here logs or formats a secret: ``Credentials`` hides its password and token from ``repr``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from soci.errors import FormatError, InvalidArgument
from soci.formats import gojson

log = logging.getLogger(__name__)

ENV_USERNAME = "SOCI_USERNAME"
ENV_PASSWORD = "SOCI_PASSWORD"
ENV_DOCKER_CONFIG = "DOCKER_CONFIG"
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HELPER_TIMEOUT_SEC = 30.0
_HELPER_TOKEN_USERNAME = "<token>"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username with a password, an identity (refresh) token for the OAuth2 token endpoint, or a registry
    token (a Bearer token sent to the registry as is, as CRI's ``AuthConfig.registry_token``)."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)

    def __repr__(self) -> str:
        if self.registry_token:
            secret = "registry_token=***"
        else:
            secret = "identity_token=***" if self.identity_token else "password=***"
        return f"Credentials(username={self.username!r}, {secret})"

    __str__ = __repr__


class CredentialProvider(Protocol):
    """Looks up credentials for a registry host (``host[:port]``); None when it has none."""

    async def get(self, host: str) -> Credentials | None: ...


class StaticCredentials:
    """The same credentials for every host, or per host from a mapping."""

    def __init__(self, credentials: Credentials | Mapping[str, Credentials]) -> None:
        self._credentials = credentials

    async def get(self, host: str) -> Credentials | None:
        if isinstance(self._credentials, Credentials):
            return self._credentials
        return self._credentials.get(host)


class EnvironmentCredentials:
    """``SOCI_USERNAME`` / ``SOCI_PASSWORD``, for every host."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    async def get(self, host: str) -> Credentials | None:
        username = self._environ.get(ENV_USERNAME, "")
        password = self._environ.get(ENV_PASSWORD, "")
        if not username and not password:
            return None
        return Credentials(username, password)


class DockerConfigCredentials:
    """Docker's ``config.json``: ``credHelpers``, then ``credsStore``, then inline ``auths`` entries."""

    def __init__(self, path: Path | None = None, *, environ: Mapping[str, str] | None = None) -> None:
        self._path = path or docker_config_path(environ)
        self._helper_cache: dict[tuple[str, str], Credentials | None] = {}

    @property
    def path(self) -> Path:
        return self._path

    async def get(self, host: str) -> Credentials | None:
        config = self._load()
        if config is None:
            return None
        helpers = config.get("credHelpers") or {}
        helper = helpers.get(host) if isinstance(helpers, dict) else None
        if helper is None and host in _DOCKER_HUB_ALIASES and isinstance(helpers, dict):
            helper = next((helpers[a] for a in _DOCKER_HUB_ALIASES if a in helpers), None)
        if isinstance(helper, str) and helper:
            return await self._from_helper(helper, host)
        entry = _find_auth_entry(config.get("auths"), host)
        inline = _decode_auth_entry(entry, self._path) if entry is not None else None
        if inline is not None:
            return inline
        store = config.get("credsStore")
        if isinstance(store, str) and store:
            return await self._from_helper(store, host)
        return None

    def _load(self) -> dict[str, Any] | None:
        try:
            document = gojson.loads(self._path.read_bytes(), f"docker config {self._path}")
        except FileNotFoundError:
            return None
        except (OSError, FormatError) as exc:
            raise InvalidArgument(f"cannot read docker config {self._path}: {exc}") from exc
        if not isinstance(document, dict):
            raise InvalidArgument(f"docker config {self._path} is not a JSON object")
        return document

    async def _from_helper(self, helper: str, host: str) -> Credentials | None:
        key = (helper, host)
        if key not in self._helper_cache:
            server = DOCKER_HUB_AUTH_KEY if host in _DOCKER_HUB_ALIASES else host
            self._helper_cache[key] = await run_credential_helper(helper, server)
        return self._helper_cache[key]


class ChainCredentials:
    """The first provider that has credentials for a host wins."""

    def __init__(self, *providers: CredentialProvider) -> None:
        self._providers = providers

    async def get(self, host: str) -> Credentials | None:
        for provider in self._providers:
            found = await provider.get(host)
            if found is not None:
                return found
        return None


def parse_user(text: str) -> Credentials:
    """``user[:password]`` as given to ``--user``; a missing password is left empty for the caller to ask."""
    username, _, password = text.partition(":")
    if not username:
        raise InvalidArgument("--user needs a user name before ':'")
    return Credentials(username, password)


def default_credentials(
    user: str | None = None,
    *,
    docker_config: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> CredentialProvider:
    """``--user`` first, then ``SOCI_USERNAME``/``SOCI_PASSWORD``, then Docker's config."""
    providers: list[CredentialProvider] = []
    if user:
        providers.append(StaticCredentials(parse_user(user)))
    providers.append(EnvironmentCredentials(environ))
    providers.append(DockerConfigCredentials(docker_config, environ=environ))
    return ChainCredentials(*providers)


def docker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    directory = env.get(ENV_DOCKER_CONFIG)
    if directory:
        return Path(directory) / "config.json"
    return Path(env.get("HOME") or Path.home()) / ".docker" / "config.json"


async def run_credential_helper(helper: str, server: str) -> Credentials | None:
    """Ask ``docker-credential-<helper> get`` for ``server``; None when it has nothing or fails."""
    program = f"docker-credential-{helper}"
    try:
        process = await asyncio.create_subprocess_exec(
            program,
            "get",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        log.warning("credential helper %s cannot run: %s", program, exc.strerror or exc)
        return None
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(server.encode()), _HELPER_TIMEOUT_SEC)
    except TimeoutError:
        process.kill()
        await process.wait()
        log.warning("credential helper %s timed out for %s", program, server)
        return None
    if process.returncode != 0:
        # stdout carries the helper's message ("credentials not found..."); never a secret on failure
        log.debug("credential helper %s has no credentials for %s", program, server)
        return None
    try:
        answer = gojson.loads(stdout, f"credential helper {program}")
        username, secret = str(answer.get("Username", "")), str(answer.get("Secret", ""))
    except (FormatError, AttributeError):
        log.warning("credential helper %s returned malformed output for %s", program, server)
        return None
    if username == _HELPER_TOKEN_USERNAME:
        return Credentials(identity_token=secret)
    return Credentials(username, secret)


def same_registry(a: str, b: str) -> bool:
    """Whether two registry hosts are one registry (Docker Hub answers to several names)."""
    return _normalise_auth_key(a) == _normalise_auth_key(b)


def _normalise_auth_key(key: str) -> str:
    host = key.split("://", 1)[1] if "://" in key else key
    host = host.split("/", 1)[0]
    return "docker.io" if host in _DOCKER_HUB_ALIASES else host


def _find_auth_entry(auths: Any, host: str) -> dict[str, Any] | None:
    if not isinstance(auths, dict):
        return None
    wanted = _normalise_auth_key(host)
    if isinstance(auths.get(host), dict):
        return auths[host]  # type: ignore[no-any-return]
    for key, entry in auths.items():
        if isinstance(entry, dict) and _normalise_auth_key(key) == wanted:
            return entry
    return None


def _decode_auth_entry(entry: Mapping[str, Any], path: Path) -> Credentials | None:
    identity_token = str(entry.get("identitytoken") or "")
    encoded = entry.get("auth")
    if encoded:
        try:
            decoded = base64.b64decode(str(encoded), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"docker config {path}: an auths entry has a malformed 'auth' value") from exc
        username, sep, password = decoded.partition(":")
        if not sep:
            raise InvalidArgument(f"docker config {path}: an auths entry's 'auth' is not base64 of user:password")
        return Credentials(username, password, identity_token)
    username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
    if username or password or identity_token:
        return Credentials(username, password, identity_token)
    return None
