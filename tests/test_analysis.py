"""Verdicts, targets, advice that fits the step, curve diagnostics, seed noise, a step against the one
before it, and the markdown written for a run, a seed sweep, a progression and a comparison."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from mnist_drill.config.blocks import ConvSpec, GapSpec, HeadSpec, LargeConvSpec
from mnist_drill.config.loader import load_config
from mnist_drill.config.schema import Config, ModelConfig, SchedulerConfig, TargetConfig, TrainConfig
from mnist_drill.reporting import markdown as report
from mnist_drill.reporting.analysis import (
    GAP_TOLERANCE,
    Stat,
    advice,
    aggregate,
    assess,
    binomial_se,
    features,
    verdict,
)
from mnist_drill.reporting.comparison import compare_steps, difference, gap_moved
from mnist_drill.reporting.diagnostics import (
    BOUNCE_POINTS,
    ONSET_RISE,
    bouncing,
    diagnose,
    overfitting_onset,
    still_improving,
    target_course,
)

REPO = Path(__file__).resolve().parents[1]


def step(n: int) -> Config:
    """The real step config, for advice and comparisons that depend on what the step has."""
    return load_config(next((REPO / "configs").glob(f"step{n}_*.yaml")))


def rows_from(test_accs, train_accs=None, test_losses=None, train_losses=None, lr=0.01):
    train_accs = train_accs or [min(100.0, t + 0.1) for t in test_accs]
    test_losses = test_losses or [0.05] * len(test_accs)
    train_losses = train_losses or [0.1] * len(test_accs)
    return [
        {"epoch": i + 1, "train_loss": trl, "train_acc": tr, "test_loss": tel, "test_acc": te, "lr": lr, "seconds": 1.0}
        for i, (tr, te, tel, trl) in enumerate(zip(train_accs, test_accs, test_losses, train_losses))
    ]


def config(**target) -> Config:
    return Config(name="stepX", change="something changed", target=TargetConfig(**target))


def run(cfg: Config, final_train: float, final_test: float, params: int, epochs: int = 15, seed_shift: float = 0.0):
    """One seed's Outcome that ends at the given accuracies (flat for its last epochs)."""
    tests = [98.0] * (epochs - 3) + [final_test + seed_shift] * 3
    trains = [97.0] * (epochs - 3) + [final_train + seed_shift] * 3
    return assess(rows_from(tests, trains), cfg, params, False)


# ---------------------------------------------------------------- verdict


@pytest.mark.parametrize(
    "train, test, expected",
    [
        (99.9, 99.2, "over-fitting"),
        (100.0, 98.0, "over-fitting"),
        (98.0, 98.5, "under-fitting"),
        (99.0, 99.2, "under-fitting"),
        (99.6, 99.5, "healthy"),
        (99.45, 99.6, "healthy"),
        (99.4, 99.4, "healthy"),  # train exactly at the target
    ],
)
def test_verdict(train, test, expected):
    assert verdict(train, test, 99.4) == expected


@pytest.mark.parametrize("train, test", [(99.5, 99.2), (99.7, 99.4), (99.9, 99.6), (99.8, 99.5)])
def test_a_gap_of_exactly_the_tolerance_is_still_healthy(train, test):
    # GAP_TOLERANCE is "percentage points still called healthy"; the gap is shown as +0.30, so
    # floating-point noise in train - test must not flip the verdict.
    assert GAP_TOLERANCE == 0.3
    assert verdict(train, test, 99.4) == "healthy"


@pytest.mark.parametrize(
    "train, test, expected",
    [
        (99.81, 99.5, "over-fitting"),
        (99.79, 99.5, "healthy"),
    ],
)
def test_just_either_side_of_the_tolerance(train, test, expected):
    assert verdict(train, test, 99.4) == expected


@pytest.mark.parametrize(
    "train, test, held, expected",
    [
        (
            99.39,
            99.49,
            True,
            "healthy",
        ),  # a final-step run (seed 2, 2026-11-23) that met every target, once called under-fitting
        (99.39, 99.49, False, "under-fitting"),
        (98.50, 99.45, True, "healthy"),  # augmented batches read low; the test set holds the target
        (99.95, 99.45, True, "over-fitting"),  # holding the target does not hide a gap
    ],
)
def test_a_run_that_holds_the_target_is_not_under_fitting(train, test, held, expected):
    assert verdict(train, test, 99.4, target_held=held) == expected


def test_a_final_step_meeting_every_target_with_train_acc_9939_is_not_told_to_add_capacity():
    cfg = step(7)
    o = assess(rows_from([99.3] * 12 + [99.50, 99.51, 99.49], [99.0] * 12 + [99.28, 99.395, 99.3883]), cfg, 7756, False)
    assert o.all_met and o.verdict == "healthy"
    tips = " ".join(advice(cfg, aggregate(cfg, {2: o})))
    assert "Every target is met" in tips and "capacity" not in tips.lower()
    text = report.run_markdown(cfg, o, [], "completed")
    assert "Verdict: **healthy**" in text and "under-fitting" not in text and "Add capacity" not in text


# ---------------------------------------------------------------- assess


def test_consistent_needs_each_of_the_last_n_epochs_at_target():
    cfg = config(test_acc=99.4, consistent_epochs=3)
    held = assess(rows_from([99.0, 99.41, 99.4, 99.45, 99.5]), cfg, 5000, False)
    assert held.consistent and held.first_target_epoch == 2
    dipped = assess(rows_from([99.5, 99.5, 99.39, 99.5, 99.5]), cfg, 5000, False)
    assert not dipped.consistent and dipped.first_target_epoch == 1
    too_short = assess(rows_from([99.5, 99.5]), cfg, 5000, False)
    assert not too_short.consistent
    never = assess(rows_from([98.0, 99.0, 99.3]), cfg, 5000, False)
    assert never.first_target_epoch is None and not never.consistent


def test_outcome_numbers():
    rows = rows_from([98.0, 99.3, 99.2, 99.3], [97.0, 99.0, 99.9, 99.6])
    o = assess(rows, config(), 7000, False)
    assert (o.params, o.epochs) == (7000, 4)
    assert o.best_train_acc == 99.9
    assert (o.best_test_acc, o.best_test_epoch) == (99.3, 2)  # the first epoch with the best value
    assert (o.final_train_acc, o.final_test_acc) == (99.6, 99.3)
    assert o.gap == pytest.approx(0.3)


