"""Writes the hostile-artifact corpus next to this file (run: python tests/data/hostile/make.py).

Every artifact is derived from a golden one (tests/data/golden), deterministically, so the committed files
are what this script writes. cases.json names, per case, the golden layer it goes with and what it is.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

from soci.formats.oci import MEDIA_TYPE_OCI_MANIFEST
from soci.formats.soci_index import ARTIFACT_TYPE_V2, EMPTY_CONFIG_DIGEST
from soci.formats.ztoc_codec import marshal_ztoc, unmarshal_ztoc

HERE = Path(__file__).parent
GOLDEN = HERE.parent / "golden" / "ztoc"
LAYER = "all-types"
ZTOC = GOLDEN / LAYER / "ztoc-65536.bin"


def flipped(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at % len(out)] ^= 0xFF
    return bytes(out)


def hostile_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("../../etc/soci-hostile-x", "/abs/soci-hostile-y", "a/" + "n" * 250 + "/f", "ok/file"):
            info = tarfile.TarInfo(name)
            body = f"{name}\n".encode()
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        link = tarfile.TarInfo("ok/escape")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../../etc/passwd"
        tar.addfile(link)
    return buf.getvalue()


def main() -> None:
    seed = ZTOC.read_bytes()
    z = unmarshal_ztoc(seed)
    cases: dict[str, dict[str, str]] = {}

    def ztoc_case(name: str, data: bytes, what: str) -> None:
        (HERE / f"{name}.ztoc").write_bytes(data)
        cases[name] = {"kind": "ztoc", "layer": LAYER, "file": f"{name}.ztoc", "what": what}

    for at in (9, 64, 200, len(seed) // 3, len(seed) // 2, len(seed) - 40):
        ztoc_case(f"flip-{at}", flipped(seed, at), f"byte {at} of a real zTOC inverted (the digest is of the result)")
    ztoc_case("truncated", seed[: len(seed) // 2], "the first half of a real zTOC")
    ztoc_case(
        "checkpoints-truncated",
        marshal_ztoc(dataclasses.replace(z, checkpoints=z.checkpoints[: len(z.checkpoints) // 2])),
        "a valid zTOC whose checkpoint blob is cut in half",
    )
    ztoc_case(
        "huge-archive",
        marshal_ztoc(dataclasses.replace(z, uncompressed_archive_size=z.uncompressed_archive_size * 1000)),
        "claims a 1,000x larger uncompressed archive",
    )
    big = [dataclasses.replace(e, uncompressed_size=1 << 40) if e.uncompressed_size else e for e in z.entries]
    ztoc_case("huge-entries", marshal_ztoc(dataclasses.replace(z, entries=tuple(big))), "every file claims to be 1 TiB")
    # a manifest the registry accepts (Go ignores the unknown key and nests up to 10,000 deep)
    config = f'{{"mediaType":"{ARTIFACT_TYPE_V2}","digest":"{EMPTY_CONFIG_DIGEST}","size":2}}'
    head = f'{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","config":{config},"layers":[],"x":'
    deep = head.encode() + b"[" * 5000 + b"]" * 5000 + b"}"
    (HERE / "deep-index.json").write_bytes(deep)
    cases["deep-index"] = {"kind": "index", "layer": LAYER, "file": "deep-index.json", "what": "5,000-deep JSON"}
    (HERE / "hostile-names.tar").write_bytes(hostile_tar())
    cases["hostile-names"] = {
        "kind": "tar",
        "layer": "",
        "file": "hostile-names.tar",
        "what": "../ and absolute names, a 250-byte component, a symlink out of the root",
    }
    (HERE / "cases.json").write_text(json.dumps(cases, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
