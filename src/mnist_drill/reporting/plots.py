"""Figures, each saved atomically as PNG: a step's curves, its misclassified test images, the progression, runs
overlaid, a sweep, a confusion matrix. Accuracies are in percent, differences between them in points (pp)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; no display on these machines or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

from ..storage.files import atomic_path  # noqa: E402
from .analysis import Outcome, stat  # noqa: E402

if TYPE_CHECKING:
    import torch

TARGET_NEAR = 3.0  # pp: a target this close to the plotted accuracies is kept inside the axis
MIN_ACC_SPAN = 0.5  # pp: the narrowest accuracy axis, so one point or a flat run is not a sliver
LOG_SPAN = 10.0  # values spanning more than this factor get a log axis
ERROR_FLOOR = 0.01  # pp: on the error-log accuracy axis 100 % is drawn at 99.99 % (the log of 0 has no place)
MAX_VALUE_TICKS = 8  # a sweep's numeric values up to this many get a tick each
ERROR_LOG_TICKS = [0, 50, 80, 90, 95, 98, 99, 99.5, 99.8, 99.9, 99.95, 99.98, 99.99]  # accuracies (%) labelled there


@dataclass(frozen=True)
class SweepPoint:
    """One variant of a sweep: the swept keys and their values (e.g. {"model.dropout": 0.02, "augment.rotation": 7}),
    the model's parameter count, the final test_acc (%) of each seed, and how many of those seeds hold the target
    in each of its last epochs. Every point names the same keys."""

    values: dict[str, object]
    params: int
    test_acc: list[float]
    seeds_holding: int


def accuracy_scale(values: list[float]) -> str:
    """'error-log' when the error rates (100 - accuracy, pp) span more than LOG_SPAN times, as when epoch 1 trains at
    77 % and the last at 99.4 %: a linear axis would squeeze the last epochs into a line; else 'linear'."""
    return "error-log" if scale_for([max(100.0 - v, ERROR_FLOOR) for v in values]) == "log" else "linear"


def accuracy_limits(values: list[float], target: float | None, scale: str = "linear") -> tuple[float, float]:
    """Accuracy axis limits (%) that hold every value with a small margin, and the target when it is near them."""
    lo, hi = min(values), max(values)
    if target is not None and lo - TARGET_NEAR <= target <= hi + TARGET_NEAR:
        lo, hi = min(lo, target), max(hi, target)
    if scale == "error-log":  # the margin is a factor on the error rate, an even gap on that axis
        return 100.0 - (100.0 - lo) * 1.3, 100.0 - max(100.0 - hi, ERROR_FLOOR) / 1.3
    if hi - lo < MIN_ACC_SPAN:
        middle = (lo + hi) / 2
        lo, hi = middle - MIN_ACC_SPAN / 2, middle + MIN_ACC_SPAN / 2
    margin = 0.06 * (hi - lo)
    return max(0.0, lo - margin), min(100.0 + margin / 2, hi + margin)


def scale_for(values: list[float]) -> str:
    """'log' when the positive values span more than LOG_SPAN times, else 'linear'."""
    return "log" if min(values) > 0 and max(values) > LOG_SPAN * min(values) else "linear"


def _save(fig, path: Path):
    """Write `fig` as PNG atomically and close it; returned, so a test can read its axes."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return fig


def _style(
    ax,
    title: str,
    ylabel: str,
    xlabel: str = "epoch",
    target: float | None = None,
    accuracies: list[float] | None = None,
    log: bool = False,
) -> None:
    """Cosmetics every panel shares: labels, grid, the dashed target line, a legend when something is labelled, a log
    y axis with `log`, and, given the plotted `accuracies`, an accuracy axis fitted to them (error-log when their error
    rates span decades), the target drawn (and listed in the legend) only when it falls on that axis."""
    scale = "linear" if accuracies is None else accuracy_scale(accuracies)
    limits = None if accuracies is None else accuracy_limits(accuracies, target, scale)
    if target is not None and (limits is None or limits[0] <= target <= limits[1]):
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:g} %")
    if log:  # labelled at 1, 2 and 5 of each decade in plain numbers (0.02, 0.05, 2,000,000), not 2x10^-2
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:,.10g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    if scale == "error-log":
        ax.set_yscale(
            "function",
            functions=(lambda acc: -np.log10(np.maximum(100.0 - acc, ERROR_FLOOR)), lambda y: 100.0 - 10.0**-y),
        )
        ax.yaxis.set_major_locator(ticker.FixedLocator(ERROR_LOG_TICKS))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_locator(ticker.NullLocator())
        ylabel += ", log scale of 100 - acc"
    if limits is not None:
        ax.set_ylim(*limits)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if xlabel == "epoch":  # 1, 2, 15 or 50 epochs: whole epochs only, and a 1-epoch run not on a 0.1-epoch axis
        first, last = ax.dataLim.intervalx
        pad = max(0.5, 0.02 * (last - first))
        ax.set_xlim(first - pad, last + pad)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, steps=[1, 2, 5, 10], min_n_ticks=1))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=8)