@pytest.mark.parametrize(
    "params, epochs, fc, met",
    [
        (7999, 15, False, {"params": True, "epochs": True, "fc": True}),
        (8000, 15, False, {"params": False, "epochs": True, "fc": True}),
        (5000, 16, False, {"params": True, "epochs": False, "fc": True}),
        (5000, 3, True, {"params": True, "epochs": True, "fc": False}),
    ],
)
def test_targets(params, epochs, fc, met):
    o = assess(rows_from([99.5] * epochs), config(max_params=8000, max_epochs=15), params, fc)
    assert o.targets == {
        "test_acc >= 99.4% in each of the last 3 epochs": epochs >= 3,
        "params < 8,000": met["params"],
        "epochs <= 15": met["epochs"],
        "no fully connected layer": met["fc"],
    }
    assert o.all_met == all(o.targets.values())


def test_no_fc_target_can_be_switched_off():
    o = assess(rows_from([99.5] * 3), config(no_fc=False), 100, True)
    assert "no fully connected layer" not in o.targets and o.all_met


# ---------------------------------------------------------------- what a step has, and advice that fits it


@pytest.mark.parametrize(
    "n, dropout, bn, augmentation, scheduler, gap, fc",
    [
        (0, 0.0, False, False, "none", False, True),
        (1, 0.0, False, False, "none", False, False),
        (2, 0.0, True, False, "none", False, False),
        (3, 0.02, True, False, "none", False, False),
        (4, 0.02, True, False, "none", True, False),
        (6, 0.02, True, True, "none", True, False),
        (7, 0.02, True, True, "onecycle", True, False),
    ],
)
def test_features_read_what_each_step_has(n, dropout, bn, augmentation, scheduler, gap, fc):
    f, cfg = features(step(n)), step(n)
    assert (f.dropout, f.bn, cfg.augment.enabled, cfg.scheduler.name, f.gap, f.fc) == (
        dropout,
        bn,
        augmentation,
        scheduler,
        gap,
        fc,
    )


def test_dropout_or_bn_set_on_one_block_only_counts():
    model = ModelConfig(blocks=(ConvSpec(out=8), ConvSpec(out=8, dropout=0.1, bn=True), GapSpec(), HeadSpec()))
    f = features(Config(model=model))
    assert f.dropout == 0.1 and f.bn
    # a large output kernel does not take the model's defaults (it is the output layer)
    model = ModelConfig(blocks=(LargeConvSpec(out=10),), dropout=0.05, bn=True)
    f = features(Config(model=model))
    assert f.dropout == 0.0 and not f.bn


def advice_text(n: int, final_train: float, final_test: float, params: int) -> str:
    cfg = step(n)
    return " ".join(advice(cfg, aggregate(cfg, {1: run(cfg, final_train, final_test, params)})))


@pytest.mark.parametrize(
    "n, present, absent",
    [
        (2, ["Add a small dropout", "Add augmentation"], ["already on"]),
        (3, ["Dropout (0.02) is already on", "Add augmentation"], ["Add a small dropout"]),
        (
            6,
            ["Dropout (0.02) is already on", "Augmentation is already on"],
            ["Add a small dropout", "Add augmentation"],
        ),
    ],
)
def test_over_fitting_advice_does_not_prescribe_what_the_step_has(n, present, absent):
    text = advice_text(n, 99.9, 99.2, 7000)
    for fragment in present:
        assert fragment in text
    for fragment in absent:
        assert fragment not in text


@pytest.mark.parametrize(
    "n, params, present, absent",
    [
        (1, 7000, ["Add BatchNorm", "Add capacity: 1,000 parameters", "An LR schedule"], ["Dropout (", "augmented"]),
        (4, 6560, ["Add capacity: 1,440 parameters", "Dropout (0.02) takes capacity"], ["Add BatchNorm"]),
        (5, 7756, ["Only 244 parameters of headroom"], ["Add capacity", "Add BatchNorm"]),
        (6, 7756, ["augmented batches", "An LR schedule"], ["Add capacity"]),
        (7, 7756, ["augmented batches"], ["An LR schedule", "Add capacity"]),
    ],
)
def test_under_fitting_advice_fits_the_step(n, params, present, absent):
    text = advice_text(n, 99.0, 99.1, params)
    for fragment in present:
        assert fragment in text
    for fragment in absent:
        assert fragment not in text


@pytest.mark.parametrize("n, params, how", [(2, 12160, "GAP and a 1x1 head"), (4, 9000, "fewer channels")])
def test_a_step_over_the_parameter_budget_is_told_to_cut_them(n, params, how):
    text = advice_text(n, 99.9, 99.2, params)
    assert f"{params:,} parameters, {params - 8000:,} above the target of fewer than 8,000" in text and how in text


@pytest.mark.parametrize("n, told", [(0, True), (1, False)])
def test_only_a_step_with_a_fully_connected_layer_is_told_to_replace_it(n, told):
    assert ("The fully connected layer breaks the no-FC target" in advice_text(n, 99.9, 99.2, 7000)) == told


# ---------------------------------------------------------------- seed noise


def test_the_binomial_floor_of_a_test_accuracy_on_10000_images():
    assert binomial_se(99.4, 10_000) == pytest.approx(0.077, abs=0.001)
    assert binomial_se(99.4, 60_000) == pytest.approx(0.0315, abs=0.001)
    assert binomial_se(100.0, 10_000) == 0.0


@pytest.mark.parametrize(
    "sd, n, floor, se",
    [
        (0.0, 1, 0.08, 0.08),  # one seed: sampling noise
        (0.02, 3, 0.08, 0.08 / math.sqrt(3)),  # a spread below the floor is floored
        (0.30, 3, 0.08, 0.30 / math.sqrt(3)),  # a measured spread above it counts
    ],
)
def test_the_standard_error_of_a_mean_is_the_floored_spread_over_root_seeds(sd, n, floor, se):
    assert Stat(99.0, sd, n, floor).se == pytest.approx(se)


def acc_stat(values: list[float]) -> Stat:
    import statistics

    mean = statistics.mean(values)
    return Stat(mean, statistics.stdev(values) if len(values) > 1 else 0.0, len(values), binomial_se(mean, 10_000))


