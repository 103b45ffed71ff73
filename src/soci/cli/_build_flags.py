"""The index-building flags that ``create`` and ``convert`` share, with upstream's names and defaults."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from soci.errors import InvalidArgument
from soci.formats import gojson
from soci.formats import soci_index as si
from soci.formats.oci import Platform
from soci.formats.platforms import parse_platform
from soci.index.build import BuildOptions

F = TypeVar("F", bound=Callable[..., Any])


def build_flags(func: F) -> F:
    options = [
        click.option("--span-size", type=int, default=si.DEFAULT_SPAN_SIZE, show_default=True,
                     help="span size in bytes that the zTOC checkpoints are placed apart"),
        click.option("--min-layer-size", type=int, default=si.DEFAULT_MIN_LAYER_SIZE, show_default=True,
                     help="layers smaller than this many bytes get no zTOC"),
        click.option("--optimizations", multiple=True, help="optimizations to enable: xattr"),
        click.option("--force", "-f", is_flag=True, help="rebuild zTOCs that already exist locally"),
        click.option("--all-platforms", is_flag=True, help="build indexes for every platform of the image"),
        click.option("--platform", "-p", "platforms", multiple=True, help="platform to build for (repeatable)"),
        click.option("--prefetch-file", "prefetch_files", multiple=True,
                     help="file to prefetch at start (repeatable; experimental)"),
        click.option("--prefetch-files-json", type=click.Path(path_type=Path, dir_okay=False),
                     help="JSON array of files to prefetch"),
        click.option("--quiet", "-q", is_flag=True, help="print no progress"),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def build_options(
    span_size: int,
    min_layer_size: int,
    optimizations: tuple[str, ...],
    force: bool,
    prefetch_files: tuple[str, ...],
    prefetch_files_json: Path | None,
) -> BuildOptions:
    files = list(prefetch_files)
    if prefetch_files_json is not None:
        try:
            loaded = gojson.loads(prefetch_files_json.read_bytes(), str(prefetch_files_json))
        except OSError as exc:
            raise InvalidArgument(f"--prefetch-files-json {prefetch_files_json}: {exc}") from exc
        if not isinstance(loaded, list) or not all(isinstance(x, str) for x in loaded):
            raise InvalidArgument(f"--prefetch-files-json {prefetch_files_json}: want a JSON array of strings")
        files.extend(loaded)
    opts: list[str] = []
    for item in optimizations:
        opts.extend(x.strip() for x in item.split(",") if x.strip())
    return BuildOptions(
        span_size=span_size,
        min_layer_size=min_layer_size,
        optimizations=tuple(opts),
        force=force,
        prefetch_files=tuple(files),
    )


def platforms_from_flags(platforms: tuple[str, ...], all_platforms: bool) -> list[Platform]:
    if all_platforms and platforms:
        raise InvalidArgument("--all-platforms and --platform cannot be used together")
    return [parse_platform(p) for p in platforms]
