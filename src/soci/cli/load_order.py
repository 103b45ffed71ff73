"""``soci load-order``: record, store, inspect and export workload load order documents."""

from __future__ import annotations

import asyncio
import os
import secrets
import select
import shutil
import subprocess
import time
from pathlib import Path

import click

from soci.cli._common import GlobalOptions, errors_to_exit, pass_options, print_table
from soci.cli._registry_flags import RegistryFlags, flags, registry_flags
from soci.containerd.client import ContainerdClient
from soci.containerd.pull import resolve_image, rpull
from soci.errors import FailedPrecondition, InvalidArgument, NotFound, SociError
from soci.formats import load_order as lo
from soci.formats.oci import Descriptor, Manifest
from soci.formats.platforms import default_platform
from soci.loadorder.export import push_prefetch_index
from soci.loadorder.fetchpoints import add_fetch_points
from soci.loadorder.record import READ_LOG, LogWindow, collect
from soci.loadorder.store import fetch_load_order, list_load_orders, push_load_order, remove_load_orders
from soci.registry import Reference, parse_reference


@click.group("load-order")
def load_order() -> None:
    """Workload load order documents: which file bytes a workload reads first."""


def _name(value: str) -> str:
    try:
        return lo.check_name(value)
    except SociError as exc:
        raise click.BadParameter(str(exc)) from exc


async def _image(registry_flags_: RegistryFlags, reference: Reference) -> tuple[Descriptor, Manifest]:
    async with registry_flags_.client(reference.domain) as client:
        _, _, descriptor, manifest = await resolve_image(client, reference, default_platform())
    return descriptor, manifest


# ---- record -------------------------------------------------------------------------------------------


_FETCH_POINTS_OPTION = click.option(
    "--fetch-points/--no-fetch-points",
    default=True,
    show_default=True,
    help="add verified fetch points, so a replay fetches the recorded byte ranges instead of whole spans",
)
_ZTOC_METADATA_OPTION = click.option(
    "--ztoc-metadata/--no-ztoc-metadata",
    default=True,
    show_default=True,
    help="with fetch points: add each layer's zTOC without its windows, so the snapshotter mounts the layer "
    "before fetching its zTOC",
)


@load_order.command("record", context_settings={"ignore_unknown_options": True})
@registry_flags
@click.option("--name", "name", required=True, help="workload name (the document's name)")
@click.option("--ready-line", default="", help="stop once the workload prints a line containing this text")
@click.option("--timeout", "timeout_sec", type=float, default=60.0, show_default=True, help="stop after this long")
@click.option("--snapshotter", default="soci", show_default=True, help="the snapshotter that records the reads")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), help="write the document here")
@click.option("--push/--no-push", "push_", default=False, help="push the document next to the image")
@click.option(
    "--keep-cache", is_flag=True, help="do not drop the page cache first (reads cached by the kernel are missed)"
)
@_FETCH_POINTS_OPTION
@_ZTOC_METADATA_OPTION
@click.argument("ref")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_options
def record_command(
    options: GlobalOptions,
    plain_http: bool,
    skip_verify: bool,
    user: str | None,
    hosts_dir: Path | None,
    name: str,
    ready_line: str,
    timeout_sec: float,
    snapshotter: str,
    output: Path | None,
    push_: bool,
    keep_cache: bool,
    fetch_points: bool,
    ztoc_metadata: bool,
    ref: str,
    command: tuple[str, ...],
) -> None:
    """Record the load order of COMMAND run in REF (after `--`): pulls REF lazily through the snapshotter
    (which must run with `[load_order] record = true` and --root as this command's), runs COMMAND with
    ctr until it exits, prints the ready line or the timeout passes, and writes the document."""
    with errors_to_exit():
        _name(name)
        if not output and not push_:
            raise InvalidArgument("say where the document goes: --output FILE and/or --push")
        reference = parse_reference(ref)
        registry_flags_ = flags(plain_http, skip_verify, user, hosts_dir)
        LogWindow(options.root / READ_LOG)  # fail before pulling when the daemon does not record
        descriptor, manifest = asyncio.run(_image(registry_flags_, reference))
        layers = [d.digest for d in manifest.layers or ()]
        asyncio.run(_rpull(options, registry_flags_, reference, snapshotter))
        if not keep_cache:
            _drop_caches()
        window = LogWindow(options.root / READ_LOG)
        outcome = _run(options, reference, snapshotter, command, ready_line, timeout_sec)
        window.stop()
        document = collect(
            window,
            name,
            layers,
            annotations={
                lo.ANNOTATION_IMAGE: str(reference),
                lo.ANNOTATION_COMMAND: " ".join(command)[:1024],
                lo.ANNOTATION_RECORDED_BY: f"soci load-order record ({outcome})",
            },
        )
        click.echo(f"recorded {document.segment_count} segments in {len(document.layers)} layers ({outcome})")
        if fetch_points:
            document = asyncio.run(
                _with_fetch_points(registry_flags_, reference, descriptor, manifest, document, ztoc_metadata)
            )
        if output:
            output.write_bytes(lo.marshal(document))
            click.echo(f"wrote {output}")
        if push_:
            digest = asyncio.run(_push(registry_flags_, reference, descriptor, document))
            click.echo(f"pushed load order {name} as {digest}")