@pytest.mark.parametrize(
    "before, after, label",
    [
        ([99.30], [99.40], "within seed noise"),  # one seed each: ±0.23 points
        ([99.30], [99.60], "gain"),
        ([99.60], [99.30], "loss"),
        ([99.30], [99.45], "within seed noise"),  # +0.15 on one seed each ...
        ([99.28, 99.30, 99.32], [99.43, 99.45, 99.47], "gain"),  # ... is a gain on three seeds each (±0.13)
        ([99.0, 99.4, 99.8], [99.5, 99.5, 99.5], "within seed noise"),  # a wide measured spread
    ],
)
def test_a_difference_is_a_gain_or_a_loss_only_beyond_seed_noise(before, after, label):
    d = difference("test accuracy", acc_stat(before), acc_stat(after))
    assert d.label == label
    assert d.direction == {"gain": 1, "loss": -1, "within seed noise": 0}[label]


def test_one_seed_noise_is_two_combined_binomial_errors():
    d = difference("test accuracy", acc_stat([99.40]), acc_stat([99.40]))
    assert d.threshold == pytest.approx(2 * math.hypot(binomial_se(99.4, 10_000), binomial_se(99.4, 10_000)))
    assert d.threshold == pytest.approx(0.218, abs=0.001)


@pytest.mark.parametrize(
    "before, after, direction, label",
    [
        (0.62, 0.12, -1, "gain"),  # narrower
        (0.12, 0.62, 1, "loss"),  # wider
        (0.50, -0.50, 0, "within seed noise"),  # the same size on the other side
        (-0.60, -0.10, -1, "gain"),  # a negative gap narrows towards zero
    ],
)
def test_the_gap_is_judged_by_its_size(before, after, direction, label):
    d = difference("gap", Stat(before, 0.0, 1, 0.1), Stat(after, 0.0, 1, 0.1), size=True)
    assert (d.direction, d.label) == (direction, label)


def test_aggregate_gives_mean_and_sd_over_seeds_and_counts_the_seeds_that_reach_and_hold():
    cfg = config()
    outcomes = {
        1: assess(rows_from([99.0, 99.5, 99.5, 99.5], [99.0, 99.5, 99.6, 99.7]), cfg, 7000, False),
        2: assess(rows_from([99.0, 99.2, 99.45, 99.3], [99.0, 99.5, 99.6, 99.5]), cfg, 7000, False),
        3: assess(rows_from([99.0, 99.1, 99.2, 99.3], [99.0, 99.5, 99.6, 99.6]), cfg, 7000, False),
    }
    s = aggregate(cfg, outcomes)
    assert s.seeds == (1, 2, 3) and s.n == 3 and s.params == 7000
    assert s.final_test_acc.mean == pytest.approx(99.3667, abs=1e-4)
    assert s.final_test_acc.sd == pytest.approx(0.1155, abs=1e-4)
    assert s.best_train_acc.mean == pytest.approx(99.6333, abs=1e-4)
    assert s.gap.mean == pytest.approx(0.2333, abs=1e-4)
    assert (s.reached, s.held, s.all_met) == (2, 1, 1)
    assert s.first_target_epoch.mean == 2.5  # epochs 2 and 3; seed 3 never reached it
    assert s.final_test_acc.floor == pytest.approx(binomial_se(s.final_test_acc.mean, 10_000))
    assert s.best_train_acc.floor == pytest.approx(binomial_se(s.best_train_acc.mean, 60_000))
    assert s.verdict == "healthy"  # train 99.60 on average, gap 0.23: under the tolerance, target fitted


def test_the_noise_floor_follows_the_test_subset():
    cfg = dataclasses.replace(config(), data=dataclasses.replace(config().data, test_subset=1000))
    s = aggregate(cfg, {1: assess(rows_from([99.0] * 3), cfg, 7000, False)})
    assert s.final_test_acc.floor == pytest.approx(binomial_se(99.0, 1000))


# ---------------------------------------------------------------- diagnostics read from the curves

FLAT = [99.2, 99.3, 99.2, 99.3, 99.25, 99.3, 99.25, 99.3]


@pytest.mark.parametrize(
    "test_accs, test_losses, fires",
    [
        ([98.8, 98.9, 99.0, 99.1, 99.2, 99.3], None, True),  # accuracy still climbing 0.1 points/epoch
        ([99.3] * 6, [0.040, 0.036, 0.032, 0.029, 0.026, 0.023], True),  # loss still falling ~10 %/epoch
        (FLAT, None, False),  # flat and noisy
        ([99.3] * 6, [0.025, 0.026, 0.025, 0.026, 0.025, 0.026], False),  # a flat loss
        ([98.0, 98.5, 99.0, 99.3, 99.3, 99.3, 99.3], None, False),  # improved early, flat over the last 4 epochs
        ([99.3, 99.3, 99.2, 99.1, 99.0, 98.9], [0.04, 0.036, 0.032, 0.029, 0.026, 0.023], False),  # accuracy falls
    ],
)
def test_still_improving(test_accs, test_losses, fires):
    d = still_improving(rows_from(test_accs, test_losses=test_losses), config())
    assert (d is not None) == fires
    if fires:
        assert d.name == "still improving" and "points/epoch and the test loss" in d.sentence


@pytest.mark.parametrize(
    "epochs, scheduler, advice_fragment",
    [
        (10, "none", "more epochs would pay (up to 15)"),
        (15, "none", "a higher LR (or a one-cycle schedule) would pay"),
        (15, "onecycle", "a higher peak LR would pay"),
    ],
)
def test_still_improving_says_what_would_pay(epochs, scheduler, advice_fragment):
    cfg = dataclasses.replace(config(), train=TrainConfig(epochs=epochs), scheduler=SchedulerConfig(name=scheduler))
    d = still_improving(rows_from([98.8, 98.9, 99.0, 99.1, 99.2]), cfg)
    assert advice_fragment in d.sentence and "+0.10 points/epoch" in d.sentence


@pytest.mark.parametrize(
    "test_accs, fires",
    [
        ([99.0] * 5 + [99.2, 99.4, 99.2, 99.4, 99.3], True),  # swings of 0.2 points
        ([99.0] * 5 + [99.15, 99.28, 99.13, 99.24, 99.32], True),  # step 4's last epochs: 0.13
        ([99.0, 99.1, 99.2, 99.3, 99.4], False),  # a steady rise
        ([99.30, 99.35, 99.31, 99.36, 99.32], False),  # wiggles of 0.04-0.05
        ([99.4, 99.4, 99.4, 99.2, 99.2], False),  # one drop, no swing back
        ([99.0, 99.4, 99.0, 99.4, 99.3, 99.3, 99.3, 99.3, 99.3], False),  # bounced early, steady at the end
    ],
)
def test_bouncing(test_accs, fires):
    d = bouncing(rows_from(test_accs), config())
    assert (d is not None) == fires
    if fires:
        swing = float(d.sentence.split("swings by up to ")[1].split(" ")[0])
        assert d.name == "bouncing" and swing >= BOUNCE_POINTS


