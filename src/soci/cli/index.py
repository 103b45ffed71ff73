"""``soci index list|info|rm``: SOCI indexes in the local store."""

from __future__ import annotations

import click

from soci.cli._common import CliError, GlobalOptions, errors_to_exit, human_age, pass_options, print_table
from soci.errors import NotFound
from soci.formats import gojson
from soci.formats import soci_index as si
from soci.formats.platforms import format_platform, parse_platform
from soci.store import ARTIFACT_INDEX, ArtifactEntry, LocalStore


@click.group()
def index() -> None:
    """Manage SOCI indexes in the local store."""


def _indexes(store: LocalStore, ref: str | None, platforms: tuple[str, ...]) -> list[ArtifactEntry]:
    entries = store.artifacts.find(type=ARTIFACT_INDEX)
    if ref:
        entries = [e for e in entries if e.image_ref == ref]
    if platforms:
        wanted = {format_platform(parse_platform(p)) for p in platforms}
        entries = [e for e in entries if e.platform in wanted]
    return entries


@index.command("list")
@click.option("--ref", help="only indexes of this image reference")
@click.option("--quiet", "-q", is_flag=True, help="print digests only")
@click.option("--platform", "-p", "platforms", multiple=True, help="only indexes for this platform (repeatable)")
@pass_options
def list_indexes(g: GlobalOptions, ref: str | None, quiet: bool, platforms: tuple[str, ...]) -> None:
    """List SOCI indexes, newest first."""
    with errors_to_exit(), g.open_store() as store:
        entries = _indexes(store, ref, platforms)
        if quiet:
            for e in entries:
                click.echo(e.digest)
            return
        rows = [
            [
                e.digest,
                str(e.size),
                e.image_ref,
                e.platform,
                e.media_type,
                e.oci_digest,
                "v2" if e.artifact_type == si.ARTIFACT_TYPE_V2 else "v1",
                human_age(e.created_at),
            ]
            for e in entries
        ]
        print_table(["DIGEST", "SIZE", "IMAGE REF", "PLATFORM", "MEDIA TYPE", "MANIFEST", "VERSION", "CREATED"], rows)


index.add_command(list_indexes, "ls")


@index.command("info")
@click.argument("digest")
@pass_options
def info(g: GlobalOptions, digest: str) -> None:
    """Print a SOCI index manifest."""
    with errors_to_exit(), g.open_store() as store:
        entry = store.artifacts.get(digest)
        if entry.type != ARTIFACT_INDEX:
            raise CliError(f"{digest} is not a SOCI index (it is a {entry.type})")
        data = store.content.read_blob(digest)
        click.echo(gojson.pretty(gojson.unmarshal_object(data, f"SOCI index {digest}")))


@index.command("remove")
@click.argument("digests", nargs=-1)
@click.option("--ref", help="remove every index of this image reference")
@pass_options
def remove(g: GlobalOptions, digests: tuple[str, ...], ref: str | None) -> None:
    """Remove SOCI indexes from the local store (their zTOCs stay, they may be shared)."""
    if bool(digests) == bool(ref):
        raise CliError("give either index digests or --ref, not both and not neither")
    with errors_to_exit(), g.open_store() as store:
        targets = list(digests) if digests else [e.digest for e in _indexes(store, ref, ())]
        for digest in targets:
            try:
                entry = store.artifacts.get(digest)
            except NotFound:
                raise CliError(f"index {digest} not found") from None
            if entry.type != ARTIFACT_INDEX:
                raise CliError(f"{digest} is not a SOCI index (it is a {entry.type})")
            store.artifacts.remove(digest)
            store.content.delete_blob(digest)


index.add_command(remove, "rm")
