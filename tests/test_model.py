"""The builder: per-layer shapes from a real forward pass, receptive field and jump by hand, the
reference model's 12,514 parameters, the step configs, and the errors for models that do not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnist_drill.config.blocks import (
    ConvSpec,
    GapSpec,
    HeadSpec,
    LargeConvSpec,
    LinearSpec,
    MaxPoolSpec,
    PointwiseSpec,
    SepConvSpec,
    TransitionSpec,
    has_fc,
    macs_per_image,
)
from mnist_drill.config.loader import load_config
from mnist_drill.config.schema import ModelConfig
from mnist_drill.errors import ConfigError
from mnist_drill.nn.model import build_model, count_params

REPO = Path(__file__).resolve().parents[1]
STEPS = {p.stem: p for p in sorted((REPO / "configs").glob("step*.yaml"))}
FINISH = (GapSpec(), HeadSpec(out=10))


def input_shape(cfg: ModelConfig) -> tuple[int, int, int]:
    return cfg.in_channels, cfg.input_size, cfg.input_size


def model(*blocks, **kw) -> ModelConfig:
    return ModelConfig(blocks=tuple(blocks), **kw)


def real_shapes(net, cfg: ModelConfig) -> list[tuple[int, ...]]:
    """The output shape of each block from a real forward pass."""
    net.eval()
    x, shapes = torch.zeros(2, *input_shape(cfg)), []
    with torch.no_grad():
        for block in net.blocks:
            x = block(x)
            shapes.append(tuple(x.shape[1:]))
    return shapes


def check_forward(net, cfg: ModelConfig) -> None:
    """One tiny forward pass: the network's output is one log-probability per class."""
    net.eval()
    with torch.no_grad():
        assert net(torch.zeros(2, *input_shape(cfg))).shape == (2, cfg.num_classes)


ALL_TYPES = {
    "conv-like": model(
        ConvSpec(out=8, padding=1),
        SepConvSpec(out=16),
        PointwiseSpec(out=16),
        MaxPoolSpec(),
        TransitionSpec(out=8),
        ConvSpec(out=12, stride=2),
        LargeConvSpec(out=16),
        GapSpec(),
        HeadSpec(out=10),
        bn=True,
        dropout=0.05,
    ),
    "dilated": model(ConvSpec(out=8), MaxPoolSpec(), ConvSpec(out=8, dilation=2), *FINISH),
    "linear": model(
        ConvSpec(out=8), MaxPoolSpec(), ConvSpec(out=8), LinearSpec(out=32), LinearSpec(out=10, relu=False)
    ),
    "small input": model(ConvSpec(out=4), MaxPoolSpec(kernel=3, stride=1), *FINISH, in_channels=3, input_size=9),
}


@pytest.mark.parametrize("cfg", ALL_TYPES.values(), ids=ALL_TYPES.keys())
def test_predicted_shapes_match_a_real_forward_pass(cfg):
    net, layers = build_model(cfg)
    assert [layer.out_shape for layer in layers] == real_shapes(net, cfg)
    # the parameters counted from the specs alone are the ones torch allocates
    assert [layer.params for layer in layers] == [sum(p.numel() for p in b.parameters()) for b in net.blocks]
    assert count_params(net) == (sum(layer.params for layer in layers),) * 2
    check_forward(net, cfg)


@pytest.mark.parametrize(
    "blocks, rf, jump",
    [
        # conv, conv, maxpool, conv: the drill's first block
        ((ConvSpec(out=8), ConvSpec(out=8), MaxPoolSpec(), ConvSpec(out=8)), [3, 5, 6, 10], [1, 1, 2, 2]),
        # dilation 2 after a pool: r += (k - 1) * d * jump = 2 * 2 * 2
        ((ConvSpec(out=8), MaxPoolSpec(), ConvSpec(out=8, dilation=2)), [3, 4, 12], [1, 2, 2]),
        # a stride-2 conv doubles the jump for what follows
        ((ConvSpec(out=8), ConvSpec(out=8, stride=2), ConvSpec(out=8)), [3, 5, 9], [1, 2, 2]),
        # transition = pool 2 + 1x1: like a max-pool; 1x1 convs add nothing
        (
            (ConvSpec(out=8), ConvSpec(out=8), TransitionSpec(out=8), PointwiseSpec(out=8), ConvSpec(out=8)),
            [3, 5, 6, 6, 10],
            [1, 1, 2, 2, 2],
        ),
        # sepconv counts like a conv of its kernel; a 5x5 adds 4 * jump
        ((SepConvSpec(out=8), MaxPoolSpec(), ConvSpec(out=8, kernel=5)), [3, 4, 12], [1, 2, 2]),
    ],
)
def test_receptive_field_and_jump(blocks, rf, jump):
    _, layers = build_model(model(*blocks, *FINISH))
    assert [layer.rf for layer in layers[: len(rf)]] == rf
    assert [layer.jump for layer in layers[: len(jump)]] == jump


def test_gap_and_large_conv_cover_the_whole_map():
    # conv, conv, maxpool, conv -> 10x10 at RF 10, jump 2; a 10x10 kernel adds 9 * 2
    base = (ConvSpec(out=8), ConvSpec(out=8), MaxPoolSpec(), ConvSpec(out=8))
    _, layers = build_model(model(*base, *FINISH))
    assert layers[3].out_shape == (8, 10, 10) and [lay.rf for lay in layers[4:]] == [28, 28]
    _, layers = build_model(model(*base, LargeConvSpec(out=10)))
    assert layers[-1].out_shape == (10, 1, 1) and layers[-1].rf == 28 and layers[-1].params == 8 * 10 * 100


