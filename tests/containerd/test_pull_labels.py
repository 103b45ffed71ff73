"""Chain IDs and the labels a layer Prepare carries."""

from __future__ import annotations

import hashlib

from soci.containerd.pull import MAX_LABEL_BYTES, chain_ids, layer_labels
from soci.formats.oci import Descriptor
from soci.registry import parse_reference

DIFFS = ["sha256:" + c * 64 for c in "abc"]


def test_chain_ids_follow_the_oci_definition() -> None:
    chains = chain_ids(DIFFS)
    assert chains[0] == DIFFS[0]
    second = "sha256:" + hashlib.sha256(f"{DIFFS[0]} {DIFFS[1]}".encode()).hexdigest()
    assert chains[1] == second
    assert chains[2] == "sha256:" + hashlib.sha256(f"{second} {DIFFS[2]}".encode()).hexdigest()


def test_layer_labels_describe_the_layer_and_the_ones_above_it() -> None:
    layers = [Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", d, 100 + i) for i, d in enumerate(DIFFS)]
    ref = parse_reference("127.0.0.1:5000/app:v1")
    labels = layer_labels(ref, "sha256:" + "f" * 64, layers, 1, "sha256:" + "e" * 64, "sha256:" + "d" * 64)
    assert labels["containerd.io/snapshot.ref"] == "sha256:" + "e" * 64
    assert labels["containerd.io/snapshot/cri.image-ref"] == "127.0.0.1:5000/app:v1"
    assert labels["containerd.io/snapshot/cri.layer-digest"] == DIFFS[1]
    assert labels["containerd.io/snapshot/cri.image-layers"] == f"{DIFFS[1]},{DIFFS[2]}"
    assert labels["containerd.io/snapshot/remote/soci.size"] == "101"
    assert labels["containerd.io/snapshot/remote/image.layers.size"] == "101,102"
    assert labels["containerd.io/snapshot/remote/soci.index.digest"] == "sha256:" + "d" * 64


def test_long_layer_lists_are_truncated_to_the_label_limit() -> None:
    many = [Descriptor("x", "sha256:" + f"{i:064x}", i) for i in range(200)]
    labels = layer_labels(parse_reference("r.example/a:b"), "sha256:" + "f" * 64, many, 0, DIFFS[0])
    digests = labels["containerd.io/snapshot/cri.image-layers"].split(",")
    assert 0 < len(digests) < 200
    assert len("containerd.io/snapshot/cri.image-layers") + len(",".join(digests)) <= MAX_LABEL_BYTES
    assert len(labels["containerd.io/snapshot/remote/image.layers.size"].split(",")) == len(digests)
