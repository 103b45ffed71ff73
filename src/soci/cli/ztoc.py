"""``soci ztoc list|info|get-file``: zTOCs in the local store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from soci.cli._common import CliError, GlobalOptions, errors_to_exit, pass_options, print_table
from soci.formats import gojson
from soci.formats.soci_index import parse_index
from soci.formats.zinfo import zinfo_from_blob
from soci.formats.ztoc import TYPE_REG, Ztoc
from soci.formats.ztoc_codec import unmarshal_ztoc
from soci.index.extract import find_entry, read_verified
from soci.store import ARTIFACT_INDEX, ARTIFACT_LAYER, ContentStore, LocalStore, atomic_write
from soci.store.layout import OciLayout


@click.group()
def ztoc() -> None:
    """Inspect zTOCs in the local store."""


def _load(store: LocalStore, digest: str) -> tuple[Ztoc, Any]:
    entry = store.artifacts.get(digest)
    if entry.type != ARTIFACT_LAYER:
        raise CliError(f"{digest} is not a zTOC (it is a {entry.type})")
    return unmarshal_ztoc(store.content.read_blob(digest)), entry


@ztoc.command("list")
@click.option("--ztoc-digest", help="only this zTOC")
@click.option("--image-ref", help="only zTOCs of indexes built for this image reference")
@click.option("--quiet", "-q", is_flag=True, help="print digests only")
@pass_options
def list_ztocs(g: GlobalOptions, ztoc_digest: str | None, image_ref: str | None, quiet: bool) -> None:
    """List zTOCs."""
    with errors_to_exit(), g.open_store() as store:
        entries = store.artifacts.find(type=ARTIFACT_LAYER)
        if ztoc_digest:
            entries = [e for e in entries if e.digest == ztoc_digest]
        if image_ref:
            wanted: set[str] = set()
            for idx in store.artifacts.find(type=ARTIFACT_INDEX, image_ref=image_ref):
                if store.content.has_blob(idx.digest):
                    wanted.update(d.digest for d in parse_index(store.content.read_blob(idx.digest)).ztocs())
            entries = [e for e in entries if e.digest in wanted]
        if quiet:
            for e in entries:
                click.echo(e.digest)
            return
        print_table(["DIGEST", "SIZE", "LAYER DIGEST"], [[e.digest, str(e.size), e.oci_digest] for e in entries])


ztoc.add_command(list_ztocs, "ls")


def _name(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


@ztoc.command("info")
@click.argument("digest")
@pass_options
def info(g: GlobalOptions, digest: str) -> None:
    """Print a zTOC's summary and file table as JSON."""
    with errors_to_exit(), g.open_store() as store:
        z, entry = _load(store, digest)
        zinfo = zinfo_from_blob(z.compression_algorithm, z.checkpoints)
        files = []
        multi = 0
        for e in z.entries:
            start = zinfo.span_of(e.uncompressed_offset)
            end = zinfo.span_of(e.uncompressed_offset + e.uncompressed_size - 1) if e.uncompressed_size else start
            multi += end > start
            files.append(
                {
                    "filename": _name(e.name),
                    "offset": e.uncompressed_offset,
                    "size": e.uncompressed_size,
                    "type": e.type,
                    "start_span": start,
                    "end_span": end,
                }
            )
        summary = {
            "version": z.version,
            "build_tool": z.build_tool_identifier,
            "size": entry.size,
            "span_size": entry.span_size or zinfo.span_size,
            "num_spans": z.max_span_id + 1,
            "num_files": len(z.entries),
            "num_multi_span_files": multi,
            "files": files,
        }
        click.echo(gojson.marshal_indent(summary))


@ztoc.command("get-file")
@click.argument("digest")
@click.argument("file")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), help="write here, not stdout")
@click.option(
    "--oci-layout", type=click.Path(path_type=Path, exists=True),
    help="OCI image layout (directory or archive) holding the layer blob",
)  # fmt: skip
@pass_options
def get_file(g: GlobalOptions, digest: str, file: str, output: Path | None, oci_layout: Path | None) -> None:
    """Extract FILE from the layer that zTOC DIGEST describes, using only its checkpoints."""
    with errors_to_exit(), g.open_store() as store:
        z, entry = _load(store, digest)
        layer_digest = entry.oci_digest
        found = find_entry(z, file)
        if found.type != TYPE_REG:
            raise CliError(f"{file!r} is a {found.type}, not a regular file")
        source: OciLayout | ContentStore = store.content if oci_layout is None else OciLayout(oci_layout)
        if not source.has_blob(layer_digest):
            where = "the local store; name its OCI layout with --oci-layout" if oci_layout is None else oci_layout
            raise CliError(f"layer {layer_digest} is not in {where}")
        with source.open_blob(layer_digest) as f:

            def read_compressed(offset: int, length: int) -> bytes:
                f.seek(offset)
                return f.read(length)

            data = read_verified(z, read_compressed, found.uncompressed_offset, found.uncompressed_size)
        if output is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            atomic_write(output, data)