@pytest.mark.parametrize(
    "scheduler, fragment",
    [
        ("none", "the LR (0.01) is too high for the end of training; a schedule that lowers it helps"),
        ("step", "the schedule's end LR (0.01) may still be too high"),
    ],
)
def test_bouncing_suggests_a_schedule_only_without_one(scheduler, fragment):
    cfg = dataclasses.replace(config(), scheduler=SchedulerConfig(name=scheduler))
    d = bouncing(rows_from([99.2, 99.4, 99.2, 99.4, 99.3]), cfg)
    assert fragment in d.sentence and "99.20 → 99.40 → 99.20 → 99.40 → 99.30" in d.sentence


FALLING = [0.30, 0.20, 0.15, 0.12, 0.10, 0.08, 0.07, 0.06, 0.05, 0.04]


@pytest.mark.parametrize(
    "test_losses, train_losses, epoch",
    [
        ([0.08, 0.06, 0.05, 0.04, 0.035, 0.040, 0.042, 0.045, 0.047, 0.050], FALLING, 5),  # turns up for good at 5
        ([0.08, 0.06, 0.05, 0.04, 0.035, 0.045, 0.036, 0.037, 0.036, 0.036], FALLING, None),  # one noisy epoch
        ([0.08, 0.06, 0.05, 0.04, 0.038, 0.036, 0.034, 0.032, 0.045, 0.050], FALLING, None),  # only 2 epochs after
        ([0.08, 0.06, 0.05, 0.04, 0.035, 0.040, 0.042, 0.045, 0.047, 0.050], [0.1] * 4 + [0.08] + [0.09] * 5, None),
        ([0.08, 0.07, 0.06, 0.05, 0.045, 0.04, 0.038, 0.036, 0.035, 0.034], FALLING, None),  # still falling
    ],
)
def test_over_fitting_onset_is_sustained_and_needs_a_falling_train_loss(test_losses, train_losses, epoch):
    d = overfitting_onset(rows_from([99.0] * 10, test_losses=test_losses, train_losses=train_losses))
    assert (d is not None) == (epoch is not None)
    if epoch:
        rise = int(d.sentence.split("stays ")[1].split("%")[0]) / 100
        assert f"in epoch {epoch} " in d.sentence and rise >= ONSET_RISE


@pytest.mark.parametrize(
    "test_accs, name, reached, below",
    [
        ([99.0, 99.2, 99.41, 99.45, 99.5, 99.42], "target held", 3, 0),
        ([99.0, 99.45, 99.5, 99.3, 99.5, 99.46], "target held", 2, 1),  # dipped, then held again
        ([99.0, 99.2, 99.42, 99.35, 99.3, 99.33], "target lost", 3, 3),
        ([99.0, 99.2, 99.3, 99.42], "target reached", 4, 0),  # only in the last epoch: too late to tell
        ([99.0, 99.2, 99.3, 99.39], None, None, None),  # never reached: nothing to say about holding it
    ],
)
def test_target_reached_and_held_or_lost(test_accs, name, reached, below):
    d = target_course(rows_from(test_accs), 99.4)
    if name is None:
        assert d is None
        return
    assert d.name == name and f"in epoch {reached}" in d.sentence
    assert d.sentence.count("(") - 1 == below  # each epoch below it after, with its accuracy, and the first


def test_target_lost_names_the_epochs_below_it():
    d = target_course(rows_from([99.0, 99.45, 99.3, 99.5, 99.33]), 99.4)
    assert "epochs 3 (99.30), 5 (99.33)" in d.sentence and "ending below it" in d.sentence


def test_diagnose_lists_what_fires_and_nothing_for_no_rows():
    rows = rows_from([99.0] * 5 + [99.2, 99.4, 99.2, 99.45, 99.3])
    assert [d.name for d in diagnose(rows, config(), planned=len(rows))] == ["bouncing", "target lost"]
    assert diagnose([], config()) == []


# ---------------------------------------------------------------- a step against the step before


def outcomes(cfg: Config, final_train: float, final_test: float, params: int, seeds=(1,)):
    shifts = {1: (0.0,), 3: (-0.02, 0.0, 0.02)}[len(seeds)]
    return {seed: run(cfg, final_train, final_test, params, seed_shift=shift) for seed, shift in zip(seeds, shifts)}


def expecting(*items: str, base: int = 3) -> Config:
    return dataclasses.replace(step(base), expect=items)


@pytest.mark.parametrize(
    "item, before, after, status",
    [
        ("train_acc rises", (99.3, 99.0), (99.8, 99.5), "met"),
        ("train_acc falls", (99.3, 99.0), (99.8, 99.5), "not met"),
        ("train_acc rises", (99.30, 99.0), (99.32, 99.5), "within noise"),
        ("test_acc rises", (99.3, 99.0), (99.8, 99.5), "met"),
        ("test_acc rises", (99.3, 99.30), (99.8, 99.35), "within noise"),
        ("test_acc falls", (99.6, 99.33), (99.2, 99.32), "within noise"),  # step 4: GAP did not measurably cost
        ("test_acc falls", (99.6, 99.0), (99.6, 99.5), "not met"),
        ("test_acc holds", (99.6, 99.33), (99.2, 99.32), "met"),
        ("test_acc holds", (99.6, 99.33), (99.6, 99.6), "met"),
        ("test_acc holds", (99.6, 99.6), (99.6, 99.2), "not met"),
        ("gap narrows", (99.9, 99.0), (99.5, 99.3), "met"),
        ("gap widens", (99.9, 99.0), (99.5, 99.3), "not met"),
        ("gap narrows", (99.84, 99.22), (99.60, 99.22), "within noise"),
    ],
)
def test_expectations_are_met_not_met_or_within_noise(item, before, after, status):
    prev, cfg = step(2), expecting(item)
    c = compare_steps(prev, outcomes(prev, *before, 7000), cfg, outcomes(cfg, *after, 7000))
    assert [(ch.item, ch.status) for ch in c.checks] == [(item, status)]
    sentence = c.checks[0].sentence
    assert ("the numbers disagree with the expectation" in sentence) == (status == "not met")
    assert ("no change beyond seed noise" in sentence) == (status == "within noise")
    assert "noise ±" in sentence


