"""Verdicts, target assessment and the markdown written for a step, a seed sweep and a progression."""

from __future__ import annotations

import re

import pytest

from mnist_drill.analysis import (GAP_TOLERANCE, assess, analysis_markdown, progression_markdown, seeds_markdown,
                                  verdict)
from mnist_drill.config import Config, TargetConfig


def rows_from(test_accs, train_accs=None):
    train_accs = train_accs or [min(100.0, t + 0.1) for t in test_accs]
    return [{"epoch": i + 1, "train_loss": 0.1, "train_acc": tr, "test_loss": 0.05, "test_acc": te, "lr": 0.01,
             "seconds": 1.0} for i, (tr, te) in enumerate(zip(train_accs, test_accs))]


def config(**target) -> Config:
    return Config(name="stepX", change="something changed", target=TargetConfig(**target))


# ---------------------------------------------------------------- verdict

@pytest.mark.parametrize("train, test, expected", [
    (99.9, 99.2, "over-fitting"),
    (100.0, 98.0, "over-fitting"),
    (98.0, 98.5, "under-fitting"),
    (99.0, 99.2, "under-fitting"),
    (99.6, 99.5, "healthy"),
    (99.45, 99.6, "healthy"),
    (99.4, 99.4, "healthy"),  # train exactly at the target
])
def test_verdict(train, test, expected):
    assert verdict(train, test, 99.4) == expected


@pytest.mark.parametrize("train, test", [(99.5, 99.2), (99.7, 99.4), (99.9, 99.6), (99.8, 99.5)])
def test_a_gap_of_exactly_the_tolerance_is_still_healthy(train, test):
    # GAP_TOLERANCE is "percentage points still called healthy"; the gap is shown as +0.30, so
    # floating-point noise in train - test must not flip the verdict.
    assert GAP_TOLERANCE == 0.3
    assert verdict(train, test, 99.4) == "healthy"


@pytest.mark.parametrize("train, test, expected", [
    (99.81, 99.5, "over-fitting"),
    (99.79, 99.5, "healthy"),
])
def test_just_either_side_of_the_tolerance(train, test, expected):
    assert verdict(train, test, 99.4) == expected


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


@pytest.mark.parametrize("params, epochs, fc, met", [
    (7999, 15, False, {"params": True, "epochs": True, "fc": True}),
    (8000, 15, False, {"params": False, "epochs": True, "fc": True}),
    (5000, 16, False, {"params": True, "epochs": False, "fc": True}),
    (5000, 3, True, {"params": True, "epochs": True, "fc": False}),
])
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


# ---------------------------------------------------------------- markdown

def test_analysis_markdown_sections():
    cfg = config()
    o = assess(rows_from([99.0, 99.5, 99.5, 99.5]), cfg, 7000, False)
    text = analysis_markdown(cfg, o, "completed", misclassified=True)
    for heading in ("# stepX", "## Target", "## Results", "## Analysis", "## Misclassified test images"):
        assert re.search(rf"^{re.escape(heading)}$", text, re.M), heading
    assert text.index("## Target") < text.index("## Results") < text.index("## Analysis")
    assert "Change from the step before: something changed" in text
    assert "- Parameters: 7,000" in text and "- Epochs run: 4" in text
    assert f"Verdict: **{o.verdict}**" in text
    assert "first reached 99.4% in epoch 2, and held it" in text
    assert "- All targets: met" in text
    assert "Run " not in text and "![curves](curves.png)" in text


def test_analysis_markdown_reports_unmet_targets():
    cfg = config()
    o = assess(rows_from([98.0, 98.5]), cfg, 9000, True)
    text = analysis_markdown(cfg, o, "completed")
    assert "never reached 99.4%" in text
    assert "- params < 8,000: **not met**" in text and "- All targets: **not met**" in text
    assert "## Misclassified" not in text


def test_analysis_markdown_says_a_run_was_interrupted():
    cfg = config()
    o = assess(rows_from([99.0]), cfg, 7000, False)
    note = "stopped by Ctrl-C after 1 finished epoch(s); continue with --resume"
    text = analysis_markdown(cfg, o, "interrupted", note)
    assert f"**Run interrupted**: {note}" in text
    assert "## Results" in text and "- Epochs run: 1" in text


def test_analysis_markdown_without_any_finished_epoch():
    text = analysis_markdown(config(), None, "diverged", "the loss became NaN or infinite in epoch 1, batch 3")
    assert "**Run diverged**: the loss became NaN" in text and "No epoch finished" in text
    assert "## Target" in text and "## Results" not in text


def test_a_diverged_run_is_not_given_a_fitting_verdict():
    cfg = config()
    o = assess(rows_from([7.4], [9.8]), cfg, 7000, False)
    text = analysis_markdown(cfg, o, "diverged", "the loss became NaN or infinite in epoch 2, batch 3")
    assert "Verdict: **diverged**" in text and "over-fitting" not in text
    table = progression_markdown([(cfg, o, "diverged")])
    assert "| diverged |" in table and "over-fitting" not in table


def test_seeds_markdown_has_a_row_per_seed_and_mean_and_sd():
    cfg = config()
    outcomes = {seed: assess(rows_from(accs), cfg, 7000, False)
                for seed, accs in {1: [99.4, 99.5, 99.4], 2: [99.3, 99.4, 99.6], 3: [99.5, 99.5, 99.5]}.items()}
    text = seeds_markdown(cfg, outcomes)
    assert text.startswith("# stepX: 3 seeds")
    for seed in (1, 2, 3):
        assert re.search(rf"^\| {seed} \| 7,000 \|", text, re.M)
    # finals 99.4, 99.6, 99.5: mean 99.50, sd 0.10; bests 99.5 (first), 99.6, 99.5: mean 99.53, sd 0.06
    assert "| mean ± sd | | 99.50 ± 0.10 | 99.53 ± 0.06 |" in text
    assert "All seeds meet every target: **not met**" in text  # seed 2 dips below 99.4
    assert re.search(r"^\| 2 \|.*\| 99\.30 / 99\.40 / 99\.60 \| \*\*not met\*\* \|", text, re.M)


def test_seeds_markdown_with_one_seed_has_zero_spread():
    cfg = config()
    text = seeds_markdown(cfg, {7: assess(rows_from([99.5, 99.5, 99.5]), cfg, 100, False)})
    assert "| mean ± sd | | 99.50 ± 0.00 | 99.50 ± 0.00 |" in text and "All seeds meet every target: met" in text


def test_progression_markdown_has_one_row_per_step():
    cfgs = [Config(name=f"step{i}", change=f"change {i}") for i in range(3)]
    entries = [
        (cfgs[0], assess(rows_from([99.0] * 3), cfgs[0], 20000, True), "completed"),
        (cfgs[1], None, "config error"),
        (cfgs[2], assess(rows_from([99.5] * 3), cfgs[2], 7000, False), "interrupted"),
    ]
    text = progression_markdown(entries)
    table = [line for line in text.splitlines() if line.startswith("| step")]
    assert [line.split("|")[1].strip() for line in table] == ["step", "step0", "step1", "step2"]
    assert "| step0 | change 0 | 20,000 |" in text
    assert "| step1 | change 1 | | | | | config error | |" in text
    assert "(interrupted)" in table[3] and "4/4 ✔" in table[3]
    assert "![progression](progression.png)" in text
