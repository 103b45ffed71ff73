from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from soci.errors import InvalidArgument
from soci.registry.hosts import ALL_CAPABILITIES, host_dir_candidates, resolve_hosts
from soci.testing.registry_server import make_tls_files


def test_defaults_without_config(tmp_path: Path) -> None:
    [hub] = resolve_hosts("docker.io", hosts_dir=tmp_path)
    assert hub.base_url == "https://registry-1.docker.io/v2"
    [plain] = resolve_hosts("127.0.0.1:5000", hosts_dir=tmp_path, plain_http=True)
    assert plain.base_url == "http://127.0.0.1:5000/v2"
    [tls] = resolve_hosts("127.0.0.1:5000", hosts_dir=tmp_path)
    assert tls.scheme == "https" and tls.ssl_context is True
    [insecure] = resolve_hosts("r.example:5000", hosts_dir=tmp_path, skip_verify=True)
    assert insecure.ssl_context is False
    assert hub.capabilities == ALL_CAPABILITIES


def test_mirrors_in_file_order_then_server(tmp_path: Path) -> None:
    directory = tmp_path / "r.example"
    directory.mkdir()
    (directory / "hosts.toml").write_text(
        'server = "https://r.example"\n'
        '[host."http://zz-mirror:5000"]\n'
        'capabilities = ["pull"]\n'
        '[host."aa-mirror.example/prefix"]\n'
        'capabilities = ["pull", "resolve"]\n'
        "skip_verify = true\n"
        '[host."https://custom.example/api"]\n'
        "override_path = true\n"
        'header = { X-One = "1", X-Two = ["a", "b"] }\n'
    )
    hosts = resolve_hosts("r.example", hosts_dir=tmp_path)
    assert [h.base_url for h in hosts] == [
        "http://zz-mirror:5000/v2",
        "https://aa-mirror.example/prefix/v2",
        "https://custom.example/api",
        "https://r.example/v2",
    ]
    assert hosts[0].capabilities == {"pull"}
    assert hosts[1].skip_verify and hosts[1].ssl_context is False
    assert hosts[2].capabilities == ALL_CAPABILITIES
    assert dict(hosts[2].headers) == {"X-One": "1", "X-Two": "a, b"}
    assert [h.can("push") for h in hosts] == [False, False, True, True]


def test_port_directory_name_and_default_dir(tmp_path: Path) -> None:
    assert host_dir_candidates(tmp_path, "h:5000") == [tmp_path / "h_5000_", tmp_path / "h:5000", tmp_path / "_default"]
    (tmp_path / "_default").mkdir()
    (tmp_path / "_default" / "hosts.toml").write_text('[host."http://cache.local"]\n')
    hosts = resolve_hosts("anything.example", hosts_dir=tmp_path, plain_http=True)
    assert [h.base_url for h in hosts] == ["http://cache.local/v2", "http://anything.example/v2"]
    (tmp_path / "h_5000_").mkdir()
    (tmp_path / "h_5000_" / "hosts.toml").write_text('server = "http://elsewhere:1"\n')
    assert [h.base_url for h in resolve_hosts("h:5000", hosts_dir=tmp_path)] == ["http://elsewhere:1/v2"]


def test_ca_and_client_paths_are_relative_to_the_host_dir(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "certs.d" / "r.example")
    directory = tls.ca_cert.parent
    (directory / "hosts.toml").write_text(
        'server = "https://r.example"\nca = "ca.crt"\nclient = [["server.crt", "server.key"]]\n'
    )
    [host] = resolve_hosts("r.example", hosts_dir=tmp_path / "certs.d")
    assert host.ca_files == (tls.ca_cert,)
    assert host.client_certs == ((tls.server_cert, tls.server_key),)
    context = host.ssl_context
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED


def test_docker_style_cert_directory(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "r.example")
    tls.client_cert.unlink()
    tls.client_key.unlink()
    tls.server_key.rename(tls.server_key.with_name("client.key"))
    tls.server_cert.rename(tls.server_cert.with_name("client.cert"))
    [host] = resolve_hosts("r.example", hosts_dir=tmp_path)
    assert host.base_url == "https://r.example/v2"
    assert host.ca_files == (tls.ca_cert,)
    assert host.client_certs == ((tmp_path / "r.example" / "client.cert", tmp_path / "r.example" / "client.key"),)


def test_hosts_toml_without_server_keeps_default_endpoint(tmp_path: Path) -> None:
    (tmp_path / "r.example").mkdir()
    (tmp_path / "r.example" / "hosts.toml").write_text('skip_verify = true\n[host."https://m.example"]\n')
    hosts = resolve_hosts("r.example", hosts_dir=tmp_path)
    assert [h.base_url for h in hosts] == ["https://m.example/v2", "https://r.example/v2"]
    assert hosts[1].skip_verify


@pytest.mark.parametrize(
    "content",
    [
        "server = 1\n",
        'capabilities = ["fly"]\n',
        'skip_verify = "yes"\n',
        "ca = 3\n",
        'client = [["only-one"]]\n',
        "not toml [[[\n",
        '[host."ftp://x"]\n',
    ],
)
def test_malformed_hosts_toml_is_rejected(tmp_path: Path, content: str) -> None:
    (tmp_path / "r.example").mkdir()
    (tmp_path / "r.example" / "hosts.toml").write_text(content)
    with pytest.raises(InvalidArgument):
        resolve_hosts("r.example", hosts_dir=tmp_path)


def test_unreadable_ca_is_reported(tmp_path: Path) -> None:
    (tmp_path / "r.example").mkdir()
    (tmp_path / "r.example" / "hosts.toml").write_text('ca = "missing.crt"\n')
    [host] = resolve_hosts("r.example", hosts_dir=tmp_path)
    with pytest.raises(InvalidArgument, match=r"missing\.crt"):
        _ = host.ssl_context


def test_skip_verify_flag_applies_to_mirrors(tmp_path: Path) -> None:
    (tmp_path / "r.example").mkdir()
    (tmp_path / "r.example" / "hosts.toml").write_text('server = "https://r.example"\n[host."https://m.example"]\n')
    assert [h.skip_verify for h in resolve_hosts("r.example", hosts_dir=tmp_path)] == [False, False]
    assert [h.ssl_context for h in resolve_hosts("r.example", hosts_dir=tmp_path, skip_verify=True)] == [False, False]
