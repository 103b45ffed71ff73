"""Authentication against real registries: Basic over TLS (CA from hosts.toml) and Bearer tokens."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from soci.errors import PermissionDenied, Unauthenticated, Unavailable
from soci.registry import (
    Credentials,
    DockerConfigCredentials,
    RegistryClient,
    StaticCredentials,
    TransportOptions,
    resolve_hosts,
)
from soci.registry.transport import RegistryTLSError
from soci.testing.fault_proxy import digest_of
from soci.testing.registry_server import DEFAULT_USERS, RegistryServer

pytestmark = pytest.mark.registry

USER, PASSWORD = next(iter(DEFAULT_USERS.items()))
IDENTITY_TOKEN = "identity-token-for-soci-tests"
QUICK = TransportOptions(max_retries=1, min_wait_msec=1, max_wait_msec=10)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def tls_registry() -> Iterator[RegistryServer]:
    with RegistryServer(tls=True, auth="htpasswd") as server:
        yield server


@pytest.fixture(scope="module")
def token_registry() -> Iterator[RegistryServer]:
    with RegistryServer(auth="token", token_ttl_sec=300, identity_tokens={IDENTITY_TOKEN: USER}) as server:
        yield server


def tls_client(registry: RegistryServer, hosts_dir: Path, credentials: Credentials | None) -> RegistryClient:
    registry.write_hosts_toml(hosts_dir)
    provider = StaticCredentials(credentials) if credentials else None
    return RegistryClient(registry.host, hosts_dir=hosts_dir, credentials=provider, transport_options=QUICK)


def token_client(registry: RegistryServer, credentials: Credentials | None, **kwargs: object) -> RegistryClient:
    provider = StaticCredentials(credentials) if credentials else None
    hosts = resolve_hosts(registry.host, plain_http=True)
    return RegistryClient(registry.host, hosts=hosts, credentials=provider, transport_options=QUICK, **kwargs)  # type: ignore[arg-type]


async def test_basic_auth_over_tls_with_ca_from_hosts_toml(
    tls_registry: RegistryServer, tmp_path: Path, repo: str
) -> None:
    data = os.urandom(5000)
    async with tls_client(tls_registry, tmp_path, Credentials(USER, PASSWORD)) as client:
        assert client.hosts[0].base_url.startswith("https://")
        await client.ping()
        assert await client.push_blob(repo, digest_of(data), data) == "uploaded"
        assert await client.read_blob_range(repo, digest_of(data), 10, 20) == data[10:30]


async def test_basic_auth_refusals(tls_registry: RegistryServer, tmp_path: Path, repo: str) -> None:
    digest = tls_registry.push_blob(repo, b"x")
    async with tls_client(tls_registry, tmp_path, Credentials(USER, "wrong")) as client:
        with pytest.raises(Unauthenticated):
            await client.get_blob(repo, digest)
    async with tls_client(tls_registry, tmp_path, None) as client:
        with pytest.raises(Unauthenticated):
            await client.get_blob(repo, digest)


async def test_tls_needs_the_ca_unless_verification_is_skipped(
    tls_registry: RegistryServer, tmp_path: Path, repo: str
) -> None:
    digest = tls_registry.push_blob(repo, b"y")
    credentials = StaticCredentials(Credentials(USER, PASSWORD))
    async with RegistryClient(
        tls_registry.host, hosts_dir=tmp_path, credentials=credentials, transport_options=QUICK
    ) as client:
        with pytest.raises(RegistryTLSError) as caught:
            await client.get_blob(repo, digest)
        assert isinstance(caught.value, Unavailable) and "TLS" in str(caught.value)
    async with RegistryClient(
        tls_registry.host, hosts_dir=tmp_path, skip_verify=True, credentials=credentials, transport_options=QUICK
    ) as client:
        assert await client.get_blob(repo, digest) == b"y"


async def test_docker_config_credentials_authenticate(tls_registry: RegistryServer, tmp_path: Path, repo: str) -> None:
    digest = tls_registry.push_blob(repo, b"from docker config")
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {tls_registry.host: {"auth": encoded}}}))
    tls_registry.write_hosts_toml(tmp_path / "certs.d")
    async with RegistryClient(
        tls_registry.host,
        hosts_dir=tmp_path / "certs.d",
        credentials=DockerConfigCredentials(config),
        transport_options=QUICK,
    ) as client:
        assert await client.get_blob(repo, digest) == b"from docker config"


async def test_bearer_tokens_are_cached_per_scope(token_registry: RegistryServer, repo: str) -> None:
    assert token_registry.token_server is not None
    data = os.urandom(1000)
    before = len(token_registry.token_server.requests)
    async with token_client(token_registry, Credentials(USER, PASSWORD)) as client:
        await client.push_blob(repo, digest_of(data), data)
        for _ in range(5):
            assert await client.read_blob_range(repo, digest_of(data), 0, 10) == data[:10]
    requests = token_registry.token_server.requests[before:]
    scopes = [tuple(r.scopes) for r in requests]
    assert (f"repository:{repo}:pull",) in scopes and (f"repository:{repo}:pull,push",) in scopes
    assert len(scopes) == len(set(scopes)), "a token was fetched twice for the same scope"
    assert all(r.subject == USER for r in requests)


async def test_bearer_refreshes_a_token_the_registry_refuses(token_registry: RegistryServer, repo: str) -> None:
    server = token_registry.token_server
    assert server is not None
    digest = token_registry.push_blob(repo, b"refresh on 401")
    before = len(server.requests)
    server.expire_next(1)
    async with token_client(token_registry, Credentials(USER, PASSWORD)) as client:
        assert await client.get_blob(repo, digest) == b"refresh on 401"
    assert [r.expired for r in server.requests[before:]] == [True, False]


async def test_bearer_refreshes_on_expiry(token_registry: RegistryServer, repo: str) -> None:
    server = token_registry.token_server
    assert server is not None
    digest = token_registry.push_blob(repo, b"refresh on expiry")
    clock = ManualClock()
    async with token_client(token_registry, Credentials(USER, PASSWORD), clock=clock) as client:
        await client.get_blob(repo, digest)
        fetched = client.authorizer.tokens_fetched
        clock.now += 200  # within the 300 s lifetime
        await client.get_blob(repo, digest)
        assert client.authorizer.tokens_fetched == fetched
        clock.now += 100  # past expiry (minus the refresh margin)
        await client.get_blob(repo, digest)
        assert client.authorizer.tokens_fetched == fetched + 1


async def test_identity_token_uses_oauth_refresh_grant(token_registry: RegistryServer, repo: str) -> None:
    server = token_registry.token_server
    assert server is not None
    digest = token_registry.push_blob(repo, b"oauth")
    before = len(server.requests)
    async with token_client(token_registry, Credentials(identity_token=IDENTITY_TOKEN)) as client:
        assert await client.get_blob(repo, digest) == b"oauth"
    assert [r.subject for r in server.requests[before:]] == [USER]
    async with token_client(token_registry, Credentials(identity_token="wrong")) as client:
        with pytest.raises(Unauthenticated, match="refused"):
            await client.get_blob(repo, digest)


async def test_anonymous_pull_only(repo: str) -> None:
    with RegistryServer(auth="token", anonymous_pull=True) as registry:
        digest = registry.push_blob(repo, b"public")
        async with token_client(registry, None) as client:
            assert await client.get_blob(repo, digest) == b"public"
            with pytest.raises((Unauthenticated, PermissionDenied)):
                await client.push_blob(repo, digest_of(b"nope"), b"nope")


async def test_secrets_never_reach_logs_or_errors(
    tls_registry: RegistryServer,
    token_registry: RegistryServer,
    tmp_path: Path,
    repo: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert token_registry.token_server is not None
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []
    data = os.urandom(3000)
    async with tls_client(tls_registry, tmp_path, Credentials(USER, PASSWORD)) as client:
        await client.push_blob(repo, digest_of(data), data)
        await client.get_blob(repo, digest_of(data))
    async with tls_client(tls_registry, tmp_path, Credentials(USER, PASSWORD + "-wrong")) as client:
        try:
            await client.get_blob(repo, digest_of(data))
        except Unauthenticated as exc:
            messages.append(str(exc))
            messages.append(repr(exc))
    token_registry.token_server.expire_next(1)
    async with token_client(token_registry, Credentials(USER, PASSWORD)) as client:
        await client.push_blob(repo, digest_of(data), data)
        await client.get_blob(repo, digest_of(data))
    async with token_client(token_registry, Credentials(USER, "wrong-" + PASSWORD)) as client:
        try:
            await client.get_blob(repo, digest_of(data))
        except Unauthenticated as exc:
            messages.append(str(exc))
    secrets = [PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()]
    secrets += token_registry.token_server.issued_tokens
    secrets += [token.split(".")[2] for token in token_registry.token_server.issued_tokens]
    text = caplog.text + "\n".join(messages)
    assert "GET" in caplog.text  # requests were logged at DEBUG
    assert len(messages) == 3
    for secret in secrets:
        assert secret not in text


async def test_client_certificate_from_hosts_toml(tmp_path: Path, repo: str) -> None:
    with RegistryServer(client_certs=True) as registry:
        assert registry.tls_files is not None
        digest = registry.push_blob(repo, b"mutual TLS")
        files = registry.tls_files
        directory = tmp_path / registry.host
        directory.mkdir()
        pair = f'[["{files.client_cert}", "{files.client_key}"]]'
        (directory / "hosts.toml").write_text(f'server = "{registry.url}"\nca = "{files.ca_cert}"\nclient = {pair}\n')
        async with RegistryClient(registry.host, hosts_dir=tmp_path, transport_options=QUICK) as client:
            assert await client.get_blob(repo, digest) == b"mutual TLS"
        registry.write_hosts_toml(tmp_path)  # CA only, no client certificate
        async with RegistryClient(registry.host, hosts_dir=tmp_path, transport_options=QUICK) as client:
            with pytest.raises(Unavailable):
                await client.get_blob(repo, digest)