@pytest.mark.parametrize(
    "item, params_before, params_after, status",
    [
        ("params fall", 12160, 6560, "met"),
        ("params fall", 6560, 7756, "not met"),
        ("params rise", 6560, 7756, "met"),
        ("params under budget", 12160, 7999, "met"),
        ("params under budget", 6560, 8000, "not met"),
    ],
)
def test_parameter_expectations_are_exact(item, params_before, params_after, status):
    prev, cfg = step(3), expecting(item)
    c = compare_steps(prev, outcomes(prev, 99.5, 99.3, params_before), cfg, outcomes(cfg, 99.5, 99.3, params_after))
    assert c.checks[0].status == status and f"{params_after:,}" in c.checks[0].sentence


def test_target_expectations_count_the_seeds():
    prev, cfg = step(6), expecting("target reached", "targets met", base=7)
    after = outcomes(cfg, 99.4, 99.45, 7756, seeds=(1, 2, 3))  # 99.43 / 99.45 / 99.47 at the end
    c = compare_steps(prev, outcomes(prev, 99.1, 99.3, 7756), cfg, after)
    assert [(ch.item, ch.status) for ch in c.checks] == [("target reached", "met"), ("targets met", "met")]
    assert "every target met on 3 of 3 seeds" in c.checks[1].sentence
    short = outcomes(cfg, 99.4, 99.41, 7756, seeds=(1, 2, 3))  # 99.39 / 99.41 / 99.43: seed 1 misses
    c = compare_steps(prev, outcomes(prev, 99.1, 99.3, 7756), cfg, short)
    assert [ch.status for ch in c.checks] == ["not met", "not met"]
    assert "(2 of 3 seeds)" in c.checks[0].sentence and "on 2 of 3 seeds" in c.checks[1].sentence


@pytest.mark.parametrize(
    "before_n, after_n, before, after, params, fragments",
    [
        (
            1,
            2,
            (99.34, 98.82),
            (99.84, 99.22),
            (12008, 12160),
            [
                "step2_bn added 152 parameters (12,008 → 12,160)",
                "raised train accuracy 99.34 → 99.84",
                "the gap (+0.52 → +0.62) stayed within seed noise",
                ": more capacity",
            ],
        ),
        (
            2,
            3,
            (99.84, 99.22),
            (99.60, 99.22),
            (12160, 12160),
            ["step3_dropout lowered train accuracy 99.84 → 99.60", "test accuracy (99.22 → 99.22)", "harder training"],
        ),
        (
            3,
            4,
            (99.60, 99.22),
            (99.18, 99.32),
            (12160, 6560),
            [
                "step4_gap cut the parameters 12,160 → 6,560",
                "lowered train accuracy 99.60 → 99.18",
                "less capacity to fit the training set, at no measurable test cost",
            ],
        ),
        (
            1,
            2,
            (99.30, 98.60),
            (99.95, 98.60),
            (12008, 12160),
            ["raised train accuracy", "widened the gap +0.70 → +1.35", "more capacity, more over-fitting"],
        ),
        (
            6,
            7,
            (99.10, 99.30),
            (99.12, 99.32),
            (7756, 7756),
            [
                "step7_lr_scheduler left train accuracy (99.10 → 99.12), test accuracy (99.30 → 99.32) and the gap",
                "within seed noise: on these seeds the change does not measurably matter",
            ],
        ),
    ],
)
def test_the_comparison_sentence_says_what_the_change_did(before_n, after_n, before, after, params, fragments):
    prev, cfg = step(before_n), step(after_n)
    c = compare_steps(prev, outcomes(prev, *before, params[0]), cfg, outcomes(cfg, *after, params[1]))
    for fragment in fragments:
        assert fragment in c.sentence, c.sentence


def test_the_sentence_says_when_a_step_newly_meets_every_target():
    prev, cfg = step(6), step(7)
    c = compare_steps(prev, outcomes(prev, 99.1, 99.33, 7756), cfg, outcomes(cfg, 99.4, 99.50, 7756))
    assert c.sentence.endswith("It meets every target; step6_augmentation did not.")
    assert [(ch.item, ch.status) for ch in c.checks] == [("test_acc rises", "within noise"), ("targets met", "met")]


def test_the_comparison_is_judged_against_three_seeds_spread():
    prev, cfg = step(5), expecting("test_acc rises", base=6)
    one = compare_steps(prev, outcomes(prev, 99.3, 99.30, 7756), cfg, outcomes(cfg, 99.1, 99.45, 7756))
    three = compare_steps(
        prev, outcomes(prev, 99.3, 99.30, 7756, seeds=(1, 2, 3)), cfg, outcomes(cfg, 99.1, 99.45, 7756, seeds=(1, 2, 3))
    )
    assert one.test.label == "within seed noise" and three.test.label == "gain"
    assert [c.status for c in one.checks] == ["within noise"] and [c.status for c in three.checks] == ["met"]


# ---------------------------------------------------------------- analysis.md of one run


def test_run_markdown_sections():
    cfg = dataclasses.replace(config(), train=TrainConfig(epochs=4))
    o = assess(rows_from([99.0, 99.5, 99.5, 99.5]), cfg, 7000, False)
    text = report.run_markdown(cfg, o, [], "completed", misclassified=True)
    for heading in ("# stepX", "## Target", "## Results", "## Analysis", "## Misclassified test images"):
        assert re.search(rf"^{re.escape(heading)}$", text, re.M), heading
    assert text.index("## Target") < text.index("## Results") < text.index("## Analysis")
    assert (
        "Change from the step before: not computed (no run of the step before in this folder); its `change:` "
        "says: something changed." in text
    )
    assert "- Parameters: 7,000" in text and "- Epochs run: 4 of 4" in text
    assert f"Verdict: **{o.verdict}**" in text
    assert "first reached 99.4% in epoch 2, and held it" in text
    assert "- All targets: met" in text
    assert "Run " not in text and "![curves](curves.png)" in text
    assert "### What the curves say" not in text and "### Against the step before" not in text  # no rows, no step