def curves(rows: list[dict], path: Path, title: str, target_acc: float):
    """Loss, accuracy and learning rate per epoch of one run; `rows` are metrics rows (training.loop.METRIC_COLUMNS)."""
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
    for split, style in (("train", "-o"), ("test", "-s")):
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in rows], style, ms=3, label=split)
        ax_acc.plot(epochs, [r[f"{split}_acc"] for r in rows], style, ms=3, label=split)
    lrs = [r["lr"] for r in rows]
    ax_lr.plot(epochs, lrs, "-o", ms=3, color="C2")
    if scale_for(lrs) == "linear":
        ax_lr.set_ylim(0, 1.15 * max(lrs))  # a constant rate reads as a level line, not as noise around it
    _style(ax_loss, "loss", "NLL loss", log=True)
    accuracies = [r[k] for r in rows for k in ("train_acc", "test_acc")]
    _style(ax_acc, "accuracy", "accuracy (%)", target=target_acc, accuracies=accuracies)
    _style(ax_lr, "learning rate (start of epoch)", "learning rate", log=scale_for(lrs) == "log")
    best = max(rows, key=lambda r: r["test_acc"])
    fig.suptitle(
        f"{title}: final test_acc {rows[-1]['test_acc']:.2f} %, best {best['test_acc']:.2f} % "
        f"(epoch {best['epoch']}) of {len(rows)} epoch{'s' * (len(rows) > 1)}"
    )
    return _save(fig, path)


