"""``soci create``: build SOCI index manifest v1 (with ``subject``) into the local store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from soci.cli._build_flags import build_flags, build_options, platforms_from_flags
from soci.cli._common import GlobalOptions, ProgressReporter, errors_to_exit, pass_options
from soci.cli._registry_flags import flags, registry_flags
from soci.containerd.images import create_in_containerd
from soci.formats.platforms import format_platform
from soci.index.create import CreatedIndex
from soci.index.remote import create_remote
from soci.registry import parse_reference


@click.command()
@click.argument("image_ref")
@build_flags
@click.option("--remote", is_flag=True, help="read the image from its registry (no containerd needed)")
@registry_flags
@pass_options
def create(
    g: GlobalOptions,
    image_ref: str,
    span_size: int,
    min_layer_size: int,
    optimizations: tuple[str, ...],
    force: bool,
    all_platforms: bool,
    platforms: tuple[str, ...],
    prefetch_files: tuple[str, ...],
    prefetch_files_json: Path | None,
    quiet: bool,
    remote: bool,
    plain_http: bool,
    skip_verify: bool,
    user: str | None,
    hosts_dir: Path | None,
) -> None:
    """Create a SOCI index (v1) for IMAGE_REF; publish it with `soci push`.

    IMAGE_REF is an image in containerd (see --address, --namespace), or with --remote one in its registry.
    """
    with errors_to_exit():
        g.check_content_store()
        options = build_options(span_size, min_layer_size, optimizations, force, prefetch_files, prefetch_files_json)
        plats = platforms_from_flags(platforms, all_platforms)

        async def run() -> list[CreatedIndex]:
            if not remote:
                async with g.containerd() as containerd:
                    return await create_in_containerd(
                        containerd, image_ref, store, options, platforms=plats, all_platforms=all_platforms,
                        reporter=reporter,
                    )  # fmt: skip
            ref = parse_reference(image_ref)
            async with flags(plain_http, skip_verify, user, hosts_dir).client(ref.domain) as client:
                return await create_remote(
                    client, ref, store, options, platforms=plats, all_platforms=all_platforms, reporter=reporter
                )

        with g.open_store() as store, ProgressReporter(quiet) as reporter:
            created = asyncio.run(run())
        if not quiet:
            for c in created:
                plat = format_platform(c.platform)
                click.echo(f"soci index {c.index.digest} ({plat}) for manifest {c.manifest.digest}")