def test_run_markdown_teaches_the_step_reason_expectations_curves_and_the_step_before():
    prev, cfg = step(2), step(3)
    before = outcomes(prev, 99.84, 99.22, 12160)
    rows = rows_from([99.0] * 10 + [99.2, 99.4, 99.2, 99.4, 99.3], [99.5] * 12 + [99.7] * 3)
    o = assess(rows, cfg, 12160, False)
    text = report.run_markdown(cfg, o, rows, "completed", previous=(prev, before))
    target = text[text.index("## Target") : text.index("## Results")]
    assert cfg.reason in target and "Expected against the step before (step2_bn):" in target
    for item in cfg.expect:
        assert f"- {item}: " in target
    assert "- **bouncing**: the test accuracy swings by up to 0.20 points" in text
    section = text[text.index("### Against the step before: step2_bn") :]
    assert "| best train_acc | 99.84 | 99.70 | -0.14: loss (noise ±0.06) |" in section
    assert "| verdict | over-fitting | over-fitting |" in section
    assert "- gap narrows: *within noise*: gap +0.62 → +0.40" in section and "- test_acc holds: met" in section
    assert "Verdict: **over-fitting**" in text and "Dropout (0.02) is already on" in text


def step_config(n: int, *overrides: str) -> Config:
    return load_config(next((REPO / "configs").glob(f"step{n}_*.yaml")), list(overrides))


@pytest.mark.parametrize(
    "overrides, change_line, flag",
    [
        ((), "`model.dropout: 0.0 → 0.02`; its `change:` says: dropout 0.02 after every conv.", None),
        (
            ("model.dropout=0.13",),
            "`model.dropout: 0.0 → 0.13`; its `change:` says: dropout 0.02 after every conv.",
            "**`change:` may not describe this run**: it sets `model.dropout: 0.02 → 0.13` over its step's file",
        ),
        (
            ("train.seed=7", "train.device=cpu"),  # which seed and where: not a change of what trains
            "`model.dropout: 0.0 → 0.02`; its `change:` says",
            None,
        ),
    ],
)
def test_the_change_line_is_computed_from_the_configs_that_ran(overrides, change_line, flag):
    prev, written, cfg = step(2), step(3), step_config(3, *overrides)
    o = assess(rows_from([99.0] * 12 + [99.4] * 3), cfg, 12160, False)
    text = report.run_markdown(
        cfg, o, [], "completed", previous=(prev, outcomes(prev, 99.8, 99.2, 12160)), written=written
    )
    assert f"Change from the step before (step2_bn), as run: {change_line}" in text
    assert (flag in text) if flag else "may not describe" not in text


def test_the_change_line_flags_a_run_that_is_not_its_file_even_without_a_step_before():
    cfg = step_config(3, "model.dropout=0.13")
    text = report.run_markdown(cfg, None, [], "failed", written=step(3))
    assert "Change from the step before: not computed (no run of the step before in this folder)" in text
    assert "it sets `model.dropout: 0.02 → 0.13` over its step's file" in text


def test_an_override_away_from_the_change_is_listed_but_not_flagged():
    prev, cfg = step_config(2, "train.epochs=2"), step_config(3, "train.epochs=2")
    rows = rows_from([97.0, 98.0])
    o = assess(rows, cfg, 12160, False)
    before = {1: assess(rows, prev, 12160, False)}
    text = report.run_markdown(cfg, o, rows, "completed", previous=(prev, before), written=step(3))
    assert "as run: `model.dropout: 0.0 → 0.02`;" in text
    assert "Set over its step's file: `train.epochs: 15 → 2`; `change:` still describes the change." in text


SHORT = rows_from([25.0, 88.0], [40.0, 80.0], test_losses=[2.0, 0.5], train_losses=[2.2, 0.8])


@pytest.mark.parametrize(
    "overrides, status, written",
    [(("train.epochs=2",), "completed", True), ((), "interrupted", False)],  # --epochs 2, or stopped after 2
)
def test_a_run_shorter_than_planned_is_judged_as_a_short_run(overrides, status, written):
    prev, cfg = step(2), step_config(3, *overrides)
    o = assess(SHORT, cfg, 12160, False)
    before = outcomes(prev, 99.8, 99.2, 12160)
    text = report.run_markdown(cfg, o, SHORT, status, previous=(prev, before), written=step(3) if written else None)
    assert "- Epochs run: 2 of 15" in text
    assert "Verdict after 2 of 15 epochs, provisional: **" in text and "too short for a final verdict" in text
    curves = text[text.index("### What the curves say") : text.index("### Against")]
    assert "Nothing stands out" not in curves
    assert (
        "- **short run**: only 2 of 15 planned epochs ran: the test accuracy went 25.00 → 88.00 and is still "
        "rising (+63.00 points in the last epoch); too short to judge" in curves
    )
    assert "Expectations (`expect:`) not checked: this run has 2 of 15 epochs" in text
    assert "- gap narrows:" not in text[text.index("### Against") :]


def test_a_full_run_is_not_called_short():
    cfg = step(3)
    rows = rows_from([99.0] * 15)
    text = report.run_markdown(cfg, assess(rows, cfg, 12160, False), rows, "completed", written=cfg)
    assert "- Epochs run: 15 of 15" in text and "short run" not in text and "provisional" not in text


def test_expectations_without_a_step_before_say_why_they_are_not_checked():
    cfg = step(3)
    text = report.run_markdown(cfg, assess(rows_from([99.0] * 15), cfg, 12160, False), [], "completed")
    assert "Expected against the step before (not checked: no run of it in this folder):" in text


@pytest.mark.parametrize(
    "before, after, words",
    [
        (-7.03, -9.16, "let test accuracy run further ahead of train (gap -7.03 → -9.16)"),
        (0.0, -0.26, "let test accuracy run ahead of train (gap +0.00 → -0.26)"),
        (-9.16, -7.03, "shrank test accuracy's lead over train (gap -9.16 → -7.03)"),
        (0.40, -0.50, "let test accuracy overtake train (gap +0.40 → -0.50)"),
        (-0.50, 0.80, "let train accuracy overtake test (gap -0.50 → +0.80)"),
        (0.70, 1.35, "widened the gap +0.70 → +1.35"),
        (1.35, 0.70, "narrowed the gap +1.35 → +0.70"),
    ],
)
def test_the_gap_is_worded_by_what_happened(before, after, words):
    assert gap_moved(before, after) == words


