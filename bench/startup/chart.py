"""Bar charts of median time-to-ready (p90 as error bar), one panel per workload with its own scale.

python chart.py results.json results.png   (run by report.py in the benchmark's venv, see setup.sh)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from report import CONTENDER_ORDER


def main(source: Path, target: Path) -> None:
    results = json.loads(source.read_text())
    rows = [r for r in results["summary"] if r["runs"]]
    present = {r["workload"] for r in rows}
    workloads = [w for w in results["workloads"] if w in present]
    order = list(CONTENDER_ORDER)
    contenders = sorted({r["contender"] for r in rows}, key=lambda c: (order.index(c) if c in order else len(order), c))
    colours = {c: f"C{i}" for i, c in enumerate(contenders)}
    # one panel per workload: a 2-minute full pull of the 1 GB image would flatten a 1-second shell start
    fig, axes = plt.subplots(1, len(workloads), figsize=(1.2 + 2.3 * len(workloads), 4.0), squeeze=False)
    for ax, workload in zip(axes[0], workloads, strict=True):
        cells = [r for c in contenders for r in rows if r["workload"] == workload and r["contender"] == c]
        xs = list(range(len(cells)))
        medians = [r["ready_median_s"] for r in cells]
        errors = [r["ready_p90_s"] - r["ready_median_s"] for r in cells]
        bars = ax.bar(xs, medians, 0.8, yerr=[[0] * len(errors), errors], capsize=3,
                      color=[colours[r["contender"]] for r in cells])  # fmt: skip
        ax.bar(xs, [r["pull_median_s"] for r in cells], 0.8, color="black", alpha=0.25)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
        ax.set_title(workload, fontsize=9)
        ax.set_xticks([])
        ax.margins(y=0.12)
    axes[0][0].set_ylabel("seconds from pull start to ready line")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[c]) for c in contenders]
    fig.legend(handles, contenders, loc="lower center", ncol=len(contenders), fontsize=8, frameon=False)
    s, net = results["settings"], results.get("network", {})
    fig.suptitle(
        f"Container startup, {net.get('bandwidth_mbit', s['mbit'])} Mbit/s + "
        f"{net.get('added_latency_ms', s['delay_ms'])} ms per request (median, p90 whisker; dark = pull)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
