"""``soci convert``: make a SOCI-enabled image (index manifest v2)."""

from __future__ import annotations

from pathlib import Path

import click

from soci.cli._build_flags import build_flags, build_options, platforms_from_flags
from soci.cli._common import CliError, GlobalOptions, ProgressReporter, errors_to_exit, pass_options
from soci.index.convert import convert_image, layout_index_json, resolve_layout_target
from soci.store.layout import OciLayout, write_layout


@click.command()
@click.argument("source")
@click.argument("dest")
@build_flags
@click.option("--standalone", is_flag=True, help="convert an OCI image layout on disk, without containerd")
@click.option(
    "--format", "output_format", type=click.Choice(["oci-archive", "oci-dir"]), default="oci-archive",
    show_default=True, help="output format in standalone mode",
)  # fmt: skip
@pass_options
def convert(
    g: GlobalOptions,
    source: str,
    dest: str,
    span_size: int,
    min_layer_size: int,
    optimizations: tuple[str, ...],
    force: bool,
    all_platforms: bool,
    platforms: tuple[str, ...],
    prefetch_files: tuple[str, ...],
    prefetch_files_json: Path | None,
    quiet: bool,
    standalone: bool,
    output_format: str,
) -> None:
    """Convert SOURCE into a SOCI-enabled image DEST.

    With --standalone, SOURCE and DEST are OCI image layouts (a directory or a tar archive).
    """
    if not standalone:
        raise CliError("convert without --standalone needs containerd's content store, which this build cannot use yet")
    with errors_to_exit():
        options = build_options(span_size, min_layer_size, optimizations, force, prefetch_files, prefetch_files_json)
        plats = platforms_from_flags(platforms, all_platforms)
        layout = OciLayout(Path(source))
        target, extra = resolve_layout_target(layout.index_json(), layout, source)
        with g.open_store() as store, ProgressReporter(quiet) as reporter:
            result = convert_image(
                store,
                layout,
                target,
                options=options,
                platforms=plats,
                all_platforms=all_platforms,
                reporter=reporter,
                image_ref=str(Path(dest).absolute()),
                extra_blobs=extra,
            )
            write_layout(
                Path(dest),
                source=layout,
                new_blobs=result.new_blobs,
                index_json=layout_index_json(result.index_descriptor),
                archive=output_format == "oci-archive",
            )
        if not quiet:
            for plat, index in result.soci_indexes:
                from soci.formats.platforms import format_platform

                click.echo(f"soci index {index.digest} ({format_platform(plat)})")
            click.echo(f"converted image {result.index_descriptor.digest} written to {dest}")