async def _rpull(
    options: GlobalOptions, registry_flags_: RegistryFlags, reference: Reference, snapshotter: str
) -> None:
    async with (
        ContainerdClient(options.address, options.namespace, timeout_sec=options.timeout or None) as containerd,
        registry_flags_.client(reference.domain) as registry,
    ):
        # no replay while recording: the reads must be the workload's own
        await rpull(containerd, registry, reference, snapshotter=snapshotter, load_order="none")


def _drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        click.echo(f"warning: cannot drop the page cache ({exc.strerror}); cached reads are not recorded", err=True)


def _ctr(options: GlobalOptions, *args: str) -> list[str]:
    ctr = shutil.which("ctr")
    if ctr is None:
        raise FailedPrecondition("ctr (containerd's client) is not installed")
    return [ctr, "--address", options.address, "--namespace", options.namespace, *args]


def _run(
    options: GlobalOptions,
    reference: Reference,
    snapshotter: str,
    command: tuple[str, ...],
    ready_line: str,
    timeout_sec: float,
) -> str:
    """Run the workload; returns how it ended (``ready``, ``exited <status>`` or ``timeout``)."""
    container = f"soci-record-{secrets.token_hex(4)}"
    args = _ctr(options, "run", "--rm", "--snapshotter", snapshotter, str(reference), container, *command)
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    fd = process.stdout.fileno()
    wanted = ready_line.encode()
    deadline = time.monotonic() + timeout_sec
    outcome = "timeout"
    tail = b""
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:  # the workload closed its output: it has ended
                process.wait(timeout=max(remaining, 1.0))
                outcome = f"exited {process.returncode}"
                break
            click.echo(chunk.decode(errors="replace"), nl=False)
            tail = (tail + chunk)[-max(4096, 2 * len(wanted)) :]
            if wanted and wanted in tail:
                outcome = "ready"
                break
    finally:
        if process.poll() is None:
            subprocess.run(_ctr(options, "task", "kill", "--signal", "SIGKILL", container), capture_output=True)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        subprocess.run(_ctr(options, "container", "rm", container), capture_output=True)
    return outcome


async def _with_fetch_points(
    registry_flags_: RegistryFlags,
    reference: Reference,
    descriptor: Descriptor,
    manifest: Manifest,
    document: lo.LoadOrder,
    ztoc_metadata: bool,
) -> lo.LoadOrder:
    async with registry_flags_.client(reference.domain) as client:
        with_points = await add_fetch_points(
            client, reference.path, descriptor.digest, manifest, document, ztoc_metadata=ztoc_metadata
        )
    count = sum(len(layer.fetch_points) for layer in with_points.layers)
    click.echo(f"added {count} fetch points ({len(lo.marshal(with_points)) - len(lo.marshal(document))} bytes)")
    metadata = [layer for layer in with_points.layers if layer.ztoc_metadata]
    if metadata:
        total = sum(len(layer.ztoc_metadata) for layer in metadata)
        click.echo(f"added the zTOC metadata of {len(metadata)} layers ({total} bytes before base64)")
    return with_points


async def _push(
    registry_flags_: RegistryFlags, reference: Reference, subject: Descriptor, document: lo.LoadOrder
) -> str:
    async with registry_flags_.client(reference.domain) as client:
        return await push_load_order(client, reference.path, subject, document)


# ---- push / list / show / rm / export -----------------------------------------------------------------


