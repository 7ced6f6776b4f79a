"""Figures are written as PNG files, atomically, with axes fitted to what they show."""

from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib.image
import matplotlib.pyplot as plt
import pytest
import torch

from mnist_drill.reporting.plots import (
    SweepPoint,
    accuracy_limits,
    accuracy_scale,
    compare,
    curves,
    misclassified,
    pareto_front,
    progression,
    scale_for,
    sweep,
)

PNG = b"\x89PNG\r\n\x1a\n"
TARGET = 99.4


def rows(test_accs, lrs=None):
    """Metrics rows (train.METRIC_COLUMNS) with the given test_acc per epoch; train runs 0.5 pp behind."""
    lrs = lrs or [0.01] * len(test_accs)
    return [
        {
            "epoch": i,
            "train_loss": 0.5 / i,
            "train_acc": acc - 0.5,
            "test_loss": 0.4 / i,
            "test_acc": acc,
            "lr": lr,
            "seconds": 1.0,
        }
        for i, (acc, lr) in enumerate(zip(test_accs, lrs), start=1)
    ]


def assert_png(path, min_width=400):
    """The file is a PNG that matplotlib reads back as a picture of a plausible size, with nothing left beside it."""
    assert path.read_bytes()[:8] == PNG
    height, width = matplotlib.image.imread(path).shape[:2]
    assert width >= min_width and height >= 200
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


STEP1 = [76.8, 97.2, 97.3, 98.0, 98.1, 98.3, 98.6, 99.0, 99.3]  # epoch 1 trains at 77 %, the last epochs near 99.4 %


@pytest.mark.parametrize(
    "values, scale",
    [
        ([97.0], "linear"),
        ([95.0, 96.5, 98.0, 99.5], "linear"),
        ([99.9, 100.0], "linear"),
        ([12.0, 40.0], "linear"),
        (STEP1, "error-log"),
        ([90.0, 99.95, 100.0], "error-log"),
    ],
)
def test_accuracy_limits_hold_every_value_with_a_margin(values, scale):
    assert accuracy_scale(values) == scale
    lo, hi = accuracy_limits(values, TARGET, scale)
    assert lo < min(values) and (max(values) < hi or max(values) == 100.0)
    assert hi - lo >= 0.5  # one point is not drawn on a sliver of an axis


@pytest.mark.parametrize(
    "values, scale", [([97.0], "linear"), ([98.5, 98.9], "linear"), ([99.5, 99.7], "linear"), (STEP1[:4], "error-log")]
)
def test_accuracy_limits_keep_a_near_target_in_view(values, scale):
    lo, hi = accuracy_limits(values, TARGET, scale)
    assert lo < TARGET < hi


def test_an_error_log_axis_leaves_a_small_margin_in_decades_of_error_at_both_ends():
    lo, hi = accuracy_limits(STEP1, TARGET, "error-log")
    below = math.log10((100 - lo) / (100 - min(STEP1)))
    above = math.log10((100 - max(STEP1 + [TARGET])) / (100 - hi))
    assert 0 < below < 0.2 and 0 < above < 0.2


def test_accuracy_limits_leave_a_far_target_out_so_the_data_fill_the_axis():
    _, hi = accuracy_limits([80.0, 85.0], TARGET)
    assert hi < 90


def test_accuracy_limits_have_no_fixed_floor_at_90():
    assert accuracy_limits([95.0, 97.0], TARGET)[0] > 94 and accuracy_limits([60.0, 70.0], TARGET)[0] < 60


@pytest.mark.parametrize(
    "values, scale",
    [([0.01] * 3, "linear"), ([0.005, 0.05], "linear"), ([0.005, 0.0499, 0.001], "log"), ([0.0, 0.1], "linear")],
)
def test_a_learning_rate_spanning_more_than_ten_times_gets_a_log_axis(values, scale):
    assert scale_for(values) == scale


def axes_fractions(ax, line):
    """Where a line's points sit inside the panel, 0..1 on each axis, through whatever scale the axis has."""
    return (ax.transData + ax.transAxes.inverted()).transform(line.get_xydata())


