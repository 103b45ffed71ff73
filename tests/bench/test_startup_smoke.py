"""CI smoke profile of the startup benchmark: one small synthetic workload, one run, the lazy contender only.

It fails if the lazy path fell back to a full pull: the daemon must log a remote snapshot for the layer
(checked inside the harness) and the registry must have sent clearly less than the image's compressed size.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from soci.containerd.testing import containerd_available
from soci.testing.registry_server import registry_available

BENCH = Path(__file__).resolve().parents[2] / "bench" / "startup"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import contenders  # noqa: E402
import images  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402


@pytest.mark.containerd
@pytest.mark.registry
@pytest.mark.root
@pytest.mark.fuse
@pytest.mark.skipif(not containerd_available(), reason="containerd, ctr and runc are needed")
@pytest.mark.skipif(not registry_available(), reason="docker-registry is not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.skipif(not Path("/dev/fuse").exists(), reason="needs /dev/fuse")
@pytest.mark.timeout(300)
def test_lazy_start_fetches_a_fraction_of_the_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "CACHE", tmp_path / "cache")
    out = tmp_path / "out"
    run.main(["--workloads", "smoke", "--contenders", "soci", "--runs", "1", "--mbit", "0", "--delay-ms", "5",
              "--out", str(out), "--work", str(tmp_path / "work"), "--timeout", "120"])  # fmt: skip

    results = json.loads((out / "results.json").read_text())
    (row,) = results["runs"]
    compressed = results["workloads"]["smoke"]["compressed_bytes"]
    assert row["contender"] == "soci"
    assert 0 < row["bytes_at_ready"] < compressed // 2, "the lazy start fetched most of the image"
    assert row["peak_rss_kib"] > 0
    assert row["pull_s"] <= row["ready_s"]
    assert "| smoke | soci | 1 |" in (out / "results.md").read_text()
    assert not any(str(tmp_path) in line for line in Path("/proc/mounts").read_text().splitlines())


def test_p90_is_nearest_rank() -> None:
    assert report.p90([5.0, 1.0, 3.0]) == 5.0
    assert report.p90([float(i) for i in range(1, 11)]) == 9.0
    assert report.p90([2.0]) == 2.0


MACHINE = {"cpu": "x", "cores": 2, "memory_gib": 1, "os": "y", "kernel": "z", "containerd": "c"}


def test_summary_ratios_against_the_full_pull() -> None:
    results: dict[str, Any] = {
        "workloads": {"w": {"compressed_bytes": 1000, "command": ["true"], "ready": "READY"}},
        "runs": [
            {"workload": "w", "contender": "overlayfs", "pull_s": 8.0, "ready_s": 10.0, "bytes_at_ready": 1000,
             "peak_rss_kib": 2048},
            {"workload": "w", "contender": "overlayfs", "pull_s": 9.0, "ready_s": 12.0, "bytes_at_ready": 1000,
             "peak_rss_kib": 2048},
            {"workload": "w", "contender": "soci", "pull_s": 1.0, "ready_s": 3.0, "bytes_at_ready": 200,
             "peak_rss_kib": 4096},
        ],
    }  # fmt: skip
    results["runs"].append({"workload": "w", "contender": "soci", "run": 1, "error": "no ready line"})
    results["runs"].append({"workload": "w", "contender": "stargz", "run": 0, "error": "no ready line"})
    results.update(settings={"mbit": 100, "delay_ms": 20, "runs": 2}, command="run.py", machine=MACHINE)
    rows = {r["contender"]: r for r in report.summarise(results)}
    table = report.markdown(results, list(rows.values()))
    assert "| w | soci | 1 (+1 failed) |" in table
    assert "| w | stargz | 0 (+1 failed) |" in table
    assert rows["overlayfs"]["ready_median_s"] == 11.0
    assert rows["soci"]["vs_overlayfs"] == pytest.approx(3.0 / 11.0)
    assert rows["soci"]["bytes_pct"] == pytest.approx(20.0)
    assert rows["soci"]["peak_rss_mib"] == 4.0
    assert rows["overlayfs"]["speedup_vs_soci"] == pytest.approx(3.0 / 11.0)
    assert table.index("| w | overlayfs |") < table.index("| w | soci |") < table.index("| w | stargz |")


def test_prefetch_paths_follow_symlinks_inside_the_image(tmp_path: Path) -> None:
    lib = tmp_path / "usr" / "lib"
    lib.mkdir(parents=True)
    (lib / "libx.so.1.2.3").write_bytes(b"elf")
    (lib / "libx.so.1").symlink_to("libx.so.1.2.3")
    (tmp_path / "lib").symlink_to("usr/lib")
    (tmp_path / "abs").symlink_to("/usr/lib/libx.so.1")  # absolute: resolved in the image, not on the host
    assert contenders._resolve_in(tmp_path, "/lib/libx.so.1") == "/usr/lib/libx.so.1.2.3"
    assert contenders._resolve_in(tmp_path, "/abs") == "/usr/lib/libx.so.1.2.3"
    assert contenders._resolve_in(tmp_path, "/usr/lib") is None
    assert contenders._resolve_in(tmp_path, "/missing") is None
    (tmp_path / "loop").symlink_to("loop")
    assert contenders._resolve_in(tmp_path, "/loop") is None