def test_run_markdown_reports_unmet_targets():
    cfg = config()
    o = assess(rows_from([98.0, 98.5]), cfg, 9000, True)
    text = report.run_markdown(cfg, o, [], "completed")
    assert "never reached 99.4%" in text
    assert "- params < 8,000: **not met**" in text and "- All targets: **not met**" in text
    assert "## Misclassified" not in text


def test_run_markdown_says_a_run_was_interrupted():
    cfg = config()
    o = assess(rows_from([99.0]), cfg, 7000, False)
    note = "stopped by Ctrl-C after 1 finished epoch(s); continue with --resume"
    text = report.run_markdown(cfg, o, rows_from([99.0]), "interrupted", note)
    assert f"**Run interrupted**: {note}" in text
    assert "## Results" in text and "- Epochs run: 1" in text


def test_run_markdown_without_any_finished_epoch():
    text = report.run_markdown(config(), None, [], "diverged", "the loss became NaN or infinite in epoch 1, batch 3")
    assert "**Run diverged**: the loss became NaN" in text and "No epoch finished" in text
    assert "## Target" in text and "## Results" not in text


def test_a_diverged_run_is_not_given_a_fitting_verdict_nor_a_comparison():
    cfg, prev = config(), step(2)
    rows = rows_from([7.4, 7.4, 7.4, 7.4], [9.8, 9.8, 9.8, 9.8], test_losses=[0.1, 0.2, 0.3, 0.4])
    o = assess(rows, cfg, 7000, False)
    text = report.run_markdown(
        cfg,
        o,
        rows,
        "diverged",
        "the loss became NaN or infinite in epoch 2, batch 3",
        previous=(prev, outcomes(prev, 99.84, 99.22, 12160)),
    )
    assert "Verdict: **diverged**" in text and "fitting" not in text and "Against the step before" not in text
    table = report.progression_markdown(
        [(prev, outcomes(prev, 99.84, 99.22, 12160), "completed"), (cfg, {1: o}, "diverged")]
    )
    assert "| diverged |" in table and "the run diverged, so there is nothing to compare" in table.lower()


# ---------------------------------------------------------------- a step on several seeds


def three_seeds(cfg: Config) -> dict:
    return {
        seed: assess(rows_from(accs), cfg, 7000, False)
        for seed, accs in {1: [99.4, 99.5, 99.4], 2: [99.3, 99.4, 99.6], 3: [99.5, 99.5, 99.5]}.items()
    }


def test_step_markdown_has_a_row_per_seed_and_mean_and_sd():
    cfg = config()
    text = report.step_markdown(cfg, three_seeds(cfg))
    assert text.startswith("# stepX: 3 seeds")
    for seed in (1, 2, 3):
        assert re.search(rf"^\| {seed} \| 7,000 \|", text, re.M)
    # finals 99.4, 99.6, 99.5: mean 99.50, sd 0.10; bests 99.5 (first), 99.6, 99.5: mean 99.53, sd 0.06
    assert "| mean ± sd | | 99.50 ± 0.10 | 99.53 ± 0.06 |" in text
    assert "All seeds meet every target: **not met**" in text  # seed 2 dips below 99.4
    assert re.search(r"^\| 2 \|.*\| 99\.30 / 99\.40 / 99\.60 \| \*\*not met\*\* \|", text, re.M)
    assert "| first reached 99.4% | epoch 1.3 ± 0.6 (3 of 3 seeds) |" in text  # epochs 1, 2, 1


def test_step_markdown_with_one_seed_has_zero_spread():
    cfg = config()
    text = report.step_markdown(cfg, {7: assess(rows_from([99.5, 99.5, 99.5]), cfg, 100, False)})
    assert "| mean ± sd | | 99.50 ± 0.00 | 99.50 ± 0.00 |" in text and "All seeds meet every target: met" in text


def test_step_markdown_reads_each_seeds_curves_and_compares_with_the_step_before():
    prev, cfg = step(6), step(7)
    rows = {
        1: rows_from([99.0] * 10 + [99.2, 99.4, 99.2, 99.4, 99.3]),
        2: rows_from([99.0] * 10 + [99.5] * 5),
        3: rows_from([99.0] * 10 + [99.2, 99.45, 99.2, 99.45, 99.3]),
    }
    seeds = {seed: assess(r, cfg, 7756, False) for seed, r in rows.items()}
    text = report.step_markdown(cfg, seeds, rows, previous=(prev, outcomes(prev, 99.1, 99.3, 7756)))
    assert "- **bouncing** (seeds 1, 3 of 3; seed 1's numbers): the test accuracy swings" in text
    assert "- **target held** (seed 2 of 3): " in text
    assert "### Against the step before: step6_augmentation" in text
    assert re.search(r"^\| best test_acc \| 99\.30 \| 99\.\d\d ± 0\.\d\d \|", text, re.M)


# ---------------------------------------------------------------- run-all's progression


def progression_rows(text: str) -> dict[str, list[str]]:
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| step")]
    return {cells[0]: cells for cells in rows[1:]}


def test_progression_with_one_seed_per_step():
    s1, s2, s3 = step(1), step(2), step(3)
    entries = [
        (s1, outcomes(s1, 99.34, 98.82, 12008), "completed"),
        (s2, outcomes(s2, 99.84, 99.22, 12160), "completed"),
        (s3, outcomes(s3, 99.60, 99.22, 12160), "completed"),
    ]
    text = report.progression_markdown(entries)
    rows = progression_rows(text)
    assert list(rows) == ["step1_skeleton", "step2_bn", "step3_dropout"]
    assert rows["step2_bn"][2:8] == ["12,160", "99.84", "99.22", "+0.62", "over-fitting", "2/4"]
    assert rows["step1_skeleton"][8] == ""  # the first step has no step before
    assert rows["step2_bn"][8] == "**train +0.50**, **test +0.40**, gap size +0.10"
    assert rows["step3_dropout"][8] == "**train -0.24**, test +0.00, gap size -0.24"
    for cfg in (s1, s2, s3):
        assert f"### {cfg.name}" in text and f"Why: {cfg.reason}" in text
    assert "What it did: step2_bn added 152 parameters" in text
    assert "- gap widens: *within noise*: gap +0.52 → +0.62" in text
    assert "![progression](progression.png)" in text


