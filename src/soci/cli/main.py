"""The ``soci`` command: upstream's command names, flags and defaults."""

from __future__ import annotations

import gc
import importlib
import logging
import sys
from pathlib import Path
from typing import Any

import click

from soci import __version__
from soci.cli._common import GlobalOptions
from soci.formats.gotime import parse_go_duration
from soci.paths import DEFAULT_CONTAINERD_ADDRESS, DEFAULT_ROOT

_COMMANDS = {
    "convert": "soci.cli.convert:convert",
    "create": "soci.cli.create:create",
    "image": "soci.cli.image:image",
    "push": "soci.cli.push:push",
    "index": "soci.cli.index:index",
    "mount": "soci.cli.mount:mount",
    "ztoc": "soci.cli.ztoc:ztoc",
    "prefetch": "soci.cli.prefetch:prefetch",
    "rebuild-db": "soci.cli.rebuild_db:rebuild_db",
    "load-order": "soci.cli.load_order:load_order",
}


log = logging.getLogger("soci.cli")


class GoDuration(click.ParamType[float]):
    """Seconds from a Go duration (``10s``, ``1m30s``, ``500ms``), as upstream's ``--timeout``; a plain number
    is taken as seconds, as this CLI's ``--timeout`` took before."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            seconds = parse_go_duration(text) / 1e9
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds < 0:
            self.fail(f"{text!r} is negative", param, ctx)
        return seconds


def _setup_logging(debug: bool) -> None:
    """``--debug``: every logger at debug, to stderr (stdout stays the command's output)."""
    if not debug:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs: ``soci image rpull`` sits on the container
    start path, and importing every command (FUSE, gRPC, the index builder) cost it about a second."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-v", prog_name="soci")
@click.option(
    "--address", "-a", envvar="CONTAINERD_ADDRESS", default=DEFAULT_CONTAINERD_ADDRESS,
    show_default=True, help="containerd socket",
)  # fmt: skip
@click.option("--namespace", "-n", envvar="CONTAINERD_NAMESPACE", default="default", show_default=True)
@click.option(
    "--timeout", type=GoDuration(), default="0", show_default=True,
    help="timeout for containerd commands, a Go duration such as 10s or 1m30s (0 = none)",
)  # fmt: skip
@click.option("--debug", is_flag=True, help="enable debug logs (to stderr)")
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
    _setup_logging(debug)
    if address.startswith("unix://"):
        address = address[len("unix://") :]
    log.debug("soci %s: root %s, containerd %s (namespace %s), timeout %gs", __version__, root, address, namespace,
              timeout)  # fmt: skip
    ctx.obj = GlobalOptions(
        root=root, address=address, namespace=namespace, timeout=timeout, debug=debug, content_store=content_store
    )


def main() -> None:
    try:
        cli.main(prog_name="soci", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("soci: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        # The last line of defence for hostile input: commands map SociError to one line themselves, and
        # anything else reaching here is a bug, still reported as one line (the traceback with --debug).
        if "--debug" in sys.argv[1:]:
            raise
        click.echo(f"soci: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    finally:
        # Every object still alive is freed with the process; frozen, the interpreter's collections at exit
        # skip them (about 35 ms of a cold ``image rpull``, on the container start path, for aiohttp and gRPC)
        gc.freeze()
