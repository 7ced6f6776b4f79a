"""The frontier across every committed sweep: one point per grid point of each results/frontier_sweep/*/sweep.csv,
final test accuracy (mean ± sd over its seeds) against parameters, filled where it holds the target on every seed.
Writes results/frontier_sweep/pareto.png and prints the README's table of all points, by size.

    python scripts/frontier_pareto.py
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SWEEPS = Path(__file__).resolve().parents[1] / "results" / "frontier_sweep"
TARGET = 99.4


def points() -> list[dict]:
    found = []
    for table in sorted(SWEEPS.glob("*/sweep.csv")):
        trials = defaultdict(list)
        with open(table, newline="") as f:
            for row in csv.DictReader(f):
                trials[row["point"]].append(row)
        for point, rows in trials.items():
            finals = [float(r["final_test_acc"]) for r in rows]
            found.append(
                {
                    "sweep": table.parent.name,
                    "point": point,
                    "params": int(rows[0]["params"]),
                    "macs": int(rows[0]["macs_per_image"]),
                    "mean": statistics.fmean(finals),
                    "sd": statistics.stdev(finals) if len(finals) > 1 else 0.0,
                    "holding": sum(r["all_targets_met"] == "true" for r in rows),
                    "seeds": len(rows),
                    "lowest": [float(r["min_last_test_acc"]) for r in sorted(rows, key=lambda r: int(r["seed"]))],
                }
            )
    return sorted(found, key=lambda p: (p["params"], p["sweep"], p["point"]))


def main() -> None:
    found = points()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for sweep, color in zip(sorted({p["sweep"] for p in found}), plt.cm.tab10.colors):
        mine = [p for p in found if p["sweep"] == sweep]
        for p in mine:
            held = p["holding"] == p["seeds"]
            ax.errorbar(p["params"], p["mean"], yerr=p["sd"], fmt="o", color=color, capsize=3,
                        markerfacecolor=color if held else "white", markersize=7)  # fmt: skip
        ax.plot([], [], "o", color=color, label=sweep)
    ax.axhline(TARGET, color="grey", linestyle=":", label=f"target {TARGET} %")
    ax.plot([], [], "o", color="black", markerfacecolor="black", label="holds on every seed (filled)")
    ax.set(xlabel="parameters", ylabel="final test accuracy, mean ± sd over seeds (%)",
           title="Frontier sweeps: every point (results/frontier_sweep)")  # fmt: skip
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(SWEEPS / "pareto.png", dpi=110)
    for p in found:
        bold = p["holding"] == p["seeds"]
        params = f"**{p['params']:,}**" if bold else f"{p['params']:,}"
        holding = f"**{p['holding']}/{p['seeds']}**" if bold else f"{p['holding']}/{p['seeds']}"
        lowest = " / ".join(f"{x:.2f}" for x in p["lowest"])
        print(f"| {params} | {p['macs'] / 1e6:.2f} M | `{p['sweep']}` | `{p['point']}` | "
              f"{p['mean']:.2f} ± {p['sd']:.2f} | {holding} | {lowest} |")  # fmt: skip


if __name__ == "__main__":
    main()
