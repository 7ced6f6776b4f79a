"""Every block type: the shape its spec predicts is the shape torch computes, and its parameters
(counted from the spec and from the module) are the hand-computed number."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnist_drill.config.blocks import (
    BLOCK_SPECS,
    ConvSpec,
    GapSpec,
    HeadSpec,
    LargeConvSpec,
    LinearSpec,
    MaxPoolSpec,
    Op,
    PointwiseSpec,
    SepConvSpec,
    TransitionSpec,
    out_size,
    with_model_defaults,
)
from mnist_drill.config.schema import ModelConfig
from mnist_drill.nn.fast_dropout import FastDropout
from mnist_drill.nn.layers import build_block

NO_BN, BN = ModelConfig(bn=False), ModelConfig(bn=True)


def module(spec, defaults, cin: int, size: int) -> nn.Module:
    return build_block(with_model_defaults(spec, defaults), cin, size)


# (spec, in channels, in size, model defaults, expected params, expected output shape, expected MACs)
CASES = {
    "conv 3x3 8->16": (ConvSpec(out=16), 8, 12, NO_BN, 8 * 16 * 9, (16, 10, 10), 100 * 16 * 8 * 9),
    "conv 3x3 8->16 +BN": (ConvSpec(out=16), 8, 12, BN, 1152 + 32, (16, 10, 10), 100 * 16 * 8 * 9),
    "conv 3x3 own bn=false beats model bn": (ConvSpec(out=16, bn=False), 8, 12, BN, 1152, (16, 10, 10), 115200),
    "conv 3x3 bias pad 1": (
        ConvSpec(out=16, bias=True, padding=1),
        8,
        12,
        NO_BN,
        1152 + 16,
        (16, 12, 12),
        144 * 16 * 8 * 9,
    ),
    "conv 3x3 stride 2 pad 1": (ConvSpec(out=4, stride=2, padding=1), 2, 12, NO_BN, 72, (4, 6, 6), 36 * 72),
    "conv 3x3 dilation 2": (ConvSpec(out=4, dilation=2), 2, 12, NO_BN, 72, (4, 8, 8), 64 * 72),
    "conv 5x5": (ConvSpec(out=4, kernel=5), 1, 28, NO_BN, 100, (4, 24, 24), 576 * 100),
    "pointwise 8->16": (PointwiseSpec(out=16), 8, 12, NO_BN, 128, (16, 12, 12), 144 * 128),
    "pointwise 8->16 +BN +bias": (PointwiseSpec(out=16, bias=True), 8, 12, BN, 128 + 16 + 32, (16, 12, 12), 144 * 128),
    "sepconv 3x3 8->16": (SepConvSpec(out=16), 8, 12, NO_BN, 72 + 128, (16, 10, 10), 100 * 72 + 100 * 128),
    "sepconv 3x3 8->16 +BN": (SepConvSpec(out=16), 8, 12, BN, 72 + 128 + 32, (16, 10, 10), 100 * 72 + 100 * 128),
    "sepconv pad 1": (SepConvSpec(out=16, padding=1), 8, 12, NO_BN, 200, (16, 12, 12), 144 * 72 + 144 * 128),
    "maxpool 2": (MaxPoolSpec(), 8, 12, NO_BN, 0, (8, 6, 6), 0),
    "maxpool 2 odd map": (MaxPoolSpec(), 8, 13, NO_BN, 0, (8, 6, 6), 0),
    "maxpool 3 stride 1": (MaxPoolSpec(kernel=3, stride=1), 8, 12, NO_BN, 0, (8, 10, 10), 0),
    "transition 16->8": (TransitionSpec(out=8), 16, 12, NO_BN, 128, (8, 6, 6), 36 * 128),
    "transition 16->8 +BN": (TransitionSpec(out=8), 16, 12, BN, 128 + 16, (8, 6, 6), 36 * 128),
    "gap": (GapSpec(), 16, 7, NO_BN, 0, (16, 1, 1), 0),
    "large_conv whole map": (LargeConvSpec(out=10), 16, 6, NO_BN, 16 * 10 * 36, (10, 1, 1), 5760),
    "large_conv kernel 3": (LargeConvSpec(out=10, kernel=3), 16, 6, NO_BN, 16 * 10 * 9, (10, 4, 4), 16 * 1440),
    "large_conv ignores model bn": (LargeConvSpec(out=10), 16, 6, BN, 5760, (10, 1, 1), 5760),
    "head 16->10": (HeadSpec(), 16, 1, NO_BN, 160, (10, 1, 1), 160),
    "head 16->10 ignores model bn": (HeadSpec(), 16, 1, BN, 160, (10, 1, 1), 160),
    "head bias": (HeadSpec(bias=True), 32, 1, NO_BN, 330, (10, 1, 1), 320),
    "linear 2048->1024": (LinearSpec(out=1024), 32, 8, NO_BN, 2048 * 1024 + 1024, (1024,), 2048 * 1024),
    "linear 1024->10 no relu": (LinearSpec(out=10, relu=False), 1024, 1, NO_BN, 10250, (10,), 10240),
    "linear no bias": (LinearSpec(out=10, bias=False), 4, 3, NO_BN, 360, (10,), 360),
}


def test_every_block_type_is_covered():
    assert {spec.TYPE for spec, *_ in CASES.values()} == set(BLOCK_SPECS)


def test_registry_maps_each_yaml_name_to_its_spec():
    for name, spec in BLOCK_SPECS.items():
        assert spec.TYPE == name


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_predicted_shape_params_and_macs(case):
    spec, cin, size, defaults, params, shape, macs = case
    predicted = with_model_defaults(spec, defaults).shape(cin, size)
    out = size
    for op in predicted.ops:
        out = out_size(out, op)
    predicted_shape = (predicted.out_channels,) if predicted.flat else (predicted.out_channels, out, out)
    assert predicted_shape == shape
    built = module(spec, defaults, cin, size).eval()
    with torch.no_grad():
        real = built(torch.randn(2, cin, size, size))
    assert tuple(real.shape[1:]) == shape
    assert sum(p.numel() for p in built.parameters()) == predicted.params == params
    assert predicted.macs == macs


@pytest.mark.parametrize(
    "spec, defaults, bn, dropout",
    [
        (ConvSpec(out=4), ModelConfig(bn=True, dropout=0.1), True, True),
        (ConvSpec(out=4, bn=False, dropout=0.0), ModelConfig(bn=True, dropout=0.1), False, False),
        (ConvSpec(out=4, bn=True, dropout=0.2), ModelConfig(), True, True),
        (SepConvSpec(out=4), ModelConfig(bn=True, dropout=0.1), True, True),
        (PointwiseSpec(out=4), ModelConfig(bn=True, dropout=0.1), True, True),
        (TransitionSpec(out=4), ModelConfig(bn=True, dropout=0.1), True, True),
        (LinearSpec(out=4), ModelConfig(bn=True, dropout=0.1), False, True),
        (HeadSpec(out=4), ModelConfig(bn=True, dropout=0.1), False, False),
        (LargeConvSpec(out=4), ModelConfig(bn=True, dropout=0.1), False, False),
    ],
)
def test_blocks_inherit_model_defaults_unless_they_set_their_own(spec, defaults, bn, dropout):
    built = module(spec, defaults, 2, 6)
    kinds = [type(m) for m in built.modules()]
    assert (nn.BatchNorm2d in kinds) == bn
    assert (FastDropout in kinds) == dropout
    if dropout:
        rate = next(m.p for m in built.modules() if isinstance(m, FastDropout))
        assert rate == (spec.dropout if spec.dropout is not None else defaults.dropout)


@pytest.mark.parametrize("spec", [HeadSpec(out=10), LargeConvSpec(out=10)])
def test_output_layers_have_no_relu(spec):
    assert not any(isinstance(m, nn.ReLU) for m in module(spec, BN, 4, 3).modules())


def test_sepconv_is_depthwise_then_pointwise():
    convs = [m for m in module(SepConvSpec(out=16), NO_BN, 8, 10).modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.groups, c.kernel_size) for c in convs] == [
        (8, 8, 8, (3, 3)),
        (8, 16, 1, (1, 1)),
    ]


@pytest.mark.parametrize(
    "op, size, expected",
    [
        (Op(3), 28, 26),
        (Op(3, padding=1), 28, 28),
        (Op(3, stride=2, padding=1), 28, 14),
        (Op(3, dilation=2), 28, 24),
        (Op(2, 2), 13, 6),
        (Op(7), 7, 1),
    ],
)
def test_out_size(op, size, expected):
    assert out_size(size, op) == expected


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ConvSpec(out=0), "out"),
        (lambda: ConvSpec(out=4, kernel=0), "kernel"),
        (lambda: ConvSpec(out=4, stride=0), "stride"),
        (lambda: ConvSpec(out=4, dilation=0), "dilation"),
        (lambda: ConvSpec(out=4, padding=-1), "padding"),
        (lambda: ConvSpec(out=4, dropout=1.0), "dropout"),
        (lambda: TransitionSpec(out=4, pool=0), "pool"),
        (lambda: MaxPoolSpec(kernel=0), "kernel"),
        (lambda: HeadSpec(out=0), "out"),
        (lambda: LinearSpec(out=0), "out"),
    ],
)
def test_specs_reject_out_of_range_values(make, message):
    with pytest.raises(ValueError, match=message):
        make()
