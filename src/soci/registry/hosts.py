"""Registry endpoints for a domain, read from containerd's ``hosts.toml`` layout.

``<hosts_dir>/<host>/hosts.toml`` (or ``<host>_<port>_``, then ``_default``) lists mirrors as
``[host."<url>"]`` tables, tried in file order, then the ``server`` endpoint. A directory without
``hosts.toml`` contributes Docker-style certificate files (``*.crt`` CAs, ``*.cert``/``*.key`` client pairs).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from soci.errors import InvalidArgument
from soci.formats import toml

DEFAULT_HOSTS_DIR = Path("/etc/containerd/certs.d")
DOCKER_HUB_DOMAIN = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"

CAP_PULL = "pull"
CAP_RESOLVE = "resolve"
CAP_PUSH = "push"
ALL_CAPABILITIES: frozenset[str] = frozenset({CAP_PULL, CAP_RESOLVE, CAP_PUSH})


@dataclass(frozen=True)
class RegistryHost:
    """One endpoint that can serve a registry domain: the server itself or a mirror."""

    scheme: str
    host: str
    """``host[:port]`` of the endpoint."""
    path: str = "/v2"
    """API root; ``/v2`` unless ``override_path`` pointed it elsewhere."""
    capabilities: frozenset[str] = ALL_CAPABILITIES
    skip_verify: bool = False
    ca_files: tuple[Path, ...] = ()
    client_certs: tuple[tuple[Path, Path | None], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    """Extra request headers from ``[header]``."""

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    @cached_property
    def ssl_context(self) -> ssl.SSLContext | bool:
        """What aiohttp's ``ssl=`` wants: True for default verification, False to skip, or a custom context."""
        if self.scheme != "https":
            return True
        if not self.ca_files and not self.client_certs:
            return not self.skip_verify
        context = ssl.create_default_context()
        for ca in self.ca_files:
            try:
                context.load_verify_locations(cafile=str(ca))
            except (OSError, ssl.SSLError) as exc:
                raise InvalidArgument(f"cannot load CA certificate {ca}: {exc}") from exc
        for cert, key in self.client_certs:
            try:
                context.load_cert_chain(str(cert), str(key) if key else None)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidArgument(f"cannot load client certificate {cert}: {exc}") from exc
        if self.skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def resolve_hosts(
    domain: str,
    *,
    hosts_dir: Path | None = None,
    plain_http: bool = False,
    skip_verify: bool = False,
) -> list[RegistryHost]:
    """Endpoints to try for ``domain``, mirrors first and the server last.

    Args:
        domain: registry domain from the image reference (``docker.io``, ``127.0.0.1:5000``).
        hosts_dir: containerd's ``certs.d`` directory; defaults to ``/etc/containerd/certs.d``.
        plain_http: use ``http`` for the default server endpoint (``--plain-http``).
        skip_verify: skip TLS verification for every endpoint (``--skip-verify``).

    Raises:
        InvalidArgument: a ``hosts.toml`` is malformed.
    """
    directory = _find_host_dir(hosts_dir or DEFAULT_HOSTS_DIR, domain)
    hosts: list[RegistryHost] = []
    server: RegistryHost | None = None
    if directory is not None:
        toml_path = directory / "hosts.toml"
        if toml_path.is_file():
            hosts, server = _parse_hosts_file(toml_path, directory)
        else:
            server = _default_server(domain, plain_http, skip_verify, *_docker_cert_files(directory))
    if server is None:
        server = _default_server(domain, plain_http, skip_verify, (), ())
    elif server.host == "":
        # hosts.toml without `server`: its settings apply to the default endpoint
        default = _default_server(domain, plain_http, skip_verify or server.skip_verify, (), ())
        server = RegistryHost(
            default.scheme,
            default.host,
            default.path,
            server.capabilities,
            default.skip_verify,
            server.ca_files,
            server.client_certs,
            server.headers,
        )
    hosts.append(server)
    if skip_verify:
        # like containerd's --skip-verify, the flag applies to every endpoint, mirrors included
        hosts = [replace(h, skip_verify=True) for h in hosts]
    return hosts


def host_dir_candidates(root: Path, domain: str) -> list[Path]:
    """Directories consulted for ``domain``, in order (containerd writes ``host:port`` as ``host_port_``)."""
    candidates: list[Path] = []
    colon = domain.rfind(":")
    if colon > 0:
        candidates.append(root / f"{domain[:colon]}_{domain[colon + 1 :]}_")
    candidates += [root / domain, root / "_default"]
    return candidates


def _find_host_dir(root: Path, domain: str) -> Path | None:
    for candidate in host_dir_candidates(root, domain):
        if candidate.is_dir():
            return candidate
    return None