def misclassified(images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor, path: Path, title: str) -> int:
    """Grid of the first 40 misclassified test images (true -> predicted); returns how many were wrong."""
    wrong = (predictions != labels).nonzero().flatten()
    shown = wrong[:40].cpu()
    cols = 10
    rows = max(1, (len(shown) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown.tolist()):
        ax.imshow(images[i, 0].cpu().numpy(), cmap="gray_r")
        ax.set_title(f"{labels[i].item()}→{predictions[i].item()}", fontsize=9)
    fig.suptitle(f"{title}: {len(wrong)} misclassified (true→predicted), first {len(shown)} shown")
    _save(fig, path)
    return len(wrong)


def _errorbars(ax, x, per_seed: list[list[float]], **kwargs) -> list[float]:
    """Mean ± sd per x, no bar where there is one seed; returns the plotted extremes for fitting the axis."""
    stats = [stat(v) for v in per_seed]
    means = [s.mean for s in stats]
    sds = [s.sd if s.n > 1 else float("nan") for s in stats]  # nan: matplotlib draws no bar
    ax.errorbar(x, means, yerr=None if all(s.n == 1 for s in stats) else sds, capsize=3, ms=4, **kwargs)
    return [s.mean - s.sd for s in stats] + [s.mean + s.sd for s in stats]


def progression(steps: list[tuple[str, dict[int, Outcome]]], path: Path, target_acc: float):
    """Accuracy, train-test gap and parameters per step of the drill; `steps`: (name, seed -> Outcome) each."""
    fig, (ax_acc, ax_gap, ax_params) = plt.subplots(1, 3, figsize=(16, 4.2), layout="constrained")
    x, runs = list(range(len(steps))), [list(outcomes.values()) for _, outcomes in steps]
    seeds, params = max(map(len, runs)), [run[0].params for run in runs]
    extremes = _errorbars(ax_acc, x, [[o.best_train_acc for o in run] for run in runs], fmt="-o", label="train")
    extremes += _errorbars(ax_acc, x, [[o.best_test_acc for o in run] for run in runs], fmt="-s", label="test")
    _errorbars(ax_gap, x, [[o.best_train_acc - o.best_test_acc for o in run] for run in runs], fmt="-o", color="C3")
    ax_gap.axhline(0, color="black", lw=0.8)
    ax_params.bar(x, params, color="C7")
    ax_params.bar_label(ax_params.containers[0], labels=[f"{p:,}" for p in params], fontsize=8)
    spread = f"mean ± sd over {seeds} seeds" if seeds > 1 else "one seed"
    _style(ax_acc, f"accuracy per step ({spread})", "accuracy (%)", xlabel="", target=target_acc, accuracies=extremes)
    _style(ax_gap, "train - test gap (pp)", "gap (pp): > 0 over-fitting", xlabel="")
    _style(ax_params, "parameters per step", "parameters", xlabel="", log=True)
    for ax in (ax_acc, ax_gap, ax_params):
        ax.set_xticks(x, [name for name, _ in steps], rotation=30, ha="right")
    return _save(fig, path)


def compare(runs: dict[str, list[dict]], path: Path, target_acc: float):
    """Several runs' curves overlaid, one colour per run: test accuracy, train accuracy and test loss per epoch."""
    fig, (ax_test, ax_train, ax_loss) = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    for colour, (label, rows) in enumerate(runs.items()):
        epochs = [r["epoch"] for r in rows]
        for ax, column in ((ax_test, "test_acc"), (ax_train, "train_acc"), (ax_loss, "test_loss")):
            ax.plot(epochs, [r[column] for r in rows], "-o", ms=3, color=f"C{colour % 10}", label=label)
    accuracies = {column: [r[column] for rows in runs.values() for r in rows] for column in ("test_acc", "train_acc")}
    _style(ax_test, "test accuracy", "test_acc (%)", target=target_acc, accuracies=accuracies["test_acc"])
    _style(ax_train, "train accuracy", "train_acc (%)", accuracies=accuracies["train_acc"])
    _style(ax_loss, "test loss", "test_loss (NLL)", log=True)
    return _save(fig, path)


def pareto_front(points: list[SweepPoint]) -> list[int]:
    """Indices of the points no other point beats on both fewer-or-equal params and higher mean test_acc,
    by params ascending."""
    means = [stat(p.test_acc).mean for p in points]
    front, best = [], float("-inf")
    for i in sorted(range(len(points)), key=lambda i: (points[i].params, -means[i])):
        if means[i] > best:
            front.append(i)
            best = means[i]
    return front


def sweep(points: list[SweepPoint], path: Path, target_acc: float):
    """Mean final test_acc ± sd against each key that varies (numbers on a number axis, anything else as categories;
    a line per value of the other keys), and against parameters when they vary: the Pareto front (fewest
    parameters for the accuracy) drawn, points that hold the target on every seed filled, the others hollow."""
    keys = [k for k in points[0].values if len({repr(p.values[k]) for p in points}) > 1]
    columns = {k: [p.values[k] for p in points] for k in keys} or {"variant": [str(i + 1) for i in range(len(points))]}
    pareto = len({p.params for p in points}) > 1
    fig, axes = plt.subplots(
        1, len(columns) + pareto, figsize=(5 * (len(columns) + pareto), 4), squeeze=False, layout="constrained"
    )
    accs, ylabel = [p.test_acc for p in points], "final test_acc (%), mean ± sd"
    for ax, (key, xs) in zip(axes[0], columns.items()):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs):
            categories = list(dict.fromkeys(str(v) for v in xs))  # first-seen order
            ax.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 4 else 0)
            ax.set_xlim(-0.5, len(categories) - 0.5)
            xs = [categories.index(str(v)) for v in xs]
        elif scale_for(xs) == "log":
            ax.set_xscale("log")
        elif len(set(xs)) <= MAX_VALUE_TICKS:  # a tick at each value tried, not at values nobody ran
            ax.set_xticks(sorted(set(xs)), [f"{v:g}" for v in sorted(set(xs))])
        series: dict[str, list[int]] = {}  # a line per combination of the other keys' values, labelled with them
        for i, point in enumerate(points):
            label = ", ".join(f"{k.split('.', 1)[-1]}={point.values[k]}" for k in keys if k != key)
            series.setdefault(label, []).append(i)
        extremes = []
        for label, members in series.items():
            fmt = "-o" if len(members) > 1 else "o"
            extremes += _errorbars(
                ax, [xs[i] for i in members], [accs[i] for i in members], fmt=fmt, label=label or None
            )
        _style(ax, key, ylabel, xlabel=key, target=target_acc, accuracies=extremes)
    if pareto:
        ax = axes[0][-1]
        params = [p.params for p in points]
        extremes = []
        for holds, label, face in ((True, "holds on every seed", None), (False, "misses on a seed", "white")):
            members = [i for i, p in enumerate(points) if (p.seeds_holding == len(p.test_acc)) == holds]
            x, y = [params[i] for i in members], [accs[i] for i in members]
            if members:
                extremes += _errorbars(ax, x, y, fmt="o", color="C0", mfc=face, label=label)
        front = pareto_front(points)
        ax.plot([params[i] for i in front], [stat(accs[i]).mean for i in front], "--", color="C1", label="Pareto front")
        ax.set_xscale(scale_for(params))
        _style(ax, "accuracy against size", ylabel, xlabel="parameters", target=target_acc, accuracies=extremes)
    return _save(fig, path)


def confusion_matrix(counts: list[list[int]], path: Path, title: str) -> None:
    """Test images by true digit (rows) and predicted digit (columns), each cell's count written in it.
    Only the mistakes are coloured: the diagonal's hundreds would wash out the few wrong ones."""
    n = len(counts)
    mistakes = [[0 if i == j else c for j, c in enumerate(row)] for i, row in enumerate(counts)]
    top = max(1, max(max(row) for row in mistakes))
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    image = ax.imshow(mistakes, cmap="Reds", vmin=0, vmax=top)
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            if count:
                weight, colour = ("bold" if i == j else "normal"), ("white" if mistakes[i][j] > top / 2 else "k")
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7, fontweight=weight, color=colour)
    ax.set(
        xticks=range(n),
        yticks=range(n),
        xlabel="predicted digit",
        ylabel="true digit",
        title=f"{title}: {sum(map(sum, mistakes))} of {sum(map(sum, counts))} misclassified",
    )
    fig.colorbar(image, ax=ax, label="misclassified images", ticks=ticker.MaxNLocator(integer=True))
    _save(fig, path)