@pytest.mark.parametrize(
    "test_accs, scale",
    [
        ([97.0], "linear"),
        ([96.0, 98.5], "linear"),
        ([95.0, 99.5], "function"),
        ([95.0 + 0.3 * i for i in range(15)], "linear"),
        ([90.0 + 0.19 * i for i in range(50)], "function"),
        ([accuracy + 0.5 for accuracy in STEP1], "function"),
    ],
)
def test_curves_fit_every_accuracy_and_show_the_learning_rate(tmp_path, test_accs, scale):
    fig = curves(rows(test_accs), tmp_path / "curves.png", "step1_skeleton", TARGET)
    _, ax_acc, ax_lr = fig.axes
    assert ax_acc.get_yscale() == scale  # "function": the error-log scale, where the error rates span decades
    lines = [line for line in ax_acc.get_lines() if line.get_label() in ("train", "test")]
    inside = [0 < f < 1 for line in lines for point in axes_fractions(ax_acc, line) for f in point]
    assert len(inside) == 4 * len(test_accs) and all(inside)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "learning rate (start of epoch)"]
    assert list(ax_lr.get_lines()[0].get_ydata()) == [0.01] * len(test_accs)
    assert ax_lr.get_ylim()[0] == 0  # a constant rate is a level line above zero
    ticks = [t for t in ax_acc.get_xticks() if ax_acc.get_xlim()[0] <= t <= ax_acc.get_xlim()[1]]
    assert all(float(t).is_integer() for t in ticks) and 1 <= len(ticks) <= 12
    n = len(test_accs)
    assert ticks[0] <= max(2, n // 5) and ticks[-1] >= n - n // 5  # the ticks span the run


def test_curves_of_a_one_cycle_schedule_put_the_learning_rate_on_a_log_axis_in_plain_numbers(tmp_path):
    fig = curves(rows([98.0, 99.0, 99.5], lrs=[0.005, 0.05, 0.001]), tmp_path / "curves.png", "step7", TARGET)
    assert fig.axes[2].get_yscale() == "log"
    assert fig.axes[2].yaxis.get_major_formatter()(0.002, 0) == "0.002"


@pytest.mark.parametrize("epochs", [1, 15])
def test_curves_are_written_as_png(tmp_path, epochs):
    curves(rows([97.0 + 0.1 * i for i in range(epochs)]), tmp_path / "curves.png", "step", TARGET)
    assert_png(tmp_path / "curves.png", min_width=1000)


def test_misclassified_counts_the_wrong_predictions(tmp_path):
    images = torch.rand(60, 1, 28, 28)
    labels = torch.arange(60) % 10
    predictions = labels.clone()
    predictions[::4] = (predictions[::4] + 1) % 10  # 15 wrong
    assert misclassified(images, labels, predictions, tmp_path / "m.png", "step") == 15
    assert_png(tmp_path / "m.png")


def test_misclassified_with_nothing_wrong(tmp_path):
    labels = torch.arange(10)
    assert misclassified(torch.rand(10, 1, 28, 28), labels, labels, tmp_path / "m.png", "step") == 0
    assert (tmp_path / "m.png").read_bytes()[:8] == PNG


def steps(seeds):
    """Three steps' (name, seed -> Outcome), the accuracies differing a little from seed to seed."""

    def per_seed(params, train, test, train_change, test_change):
        return {
            s: SimpleNamespace(
                params=params, best_train_acc=train + train_change * s, best_test_acc=test + test_change * s
            )
            for s in range(seeds)
        }

    return [
        ("step0_setup", per_seed(2_123_474, 99.9, 99.1, -0.01, 0.02)),
        ("step4_gap", per_seed(6_560, 99.2, 99.3, -0.05, 0.03)),
        ("step7_lr_scheduler", per_seed(7_756, 99.4, 99.5, 0.0, 0.04)),
    ]


@pytest.mark.parametrize("seeds", [1, 3])
def test_progression_shows_accuracy_gap_and_parameters_per_step(tmp_path, seeds):
    fig = progression(steps(seeds), tmp_path / "progression.png", TARGET)
    ax_acc, ax_gap, ax_params = fig.axes
    train, test = ax_acc.containers
    assert train.has_yerr == test.has_yerr == (seeds > 1)  # no error bar from one seed
    assert list(ax_gap.containers[0].lines[0].get_ydata()) == pytest.approx(
        [sum(o.best_train_acc - o.best_test_acc for o in outcomes.values()) / seeds for _, outcomes in steps(seeds)]
    )
    assert ax_params.get_yscale() == "log"
    assert [t.get_text() for t in ax_params.get_xticklabels()] == [name for name, _ in steps(seeds)]
    assert ax_acc.get_ylim()[0] < 99.1 and TARGET < ax_acc.get_ylim()[1]
    assert_png(tmp_path / "progression.png", min_width=1000)


@pytest.mark.parametrize("runs", [2, 3])
def test_compare_overlays_every_run_in_its_own_colour(tmp_path, runs):
    data = {f"seed {i}": rows([97.0 + i, 98.0 + i / 2, 99.0 + i / 5]) for i in range(runs)}
    fig = compare(data, tmp_path / "compare.png", TARGET)
    for ax in fig.axes:
        run_lines = [line for line in ax.get_lines() if line.get_label() in data]
        assert len(run_lines) == runs and len({line.get_color() for line in run_lines}) == runs
        assert [t.get_text() for t in ax.get_legend().get_texts()][:runs] == list(data)
    assert_png(tmp_path / "compare.png", min_width=1000)


def sweep_points(vary_params):
    return [
        SweepPoint(
            {"model.dropout": d, "augment.interpolation": i, "optim.nesterov": n},
            7_756 if not vary_params else 5_000 + 1_000 * k,
            [99.3 + k / 20, 99.4 + k / 25, 99.35],
            seeds_holding=k,
        )
        for k, (d, i, n) in enumerate([(0.0, "nearest", True), (0.02, "bilinear", True), (0.05, "nearest", True)])
    ]


def test_sweep_draws_one_panel_per_varied_key_and_categories_for_words(tmp_path):
    fig = sweep(sweep_points(vary_params=False), tmp_path / "sweep.png", TARGET)
    assert [ax.get_title() for ax in fig.axes] == ["model.dropout", "augment.interpolation"]
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["nearest", "bilinear"]
    assert fig.axes[1].get_xlim() == (-0.5, 1.5)  # categories sit inside the panel, not on its edges


def test_sweep_adds_a_pareto_panel_when_params_vary(tmp_path):
    fig = sweep(sweep_points(vary_params=True), tmp_path / "sweep.png", TARGET)
    assert [ax.get_title() for ax in fig.axes][-1] == "accuracy against size"
    assert fig.axes[-1].get_ylim()[0] < 99.3 and TARGET < fig.axes[-1].get_ylim()[1]


def grid_points():
    """A 2 x 3 grid of widths, as `--vary model.blocks[4].out=12,16 --vary model.blocks[5].out=12,16,20`."""
    return [
        SweepPoint(
            {"model.blocks[4].out": a, "model.blocks[5].out": b}, 100 * a + 10 * b, [99.3 + b / 100], int(a > 12)
        )
        for a in (12, 16)
        for b in (12, 16, 20)
    ]


def test_a_panel_draws_a_line_per_value_of_the_other_keys_with_a_tick_per_value(tmp_path):
    fig = sweep(grid_points(), tmp_path / "sweep.png", TARGET)
    first, second = fig.axes[0], fig.axes[1]
    labels = [t.get_text() for t in first.get_legend().get_texts()]
    assert labels[1:] == ["blocks[5].out=12", "blocks[5].out=16", "blocks[5].out=20"]
    assert [t.get_text() for t in second.get_legend().get_texts()][1:] == ["blocks[4].out=12", "blocks[4].out=16"]
    assert list(first.get_xticks()) == [12, 16] and list(second.get_xticks()) == [12, 16, 20]


def test_the_pareto_panel_fills_the_points_that_hold_on_every_seed(tmp_path):
    fig = sweep(grid_points(), tmp_path / "sweep.png", TARGET)
    pareto = fig.axes[-1]
    # an errorbar container's first line is its markers
    holds = [c for c in pareto.containers if c.get_label() == "holds on every seed"][0].lines[0]
    misses = [c for c in pareto.containers if c.get_label() == "misses on a seed"][0].lines[0]
    assert sorted(holds.get_xdata()) == [1720, 1760, 1800] and sorted(misses.get_xdata()) == [1320, 1360, 1400]
    assert holds.get_markerfacecolor() != "white" and misses.get_markerfacecolor() == "white"


def test_pareto_front_keeps_only_the_points_no_smaller_model_beats():
    points = [
        SweepPoint({}, 5_000, [99.30], 0),
        SweepPoint({}, 6_000, [99.20], 0),
        SweepPoint({}, 7_000, [99.45], 1),
        SweepPoint({}, 8_000, [99.40], 1),
    ]
    assert pareto_front(points) == [0, 2]


@pytest.mark.parametrize("vary_params", [False, True])
def test_sweep_is_written_as_png(tmp_path, vary_params):
    sweep(sweep_points(vary_params), tmp_path / "sweep.png", TARGET)
    assert_png(tmp_path / "sweep.png")


def test_sweep_of_one_variant_still_draws(tmp_path):
    sweep([SweepPoint({"model.dropout": 0.02}, 7_756, [99.5], 1)], tmp_path / "sweep.png", TARGET)
    assert_png(tmp_path / "sweep.png", min_width=300)


def one_seed_points(accs):
    return [SweepPoint({"model.dropout": d}, 7_756, [a], seeds_holding=0) for d, a in zip((0.0, 0.02, 0.05), accs)]


@pytest.mark.parametrize(
    "accs, target_shown",
    [([96.05, 96.08, 96.10], False), ([99.30, 99.35, 99.38], True)],  # 3.3 points below the target; close to it
)
def test_the_sweep_draws_the_target_only_where_it_is_on_the_axis(tmp_path, accs, target_shown):
    ax = sweep(one_seed_points(accs), tmp_path / "sweep.png", TARGET).axes[0]
    lo, hi = ax.get_ylim()
    labels = [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []
    assert (f"target {TARGET:g} %" in labels) == target_shown
    assert any(line.get_label().startswith("target") for line in ax.get_lines()) == target_shown
    assert (lo <= TARGET <= hi) == target_shown


def test_a_sweep_axis_pads_a_narrow_spread_instead_of_stretching_it(tmp_path):
    ax = sweep(one_seed_points([96.05, 96.08, 96.10]), tmp_path / "sweep.png", TARGET).axes[0]
    lo, hi = ax.get_ylim()
    assert hi - lo >= 0.5 and lo < 96.05 - 0.1 and hi > 96.10 + 0.1  # 0.05 points sit in the middle of the axis
