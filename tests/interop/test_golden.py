"""Byte identity with upstream SOCI (v0.16.1) on the committed golden vectors in tests/data/golden/.

The vectors were produced by upstream's own Go code (interop/make_vectors.py); these tests need no Go.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from soci.errors import FormatError, UnsupportedEntry
from soci.formats import soci_index as si
from soci.formats.oci import Descriptor, Manifest
from soci.formats.platforms import parse_platform
from soci.formats.ztoc_codec import marshal_ztoc, unmarshal_ztoc
from soci.index.build import BuildOptions, IndexBuilder
from soci.index.ztoc_builder import build_ztoc
from soci.store import LocalStore
from soci.store.layout import OciLayout
from soci.testing.ztoc_diff import describe_json_difference, describe_ztoc_difference

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------------------
# zTOC vectors


def ztoc_builds(*, errors: bool) -> list[Any]:
    return list(_ztoc_builds(errors))


def _ztoc_builds(errors: bool) -> Iterator[Any]:
    for meta_path in sorted((GOLDEN / "ztoc").glob("*/meta.json")):
        meta = load_json(meta_path)
        for build in meta["builds"]:
            if ("error" in build) == errors:
                case_id = f"{meta_path.parent.name}-span{build['span_size']}"
                yield pytest.param(meta_path.parent, meta, build, id=case_id)


# Layers upstream indexes that we refuse on purpose, with the reason; with strict=False we match upstream's bytes.
DELIBERATE_REJECTIONS = {
    "gnutar-sparse-posix": "PAX sparse file: upstream records the packed data as the file's content and "
    "serves wrong bytes for it",
}


def build_ours(case_dir: Path, meta: dict[str, Any], span_size: int, *, strict: bool = True) -> bytes:
    with (case_dir / meta["layer"]).open("rb") as f:
        return marshal_ztoc(build_ztoc(f, span_size=span_size, algorithm=meta["algorithm"], strict=strict))


def test_vector_set_is_present() -> None:
    cases = list(ztoc_builds(errors=False))
    failing = list(ztoc_builds(errors=True))
    assert len(cases) >= 30 and len(failing) >= 3, "golden vectors missing: run interop/make_vectors.py"
    assert load_json(GOLDEN / "versions.json")["upstream"] == "v0.16.1"


@pytest.mark.parametrize(("case_dir", "meta", "build"), ztoc_builds(errors=False))
def test_vector_files_are_intact(case_dir: Path, meta: dict[str, Any], build: dict[str, Any]) -> None:
    layer = (case_dir / meta["layer"]).read_bytes()
    assert sha256(layer) == meta["layer_digest"]
    assert sha256((case_dir / build["ztoc"]).read_bytes()) == build["upstream"]["digest"]


@pytest.mark.parametrize(("case_dir", "meta", "build"), ztoc_builds(errors=False))
def test_ztoc_bytes_match_upstream(case_dir: Path, meta: dict[str, Any], build: dict[str, Any]) -> None:
    theirs = (case_dir / build["ztoc"]).read_bytes()
    if case_dir.name in DELIBERATE_REJECTIONS:
        with pytest.raises(UnsupportedEntry):
            build_ours(case_dir, meta, build["span_size"])
        ours = build_ours(case_dir, meta, build["span_size"], strict=False)
    else:
        ours = build_ours(case_dir, meta, build["span_size"])
    if ours != theirs:
        pytest.fail(f"{meta['description']}\n{describe_ztoc_difference(ours, theirs)}", pytrace=False)


@pytest.mark.parametrize(("case_dir", "meta", "build"), ztoc_builds(errors=True))
def test_layers_upstream_rejects_are_rejected(case_dir: Path, meta: dict[str, Any], build: dict[str, Any]) -> None:
    expected = UnsupportedEntry if "unsupported input tar entry" in build["error"] else FormatError
    with pytest.raises(expected):
        build_ours(case_dir, meta, build["span_size"])


@pytest.mark.parametrize(("case_dir", "meta", "build"), ztoc_builds(errors=False))
def test_upstream_ztoc_decodes_and_reencodes(case_dir: Path, meta: dict[str, Any], build: dict[str, Any]) -> None:
    theirs = (case_dir / build["ztoc"]).read_bytes()
    z = unmarshal_ztoc(theirs)
    summary = build["upstream"]
    assert (z.version, z.build_tool_identifier) == (summary["version"], summary["build_tool_identifier"])
    assert z.compression_algorithm == summary["compression_algorithm"]
    assert z.max_span_id == summary["max_span_id"]
    assert list(z.span_digests) == summary["span_digests"]
    assert len(z.entries) == summary["num_entries"]
    assert z.compressed_archive_size == summary["compressed_archive_size"] == meta["layer_size"]
    assert z.uncompressed_archive_size == summary["uncompressed_archive_size"]
    assert sha256(z.checkpoints) == summary["checkpoints_sha256"]
    again = marshal_ztoc(z)
    if again != theirs:
        pytest.fail(describe_ztoc_difference(again, theirs), pytrace=False)


# ---------------------------------------------------------------------------------------------------------
# OCI layout vectors: `soci convert --standalone` (v2) and the v1 index of `soci create`


def layout_cases(kind: str) -> list[Any]:
    return list(_layout_cases(kind))


def _layout_cases(kind: str) -> Iterator[Any]:
    for meta_path in sorted((GOLDEN / "layout").glob("*/meta.json")):
        meta = load_json(meta_path)
        if kind in meta:
            yield pytest.param(meta_path.parent, meta, id=meta_path.parent.name)


def test_layout_vectors_are_present() -> None:
    assert len(list(layout_cases("convert"))) >= 3
    assert len(list(layout_cases("create"))) >= 2


class BlobPair:
    """Looks blobs up on both sides: our output layout, and upstream's (expected new blobs over the source)."""

    def __init__(self, ours: Path, expected: Path, src: Path) -> None:
        self.ours = ours / "blobs" / "sha256"
        self.expected = expected
        self.src = src / "blobs" / "sha256"

    def our_blob(self, digest: str) -> bytes | None:
        p = self.ours / digest.removeprefix("sha256:")
        return p.read_bytes() if p.exists() else None

    def their_blob(self, digest: str) -> bytes:
        hexpart = digest.removeprefix("sha256:")
        p = self.expected / hexpart
        return p.read_bytes() if p.exists() else (self.src / hexpart).read_bytes()


def compare_descriptors(
    pair: BlobPair, ours: dict[str, Any], theirs: dict[str, Any], where: str, problems: list[str]
) -> None:
    """Compare one descriptor and, if the blobs differ, what is inside them (recursively)."""
    if ours.get("digest") == theirs.get("digest"):
        data = pair.our_blob(ours["digest"])
        if data is None:
            problems.append(f"{where}: blob {ours['digest']} missing from our output")
        elif sha256(data) != ours["digest"]:
            problems.append(f"{where}: our blob {ours['digest']} does not hash to its name")
        return
    ours_desc = {k: v for k, v in ours.items() if k not in ("digest", "size")}
    theirs_desc = {k: v for k, v in theirs.items() if k not in ("digest", "size")}
    if ours_desc != theirs_desc:
        label = f"{where} descriptor (without digest)"
        ours_json, theirs_json = json.dumps(ours_desc).encode(), json.dumps(theirs_desc).encode()
        problems.append(describe_json_difference(ours_json, theirs_json, label))
    our_data = pair.our_blob(ours["digest"])
    if our_data is None:
        problems.append(f"{where}: blob {ours['digest']} missing from our output")
        return
    their_data = pair.their_blob(theirs["digest"])
    if theirs.get("mediaType") == si.MEDIA_TYPE_ZTOC:
        problems.append(f"{where} (zTOC): " + describe_ztoc_difference(our_data, their_data))
        return
    problems.append(describe_json_difference(our_data, their_data, where))
    try:
        our_doc, their_doc = json.loads(our_data), json.loads(their_data)
    except ValueError:
        return
    for key in ("manifests", "layers"):
        for i, (a, b) in enumerate(zip(our_doc.get(key) or [], their_doc.get(key) or [], strict=False)):
            compare_descriptors(pair, a, b, f"{where}.{key}[{i}]", problems)
    if isinstance(our_doc.get("config"), dict) and isinstance(their_doc.get("config"), dict):
        compare_descriptors(pair, our_doc["config"], their_doc["config"], f"{where}.config", problems)


