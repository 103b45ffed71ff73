"""``soci image rpull``: pull an image into containerd with its layers left to the SOCI snapshotter."""

from __future__ import annotations

import asyncio
import importlib
import time
from pathlib import Path

import click

from soci.cli._common import GlobalOptions, errors_to_exit, pass_options
from soci.cli._registry_flags import RegistryFlags, flags, registry_flags
from soci.containerd.pull import LayerResult, PullResult, fetch_image, rpull
from soci.formats.digest import parse_digest
from soci.formats.oci import Platform
from soci.formats.platforms import format_platform, parse_platform
from soci.registry import Reference, parse_reference


@click.group()
def image() -> None:
    """Manage images with lazily loaded layers."""


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _print_layer(layer: LayerResult, total: int) -> None:
    click.echo(
        f"layer {layer.index + 1}/{total} {layer.digest} ({_megabytes(layer.size)}): {layer.mode} "
        f"[{layer.seconds:.2f}s]"
    )


@image.command("rpull")
@registry_flags
@click.option(
    "--snapshotter",
    envvar="CONTAINERD_SNAPSHOTTER",
    default="soci",
    show_default=True,
    help="snapshotter that receives the layers",
)
@click.option("--soci-index-digest", default="", help="use this SOCI index instead of discovering one")
@click.option("--platform", default=None, help="platform to pull (os/arch[/variant]; default: this machine)")
@click.option(
    "--load-order",
    default="",
    metavar="NAME",
    help="replay the image's load order document NAME when its layers mount ('none': no replay)",
)
@click.argument("ref")
@pass_options
def rpull_command(
    options: GlobalOptions,
    ref: str,
    plain_http: bool,
    skip_verify: bool,
    user: str | None,
    hosts_dir: Path | None,
    snapshotter: str,
    soci_index_digest: str,
    platform: str | None,
    load_order: str,
) -> None:
    """Pull REF lazily: containerd gets the image record; the snapshotter mounts the layers on demand.

    Images without a SOCI index are pulled normally (the snapshotter defers and the layers are fetched
    and unpacked through containerd).
    """  # fmt: skip
    with errors_to_exit():
        reference = parse_reference(ref)
        if soci_index_digest:
            parse_digest(soci_index_digest)
        wanted = parse_platform(platform) if platform else None
        registry_flags_ = flags(plain_http, skip_verify, user, hosts_dir)
        start = time.monotonic()
        result = asyncio.run(
            _pull(options, registry_flags_, reference, snapshotter, soci_index_digest, wanted, load_order)
        )
        click.echo(
            f"pulled {result.name} (manifest {result.manifest_digest}, {len(result.layers)} layers) "
            f"in {time.monotonic() - start:.2f}s"
        )


async def _pull(
    options: GlobalOptions,
    registry_flags_: RegistryFlags,
    reference: Reference,
    snapshotter: str,
    index_digest: str,
    platform: Platform | None,
    load_order: str = "",
) -> PullResult:
    if platform is not None:
        click.echo(f"platform {format_platform(platform)}")
    async with registry_flags_.client(reference.domain) as registry:
        # rpull sits on the container start path: the gRPC stack (about a tenth of a second to import, cold)
        # is imported in a thread while the event loop waits for the registry's manifest and config
        grpc_stack = asyncio.get_running_loop().run_in_executor(None, importlib.import_module, "soci.containerd.client")
        try:
            image = await fetch_image(registry, reference, platform)
        except BaseException:
            await asyncio.gather(grpc_stack, return_exceptions=True)  # the registry's error is the one to report
            raise
        await grpc_stack
        async with options.containerd() as containerd:
            return await rpull(
                containerd,
                registry,
                reference,
                image=image,
                snapshotter=snapshotter,
                index_digest=index_digest,
                progress=_print_layer,
                load_order=load_order,
            )
