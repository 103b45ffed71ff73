"""Record, push, select and replay through containerd, the daemon and the lazy FUSE filesystem.

The image's third layer overrides ``/etc/greeting`` of the first: the recorded segment must name the
layer that provides the file. Registry, containerd and the daemon are real and stopped by PID.
"""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from e2e_images import EXPECTED_OUTPUT, SCRIPT, BuiltImage, convert, push_image  # type: ignore[import-not-found,unused-ignore]
from e2e_stack import FUSE_MOUNTER, Stack, mounted_view, needs_stack, stack_running, wait_until  # type: ignore[import-not-found,unused-ignore]

from soci.cli.main import cli
from soci.containerd.pull import chain_ids
from soci.formats import load_order as lo
from soci.testing.registry_server import RegistryServer, sha256_digest

pytestmark = [*needs_stack, pytest.mark.fuse, pytest.mark.slow, pytest.mark.timeout(600)]

WORKLOAD = f"{SCRIPT}; echo READY; sleep 30"


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def stack(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    extra = "[load_order]\nrecord = true\n"
    with stack_running(tmp_path_factory.mktemp("lo"), registry, config_extra=extra, mounter=FUSE_MOUNTER) as running:
        yield running


@pytest.fixture(scope="module")
def image(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    workdir = tmp_path_factory.mktemp("lo-image")
    # 1 MiB spans: the big layer has several, so serving it needs the windows of its zTOC
    return convert(workdir / "soci", push_image(stack.registry, workdir, "lo/app", "v1", seed=701), "v1-soci",
                   span_size=1 << 20)  # fmt: skip


def soci(stack: Stack, *args: str, namespace: str = "default", ok: bool = True) -> str:
    result = CliRunner().invoke(
        cli, ["--root", str(stack.daemon.root), "--address", stack.containerd.address, "--namespace", namespace, *args]
    )
    if ok:
        assert result.exit_code == 0, result.output + "\n" + stack.daemon.log_tail(40)
    return result.output


def _record(stack: Stack, ref: str, out: Path) -> lo.LoadOrder:
    output = soci(stack, "load-order", "record", "--plain-http", "--name", "greet", "--ready-line", "READY",
                  "--timeout", "60", "-o", str(out), ref, "--", "/bin/sh", "-c", WORKLOAD)  # fmt: skip
    assert "(ready)" in output, output
    return lo.parse(out.read_bytes())


def _forget(stack: Stack, *refs: str) -> None:
    """Remove the images so containerd's GC removes their snapshots: the next pull mounts the layers again
    (a load order is chosen when a layer is mounted)."""
    for ref in refs:
        stack.containerd.ctr("images", "rm", "--sync", ref, check=False)
    listing = ("snapshots", "--snapshotter", "soci", "ls")
    assert wait_until(lambda: len(stack.containerd.ctr(*listing).stdout.strip().splitlines()) <= 1)


def _messages(stack: Stack) -> list[str]:
    return [str(e.get("msg", "")) for e in stack.log_entries()]


def test_record_push_select_replay(stack: Stack, image: BuiltImage, tmp_path: Path) -> None:
    first = _record(stack, image.ref, tmp_path / "first.json")
    second = _record(stack, image.ref, tmp_path / "second.json")
    assert lo.identity_bytes(first) == lo.identity_bytes(second)

    base, big, top = (layer.descriptor().digest for layer in image.layers)
    paths = {entry.digest: {s.path for s in entry.segments} for entry in first.layers}
    assert "etc/greeting" in paths[top]  # provided by the top layer ...
    assert "etc/greeting" not in paths.get(base, set())  # ... though the base layer has one too
    assert "bin/sh" in paths[base]
    # record adds verified fetch points for the gzip layers it read (--fetch-points is the default), and every
    # indexed layer's zTOC metadata, the big layer too, although the workload reads nothing of it
    assert all(entry.fetch_points for entry in first.layers if entry.segments), first.layers
    assert {entry.digest for entry in first.layers if entry.ztoc_metadata} == {base, big, top}, first.layers

    # the same image under another name: the document applies unchanged
    other = image.ref.replace("lo/app:v1-soci", "lo/copy:v1")
    subprocess.run(["skopeo", "copy", "--all", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{image.ref}", f"docker://{other}"], check=True)  # fmt: skip
    soci(stack, "load-order", "push", "--plain-http", other, str(tmp_path / "first.json"))
    assert "greet" in soci(stack, "load-order", "list", "--plain-http", other)
    shown = soci(stack, "load-order", "show", "--plain-http", "--no-times", "--name", "greet", other)
    assert shown.strip().encode() == lo.identity_bytes(first)

    # selected by the rpull label when the layers mount: chosen, logged, counted, replayed; the container runs
    _forget(stack, image.ref, other)
    assert stack.daemon.stop(signal.SIGTERM) == 0  # a daemon that has not seen the zTOCs (it keeps the last few)
    stack.restart_daemon()
    stack.rpull(other, "--load-order", "greet")
    assert stack.run(other, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT
    messages = _messages(stack)
    assert any(m.startswith("load order greet chosen by label") for m in messages)
    replayed = [m for m in messages if m.startswith("load order greet replayed on layer")]
    # the points were fetched: "... replayed on layer sha256:..: N fetch points and M spans ..." with N > 0
    assert any(re.search(r": [1-9][0-9]* fetch points and", m) for m in replayed), replayed
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10) as response:
        assert 'layer="greet (label)",operation_type="load_order_selected"' in response.read().decode()
    # every layer mounted from the document's zTOC metadata, none waited for its zTOC
    from_metadata = [m for m in messages if "mounts from the load order document's zTOC metadata" in m]
    assert {d for d in (base, big, top) if any(d in m for m in from_metadata)} == {base, big, top}, from_metadata

    # files the document never read are served exactly, through spans inflated with the windows of the zTOC,
    # which is fetched (and checked against the metadata) when first needed
    with tarfile.open(fileobj=io.BytesIO(image.layers[1].tar)) as tar:
        expected = {m.name: tar.extractfile(m).read() for m in tar.getmembers()  # type: ignore[union-attr]
                    if m.isfile() and m.name.startswith("opt/app/")}  # fmt: skip
    top_chain = chain_ids([sha256_digest(layer.tar) for layer in image.layers])[-1]
    with mounted_view(stack.containerd, "soci", top_chain, tmp_path / "view") as view:
        assert {name: (view / name).read_bytes() for name in expected} == expected
    messages = _messages(stack)
    windows = [m for m in messages if big in m or "windows" in m]
    assert f"{big}: checkpoint windows fetched" in messages, windows
    assert not any("metadata was made from" in m for m in messages)


def test_missing_load_order_is_logged_and_the_container_still_starts(stack: Stack, image: BuiltImage) -> None:
    _forget(stack, image.ref, image.ref.replace("lo/app:v1-soci", "lo/copy:v1"))
    stack.rpull(image.ref, "--load-order", "absent")
    assert stack.run(image.ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT
    messages = _messages(stack)
    assert any(m.startswith("load order absent ignored") and "no load order named 'absent'" in m for m in messages)


def test_export_to_upstream_prefetch_artifacts(stack: Stack, image: BuiltImage, tmp_path: Path) -> None:
    document = _record(stack, image.ref, tmp_path / "doc.json")
    soci(stack, "load-order", "push", "--plain-http", image.ref, str(tmp_path / "doc.json"))
    output = soci(stack, "load-order", "export", "--plain-http", "--name", "greet", image.ref)
    digest = output.split()[3]
    index = json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{image.ref.rsplit(':', 1)[0]}@{digest}"],
        check=True, capture_output=True, text=True).stdout)  # fmt: skip
    prefetch = [d for d in index["layers"] if d["mediaType"] == "application/vnd.amazon.soci.prefetch.v1+json"]
    assert {d["annotations"]["com.amazon.soci.image-layer-digest"] for d in prefetch} == {
        e.digest
        for e in document.layers
        if e.segments  # not the entries that carry only zTOC metadata
    }
    assert "subject" not in index
