"""The ``soci`` command: upstream's command names, flags and defaults."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from soci import __version__
from soci.cli._common import GlobalOptions
from soci.cli.convert import convert
from soci.cli.create import create
from soci.cli.image import image
from soci.cli.index import index
from soci.cli.load_order import load_order
from soci.cli.mount import mount
from soci.cli.prefetch import prefetch
from soci.cli.push import push
from soci.cli.rebuild_db import rebuild_db
from soci.cli.ztoc import ztoc
from soci.store import DEFAULT_ROOT


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-v", prog_name="soci")
@click.option(
    "--address", "-a", envvar="CONTAINERD_ADDRESS", default="/run/containerd/containerd.sock",
    show_default=True, help="containerd socket",
)  # fmt: skip
@click.option("--namespace", "-n", envvar="CONTAINERD_NAMESPACE", default="default", show_default=True)
@click.option("--timeout", type=float, default=0.0, help="timeout for containerd commands in seconds (0 = none)")
@click.option("--debug", is_flag=True, help="enable debug output")
@click.option(
    "--content-store", type=click.Choice(["soci", "containerd"]), default="soci", show_default=True,
    help="where SOCI artifacts are kept",
)  # fmt: skip
@click.option(
    "--root", type=click.Path(path_type=Path), default=DEFAULT_ROOT, show_default=True,
    help="root directory of the local SOCI store",
)  # fmt: skip
@click.pass_context
def cli(
    ctx: click.Context, address: str, namespace: str, timeout: float, debug: bool, content_store: str, root: Path
) -> None:
    """Build, inspect and publish SOCI indexes for lazily loaded container images."""
    if address.startswith("unix://"):
        address = address[len("unix://") :]
    ctx.obj = GlobalOptions(
        root=root, address=address, namespace=namespace, timeout=timeout, debug=debug, content_store=content_store
    )


cli.add_command(convert)
cli.add_command(create)
cli.add_command(image)
cli.add_command(push)
cli.add_command(index)
cli.add_command(mount)
cli.add_command(ztoc)
cli.add_command(prefetch)
cli.add_command(rebuild_db)
cli.add_command(load_order)


def main() -> None:
    try:
        cli.main(prog_name="soci", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("soci: interrupted", err=True)
        sys.exit(130)
