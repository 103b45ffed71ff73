"""Registry clients for the daemon, one per registry domain, shared by every layer of every image.

Endpoints: ``[resolver.host."<domain>"].mirrors`` from the daemon config first (pull and resolve), then what
containerd's ``hosts.toml`` directory says, then the registry itself. As in upstream, loopback
registries (``localhost``, ``127.0.0.0/8``, ``::1``) are spoken to over plain HTTP.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from soci.registry import (
    AiohttpTransport,
    ChainCredentials,
    CredentialProvider,
    Credentials,
    RegistryClient,
    RegistryHost,
    TransportOptions,
    default_credentials,
    parse_reference,
    resolve_hosts,
)
from soci.registry.hosts import CAP_PULL, CAP_RESOLVE

MAX_IMAGE_CLIENTS: Final = 256


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


class ImageKeychain(Protocol):
    """Credentials kept per image reference (``soci.cri.keychain.CriKeychain``)."""

    def credentials(self, image: str, host: str | None = None) -> Credentials | None: ...

    def provider(self, image: str) -> CredentialProvider: ...


class RegistryResolver:
    """Hands out (and finally closes) one ``RegistryClient`` per registry domain, and one per image that has
    credentials of its own in ``keychain`` (CRI pull credentials): those are tried first, then ``credentials``.
    """

    def __init__(
        self,
        *,
        hosts_dir: Path | None = None,
        mirrors: Mapping[str, Sequence[Mirror]] | None = None,
        credentials: CredentialProvider | None = None,
        keychain: ImageKeychain | None = None,
        transport_options: TransportOptions | None = None,
    ) -> None:
        self._hosts_dir = hosts_dir
        self._mirrors = dict(mirrors or {})
        self._credentials = credentials if credentials is not None else default_credentials()
        self._keychain = keychain
        self._transport = AiohttpTransport(transport_options)
        self._clients: dict[str, RegistryClient] = {}
        self._image_clients: OrderedDict[str, RegistryClient] = OrderedDict()

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

    def client_for(self, image_ref: str) -> RegistryClient:
        """The client for ``image_ref``'s registry; its own when the keychain has credentials for that image.

        A client holds its tokens, so each image with its own credentials gets its own client (clients share the
        transport, so this costs no connections); the domain's client serves every other image.
        """
        reference = parse_reference(image_ref)
        if self._keychain is None or self._keychain.credentials(image_ref) is None:
            return self.client(reference.domain)
        key = str(reference)
        client = self._image_clients.get(key)
        if client is None:
            client = RegistryClient(
                reference.domain,
                hosts=self.hosts(reference.domain),
                credentials=ChainCredentials(self._keychain.provider(image_ref), self._credentials),
                transport=self._transport,
            )
            self._image_clients[key] = client
            while len(self._image_clients) > MAX_IMAGE_CLIENTS:
                # transport shared: dropping a client closes nothing a layer still reading from it needs
                self._image_clients.popitem(last=False)
        else:
            self._image_clients.move_to_end(key)
        return client

    async def aclose(self) -> None:
        for client in [*self._clients.values(), *self._image_clients.values()]:
            await client.aclose()
        self._clients.clear()
        self._image_clients.clear()
        await self._transport.aclose()