def test_progression_with_three_seeds_per_step_shows_mean_and_sd():
    s6, s7 = step(6), step(7)
    entries = [
        (s6, outcomes(s6, 99.1, 99.30, 7756, seeds=(1, 2, 3)), "completed"),
        (s7, outcomes(s7, 99.4, 99.45, 7756, seeds=(1, 2, 3)), "completed"),
    ]
    text = report.progression_markdown(entries)
    rows = progression_rows(text)
    assert rows["step7_lr_scheduler"][3:8] == ["99.40 ± 0.02", "99.45 ± 0.02", "-0.05 ± 0.00", "healthy", "3/3 seeds ✔"]
    assert rows["step6_augmentation"][7] == "0/3 seeds"
    # +0.15 is beyond the noise of three seeds a side (±0.13) ...
    assert rows["step7_lr_scheduler"][8] == "**train +0.30**, **test +0.15**, **gap size -0.15**"
    assert "- test_acc rises: met: test accuracy 99.30 → 99.45 (+0.15, noise ±0.13)" in text
    # ... but not of one seed a side (±0.22)
    one = report.progression_markdown([(cfg, {1: o[2]}, "completed") for cfg, o, _ in entries])
    assert progression_rows(one)["step7_lr_scheduler"][8] == "**train +0.30**, test +0.15, gap size -0.15"


def test_progression_goes_on_after_a_step_without_results():
    cfgs = [Config(name=f"step{i}", change=f"change {i}") for i in range(3)]
    entries = [
        (cfgs[0], {1: assess(rows_from([99.0] * 3), cfgs[0], 20000, True)}, "completed"),
        (cfgs[1], None, "config error"),
        (cfgs[2], {1: assess(rows_from([99.5] * 3), cfgs[2], 7000, False)}, "interrupted"),
    ]
    text = report.progression_markdown(entries)
    rows = progression_rows(text)
    assert list(rows) == ["step0", "step1", "step2"]
    assert "| step0 | change 0 | 20,000 |" in text
    assert "| step1 | change 1 | | | | | config error | | |" in text
    assert "(interrupted)" in rows["step2"][6] and rows["step2"][7] == "4/4 ✔" and rows["step2"][8] == ""
    assert "No results (config error)." in text and "The step before has no results to compare with." in text


# ---------------------------------------------------------------- compare


def test_compare_markdown_shows_only_the_config_keys_that_differ():
    a, b = step(2), step(3)
    b_retold = dataclasses.replace(b, reason="another reason", change="another note")
    text = report.compare_markdown(
        [
            ("run_a", a, outcomes(a, 99.84, 99.22, 12160)),
            ("run_b", b_retold, outcomes(b, 99.60, 99.22, 12160, seeds=(1, 2, 3))),
        ]
    )
    keys = text[text.index("## Config keys that differ") : text.index("## Results")]
    assert re.findall(r"^\| (\S+) \|", keys, re.M) == ["key", "model.dropout"]
    assert "| model.dropout | 0.0 | 0.02 |" in keys
    results = text[text.index("## Results") :]
    assert "| seeds | 1 | 1, 2, 3 |" in results and "| best train_acc | 99.84 | 99.60 ± 0.02 |" in results
    assert "## run_b against run_a" in text and "run_b lowered train accuracy" in text
    assert "Expectations" not in text  # the steps' own expectations are for the step before, not for compare


def test_compare_markdown_writes_settings_as_the_yaml_does():
    a, b = step(1), step(2)
    text = report.compare_markdown(
        [("one", a, outcomes(a, 99.3, 98.8, 12008)), ("two", b, outcomes(b, 99.8, 99.2, 12160))]
    )
    assert "| model.bn | false | true |" in text


def test_compare_markdown_of_the_same_config_says_so():
    a = step(5)
    text = report.compare_markdown([("x", a, outcomes(a, 99.3, 99.3, 7756)), ("y", a, outcomes(a, 99.3, 99.3, 7756))])
    assert "None: the runs train the same config." in text


def test_compare_markdown_lists_block_changes_and_keys_only_one_run_has():
    a, b = step(3), step(4)
    text = report.compare_markdown(
        [
            ("three", a, outcomes(a, 99.6, 99.3, 12160)),
            ("four", b, outcomes(b, 99.2, 99.3, 6560)),
            ("five", step(5), outcomes(step(5), 99.3, 99.4, 7756)),
        ]
    )
    assert "| model.blocks.length | 7 | 8 | 8 |" in text
    assert "| model.blocks[6].type | large_conv | gap | gap |" in text
    assert "| model.blocks[7].type | — | head | head |" in text
    assert "## four against three" in text and "## five against three" in text


def test_a_run_with_set_and_epochs_writes_what_ran_into_its_analysis(tmp_path, data_dir, write_config, tiny):
    """run_steps carries the step's file as written to analysis.md: its --set is listed and flagged, its --epochs
    counted against the file's epochs."""
    from mnist_drill.runs.steps import run_steps

    tiny["train"]["epochs"] = 3
    source = write_config("tiny.yaml", tiny)
    run_steps(
        [source],
        tmp_path / "out",
        str(data_dir),
        overrides=["model.dropout=0.1", "train.epochs=1"],
        exact=True,
        echo=str,
    )
    text = (tmp_path / "out" / "tiny" / "analysis.md").read_text()
    assert "it sets `model.dropout: 0.0 → 0.1`, `train.epochs: 3 → 1` over its step's file" in text
    assert "- Epochs run: 1 of 3" in text and "Verdict after 1 of 3 epochs, provisional" in text


@pytest.mark.parametrize(
    "change, dropout, flagged",
    [
        ("dropout 0.02 after every conv", 0.02, False),
        ("dropout 0.02 after every conv", 0.13, True),  # the file was edited, its text was not
        ("more dropout", 0.13, False),  # no value named: nothing to check
        ("dropout 0.02 on 24x24 maps", 0.02, False),
    ],
)
def test_a_change_text_naming_a_value_that_did_not_run_is_flagged(change, dropout, flagged):
    from mnist_drill.reporting.markdown import change_lines

    before = Config(name="step2_bn")
    after = dataclasses.replace(
        before, name="step3", change=change, model=dataclasses.replace(before.model, dropout=dropout)
    )
    lines = change_lines(after, (before, {}))
    assert any("may not describe this run" in line for line in lines) == flagged
    assert f"`model.dropout: 0.0 → {dropout}`" in lines[0]