@load_order.command("push")
@registry_flags
@click.option(
    "--fetch-points/--no-fetch-points",
    default=False,
    help="compute fetch points for the document first (replacing any it has)",
)
@_ZTOC_METADATA_OPTION
@click.argument("ref")
@click.argument("document", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def push_command(
    plain_http: bool,
    skip_verify: bool,
    user: str | None,
    hosts_dir: Path | None,
    fetch_points: bool,
    ztoc_metadata: bool,
    ref: str,
    document: Path,
) -> None:
    """Push the load order DOCUMENT next to image REF (replacing the image's document of the same name)."""
    with errors_to_exit():
        reference = parse_reference(ref)
        registry_flags_ = flags(plain_http, skip_verify, user, hosts_dir)
        parsed = lo.parse(document.read_bytes(), str(document))
        descriptor, manifest = asyncio.run(_image(registry_flags_, reference))
        lo.check_layers(parsed, [d.digest for d in manifest.layers or ()])
        if fetch_points:
            parsed = asyncio.run(
                _with_fetch_points(registry_flags_, reference, descriptor, manifest, parsed, ztoc_metadata)
            )
        digest = asyncio.run(_push(registry_flags_, reference, descriptor, parsed))
        click.echo(f"pushed load order {parsed.name} as {digest}")


@load_order.command("list")
@registry_flags
@click.argument("ref")
def list_command(plain_http: bool, skip_verify: bool, user: str | None, hosts_dir: Path | None, ref: str) -> None:
    """List the load order documents of image REF."""
    with errors_to_exit():
        reference = parse_reference(ref)
        registry_flags_ = flags(plain_http, skip_verify, user, hosts_dir)

        async def run() -> list[list[str]]:
            async with registry_flags_.client(reference.domain) as client:
                _, _, descriptor, _ = await resolve_image(client, reference, default_platform())
                found = await list_load_orders(client, reference.path, descriptor.digest)
            return [[s.name, s.manifest_digest, str(s.size)] for s in found]

        print_table(["NAME", "DIGEST", "SIZE"], asyncio.run(run()))


async def _fetch(registry_flags_: RegistryFlags, reference: Reference, name: str) -> lo.LoadOrder:
    async with registry_flags_.client(reference.domain) as client:
        _, _, descriptor, _ = await resolve_image(client, reference, default_platform())
        return await fetch_load_order(client, reference.path, descriptor.digest, name)


@load_order.command("show")
@registry_flags
@click.option("--name", "name", required=True)
@click.option("--no-times", is_flag=True, help="leave the access times out (the document's identity bytes)")
@click.argument("ref")
def show_command(
    plain_http: bool, skip_verify: bool, user: str | None, hosts_dir: Path | None, name: str, no_times: bool, ref: str
) -> None:
    """Print image REF's load order document NAME (canonical JSON)."""
    with errors_to_exit():
        document = asyncio.run(
            _fetch(flags(plain_http, skip_verify, user, hosts_dir), parse_reference(ref), _name(name))
        )
        click.echo((lo.identity_bytes(document) if no_times else lo.marshal(document)).decode())


@load_order.command("rm")
@registry_flags
@click.option("--name", "name", required=True)
@click.argument("ref")
def rm_command(
    plain_http: bool, skip_verify: bool, user: str | None, hosts_dir: Path | None, name: str, ref: str
) -> None:
    """Remove image REF's load order document NAME."""
    with errors_to_exit():
        reference = parse_reference(ref)
        registry_flags_ = flags(plain_http, skip_verify, user, hosts_dir)

        async def run() -> list[str]:
            async with registry_flags_.client(reference.domain) as client:
                _, _, descriptor, _ = await resolve_image(client, reference, default_platform())
                return await remove_load_orders(client, reference.path, descriptor.digest, _name(name))

        removed = asyncio.run(run())
        if not removed:
            raise NotFound(f"image {reference} has no load order named {name!r}")
        for digest in removed:
            click.echo(f"removed {digest}")


@load_order.command("export")
@registry_flags
@click.option("--name", "name", required=True)
@click.option("--soci-index-digest", default="", help="the SOCI index to copy (default: discover the image's)")
@click.argument("ref")
def export_command(
    plain_http: bool,
    skip_verify: bool,
    user: str | None,
    hosts_dir: Path | None,
    name: str,
    soci_index_digest: str,
    ref: str,
) -> None:
    """Export load order NAME as upstream SOCI prefetch artifacts: pushes a copy of REF's SOCI index with
    them (by digest only; the image and its index are unchanged) and prints its digest, to pull with
    `--soci-index-digest` on a snapshotter with `[prefetch] enable = true`."""
    with errors_to_exit():
        reference = parse_reference(ref)
        registry_flags_ = flags(plain_http, skip_verify, user, hosts_dir)

        async def run() -> tuple[str, int]:
            async with registry_flags_.client(reference.domain) as client:
                _, _, descriptor, _ = await resolve_image(client, reference, default_platform())
                document = await fetch_load_order(client, reference.path, descriptor.digest, _name(name))
                digest, spans = await push_prefetch_index(
                    client, reference.path, descriptor.digest, document, index_digest=soci_index_digest
                )
            return digest, sum(len(v) for v in spans.values())

        digest, ranges = asyncio.run(run())
        click.echo(f"pushed SOCI index {digest} with {ranges} prefetch span ranges")
