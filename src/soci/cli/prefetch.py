"""``soci prefetch list|info``: SOCI prefetch artifacts in the local store."""

from __future__ import annotations

import click

from soci.cli._common import CliError, GlobalOptions, errors_to_exit, human_age, pass_options, print_table
from soci.errors import SociError
from soci.formats import gojson
from soci.formats.soci_index import parse_prefetch
from soci.store import ARTIFACT_PREFETCH


@click.group()
def prefetch() -> None:
    """Inspect prefetch artifacts (experimental upstream feature)."""


@prefetch.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_options
def list_prefetch(g: GlobalOptions, as_json: bool) -> None:
    """List prefetch artifacts."""
    with errors_to_exit(), g.open_store() as store:
        rows = []
        for e in store.artifacts.find(type=ARTIFACT_PREFETCH):
            try:
                spans = sum(s.end_span - s.start_span + 1 for s in parse_prefetch(store.content.read_blob(e.digest)))
                count = str(spans)
            except SociError:
                count = "N/A"
            rows.append([e.digest, e.oci_digest, count, human_age(e.created_at)])
        if as_json:
            items = [{"digest": r[0], "layer_digest": r[1], "spans": r[2], "created": r[3]} for r in rows]
            click.echo(gojson.marshal_indent(items))
        else:
            print_table(["DIGEST", "LAYER DIGEST", "SPANS", "CREATED"], rows)


prefetch.add_command(list_prefetch, "ls")


@prefetch.command("info")
@click.argument("digest")
@click.option("--json", "as_json", is_flag=True, help="print the artifact's JSON")
@pass_options
def info(g: GlobalOptions, digest: str, as_json: bool) -> None:
    """Show one prefetch artifact."""
    with errors_to_exit(), g.open_store() as store:
        entry = store.artifacts.get(digest)
        if entry.type != ARTIFACT_PREFETCH:
            raise CliError(f"{digest} is not a prefetch artifact (it is a {entry.type})")
        data = store.content.read_blob(digest)
        if as_json:
            click.echo(data.decode("utf-8"))
            return
        spans = parse_prefetch(data)
        click.echo(f"Digest: {digest}")
        click.echo(f"Layer digest: {entry.oci_digest}")
        click.echo(f"Ranges: {len(spans)}, spans: {sum(s.end_span - s.start_span + 1 for s in spans)}")
        for s in spans:
            click.echo(f"  spans {s.start_span}-{s.end_span}" + (f" priority {s.priority}" if s.priority else ""))
