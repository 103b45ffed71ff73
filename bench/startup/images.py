"""Build a workload's OCI image layout offline and cache it.

Layer 1 is a debootstrap minbase rootfs shared by every workload. The workload's packages are installed into a
copy of it, and every path whose metadata changed goes into the next layer(s) together with all its parent
directories (``ctr-remote images optimize`` needs parents in each layer; umoci's diff layers omit them).
Deleted paths are not recorded as whiteouts: installs only add or change files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from workloads import Workload

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
PLOT_PIP = CACHE / "plot-venv" / "bin" / "pip"
LAYER_MEDIA = "application/vnd.oci.image.layer.v1.tar+gzip"


def _sh(*args: str, cwd: Path | None = None, log: Path | None = None) -> None:
    out = log.open("ab") if log else subprocess.DEVNULL
    try:
        result = subprocess.run(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log else ""
        raise SystemExit(f"images: {' '.join(args)} failed ({result.returncode})\n{tail}")


def _mirror() -> str:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def base_rootfs(log: Path) -> Path:
    root = CACHE / "base-rootfs"
    if not (root / "etc" / "os-release").exists():
        shutil.rmtree(root, ignore_errors=True)
        _sh("debootstrap", "--variant=minbase", "bookworm", str(root), _mirror(), log=log)
    return root


def _stat_map(root: Path) -> dict[str, tuple[int, ...]]:
    found: dict[str, tuple[int, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            found[os.path.relpath(path, root)] = (st.st_mtime_ns, st.st_size, st.st_mode, st.st_uid, st.st_gid)
    return found


def _with_parents(paths: list[str]) -> list[str]:
    out: set[str] = set()
    for path in paths:
        out.add(path)
        parent = os.path.dirname(path)
        while parent:
            out.add(parent)
            parent = os.path.dirname(parent)
    return sorted(out)


def _write_layer(root: Path, paths: list[str], blobs: Path, scratch: Path) -> tuple[dict[str, object], str]:
    """Tar ``paths`` (relative to root, parents first) with pigz into the layout; returns descriptor and diff_id."""
    listing = scratch / "paths.list"
    listing.write_bytes(b"".join(p.encode() + b"\0" for p in paths))
    tar = scratch / "layer.tar"
    _sh(
        "tar",
        "--numeric-owner",
        "-C",
        str(root),
        "--no-recursion",
        "--null",
        "-T",
        str(listing),
        "-cf",
        str(tar),
        log=scratch / "tar.log",
    )
    diff_id = "sha256:" + _file_sha256(tar)
    _sh("pigz", "-f", "-6", str(tar))
    gz = Path(str(tar) + ".gz")
    digest = _file_sha256(gz)
    size = gz.stat().st_size
    shutil.move(gz, blobs / digest)
    return {"mediaType": LAYER_MEDIA, "digest": "sha256:" + digest, "size": size}, diff_id


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _put_json(blobs: Path, doc: Mapping[str, object]) -> tuple[str, int]:
    data = json.dumps(doc, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return "sha256:" + digest, len(data)


def _chroot(root: Path, script: str, log: Path) -> None:
    _sh("chroot", str(root), "/bin/sh", "-c", script, log=log)


def _install(w: Workload, root: Path, scratch: Path, log: Path) -> None:
    if w.apt:
        shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
        # apt in the chroot must trust the host's extra CA certificates (see environment.md gotchas)
        cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
        (root / "usr/local/share/ca-certificates").mkdir(parents=True, exist_ok=True)
        for ca in cas:
            shutil.copy(ca, root / "usr/local/share/ca-certificates" / ca.name)
        _chroot(
            root,
            "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
            "--no-install-recommends ca-certificates " + " ".join(w.apt),
            log,
        )
        for ca in cas:
            (root / "usr/local/share/ca-certificates" / ca.name).unlink(missing_ok=True)
        _chroot(root, "update-ca-certificates --fresh >/dev/null; apt-get clean; rm -rf /var/lib/apt/lists/*", log)
        (root / "etc" / "resolv.conf").write_text("")
    if w.pip:
        wheels = CACHE / "wheels"
        _sh(str(PLOT_PIP), "download", "-q", "--only-binary=:all:", "-d", str(wheels), *w.pip, log=log)
        shutil.copytree(wheels, root / "tmp" / "wheels", dirs_exist_ok=True)
        _chroot(
            root,
            "python3 -m venv /opt/venv && /opt/venv/bin/pip install -q --no-cache-dir --no-index "
            "--find-links /tmp/wheels " + " ".join(w.pip),
            log,
        )
        shutil.rmtree(root / "tmp" / "wheels")
    if w.npm:
        app = root / "app"
        app.mkdir(exist_ok=True)
        (app / "package.json").write_text('{"name": "bench-app", "version": "1.0.0", "private": true}\n')
        _sh("npm", "install", "--no-audit", "--no-fund", "--prefix", str(app), *w.npm, log=log)
        (app / "server.js").write_text(w.npm_app)
    if w.filler_mb:
        filler = root / "opt" / "filler"
        filler.mkdir(parents=True, exist_ok=True)
        parts = max(1, w.extra_layers)
        for i in range(parts):
            with (filler / f"part{i:02d}.bin").open("wb") as f:
                for _ in range(w.filler_mb // parts):
                    f.write(os.urandom(1 << 20))


RECIPE_VERSION = 1
"""Bump when a change here changes the images built."""


def cache_key(w: Workload) -> str:
    return hashlib.sha256(f"{RECIPE_VERSION} {w!r}".encode()).hexdigest()[:12]


def build_image(w: Workload) -> Path:
    """The workload's OCI image layout (tag ``latest``), built once and cached under .cache/images/."""
    layout = CACHE / "images" / f"{w.name}-{cache_key(w)}"
    if (layout / "index.json").exists():
        return layout
    scratch = CACHE / "build" / w.name
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    log = scratch / "build.log"
    print(f"images: building {w.name} (log {log})", file=sys.stderr)
    tmp_layout = scratch / "oci"
    blobs = tmp_layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layers: list[dict[str, object]] = []
    diff_ids: list[str] = []
    if w.synthetic_mb:
        root = _synthetic_rootfs(scratch / "rootfs", w.synthetic_mb)
        paths = sorted(os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs)
        desc, diff_id = _write_layer(root, paths, blobs, scratch)
        return _finish_layout(w, layout, scratch, tmp_layout, [desc], [diff_id])
    base = base_rootfs(log)
    base_paths = sorted(os.path.relpath(os.path.join(d, n), base) for d, ds, fs in os.walk(base) for n in ds + fs)
    desc, diff_id = _write_layer(base, base_paths, blobs, scratch)
    layers.append(desc)
    diff_ids.append(diff_id)
    if w.apt or w.pip or w.npm or w.filler_mb:
        root = scratch / "rootfs"
        _sh("cp", "-a", str(base), str(root))
        before = _stat_map(root)
        _install(w, root, scratch, log)
        after = _stat_map(root)
        changed = sorted(p for p, st in after.items() if before.get(p) != st and not os.path.isdir(root / p))
        groups = max(1, w.extra_layers)
        size = -(-len(changed) // groups)
        for i in range(groups):
            chunk = changed[i * size : (i + 1) * size]
            if chunk:
                desc, diff_id = _write_layer(root, _with_parents(chunk), blobs, scratch)
                layers.append(desc)
                diff_ids.append(diff_id)
        shutil.rmtree(root)
    return _finish_layout(w, layout, scratch, tmp_layout, layers, diff_ids)


def _synthetic_rootfs(root: Path, filler_mb: int) -> Path:
    """The host's /bin/sh (dash) with the libraries it links, plus random filler files."""
    for path in ("/bin/sh", "/bin/dash", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"):
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.realpath(path), target)
    for name in ("proc", "sys", "dev", "tmp", "etc"):
        (root / name).mkdir(exist_ok=True)
    filler = root / "opt" / "filler"
    filler.mkdir(parents=True)
    for i in range(filler_mb):
        (filler / f"f{i:03d}.bin").write_bytes(os.urandom(1 << 20))
    return root


def _finish_layout(
    w: Workload, layout: Path, scratch: Path, tmp_layout: Path, layers: list[dict[str, object]], diff_ids: list[str]
) -> Path:
    blobs = tmp_layout / "blobs" / "sha256"
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": list(w.command),
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    cfg_digest, cfg_size = _put_json(blobs, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_size},
        "layers": layers,
    }
    man_digest, man_size = _put_json(blobs, manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": man_digest,
                "size": man_size,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    (tmp_layout / "index.json").write_text(json.dumps(index))
    (tmp_layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    layout.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(tmp_layout, layout)
    shutil.rmtree(scratch, ignore_errors=True)
    return layout


def compressed_size(layout: Path) -> int:
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((layout / "blobs" / "sha256" / digest).read_text())
    return sum(int(layer["size"]) for layer in manifest["layers"])


if __name__ == "__main__":
    from workloads import WORKLOADS

    for name in sys.argv[1:]:
        print(build_image(WORKLOADS[name]))
