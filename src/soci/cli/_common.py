"""What every ``soci`` command shares: global options, the local store, error handling, output helpers."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from soci.errors import InvalidArgument, SociError
from soci.formats.oci import Descriptor
from soci.paths import DEFAULT_CONTAINERD_ADDRESS, DEFAULT_ROOT

if TYPE_CHECKING:
    from soci.containerd.client import ContainerdClient
    from soci.store import LocalStore

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class GlobalOptions:
    root: Path = DEFAULT_ROOT
    address: str = DEFAULT_CONTAINERD_ADDRESS
    namespace: str = "default"
    timeout: float = 0.0
    debug: bool = False
    content_store: str = "soci"

    @contextmanager
    def open_store(self) -> Iterator[LocalStore]:
        from soci.store import LocalStore  # sqlite3 and the content store: only for the commands that use them

        with LocalStore(self.root) as store:
            yield store

    def containerd(self) -> ContainerdClient:
        from soci.containerd.client import ContainerdClient  # gRPC: imported by the commands that use it

        return ContainerdClient(self.address, self.namespace, timeout_sec=self.timeout or None)

    def check_content_store(self) -> None:
        """SOCI artifacts are kept in the SOCI store under --root; upstream's containerd store mode is not offered."""
        if self.content_store != "soci":
            raise InvalidArgument(
                "--content-store containerd is not supported: SOCI artifacts are kept in the SOCI store under --root"
            )


pass_options = click.make_pass_decorator(GlobalOptions)


class CliError(click.ClickException):
    """Printed as ``soci: <message>`` with exit status 1, as upstream's CLI does."""

    def format_message(self) -> str:
        return self.message

    def show(self, file: Any = None) -> None:
        click.echo(f"soci: {self.format_message()}", err=True)


@contextmanager
def errors_to_exit() -> Iterator[None]:
    try:
        yield
    except SociError as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}") from exc


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A left-aligned table like Go's tabwriter output (columns padded to the widest cell plus 3)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for row in [list(headers), *rows]:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        click.echo("   ".join(cells).rstrip())


def human_age(created_at: float) -> str:
    if not created_at:
        return "n/a"
    seconds = max(0, int(time.time() - created_at))
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit if n != 1 else unit[:-1]} ago"
    return f"{seconds} seconds ago"


class ProgressReporter:
    """One progress bar per layer on stderr (unless quiet); messages to stdout."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._progress: Any = None
        if not quiet and sys.stderr.isatty():
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                transient=True,
            )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressReporter:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            click.echo(text)

    def layer_started(self, layer: Descriptor) -> Callable[[int], None] | None:
        if self._progress is None:
            return None
        task = self._progress.add_task(f"layer {layer.digest[7:19]}", total=layer.size)
        self._tasks[layer.digest] = task
        progress = self._progress
        return lambda n: progress.advance(task, n)

    def layer_finished(self, layer: Descriptor) -> None:
        task = self._tasks.pop(layer.digest, None)
        if task is not None and self._progress is not None:
            self._progress.remove_task(task)
