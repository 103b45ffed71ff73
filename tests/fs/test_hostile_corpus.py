"""The committed hostile-artifact corpus (tests/data/hostile, written by its make.py) through ``soci mount``.

Each case is pushed to a real docker-registry with valid digests, then ``soci mount`` runs as its own process:
it either mounts (and every file is then read, with a bound on time) or exits with a one-line error. Never a
traceback, never a hang, and the mount process's peak RSS stays under a generous bound (a memory bound, not
a time).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from fs_serve import needs_fuse_and_registry
from fs_soci_mount import SOCI, SociMount

from soci.formats.digest import sha256_digest
from soci.formats.oci import MEDIA_TYPE_OCI_MANIFEST
from soci.formats.soci_index import (
    ARTIFACT_TYPE_V2,
    EMPTY_CONFIG,
    EMPTY_CONFIG_DIGEST,
    build_index_manifest,
    ztoc_descriptor,
)
from soci.fs.mount import clean_stale_mounts
from soci.registry import RegistryClient
from soci.testing.images import Layer, write_oci_layout
from soci.testing.registry_server import RegistryServer

pytestmark = needs_fuse_and_registry(300)

CORPUS = Path(__file__).parent.parent / "data" / "hostile"
GOLDEN = Path(__file__).parent.parent / "data" / "golden" / "ztoc"
CASES: dict[str, dict[str, str]] = json.loads((CORPUS / "cases.json").read_text())
RSS_BOUND_KIB = 1 << 20  # 1 GiB
MOUNT_WAIT_SEC = 120
READ_WAIT_SEC = 120


def _push_image(registry: RegistryServer, work: Path, repo: str, layer: Layer) -> str:
    write_oci_layout(work / "oci", [layer])
    ref = f"{registry.host}/{repo}:v1"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{work / 'oci'}:latest",
                    f"docker://{ref}"], check=True, capture_output=True)  # fmt: skip
    return ref


async def _push_index(registry: RegistryServer, repo: str, layer: Layer, ztoc: bytes | None, raw: bytes | None) -> str:
    async with RegistryClient(registry.host, plain_http=True) as client:
        await client.push_blob(repo, EMPTY_CONFIG_DIGEST, EMPTY_CONFIG)
        if raw is None:
            assert ztoc is not None
            await client.push_blob(repo, sha256_digest(ztoc), ztoc)
            descriptor = ztoc_descriptor(
                sha256_digest(ztoc), len(ztoc), layer.descriptor(), 65536, disable_xattrs=False
            )
            raw = build_index_manifest([descriptor], artifact_type=ARTIFACT_TYPE_V2, subject=None).marshal()
        return await client.put_manifest(repo, sha256_digest(raw), raw, MEDIA_TYPE_OCI_MANIFEST)


def _read_everything(target: Path) -> subprocess.CompletedProcess[str]:
    # a child reads (regular files only: a FIFO blocks any reader), so a stuck FUSE read cannot wedge the test
    # process; its timeout is the hang detector
    script = (
        "import os,stat,sys\n"
        "bad=0\n"
        "for d,_,fs in os.walk(sys.argv[1]):\n"
        "  for f in fs:\n"
        "    p=os.path.join(d,f)\n"
        "    if not stat.S_ISREG(os.lstat(p).st_mode): continue\n"
        "    try:\n"
        "      with open(p,'rb') as h:\n"
        "        while h.read(1<<20): pass\n"
        "    except OSError as e: bad+=1; print(p, e.strerror)\n"
        "print('failed', bad)\n"
    )
    return subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, errors="replace",
                          timeout=READ_WAIT_SEC)  # fmt: skip


def _run_case(args: list[str], target: Path, root: Path) -> tuple[int, str, str]:
    mount = SociMount([*args[:-1], "--root", str(root), args[-1], str(target)])
    try:
        assert mount.ready.wait(MOUNT_WAIT_SEC), "soci mount neither mounted nor exited"
        reads = ""
        if mount.process.poll() is None:
            reads = _read_everything(target).stdout
        status, output = mount.stop(), mount.output()
    finally:
        if mount.process.poll() is None:
            mount.process.kill()
            mount.process.wait()
        clean_stale_mounts([target, root])
    return status, output, reads


@pytest.mark.parametrize("case", sorted(c for c, v in CASES.items() if v["kind"] in ("ztoc", "index")))
def test_hostile_soci_artifact_through_soci_mount(registry: RegistryServer, case: str, tmp_path: Path) -> None:
    spec = CASES[case]
    blob = (GOLDEN / spec["layer"] / "layer.tar.gz").read_bytes()
    layer = Layer(blob, gzip.decompress(blob))
    repo = f"hostile/{case}"
    ref = _push_image(registry, tmp_path, repo, layer)
    data = (CORPUS / spec["file"]).read_bytes()
    if spec["kind"] == "ztoc":
        index_digest = asyncio.run(_push_index(registry, repo, layer, data, None))
    else:
        index_digest = asyncio.run(_push_index(registry, repo, layer, None, data))
    status, output, reads = _run_case(["--soci-index-digest", index_digest, ref], tmp_path / "dir", tmp_path / "root")
    assert "Traceback" not in output, output
    if status != 0:
        errors = [line for line in output.splitlines() if line.startswith("soci:")]
        assert len(errors) == 1 and "internal error" not in errors[0], output
    else:
        # every read finished (the reader's timeout is the hang check); a read may fail, but only with an errno
        assert reads.splitlines()[-1].startswith("failed "), reads
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert peak < RSS_BOUND_KIB, f"peak RSS of a child {peak} KiB"


def test_hostile_tar_names_stay_inside_the_mount(registry: RegistryServer, tmp_path: Path) -> None:
    tar = (CORPUS / CASES["hostile-names"]["file"]).read_bytes()
    src = _push_image(registry, tmp_path, "hostile/names", Layer(gzip.compress(tar, mtime=0), tar))
    dst = src.rsplit(":", 1)[0] + ":soci"
    convert = subprocess.run([*SOCI, "--root", str(tmp_path / "build"), "convert", "--remote", "--plain-http",
                              "--min-layer-size", "0", src, dst], capture_output=True, text=True)  # fmt: skip
    assert "Traceback" not in convert.stderr, convert.stderr
    if convert.returncode != 0:  # refusing the layer is fine, with one clean line
        assert convert.stderr.strip().startswith("soci:") and "internal error" not in convert.stderr
        return
    status, output, reads = _run_case([dst], tmp_path / "dir", tmp_path / "root")
    assert "Traceback" not in output, output
    assert status == 0 or output.strip().splitlines()[-1].startswith("soci:"), output
    assert reads == "" or reads.splitlines()[-1].startswith("failed "), reads
    for outside in (Path("/etc/soci-hostile-x"), Path("/abs/soci-hostile-y"), tmp_path / "etc" / "soci-hostile-x"):
        assert not outside.exists(), outside
