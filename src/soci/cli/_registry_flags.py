"""Registry flags shared by the commands that talk to registries (upstream's names)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from soci.registry import RegistryClient, default_credentials

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RegistryFlags:
    plain_http: bool = False
    skip_verify: bool = False
    user: str | None = None
    hosts_dir: Path | None = None

    def client(self, domain: str) -> RegistryClient:
        return RegistryClient(
            domain,
            hosts_dir=self.hosts_dir,
            plain_http=self.plain_http,
            skip_verify=self.skip_verify,
            credentials=default_credentials(self.user),
        )


def registry_flags(func: F) -> F:
    options = [
        click.option("--plain-http", is_flag=True, help="use plain HTTP (no TLS) to the registry"),
        click.option("--skip-verify", "-k", is_flag=True, help="do not verify the registry's TLS certificate"),
        click.option("--user", "-u", help="user[:password] for the registry", envvar="SOCI_REGISTRY_USER"),
        click.option("--hosts-dir", type=click.Path(path_type=Path, file_okay=False),
                     help="containerd hosts.toml directory (default /etc/containerd/certs.d)"),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def flags(plain_http: bool, skip_verify: bool, user: str | None, hosts_dir: Path | None) -> RegistryFlags:
    return RegistryFlags(plain_http=plain_http, skip_verify=skip_verify, user=user, hosts_dir=hosts_dir)