def test_seed_reference_model_has_12514_params_and_rf_28():
    cfg = load_config(REPO / "configs" / "seeds" / "seed002_12k.yaml")
    net, layers = build_model(cfg.model)
    assert count_params(net) == (12_514, 12_514)
    assert [layer.params for layer in layers] == [96, 1200, 4704, 280, 1200, 4704, 0, 330]
    assert [layer.rf for layer in layers] == [3, 5, 7, 8, 12, 16, 28, 28]
    assert layers[-1].out_shape == (10, 1, 1)
    assert not has_fc(cfg.model)


@pytest.mark.parametrize("name", STEPS)
def test_every_step_config_builds_and_runs(name):
    cfg = load_config(STEPS[name])
    net, layers = build_model(cfg.model)
    check_forward(net, cfg.model)
    assert layers[-1].out_shape == (10, 1, 1) or layers[-1].out_shape == (10,)
    if name >= "step4":
        assert count_params(net)[0] < 8000, "steps 4-7 must fit the 8k budget"
        assert not has_fc(cfg.model)
    if name == "step0_setup":
        assert has_fc(cfg.model)
    else:
        assert not has_fc(cfg.model)


def test_step_configs_by_hand():
    # step 0: 72 + 1152 + 4608 + 9216 conv weights, 2048*1024+1024 and 1024*10+10 linear
    net, _ = build_model(load_config(STEPS["step0_setup"]).model)
    assert count_params(net)[0] == 72 + 1152 + 4608 + 9216 + 2_098_176 + 10_250
    # step 1: the skeleton's comments give the RF of each layer
    net, layers = build_model(load_config(STEPS["step1_skeleton"]).model)
    assert [layer.rf for layer in layers] == [3, 5, 6, 10, 14, 18, 28]
    assert count_params(net)[0] == 72 + 1152 + 128 + 864 + 1728 + 2304 + 5760
    # step 7: the final model, under budget, RF covers the digit
    net, layers = build_model(load_config(STEPS["step7_lr_scheduler"]).model)
    assert count_params(net)[0] < 8000 and layers[-1].rf >= 28


@pytest.mark.parametrize(
    "cfg, where",
    [
        # 12 -> 10 -> 5, then a 7x7 does not fit the 5x5 map
        (model(ConvSpec(out=4), MaxPoolSpec(), ConvSpec(out=4, kernel=7), *FINISH, input_size=12), "model.blocks[2]"),
        (model(ConvSpec(out=4, kernel=7), *FINISH, input_size=5), "model.blocks[0]"),
        (model(ConvSpec(out=4), ConvSpec(out=4, kernel=3, dilation=4), *FINISH, input_size=10), "model.blocks[1]"),
        (model(ConvSpec(out=4), MaxPoolSpec(), MaxPoolSpec(), *FINISH, input_size=4), "model.blocks[2]"),
        (model(ConvSpec(out=4), LargeConvSpec(out=10, kernel=9), input_size=8), "model.blocks[1]"),
    ],
)
def test_a_block_that_does_not_fit_is_named(cfg, where):
    with pytest.raises(ConfigError, match=r"does not fit") as info:
        build_model(cfg)
    assert str(info.value).startswith(where)


@pytest.mark.parametrize(
    "cfg, fragment",
    [
        (model(ConvSpec(out=10)), "10x26x26"),
        (model(ConvSpec(out=8), GapSpec()), "8x1x1"),
        (model(ConvSpec(out=8), GapSpec(), HeadSpec(out=5)), "5x1x1"),
        (model(ConvSpec(out=8), LinearSpec(out=12)), "12"),
    ],
)
def test_the_output_must_be_one_score_per_class(cfg, fragment):
    with pytest.raises(ConfigError, match="must output 10 channels at 1x1") as info:
        build_model(cfg)
    assert str(info.value).startswith("model.blocks") and fragment in str(info.value)


def test_other_class_counts_are_allowed():
    _, layers = build_model(model(ConvSpec(out=8), GapSpec(), HeadSpec(out=5), num_classes=5))
    assert layers[-1].out_shape == (5, 1, 1)


def test_nothing_spatial_after_a_linear_layer():
    with pytest.raises(ConfigError, match=r"model.blocks\[2\] \(conv\): follows a linear layer"):
        build_model(model(ConvSpec(out=8), LinearSpec(out=16), ConvSpec(out=10)))


def test_a_model_needs_blocks():
    with pytest.raises(ConfigError, match="no blocks"):
        build_model(ModelConfig())


def test_the_output_is_log_probabilities():
    cfg = load_config(STEPS["step5_capacity"]).model
    net, _ = build_model(cfg)
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(4, *input_shape(cfg)))
    assert out.shape == (4, 10)
    assert (out <= 0).all()
    torch.testing.assert_close(out.exp().sum(1), torch.ones(4))


def test_macs_per_image_sums_the_layers():
    cfg = load_config(REPO / "configs" / "seeds" / "seed002_12k.yaml").model
    _, layers = build_model(cfg)
    assert layers[0].macs == 26 * 26 * 8 * 9
    assert macs_per_image(layers) == sum(layer.macs for layer in layers) == 3_292_896
