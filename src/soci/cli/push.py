"""``soci push``: publish the newest v1 SOCI index of an image next to it in its registry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from soci.cli._common import CliError, GlobalOptions, ProgressReporter, errors_to_exit, pass_options
from soci.cli._registry_flags import flags, registry_flags
from soci.formats import soci_index as si
from soci.formats.platforms import default_platform, format_platform, parse_platform
from soci.index.remote import push_index
from soci.registry import parse_reference
from soci.store import ARTIFACT_INDEX, ArtifactEntry


@click.command()
@click.argument("image_ref")
@click.option("--max-concurrent-uploads", type=int, default=3, show_default=True)
@click.option("--quiet", "-q", is_flag=True)
@click.option("--existing-index", type=click.Choice(["warn", "skip", "allow"]), default="warn", show_default=True,
              help="what to do when the image already has a SOCI index in the registry")  # fmt: skip
@click.option("--platform", "-p", "platforms", multiple=True)
@click.option("--all-platforms", is_flag=True)
@registry_flags
@pass_options
def push(
    g: GlobalOptions,
    image_ref: str,
    max_concurrent_uploads: int,
    quiet: bool,
    existing_index: str,
    platforms: tuple[str, ...],
    all_platforms: bool,
    plain_http: bool,
    skip_verify: bool,
    user: str | None,
    hosts_dir: Path | None,
) -> None:
    """Push IMAGE_REF's newest v1 SOCI index (per platform) with its zTOCs."""
    with errors_to_exit():
        ref = parse_reference(image_ref)
        reg = flags(plain_http, skip_verify, user, hosts_dir)
        with g.open_store() as store, ProgressReporter(quiet) as reporter:
            entries = store.artifacts.find(type=ARTIFACT_INDEX, image_ref=str(ref))
            v2 = [e for e in entries if e.artifact_type == si.ARTIFACT_TYPE_V2]
            for e in v2:
                reporter.message(f"warning: skipping v2 index {e.digest}: v2 indexes travel with their image")
            newest: dict[str, ArtifactEntry] = {}
            for e in entries:  # newest first
                if e.artifact_type == si.ARTIFACT_TYPE_V1:
                    newest.setdefault(e.platform, e)
            if not all_platforms:
                wanted = {format_platform(parse_platform(p)) for p in platforms}
                wanted = wanted or {format_platform(default_platform())}
                newest = {p: e for p, e in newest.items() if p in wanted}
            if not newest:
                raise CliError(f"no v1 SOCI index for {ref} in the local store; build one with `soci create`")

            async def run() -> None:
                async with reg.client(ref.domain) as client:
                    for entry in newest.values():
                        await push_index(
                            client, ref, store, entry.digest, existing_index=existing_index,
                            max_concurrent_uploads=max_concurrent_uploads, reporter=reporter,
                        )  # fmt: skip

            asyncio.run(run())
