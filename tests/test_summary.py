"""The layer-by-layer summary: the table, the totals, and no side effects on the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnist_drill.config.blocks import ConvSpec, GapSpec, HeadSpec, LargeConvSpec, MaxPoolSpec, TransitionSpec
from mnist_drill.config.loader import load_config
from mnist_drill.nn.model import build_model
from mnist_drill.nn.summary import _describe, layer_table, summary_text

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "configs" / "seeds" / "seed002_12k.yaml"


def table_rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.split() and line.split()[0].isdigit()]


def test_layer_table_of_the_reference_model():
    cfg = load_config(SEED)
    _, layers = build_model(cfg.model)
    text = layer_table(cfg, layers)
    lines = text.splitlines()
    assert lines[0].split() == ["#", "block", "output", "params", "RF", "jump", "MACs"]
    assert lines[2].split() == ["input", "1x28x28", "1", "1"]
    rows = table_rows(text)
    assert [r[-5] for r in rows] == [
        "8x26x26",
        "16x24x24",
        "32x22x22",
        "8x11x11",
        "16x9x9",
        "32x7x7",
        "32x1x1",
        "10x1x1",
    ]
    assert [r[-4] for r in rows] == ["96", "1,200", "4,704", "280", "1,200", "4,704", "0", "330"]
    assert [int(r[-3]) for r in rows] == [3, 5, 7, 8, 12, 16, 28, 28]
    assert [int(r[-2]) for r in rows] == [1, 1, 1, 2, 2, 2, 2, 2]


@pytest.mark.parametrize(
    "spec, text",
    [
        (ConvSpec(out=16), "conv 3x3 -> 16"),
        (ConvSpec(out=16, padding=1), "conv 3x3 p1 -> 16"),
        (ConvSpec(out=8, dilation=2, stride=2), "conv 3x3 d2 s2 -> 8"),
        (MaxPoolSpec(), "maxpool 2x2"),
        (TransitionSpec(out=8), "transition 2x2 -> 8"),
        (GapSpec(), "gap"),
        (HeadSpec(), "head -> 10"),
        (LargeConvSpec(out=10, kernel=6), "large_conv 6x6 -> 10"),
    ],
)
def test_describe(spec, text):
    assert _describe(spec) == text


def test_summary_text_totals():
    cfg = load_config(SEED)
    model, layers = build_model(cfg.model)
    text = summary_text(cfg, model, layers)
    assert text.startswith("Model of seed002_12k: reference model")
    assert "Total params:      12,514" in text and "Trainable params:  12,514" in text
    assert "MACs per image:    3,292,896" in text
    assert "Receptive field:   28 px at the output (input 28 px)" in text
    assert "Fully connected:   no" in text
    assert "Total params: 12,514" in text  # torchsummary's own count agrees


def test_summary_marks_a_fully_connected_model():
    cfg = load_config(REPO / "configs" / "step0_setup.yaml")
    model, layers = build_model(cfg.model)
    assert "Fully connected:   yes" in summary_text(cfg, model, layers)


def test_summary_does_not_change_the_model():
    # run_step writes summary.txt from the very model it is about to train; describing it must not
    # touch its weights or BatchNorm statistics (torchsummary runs a forward pass in train mode).
    cfg = load_config(SEED)
    model, layers = build_model(cfg.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary_text(cfg, model, layers)
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []
