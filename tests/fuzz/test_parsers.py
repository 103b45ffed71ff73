"""Coverage-free but bounded fuzzing of every parser: mutated real artifacts must raise project errors only.

Seeds are the golden artifacts (tests/data/golden); hypothesis mutates them (byte flips, truncation, splices,
insertions). ``derandomize`` makes each run the same examples, and ``max_examples`` keeps the whole module to
seconds, so it fits CI. Any exception that is not a ``SociError`` (IndexError, struct.error, UnicodeDecodeError,
RecursionError, ...) fails the test with the input that caused it.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soci.config.config import parse_config
from soci.errors import SociError
from soci.formats import gojson, load_order
from soci.formats.oci import Manifest
from soci.formats.soci_index import parse_index, parse_prefetch
from soci.formats.tar import TocBuilder
from soci.formats.zinfo import zinfo_from_blob
from soci.formats.ztoc import TYPE_REG
from soci.formats.ztoc_codec import unmarshal_ztoc
from soci.index.extract import find_entry, read_verified
from soci.registry.hosts import resolve_hosts

GOLDEN = Path(__file__).parent.parent / "data" / "golden"
EXAMPLES = 150

FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _ztoc_seeds() -> list[bytes]:
    return [p.read_bytes() for p in sorted(GOLDEN.glob("ztoc/*/ztoc-*.bin"))[:6]]


def _json_seeds() -> list[bytes]:
    paths = sorted(GOLDEN.glob("layout/*/create/index-manifest.json")) + sorted(GOLDEN.glob("layout/*/src/index.json"))
    return [p.read_bytes() for p in paths]


def _tar_seeds() -> list[bytes]:
    return [gzip.decompress(p.read_bytes())[: 64 * 1024] for p in sorted(GOLDEN.glob("ztoc/*/layer.tar.gz"))[:6]]


def _mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed with a few edits: flip, overwrite, truncate, insert or duplicate a slice."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "dup"]))
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            if kind == "flip" and data:
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif kind == "set" and data:
                data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
            elif kind == "truncate":
                del data[at:]
            elif kind == "insert":
                data[at:at] = draw(st.binary(max_size=16))
            elif kind == "dup" and data:
                end = draw(st.integers(at, min(len(data), at + 64)))
                data[at:at] = data[at:end]
        return bytes(data)

    return build()


def _only_project_errors(parse: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(SociError):
        parse(data)


def _ztoc_and_checkpoints(data: bytes) -> None:
    ztoc = unmarshal_ztoc(data)
    zinfo_from_blob(ztoc.compression_algorithm, ztoc.checkpoints)


def _tar(data: bytes) -> None:
    builder = TocBuilder()
    builder.feed(data)
    builder.finish()


def test_seeds_exist() -> None:
    # a fuzz test over no seeds passes without testing anything
    assert len(_ztoc_seeds()) >= 3 and len(_json_seeds()) >= 2 and len(_tar_seeds()) >= 3


@FUZZ
@given(_mutated(_ztoc_seeds()))
def test_ztoc(data: bytes) -> None:
    _only_project_errors(_ztoc_and_checkpoints, data)


@FUZZ
@given(st.sampled_from(_ztoc_seeds()), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=64))
def test_checkpoints(seed: bytes, at: int, patch: bytes) -> None:
    ztoc = unmarshal_ztoc(seed)
    blob = bytearray(ztoc.checkpoints)
    at %= max(len(blob), 1)
    blob[at : at + len(patch)] = patch
    _only_project_errors(lambda b: zinfo_from_blob(ztoc.compression_algorithm, b), bytes(blob))
    _only_project_errors(lambda b: zinfo_from_blob(ztoc.compression_algorithm, b), bytes(blob[:at]))


@FUZZ
@given(_mutated(_json_seeds()))
def test_manifest_and_index_json(data: bytes) -> None:
    _only_project_errors(lambda b: Manifest.unmarshal(b, "manifest"), data)
    _only_project_errors(parse_index, data)


def _index_info(data: bytes) -> None:
    """What ``soci index info`` does with a stored index blob."""
    gojson.pretty(gojson.unmarshal_object(data, "SOCI index"))


@FUZZ
@given(_mutated(_json_seeds()))
def test_index_info(data: bytes) -> None:
    _only_project_errors(_index_info, data)


@FUZZ
@given(_mutated([json.dumps([{"StartSpan": 0, "EndSpan": 3}, {"StartSpan": 5, "EndSpan": 5}]).encode()]))
def test_prefetch(data: bytes) -> None:
    _only_project_errors(parse_prefetch, data)


_LOD = (
    b'{"annotations":{"io.github.soci-py.load-order.name":"x"},"layers":[{"digest":"sha256:'
    + b"a" * 64
    + b'","segments":[{"length":4096,"offset":0,"path":"usr/bin/x","time_ms":1}]}],'
    b'"mediaType":"application/vnd.soci-py.load-order.v1+json","name":"x","version":"1"}'
)


def test_load_order_seed_parses() -> None:
    load_order.parse(_LOD)


@FUZZ
@given(_mutated([_LOD]))
def test_load_order(data: bytes) -> None:
    _only_project_errors(load_order.parse, data)


@FUZZ
@given(_mutated(_tar_seeds()))
def test_tar_headers(data: bytes) -> None:
    _only_project_errors(_tar, data)


_CONFIG = b"""
metrics_address = "127.0.0.1:8000"
[fuse]
attr_timeout = 1
[blob]
fetching_timeout_sec = 300
max_retries = 5
[directory_cache]
max_lru_cache_entry = 10
[snapshotter]
min_layer_size = 0
"""


@FUZZ
@given(_mutated([_CONFIG]))
def test_config_toml(data: bytes) -> None:
    _only_project_errors(lambda b: parse_config(b.decode("utf-8", "replace")), data)


_HOSTS = b"""
server = "https://registry.example"
[host."https://mirror.example"]
  capabilities = ["pull", "resolve"]
  skip_verify = false
  header = { x-a = "b" }
"""


@pytest.fixture(scope="module")
def hosts_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hosts")


@FUZZ
@given(_mutated([_HOSTS]))
def test_hosts_toml(hosts_root: Path, data: bytes) -> None:
    (hosts_root / "registry.example").mkdir(exist_ok=True)
    (hosts_root / "registry.example" / "hosts.toml").write_bytes(data)
    _only_project_errors(lambda _: resolve_hosts("registry.example", hosts_dir=hosts_root), data)


def test_deep_json_is_a_project_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for parse in (lambda b: Manifest.unmarshal(b, "m"), parse_index, parse_prefetch, load_order.parse):
        with pytest.raises(SociError):
            parse(deep)


def _layer_pairs() -> list[tuple[bytes, bytes]]:
    pairs = []
    for directory in sorted(GOLDEN.glob("ztoc/*"))[:6]:
        ztocs = sorted(directory.glob("ztoc-*.bin"))
        if ztocs and (directory / "layer.tar.gz").exists():
            pairs.append((ztocs[0].read_bytes(), (directory / "layer.tar.gz").read_bytes()))
    return pairs


def _info_and_get_files(data: bytes, layer: bytes) -> None:
    """What ``ztoc info`` and ``ztoc get-file`` do with a zTOC: span lookups, then verified reads."""
    ztoc = unmarshal_ztoc(data)
    zinfo = zinfo_from_blob(ztoc.compression_algorithm, ztoc.checkpoints)
    for e in ztoc.entries[:20]:
        zinfo.span_of(e.uncompressed_offset)
        if e.uncompressed_size:
            zinfo.span_of(e.uncompressed_offset + e.uncompressed_size - 1)
        if e.type == TYPE_REG and e.uncompressed_size < (1 << 20):
            found = find_entry(ztoc, e.name.decode("utf-8", "replace"))
            read_verified(ztoc, lambda o, n: layer[o : o + n], found.uncompressed_offset, found.uncompressed_size)


@FUZZ
@given(st.sampled_from(range(len(_layer_pairs()))), st.data())
def test_ztoc_info_and_get_file(which: int, data: st.DataObject) -> None:
    seed, layer = _layer_pairs()[which]
    mutated = data.draw(_mutated([seed]))
    _only_project_errors(lambda b: _info_and_get_files(b, layer), mutated)
