"""Registry clients for the daemon, one per registry domain, shared by every layer of every image.

Endpoints: ``[resolver.host."<domain>"].mirrors`` from the daemon config first (pull and resolve), then what
containerd's ``hosts.toml`` directory says, then the registry itself. As in upstream, loopback
registries (``localhost``, ``127.0.0.0/8``, ``::1``) are spoken to over plain HTTP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from soci.registry import (
    AiohttpTransport,
    CredentialProvider,
    RegistryClient,
    RegistryHost,
    TransportOptions,
    default_credentials,
    resolve_hosts,
)
from soci.registry.hosts import CAP_PULL, CAP_RESOLVE


@dataclass(frozen=True, slots=True)
class Mirror:
    host: str
    """``[scheme://]host[:port][/path]`` (``http://mirror.example.com:5000/v2``); the scheme is ignored."""
    insecure: bool = False


def is_loopback_domain(domain: str) -> bool:
    host = domain
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mirror_host(mirror: Mirror) -> RegistryHost:
    """A pull endpoint for a configured mirror, read as upstream reads it.

    Upstream's configs write mirrors as URLs (``http://127.0.0.1:5000``) and take only host and path from
    them: the scheme is http when ``insecure`` is set or the host is loopback, https otherwise. Like
    upstream's, a mirror serves pulls and tag resolution. A bare ``host[:port][/path]`` is accepted too.
    """
    host, _, path = mirror.host.split("://", 1)[-1].partition("/")
    if host == "docker.io":
        host = "registry-1.docker.io"
    scheme = "http" if mirror.insecure or is_loopback_domain(host) else "https"
    return RegistryHost(scheme, host, "/" + (path.strip("/") or "v2"), capabilities=frozenset({CAP_PULL, CAP_RESOLVE}))


class RegistryResolver:
    """Hands out (and finally closes) one ``RegistryClient`` per registry domain."""

    def __init__(
        self,
        *,
        hosts_dir: Path | None = None,
        mirrors: Mapping[str, Sequence[Mirror]] | None = None,
        credentials: CredentialProvider | None = None,
        transport_options: TransportOptions | None = None,
    ) -> None:
        self._hosts_dir = hosts_dir
        self._mirrors = dict(mirrors or {})
        self._credentials = credentials if credentials is not None else default_credentials()
        self._transport = AiohttpTransport(transport_options)
        self._clients: dict[str, RegistryClient] = {}

    def hosts(self, domain: str) -> list[RegistryHost]:
        mirrors = [mirror_host(mirror) for mirror in self._mirrors.get(domain, ())]
        return mirrors + resolve_hosts(domain, hosts_dir=self._hosts_dir, plain_http=is_loopback_domain(domain))

    def client(self, domain: str) -> RegistryClient:
        client = self._clients.get(domain)
        if client is None:
            client = RegistryClient(
                domain, hosts=self.hosts(domain), credentials=self._credentials, transport=self._transport
            )
            self._clients[domain] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        await self._transport.aclose()
