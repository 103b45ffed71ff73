"""``soci convert``: make a SOCI-enabled image (index manifest v2)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import click

from soci.cli._build_flags import build_flags, build_options, platforms_from_flags
from soci.cli._common import CliError, GlobalOptions, ProgressReporter, errors_to_exit, pass_options
from soci.cli._registry_flags import flags, registry_flags
from soci.containerd.images import convert_in_containerd
from soci.formats.platforms import format_platform
from soci.index.convert import ConvertResult, convert_image, layout_index_json, resolve_layout_target
from soci.index.remote import convert_remote
from soci.registry import parse_reference
from soci.store.layout import OciLayout, write_layout


@click.command()
@click.argument("source")
@click.argument("dest")
@build_flags
@click.option("--standalone", is_flag=True, help="convert an OCI image layout on disk, without containerd")
@click.option("--remote", is_flag=True, help="SOURCE and DEST are registry images")
@click.option("--max-concurrent-uploads", type=int, default=3, show_default=True, help="with --remote")
@registry_flags
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
    remote: bool,
    max_concurrent_uploads: int,
    plain_http: bool,
    skip_verify: bool,
    user: str | None,
    hosts_dir: Path | None,
    output_format: str,
) -> None:
    """Convert SOURCE into a SOCI-enabled image DEST.

    SOURCE and DEST are images in containerd (see --address, --namespace). With --standalone they are OCI image
    layouts (a directory or a tar archive); with --remote, image references in registries: each layer is
    streamed once and nothing but SOCI artifacts is stored.
    """
    if standalone and remote:
        raise CliError("--standalone and --remote cannot be used together")
    with errors_to_exit():
        g.check_content_store()
        options = build_options(span_size, min_layer_size, optimizations, force, prefetch_files, prefetch_files_json)
        plats = platforms_from_flags(platforms, all_platforms)
        if not standalone and not remote:

            async def run_containerd() -> ConvertResult:
                async with g.containerd() as containerd:
                    return await convert_in_containerd(
                        containerd, source, dest, store, options, platforms=plats, all_platforms=all_platforms,
                        reporter=reporter,
                    )  # fmt: skip

            with g.open_store() as store, ProgressReporter(quiet) as reporter:
                result = asyncio.run(run_containerd())
            _report(result, dest, quiet)
            return
        if remote:
            src_ref, dst_ref = parse_reference(source), parse_reference(dest)
            if dst_ref.digest or not dst_ref.tag:
                raise CliError(f"destination {dest!r} must be a tagged reference without a digest (registry/repo:tag)")
            reg = flags(plain_http, skip_verify, user, hosts_dir)

            async def run() -> ConvertResult:
                async with AsyncExitStack() as stack:
                    src_client = await stack.enter_async_context(reg.client(src_ref.domain))
                    dst_client = (
                        src_client
                        if dst_ref.domain == src_ref.domain
                        else await stack.enter_async_context(reg.client(dst_ref.domain))
                    )
                    return await convert_remote(
                        src_client, src_ref, dst_client, dst_ref, store, options, platforms=plats,
                        all_platforms=all_platforms, reporter=reporter, max_concurrent_uploads=max_concurrent_uploads,
                    )  # fmt: skip

            with g.open_store() as store, ProgressReporter(quiet) as reporter:
                result = asyncio.run(run())
            _report(result, dest, quiet)
            return
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
        _report(result, dest, quiet)


def _report(result: ConvertResult, dest: str, quiet: bool) -> None:
    if quiet:
        return
    for plat, index in result.soci_indexes:
        click.echo(f"soci index {index.digest} ({format_platform(plat)})")
    click.echo(f"converted image {result.index_descriptor.digest} written to {dest}")
