"""Layer labels → LayerSource."""

from __future__ import annotations

import pytest

from soci.errors import InvalidArgument
from soci.snapshotter import labels as lb

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
M = "sha256:" + "a" * 64


def _labels(**extra: str) -> dict[str, str]:
    base = {
        lb.TARGET_SNAPSHOT_REF: "sha256:" + "c" * 64,
        lb.CRI_IMAGE_REF: "127.0.0.1:5000/app:v1",
        lb.CRI_MANIFEST_DIGEST: M,
        lb.CRI_LAYER_DIGEST: D1,
    }
    base.update(extra)
    return base


def test_full_labels() -> None:
    source = lb.layer_source(
        _labels(
            **{
                lb.CRI_IMAGE_LAYERS: f"{D1},{D2}",
                lb.TARGET_SIZE: "123",
                lb.TARGET_IMAGE_LAYERS_SIZE: "123,456",
                lb.TARGET_SOCI_INDEX_DIGEST: D2,
            }
        )
    )
    assert source == lb.LayerSource("127.0.0.1:5000/app:v1", M, D1, 123, (D1, D2), (123, 456), D2)


def test_sizes_that_do_not_line_up_are_ignored() -> None:
    source = lb.layer_source(_labels(**{lb.CRI_IMAGE_LAYERS: f"{D1},{D2}", lb.TARGET_IMAGE_LAYERS_SIZE: "1"}))
    assert source.layers == (D1, D2) and source.layer_sizes == ()


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        (lb.CRI_IMAGE_REF, "", lb.CRI_IMAGE_REF),
        (lb.CRI_LAYER_DIGEST, "sha256:short", lb.CRI_LAYER_DIGEST),
        (lb.CRI_MANIFEST_DIGEST, "", lb.CRI_MANIFEST_DIGEST),
        (lb.TARGET_SIZE, "-5", lb.TARGET_SIZE),
        (lb.TARGET_SOCI_INDEX_DIGEST, "md5:abc", lb.TARGET_SOCI_INDEX_DIGEST),
        (lb.CRI_IMAGE_LAYERS, f"{D1},nope", lb.CRI_IMAGE_LAYERS),
    ],
)
def test_malformed_labels_name_the_label(key: str, value: str, named: str) -> None:
    with pytest.raises(InvalidArgument, match=named.replace(".", r"\.")):
        lb.layer_source(_labels(**{key: value}))


def test_label_limits() -> None:
    lb.check_labels({"k": "v" * 4000})
    with pytest.raises(InvalidArgument):
        lb.check_labels({"k": "v" * 4096})
    with pytest.raises(InvalidArgument):
        lb.check_labels({"": "v"})
    assert lb.inherited({lb.TARGET_SNAPSHOT_REF: "x", "containerd.io/snapshot/a": "1", "other": "2"}) == {
        lb.TARGET_SNAPSHOT_REF: "x",
        "containerd.io/snapshot/a": "1",
    }