def _default_server(
    domain: str,
    plain_http: bool,
    skip_verify: bool,
    ca_files: Sequence[Path],
    client_certs: Sequence[tuple[Path, Path | None]],
) -> RegistryHost:
    if domain == DOCKER_HUB_DOMAIN:
        return RegistryHost("https", DOCKER_HUB_API_HOST, ca_files=tuple(ca_files), client_certs=tuple(client_certs))
    return RegistryHost(
        "http" if plain_http else "https",
        domain,
        skip_verify=skip_verify,
        ca_files=tuple(ca_files),
        client_certs=tuple(client_certs),
    )


def _docker_cert_files(directory: Path) -> tuple[list[Path], list[tuple[Path, Path | None]]]:
    cas = sorted(directory.glob("*.crt"))
    pairs: list[tuple[Path, Path | None]] = []
    for cert in sorted(directory.glob("*.cert")):
        key = cert.with_suffix(".key")
        if not key.is_file():
            raise InvalidArgument(f"client certificate {cert} has no matching key {key.name}")
        pairs.append((cert, key))
    return cas, pairs


def _parse_hosts_file(path: Path, base_dir: Path) -> tuple[list[RegistryHost], RegistryHost]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"cannot read {path}: {exc}") from exc
    document = toml.loads(text, str(path))
    tables = document.get("host", {})
    if not isinstance(tables, dict):
        raise InvalidArgument(f"{path}: [host] must be a table of tables")
    # tomllib keeps file order, which is the mirror order containerd uses
    mirrors = [_parse_host(url, config, base_dir, path) for url, config in tables.items()]
    server_url = document.get("server", "")
    if not isinstance(server_url, str):
        raise InvalidArgument(f"{path}: server must be a string")
    return mirrors, _parse_host(server_url, document, base_dir, path)


def _parse_host(url: str, config: Any, base_dir: Path, path: Path) -> RegistryHost:
    if not isinstance(config, dict):
        raise InvalidArgument(f"{path}: host {url!r} must be a table")
    scheme, host, api_path = "", "", "/v2"
    override_path = _typed(config, "override_path", bool, False, path)
    if url:
        if "://" not in url:
            url = "https://" + url
        parts = urlsplit(url)
        try:
            valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
        except ValueError:
            valid = False
        if not valid:
            raise InvalidArgument(f"{path}: bad host URL {url!r}")
        scheme, host = parts.scheme, parts.netloc
        clean = str(PurePosixPath(parts.path)) if parts.path else ""
        if clean in ("", "."):
            api_path = "" if override_path else "/v2"
        else:
            api_path = clean if override_path or clean.endswith("/v2") else clean.rstrip("/") + "/v2"
    capabilities = _capabilities(config.get("capabilities"), path)
    return RegistryHost(
        scheme,
        host,
        api_path,
        capabilities,
        _typed(config, "skip_verify", bool, False, path),
        tuple(_abs(p, base_dir) for p in _string_list(config.get("ca"), "ca", path)),
        _client_pairs(config.get("client"), base_dir, path),
        _headers(config.get("header"), path),
    )


def _typed(config: Mapping[str, Any], key: str, kind: type, default: Any, path: Path) -> Any:
    value = config.get(key, default)
    if not isinstance(value, kind):
        raise InvalidArgument(f"{path}: {key} must be a {kind.__name__}")
    return value


def _capabilities(value: Any, path: Path) -> frozenset[str]:
    if value is None or value == []:
        return ALL_CAPABILITIES
    names = {name.lower() for name in _string_list(value, "capabilities", path)}
    unknown = names - ALL_CAPABILITIES
    if unknown:
        raise InvalidArgument(f"{path}: unknown capability {sorted(unknown)[0]!r}")
    return frozenset(names)


def _string_list(value: Any, key: str, path: Path) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise InvalidArgument(f"{path}: {key} must be a string or a list of strings")


def _client_pairs(value: Any, base_dir: Path, path: Path) -> tuple[tuple[Path, Path | None], ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise InvalidArgument(f"{path}: client must be a string, a list of strings or a list of pairs")
    pairs: list[tuple[Path, Path | None]] = []
    for item in items:
        if isinstance(item, str):
            pairs.append((_abs(item, base_dir), None))
        elif isinstance(item, list) and len(item) == 2 and all(isinstance(p, str) for p in item):
            pairs.append((_abs(item[0], base_dir), _abs(item[1], base_dir)))
        else:
            raise InvalidArgument(f"{path}: client entry {item!r} must be a path or a [cert, key] pair")
    return tuple(pairs)


def _headers(value: Any, path: Path) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise InvalidArgument(f"{path}: header must be a table")
    return tuple((key, ", ".join(_string_list(item, f"header.{key}", path))) for key, item in value.items())


def _abs(value: str, base_dir: Path) -> Path:
    candidate = Path(value)
    return candidate if candidate.is_absolute() else base_dir / candidate
