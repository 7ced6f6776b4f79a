"""Diagnostics read from a run's curves (its metrics rows): a short run, still improving, bouncing, over-fitting
onset, and whether the target, once reached, held; each a Diagnostic with one sentence for analysis.md."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from ..config.schema import Config

# When each fires: accuracy in points, epochs counted from the end of the run.
TREND_EPOCHS = 4  # the last epochs whose trend "still improving" reads
IMPROVING_ACC = 0.05  # points/epoch: a test_acc slope at least this steep is still improving
IMPROVING_LOSS = 0.04  # fraction of its level per epoch: a test_loss falling this fast is still improving
BOUNCE_EPOCHS = 5  # the last epochs whose swings "bouncing" reads
BOUNCE_POINTS = 0.1  # an up-then-down (or down-then-up) swing this large: 10 of 10,000 test images
ONSET_SUSTAIN = 3  # epochs after the test loss's minimum needed to call over-fitting (not one noisy epoch)
ONSET_RISE = 0.10  # fraction above its minimum the test loss must stay (on average and at the end)

DIAGNOSTIC_NAMES = (
    "short run",
    "still improving",
    "bouncing",
    "over-fitting onset",
    "target held",
    "target lost",
    "target reached",
)


@dataclass(frozen=True)
class Diagnostic:
    name: str  # one of DIAGNOSTIC_NAMES
    sentence: str


def short_run(rows: list[dict], planned: int) -> Diagnostic | None:
    """Fewer epochs ran than planned (--epochs N, or interrupted): what the test accuracy did over them, and that the
    curves are too short to judge as a finished run's."""
    if len(rows) >= planned:
        return None
    first, last = rows[0]["test_acc"], rows[-1]["test_acc"]
    rise = last - rows[-2]["test_acc"] if len(rows) > 1 else 0.0
    if rise >= IMPROVING_ACC:
        trend = f"still rising ({rise:+.2f} points in the last epoch)"
    else:
        trend = f"{'flat' if abs(rise) < IMPROVING_ACC else 'falling'} in the last epoch ({rise:+.2f} points)"
    return Diagnostic(
        "short run",
        f"only {len(rows)} of {planned} planned epochs ran: the test accuracy went {first:.2f} → {last:.2f} and is "
        f"{trend}; too short to judge the curves as a finished run's (run the {planned} epochs, or --resume).",
    )


def still_improving(rows: list[dict], cfg: Config) -> Diagnostic | None:
    """The test accuracy still rises, or the test loss still falls, over the last TREND_EPOCHS epochs."""
    if len(rows) < TREND_EPOCHS:
        return None
    tail = rows[-TREND_EPOCHS:]
    epochs = range(len(tail))  # slopes are least-squares, per epoch
    acc = statistics.linear_regression(epochs, [r["test_acc"] for r in tail]).slope
    losses = [r["test_loss"] for r in tail]
    level = statistics.mean(losses)
    loss = statistics.linear_regression(epochs, losses).slope / level if level > 0 else 0.0  # relative
    if not (acc >= IMPROVING_ACC or (loss <= -IMPROVING_LOSS and acc > -IMPROVING_ACC)):
        return None
    if cfg.train.epochs < cfg.target.max_epochs:
        pay = f"more epochs would pay (up to {cfg.target.max_epochs})"
    elif cfg.scheduler.name == "none":
        pay = "the epoch budget is spent, so a higher LR (or a one-cycle schedule) would pay"
    else:
        pay = "the schedule ends while the model still learns: a higher peak LR would pay"
    return Diagnostic(
        "still improving",
        f"over epochs {tail[0]['epoch']}-{tail[-1]['epoch']} the test accuracy moves {acc:+.2f} "
        f"points/epoch and the test loss {loss:+.1%}/epoch: {pay}.",
    )


