"""Bar chart of median time-to-ready (p90 as error bar) per workload and contender.

python chart.py results.json results.png   (a python with matplotlib, e.g. bench/startup/.cache/plot-venv)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(source: Path, target: Path) -> None:
    results = json.loads(source.read_text())
    rows = [r for r in results["summary"] if r["runs"]]
    workloads = sorted({r["workload"] for r in rows})
    contenders = list(dict.fromkeys(r["contender"] for r in rows))
    width = 0.8 / max(1, len(contenders))
    fig, ax = plt.subplots(figsize=(2.2 + 2.2 * len(workloads), 4.2))
    for j, contender in enumerate(contenders):
        xs, medians, errors, pulls = [], [], [], []
        for i, workload in enumerate(workloads):
            row = next((r for r in rows if r["workload"] == workload and r["contender"] == contender), None)
            if row is None:
                continue
            xs.append(i + (j - (len(contenders) - 1) / 2) * width)
            medians.append(row["ready_median_s"])
            errors.append(row["ready_p90_s"] - row["ready_median_s"])
            pulls.append(row["pull_median_s"])
        bars = ax.bar(xs, medians, width, yerr=[[0] * len(errors), errors], capsize=3, label=contender)
        ax.bar(xs, pulls, width, color="black", alpha=0.25)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    s, net = results["settings"], results.get("network", {})
    ax.set_xticks(range(len(workloads)), workloads)
    ax.set_ylabel("seconds from pull start to ready line")
    ax.set_title(
        f"Container startup, {net.get('bandwidth_mbit', s['mbit'])} Mbit/s + "
        f"{net.get('added_latency_ms', s['delay_ms'])} ms (median, p90 whisker; dark = pull)",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
