"""Summarise startup-benchmark runs: median and p90 per workload and contender, a Markdown table, a PNG chart."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PLOT_PYTHON = HERE / ".cache" / "plot-venv" / "bin" / "python"


CONTENDER_ORDER = (
    "overlayfs", "soci", "soci-fuse", "soci+prefetch", "soci+lod", "soci-1MiB-spans", "upstream", "stargz",
)  # fmt: skip
"""Table order: the baseline, ours from plain to most informed, then the others."""


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def summarise(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    failures: dict[tuple[str, str], int] = {}
    for run in results["runs"]:
        key = (run["workload"], run["contender"])
        if "error" in run:
            failures[key] = failures.get(key, 0) + 1
        else:
            groups.setdefault(key, []).append(run)
    baselines = {
        wl: statistics.median(r["ready_s"] for r in runs) for (wl, c), runs in groups.items() if c == "overlayfs"
    }
    lazy = {wl: statistics.median(r["ready_s"] for r in runs) for (wl, c), runs in groups.items() if c == "soci"}
    peer = {
        wl: (statistics.median(r["ready_s"] for r in runs), statistics.median(r["bytes_at_ready"] for r in runs))
        for (wl, c), runs in groups.items()
        if c == "stargz"
    }
    for (workload, contender), runs in groups.items():
        ready = [r["ready_s"] for r in runs]
        compressed = results["workloads"][workload]["compressed_bytes"]
        fetched = statistics.median(r["bytes_at_ready"] for r in runs)
        median_ready = statistics.median(ready)
        rows.append(
            {
                "workload": workload,
                "contender": contender,
                "runs": len(runs),
                "failed": failures.get((workload, contender), 0),
                "pull_median_s": statistics.median(r["pull_s"] for r in runs),
                "ready_median_s": median_ready,
                "ready_p90_s": p90(ready),
                "vs_overlayfs": median_ready / baselines[workload] if workload in baselines else None,
                "speedup_vs_soci": lazy[workload] / median_ready if workload in lazy else None,
                "ready_vs_stargz": median_ready / peer[workload][0] if workload in peer else None,
                "bytes_vs_stargz": fetched / peer[workload][1] if peer.get(workload, (0, 0))[1] else None,
                "bytes_at_ready": fetched,
                "bytes_pct": 100.0 * fetched / compressed,
                "peak_rss_mib": statistics.median(r["peak_rss_kib"] for r in runs) / 1024,
            }
        )
    for (workload, contender), count in failures.items():
        if (workload, contender) not in groups:
            rows.append({"workload": workload, "contender": contender, "runs": 0, "failed": count})
    return rows


def _rank(order: Sequence[str], name: str) -> tuple[int, str]:
    return (order.index(name) if name in order else len(order), name)


def markdown(results: dict[str, Any], rows: list[dict[str, Any]], notes: bool = False) -> str:
    s, m, net = results["settings"], results["machine"], results.get("network", {})
    lines = [
        "# Container startup: lazy loading against a full pull",
        "",
        f"Registry link: asked {s['mbit']:g} Mbit/s + {s['delay_ms']:g} ms per request; measured "
        f"{net.get('bandwidth_mbit', '?')} Mbit/s, +{net.get('added_latency_ms', '?')} ms. "
        f"{s['runs']} cold runs per cell (fresh containerd and snapshotter state, page cache dropped), "
        "contenders alternating. Times in seconds from the start of the pull; *ready* = the workload's ready line.",
        "",
        "| workload | contender | runs | pull (median) | ready (median) | ready (p90) | vs overlayfs "
        "| speed-up vs soci | ready vs stargz | blob bytes by ready | bytes vs stargz | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    workloads = list(results["workloads"])
    for r in sorted(rows, key=lambda r: (_rank(workloads, r["workload"]), _rank(CONTENDER_ORDER, r["contender"]))):
        runs = f"{r['runs']} (+{r['failed']} failed)" if r["failed"] else str(r["runs"])
        if not r["runs"]:
            lines.append(f"| {r['workload']} | {r['contender']} | {runs} |  |  |  |  |  |  |  |  |  |")
            continue
        ratio = f"{r['vs_overlayfs']:.2f}x" if r["vs_overlayfs"] is not None else "-"
        speedup = f"{r['speedup_vs_soci']:.2f}x" if r["speedup_vs_soci"] is not None else "-"
        to_peer, bytes_to_peer = (
            f"{r[key]:.2f}x" if r.get(key) is not None else "-" for key in ("ready_vs_stargz", "bytes_vs_stargz")
        )
        lines.append(
            f"| {r['workload']} | {r['contender']} | {runs} | {r['pull_median_s']:.2f} | "
            f"**{r['ready_median_s']:.2f}** | {r['ready_p90_s']:.2f} | {ratio} | {speedup} | {to_peer} | "
            f"{r['bytes_at_ready'] / 1e6:.1f} MB ({r['bytes_pct']:.0f} %) | {bytes_to_peer} | {r['peak_rss_mib']:.0f} |"
        )
    if notes:
        lines += ["", "Targets, and where the time goes: [notes.md](notes.md)."]
    documents = results.get("load_order_documents", {})
    if documents:
        lines += ["", "Load order documents (soci+lod) as pushed: the document, and its zTOC metadata beside it:", ""]
        for name, doc in documents.items():
            size = doc.get("ztoc_metadata_bytes")
            metadata = f" + {size / 1e6:.2f} MB of zTOC metadata" if size is not None else ""
            lines.append(f"- **{name}**: {doc['bytes'] / 1e6:.2f} MB{metadata}, {doc['segments']} segments, "
                         f"{doc['fetch_points']} fetch points")  # fmt: skip
    lines += ["", "Workloads (compressed image size, command, ready line):", ""]
    for name, w in results["workloads"].items():
        lines.append(f"- **{name}**: {w['compressed_bytes'] / 1e6:.1f} MB; `{' '.join(w['command'])}`; `{w['ready']}`")
    lines += [
        "",
        "Peak RSS is the sum of the VmHWM of the snapshotter's processes (the daemon and its descendants, such "
        "as our FUSE descriptor holder) at the ready line (containerd's own for overlayfs). "
        "Blob bytes are what the registry logged as sent for `/blobs/` requests from the start of the pull "
        "to the ready line.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, kernel {m['kernel']}, "
        f"{m['containerd']}.",
        "",
        "Reproduce:",
        "",
        "```",
        results["command"],
        "```",
        "",
    ]
    return "\n".join(lines)


def ensure_venv() -> None:
    """The benchmark's own venv (matplotlib for chart.py; run.py's image builds use its pip)."""
    subprocess.run(["bash", str(HERE / "setup.sh")], check=True)


def write_report(results: dict[str, Any], out: Path) -> None:
    """Summary, table and chart (the venv must exist: ``ensure_venv``)."""
    rows = summarise(results)
    results["summary"] = rows
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(markdown(results, rows, notes=(out / "notes.md").exists()))
    done = subprocess.run(
        [str(PLOT_PYTHON), str(HERE / "chart.py"), str(out / "results.json"), str(out / "results.png")], check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"report: chart.py failed ({done.returncode}); results.json and results.md are written")


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[1] / "docs" / "benchmarks" / "results.json"
    ensure_venv()
    write_report(json.loads(path.read_text()), path.parent)