def bouncing(rows: list[dict], cfg: Config) -> Diagnostic | None:
    """Test accuracy swings up and down by BOUNCE_POINTS or more over the last BOUNCE_EPOCHS epochs."""
    tail = rows[-BOUNCE_EPOCHS:]
    steps = [b["test_acc"] - a["test_acc"] for a, b in zip(tail, tail[1:])]
    swings = [min(abs(d1), abs(d2)) for d1, d2 in zip(steps, steps[1:]) if d1 * d2 < 0]
    if not swings or round(max(swings), 6) < BOUNCE_POINTS:
        return None
    path = " → ".join(f"{r['test_acc']:.2f}" for r in tail)
    if cfg.scheduler.name == "none":
        fix = f"the LR ({tail[-1]['lr']:g}) is too high for the end of training; a schedule that lowers it helps"
    else:
        fix = f"the schedule's end LR ({tail[-1]['lr']:.2g}) may still be too high"
    return Diagnostic(
        "bouncing",
        f"the test accuracy swings by up to {max(swings):.2f} points between epochs "
        f"{tail[0]['epoch']}-{tail[-1]['epoch']} ({path}): {fix}.",
    )


def overfitting_onset(rows: list[dict]) -> Diagnostic | None:
    """The test loss turns up for good (ONSET_SUSTAIN epochs or more) while the train loss keeps falling."""
    low = min(range(len(rows)), key=lambda i: rows[i]["test_loss"])
    after, floor = rows[low + 1 :], rows[low]["test_loss"]
    if len(after) < ONSET_SUSTAIN or floor <= 0:
        return None
    rise = statistics.mean(r["test_loss"] for r in after) / floor - 1
    end_rise = after[-1]["test_loss"] / floor - 1
    falling = after[-1]["train_loss"] < rows[low]["train_loss"]
    if rise < ONSET_RISE or end_rise < ONSET_RISE or not falling:
        return None
    epoch = rows[low]["epoch"]
    return Diagnostic(
        "over-fitting onset",
        f"the test loss bottoms at {floor:.4f} in epoch {epoch} and stays {rise:.0%} above it over the "
        f"{len(after)} epochs after, while the train loss keeps falling "
        f"({rows[low]['train_loss']:.4f} → {after[-1]['train_loss']:.4f}): the model memorises from "
        f"epoch {epoch} on.",
    )


def target_course(rows: list[dict], target_acc: float) -> Diagnostic | None:
    """When the test accuracy first reached the target, and whether it stayed there."""
    reached = next((i for i, r in enumerate(rows) if r["test_acc"] >= target_acc), None)
    if reached is None:
        return None
    epoch = rows[reached]["epoch"]
    below = [r for r in rows[reached + 1 :] if r["test_acc"] < target_acc]
    dips = ", ".join(f"{r['epoch']} ({r['test_acc']:.2f})" for r in below)
    acc = rows[reached]["test_acc"]
    first = f"the test accuracy reached {target_acc}% in epoch {epoch} ({acc:.2f})"
    if reached == len(rows) - 1:
        name = "target reached"
        sentence = (
            f"the test accuracy reached {target_acc}% only in epoch {epoch}, the last ({acc:.2f}): "
            "too late to show that it holds."
        )
    elif rows[-1]["test_acc"] < target_acc:
        name, sentence = "target lost", f"{first} and fell below it again in epochs {dips}, ending below it."
    else:
        held = f"but dipped below it in epochs {dips}" if below else "and stayed at or above it in every epoch after"
        name, sentence = "target held", f"{first} {held}, and ends at or above it."
    return Diagnostic(name, sentence)


def diagnose(rows: list[dict], cfg: Config, planned: int | None = None) -> list[Diagnostic]:
    """Every diagnostic that fires on a run's metrics rows, in the order the curves are read. `planned`: the epochs
    the run was meant to train (its step's file's; default the config's train.epochs)."""
    if not rows:
        return []
    found = [
        short_run(rows, planned or cfg.train.epochs),
        still_improving(rows, cfg),
        bouncing(rows, cfg),
        overfitting_onset(rows),
        target_course(rows, cfg.target.test_acc),
    ]
    return [d for d in found if d is not None]
