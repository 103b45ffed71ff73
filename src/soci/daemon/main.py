"""``soci-snapshotter-grpc``: upstream's flags, environment variables, defaults and subcommands."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from soci import __version__
from soci.config import Config, default_config, dump_toml, load_config
from soci.daemon import logs
from soci.daemon.server import DEFAULT_ADDRESS, DaemonOptions, run_daemon
from soci.errors import SociError
from soci.paths import DEFAULT_CONFIG_PATH, DEFAULT_ROOT

PROG = "soci-snapshotter-grpc"


def _load(ctx: click.Context) -> Config:
    root_ctx = ctx.find_root()
    path = Path(root_ctx.params["config"])
    explicit = root_ctx.get_parameter_source("config") is not click.core.ParameterSource.DEFAULT
    # a missing file at the default path means "defaults"; a missing file someone asked for is an error
    return load_config(path, required=explicit or path != DEFAULT_CONFIG_PATH)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-v", prog_name=PROG)
@click.option(
    "--address",
    envvar="SOCI_SNAPSHOTTER_ADDRESS",
    default=DEFAULT_ADDRESS,
    show_default=True,
    help="address for the snapshotter's gRPC server (path, unix://path or fd://)",
)
@click.option(
    "--config",
    envvar="SOCI_SNAPSHOTTER_CONFIG",
    default=str(DEFAULT_CONFIG_PATH),
    show_default=True,
    help="path to the configuration file",
)
@click.option(
    "--log-level",
    envvar="SOCI_SNAPSHOTTER_LOG_LEVEL",
    default="info",
    show_default=True,
    help="trace, debug, info, warn, error, fatal or panic",
)
@click.option(
    "--root",
    envvar="SOCI_SNAPSHOTTER_ROOT",
    default=str(DEFAULT_ROOT) + "/",
    show_default=True,
    help="root directory of the snapshotter",
)
@click.option(
    "--hosts-dir",
    envvar="SOCI_SNAPSHOTTER_HOSTS_DIR",
    type=click.Path(path_type=Path),
    default=None,
    help="containerd hosts.toml directory (default /etc/containerd/certs.d)",
)
@click.pass_context
def cli(ctx: click.Context, address: str, config: str, log_level: str, root: str, hosts_dir: Path | None) -> None:
    """Serve containerd's snapshots API with lazily loaded (SOCI) layers."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        level = logs.parse_level(log_level)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    logs.setup(level)
    options = DaemonOptions(address=address, root=Path(root).absolute(), config=_load(ctx), hosts_dir=hosts_dir)
    asyncio.run(run_daemon(options))


@cli.group()
def config() -> None:
    """Manage configuration."""


@config.command()
@click.pass_context
def dump(ctx: click.Context) -> None:
    """Print the effective configuration (the file given by --config over the defaults)."""
    click.echo(dump_toml(_load(ctx)), nl=False)


@config.command()
def default() -> None:
    """Print the default configuration."""
    click.echo(dump_toml(default_config()), nl=False)


def main() -> None:
    try:
        cli.main(prog_name=PROG, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except (SociError, OSError) as exc:
        click.echo(f"{PROG}: {exc}", err=True)
        sys.exit(1)
