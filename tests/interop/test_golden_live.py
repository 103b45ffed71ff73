"""Byte identity with upstream SOCI's Go code, run live on real layers made from this machine's files.

Builds interop/.cache/bin/soci-golden with interop/build.sh (cached) and compares its zTOCs with ours on
tens of megabytes of real files, compressed by gzip and by pigz. Nothing here is committed as a vector.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from soci.formats.ztoc_codec import marshal_ztoc
from soci.index.ztoc_builder import build_ztoc
from soci.testing.ztoc_diff import describe_ztoc_difference

pytestmark = [pytest.mark.golang, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BUILD_SH = REPO / "interop" / "build.sh"
SOCI_GOLDEN = REPO / "interop" / ".cache" / "bin" / "soci-golden"

# Real trees with a few thousand files of mixed kinds (text, .pyc, .so, symlinks): roughly 75 MB of tar.
SOURCE_DIRS = ("usr/lib/python3.11", "usr/share/perl", "usr/share/perl5")

DEFAULT_SPAN = 1 << 22


@pytest.fixture(scope="module")
def soci_golden() -> Path:
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
        pytest.skip("Go toolchain not installed")
    subprocess.run([str(BUILD_SH), "soci-golden"], check=True, timeout=1800)
    return SOCI_GOLDEN


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("live-layers")
    present = [d for d in SOURCE_DIRS if (Path("/") / d).is_dir()]
    if not present:
        pytest.skip(f"none of {SOURCE_DIRS} exists on this machine")
    tar = work / "layer.tar"
    res = subprocess.run(
        ["tar", "-c", "-f", str(tar), "--sort=name", "--format=gnu", "-C", "/", *present],
        capture_output=True, text=True,
    )  # fmt: skip
    # GNU tar exits 1 when a file changed while being read; the archive is still complete and consistent
    assert res.returncode in (0, 1), res.stderr
    out = {"tar": tar}
    for name, cmd in (("gzip", ["gzip", "-6", "-n", "-c"]), ("pigz", ["pigz", "-6", "-n", "-p", "2", "-c"])):
        if shutil.which(cmd[0]) is None:
            continue
        path = work / f"layer.tar.{name}"
        with tar.open("rb") as src, path.open("wb") as dst:
            subprocess.run(cmd, stdin=src, stdout=dst, check=True)
        out[name] = path
    return out


@pytest.mark.parametrize(
    ("layer_kind", "algorithm", "span_size"),
    [
        ("gzip", "gzip", DEFAULT_SPAN),
        ("pigz", "gzip", DEFAULT_SPAN),
        ("pigz", "gzip", 1 << 20),
        ("tar", "uncompressed", DEFAULT_SPAN),
    ],
)
def test_live_ztoc_matches_upstream(
    soci_golden: Path, layers: dict[str, Path], tmp_path: Path, layer_kind: str, algorithm: str, span_size: int
) -> None:
    if layer_kind not in layers:
        pytest.skip(f"{layer_kind} is not installed")
    layer = layers[layer_kind]
    theirs_path = tmp_path / "upstream.ztoc"
    res = subprocess.run(
        [str(soci_golden), "ztoc", "--span-size", str(span_size), "--algorithm", algorithm,
         "--out", str(theirs_path), str(layer)],
        capture_output=True, text=True, env={**os.environ, "TZ": "UTC"}, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["num_entries"] > 1000, "the live layer should hold a few thousand entries"

    with layer.open("rb") as f:
        ours = marshal_ztoc(build_ztoc(f, span_size=span_size, algorithm=algorithm))
    theirs = theirs_path.read_bytes()
    if ours != theirs:
        pytest.fail(f"{layer_kind} layer, span {span_size}\n" + describe_ztoc_difference(ours, theirs), pytrace=False)