def run_soci(*args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("soci")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from soci.cli.main import main; main()"]
    env = {**os.environ, "TZ": "UTC"}
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize(("case_dir", "meta"), layout_cases("convert"))
def test_convert_standalone_matches_upstream(tmp_path: Path, case_dir: Path, meta: dict[str, Any]) -> None:
    spec = meta["convert"]
    src, expected, dst = case_dir / meta["src"], case_dir / spec["expected"], tmp_path / "out"
    res = run_soci("--root", tmp_path / "root", "convert", "--standalone", "--format", "oci-dir",
                   *spec["args"], src, dst)  # fmt: skip
    assert res.returncode == 0, f"soci convert failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"

    problems: list[str] = []
    ours_top, theirs_top = (dst / "index.json").read_bytes(), (expected / "index.json").read_bytes()
    if ours_top != theirs_top:
        problems.append(describe_json_difference(ours_top, theirs_top, "index.json"))
    pair = BlobPair(dst, expected, src)
    for i, (a, b) in enumerate(zip(json.loads(ours_top)["manifests"], json.loads(theirs_top)["manifests"],
                                   strict=False)):  # fmt: skip
        compare_descriptors(pair, a, b, f"index.json.manifests[{i}]", problems)
    ours_blobs = sorted("sha256:" + p.name for p in (dst / "blobs" / "sha256").iterdir())
    if ours_blobs != spec["output_blobs"]:
        missing = sorted(set(spec["output_blobs"]) - set(ours_blobs))
        extra = sorted(set(ours_blobs) - set(spec["output_blobs"]))
        problems.append(f"output blob set differs: missing {missing}, unexpected {extra}")
    if problems:
        pytest.fail(f"{meta['description']}\n" + "\n".join(problems), pytrace=False)


def parse_create_args(args: list[str]) -> tuple[BuildOptions, str]:
    values: dict[str, list[str]] = {}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        values.setdefault(flag.removeprefix("--"), []).append(value)
    options = BuildOptions(
        span_size=int(values.get("span-size", [str(si.DEFAULT_SPAN_SIZE)])[0]),
        min_layer_size=int(values.get("min-layer-size", [str(si.DEFAULT_MIN_LAYER_SIZE)])[0]),
        optimizations=tuple(values.get("optimizations", [])),
    )
    return options, values["platform"][0]


@pytest.mark.parametrize(("case_dir", "meta"), layout_cases("create"))
def test_v1_index_matches_upstream(tmp_path: Path, case_dir: Path, meta: dict[str, Any]) -> None:
    spec = meta["create"]
    expected = case_dir / spec["expected"]
    options, platform = parse_create_args(spec["args"])
    src = OciLayout(case_dir / meta["src"])
    target = load_json(case_dir / meta["src"] / "index.json")["manifests"][0]
    manifest_desc = Descriptor(media_type=target["mediaType"], digest=target["digest"], size=target["size"])
    manifest = Manifest.unmarshal(src.read_blob(manifest_desc.digest))

    with LocalStore(tmp_path / "root") as store:
        index = IndexBuilder(store, src, options).build(
            manifest_desc, manifest, artifact_type=si.ARTIFACT_TYPE_V1, platform=parse_platform(platform)
        )
        theirs = (expected / "index-manifest.json").read_bytes()
        problems: list[str] = []
        if index.data != theirs:
            problems.append(describe_json_difference(index.data, theirs, "v1 SOCI index manifest"))
        for d in spec["blobs"]:
            their_blob = (expected / d.removeprefix("sha256:")).read_bytes()
            if not store.content.has_blob(d):
                problems.append(f"blob {d} missing from our store")
            elif (ours := store.content.read_blob(d)) != their_blob:
                problems.append(describe_ztoc_difference(ours, their_blob))
    assert index.digest == spec["index_descriptor"]["digest"] or problems
    if problems:
        pytest.fail(f"{meta['description']}\n" + "\n".join(problems), pytrace=False)
