"""The drill's Target / Results / Analysis for a step, and the progression table over all steps.

The verdict reads the final train/test gap the way the course does: a train accuracy well above
the test accuracy is over-fitting (regularise); a model that cannot fit its own training data to the
target is under-fitting (add capacity, or accept it when augmentation/dropout make training harder).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Optional

from .config import Config

GAP_TOLERANCE = 0.3  # percentage points of train-minus-test accuracy still called healthy


@dataclass(frozen=True)
class Outcome:
    params: int
    epochs: int
    best_train_acc: float
    best_test_acc: float
    best_test_epoch: int
    final_train_acc: float
    final_test_acc: float
    gap: float  # final train_acc - test_acc, percentage points
    verdict: str  # over-fitting | under-fitting | healthy
    first_target_epoch: Optional[int]
    consistent: bool  # test_acc >= target in each of the last N epochs
    last_test_accs: tuple[float, ...]  # test_acc in each of those last N epochs, oldest first
    targets: dict[str, bool]  # target name -> met

    @property
    def all_met(self) -> bool:
        return all(self.targets.values())


def verdict(train_acc: float, test_acc: float, target_acc: float) -> str:
    if round(train_acc - test_acc, 6) > GAP_TOLERANCE:  # 99.9 - 99.6 is 0.30000000000001 in floats
        return "over-fitting"
    if train_acc < target_acc:
        return "under-fitting"
    return "healthy"


def assess(rows: list[dict], cfg: Config, params: int, has_fc: bool) -> Outcome:
    """Read a finished (or partial) run's metrics rows against the config's target."""
    t = cfg.target
    last = rows[-1]
    best = max(rows, key=lambda r: (r["test_acc"], -r["epoch"]))
    reached = [r["epoch"] for r in rows if r["test_acc"] >= t.test_acc]
    tail = rows[-t.consistent_epochs:]
    consistent = len(tail) == t.consistent_epochs and all(r["test_acc"] >= t.test_acc for r in tail)
    targets = {
        f"test_acc >= {t.test_acc}% in each of the last {t.consistent_epochs} epochs": consistent,
        f"params < {t.max_params:,}": params < t.max_params,
        f"epochs <= {t.max_epochs}": len(rows) <= t.max_epochs,
    }
    if t.no_fc:
        targets["no fully connected layer"] = not has_fc
    return Outcome(
        params=params, epochs=len(rows),
        best_train_acc=max(r["train_acc"] for r in rows), best_test_acc=best["test_acc"],
        best_test_epoch=best["epoch"], final_train_acc=last["train_acc"], final_test_acc=last["test_acc"],
        gap=last["train_acc"] - last["test_acc"],
        verdict=verdict(last["train_acc"], last["test_acc"], t.test_acc),
        first_target_epoch=reached[0] if reached else None, consistent=consistent,
        last_test_accs=tuple(r["test_acc"] for r in tail), targets=targets)


ADVICE = {
    "over-fitting": "the model memorises the training set: regularise (dropout, augmentation) before "
                    "adding anything else.",
    "under-fitting": "the model does not fit its training data to the target: add capacity (channels, a "
                     "layer after GAP), BN, or more epochs/LR. With dropout or augmentation on, a train "
                     "accuracy below the test accuracy is expected: the training data is harder.",
    "healthy": "train and test agree and the training data is fitted: push test accuracy with "
               "augmentation or the LR schedule, or cut parameters.",
}


def _yes(ok: bool) -> str:
    return "met" if ok else "**not met**"


def analysis_markdown(cfg: Config, outcome: Optional[Outcome], status: str, note: str = "",
                      misclassified: bool = False) -> str:
    t = cfg.target
    lines = [f"# {cfg.name}", ""]
    if cfg.change:
        lines += [f"Change from the step before: {cfg.change}", ""]
    lines += ["## Target", "",
              f"- test accuracy >= {t.test_acc}% in each of the last {t.consistent_epochs} epochs",
              f"- fewer than {t.max_params:,} parameters",
              f"- at most {t.max_epochs} epochs"]
    if t.no_fc:
        lines.append("- no fully connected layer")
    lines += [""]
    if status != "completed":
        lines += [f"**Run {status}**: {note}", ""]
    if outcome is None:
        lines += ["No epoch finished, so there are no results to analyse.", ""]
        return "\n".join(lines)
    o = outcome
    lines += ["## Results", "",
              f"- Parameters: {o.params:,}",
              f"- Epochs run: {o.epochs}",
              f"- Best train accuracy: {o.best_train_acc:.2f}%",
              f"- Best test accuracy: {o.best_test_acc:.2f}% (epoch {o.best_test_epoch})",
              f"- Final train / test accuracy: {o.final_train_acc:.2f}% / {o.final_test_acc:.2f}% "
              f"(gap {o.gap:+.2f} points)", "",
              "## Analysis", ""]
    if status == "diverged":  # the gap of a diverged run says nothing about fitting
        lines.append("- Verdict: **diverged**: the loss became NaN or infinite; lower the learning rate.")
    else:
        lines.append(f"- Verdict: **{o.verdict}**: {ADVICE[o.verdict]}")
    if o.first_target_epoch is None:
        lines.append(f"- The test accuracy never reached {t.test_acc}%.")
    else:
        held = "and held it" if o.consistent else "but did not hold it"
        lines.append(f"- The test accuracy first reached {t.test_acc}% in epoch {o.first_target_epoch}, "
                     f"{held} over the last {t.consistent_epochs} epochs.")
    for name, ok in o.targets.items():
        lines.append(f"- {name}: {_yes(ok)}")
    lines.append(f"- All targets: {_yes(o.all_met)}")
    if misclassified:
        lines += ["", "## Misclassified test images", "", "![misclassified](misclassified.png)"]
    lines += ["", "![curves](curves.png)", ""]
    return "\n".join(lines)


def seeds_markdown(cfg: Config, per_seed: dict[int, Outcome]) -> str:
    """The multi-seed table with mean and spread, for a step run with --seeds."""
    finals = [o.final_test_acc for o in per_seed.values()]
    bests = [o.best_test_acc for o in per_seed.values()]
    spread = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
    lines = [f"# {cfg.name}: {len(per_seed)} seeds", ""]
    if cfg.change:
        lines += [f"Change from the step before: {cfg.change}", ""]
    lines += ["| seed | params | final test_acc | best test_acc (epoch) | final train_acc | verdict | "
              f"test_acc, last {cfg.target.consistent_epochs} epochs | holds {cfg.target.test_acc}% over them | all targets |",
              "|---:|---:|---:|---:|---:|---|---|---|---|"]
    for seed, o in per_seed.items():
        lines.append(f"| {seed} | {o.params:,} | {o.final_test_acc:.2f} | {o.best_test_acc:.2f} ({o.best_test_epoch}) "
                     f"| {o.final_train_acc:.2f} | {o.verdict} | {' / '.join(f'{a:.2f}' for a in o.last_test_accs)} "
                     f"| {_yes(o.consistent)} | {_yes(o.all_met)} |")
    lines += [f"| mean ± sd | | {statistics.mean(finals):.2f} ± {spread(finals):.2f} | "
              f"{statistics.mean(bests):.2f} ± {spread(bests):.2f} | | | | | |", "",
              f"All seeds meet every target: {_yes(all(o.all_met for o in per_seed.values()))}", "",
              "Each seed's own analysis, curves and misclassified images are in `seed_<n>/`.", ""]
    return "\n".join(lines)


def progression_markdown(entries: list[tuple[Config, Optional[Outcome], str]]) -> str:
    """One table over the steps of a run-all: (config, outcome or None, status)."""
    lines = ["# Progression", "",
             "| step | change | params | best train_acc | best test_acc | final gap | verdict | targets met |",
             "|---|---|---:|---:|---:|---:|---|---|"]
    for cfg, o, status in entries:
        if o is None:
            lines.append(f"| {cfg.name} | {cfg.change} | | | | | {status} | |")
            continue
        met = sum(o.targets.values())
        mark = f"{met}/{len(o.targets)}" + (" ✔" if o.all_met else "")
        verdict_text = {"completed": o.verdict, "diverged": "diverged"}.get(status, f"{o.verdict} ({status})")
        lines.append(f"| {cfg.name} | {cfg.change} | {o.params:,} | {o.best_train_acc:.2f} | "
                     f"{o.best_test_acc:.2f} | {o.gap:+.2f} | {verdict_text} | {mark} |")
    lines += ["", "![progression](progression.png)", ""]
    return "\n".join(lines)
