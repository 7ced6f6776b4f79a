"""Every block type: the shape its spec predicts is the shape torch computes, and its parameters
are the hand-computed number."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnist_drill import blocks
from mnist_drill.blocks import (BLOCK_SPECS, ConvSpec, Defaults, Dropout, GapSpec, HeadSpec, LargeConvSpec, LinearSpec,
                                MaxPoolSpec, Op, PointwiseSpec, SepConvSpec, TransitionSpec, dropped_positions,
                                out_size)

NO_BN, BN = Defaults(bn=False), Defaults(bn=True)

# (spec, in channels, in size, model defaults, expected params, expected output shape, expected MACs)
CASES = {
    "conv 3x3 8->16": (ConvSpec(out=16), 8, 12, NO_BN, 8 * 16 * 9, (16, 10, 10), 100 * 16 * 8 * 9),
    "conv 3x3 8->16 +BN": (ConvSpec(out=16), 8, 12, BN, 1152 + 32, (16, 10, 10), 100 * 16 * 8 * 9),
    "conv 3x3 own bn=false beats model bn": (ConvSpec(out=16, bn=False), 8, 12, BN, 1152, (16, 10, 10), 115200),
    "conv 3x3 bias pad 1": (ConvSpec(out=16, bias=True, padding=1), 8, 12, NO_BN, 1152 + 16, (16, 12, 12),
                            144 * 16 * 8 * 9),
    "conv 3x3 stride 2 pad 1": (ConvSpec(out=4, stride=2, padding=1), 2, 12, NO_BN, 72, (4, 6, 6), 36 * 72),
    "conv 3x3 dilation 2": (ConvSpec(out=4, dilation=2), 2, 12, NO_BN, 72, (4, 8, 8), 64 * 72),
    "conv 5x5": (ConvSpec(out=4, kernel=5), 1, 28, NO_BN, 100, (4, 24, 24), 576 * 100),
    "pointwise 8->16": (PointwiseSpec(out=16), 8, 12, NO_BN, 128, (16, 12, 12), 144 * 128),
    "pointwise 8->16 +BN +bias": (PointwiseSpec(out=16, bias=True), 8, 12, BN, 128 + 16 + 32, (16, 12, 12),
                                  144 * 128),
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
    built = spec.build(cin, size, defaults)
    predicted = size
    for op in built.ops:
        predicted = out_size(predicted, op)
    predicted_shape = (built.out_channels,) if built.flat else (built.out_channels, predicted, predicted)
    assert predicted_shape == shape
    built.module.eval()
    with torch.no_grad():
        real = built.module(torch.randn(2, cin, size, size))
    assert tuple(real.shape[1:]) == shape
    assert sum(p.numel() for p in built.module.parameters()) == params
    assert built.macs == macs


@pytest.mark.parametrize("spec, defaults, bn, dropout", [
    (ConvSpec(out=4), Defaults(bn=True, dropout=0.1), True, True),
    (ConvSpec(out=4, bn=False, dropout=0.0), Defaults(bn=True, dropout=0.1), False, False),
    (ConvSpec(out=4, bn=True, dropout=0.2), Defaults(), True, True),
    (SepConvSpec(out=4), Defaults(bn=True, dropout=0.1), True, True),
    (PointwiseSpec(out=4), Defaults(bn=True, dropout=0.1), True, True),
    (TransitionSpec(out=4), Defaults(bn=True, dropout=0.1), True, True),
    (LinearSpec(out=4), Defaults(bn=True, dropout=0.1), False, True),
    (HeadSpec(out=4), Defaults(bn=True, dropout=0.1), False, False),
    (LargeConvSpec(out=4), Defaults(bn=True, dropout=0.1), False, False),
])
def test_blocks_inherit_model_defaults_unless_they_set_their_own(spec, defaults, bn, dropout):
    module = spec.build(2, 6, defaults).module
    kinds = [type(m) for m in module.modules()]
    assert (nn.BatchNorm2d in kinds) == bn
    assert (Dropout in kinds) == dropout
    if dropout:
        rate = next(m.p for m in module.modules() if isinstance(m, Dropout))
        assert rate == (spec.dropout if spec.dropout is not None else defaults.dropout)


@pytest.mark.parametrize("spec", [HeadSpec(out=10), LargeConvSpec(out=10)])
def test_output_layers_have_no_relu(spec):
    assert not any(isinstance(m, nn.ReLU) for m in spec.build(4, 3, Defaults(bn=True)).module.modules())


def test_sepconv_is_depthwise_then_pointwise():
    module = SepConvSpec(out=16).build(8, 10, Defaults()).module
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.groups, c.kernel_size) for c in convs] == [
        (8, 8, 8, (3, 3)), (8, 16, 1, (1, 1))]


@pytest.mark.parametrize("op, size, expected", [
    (Op(3), 28, 26),
    (Op(3, padding=1), 28, 28),
    (Op(3, stride=2, padding=1), 28, 14),
    (Op(3, dilation=2), 28, 24),
    (Op(2, 2), 13, 6),
    (Op(7), 7, 1),
])
def test_out_size(op, size, expected):
    assert out_size(size, op) == expected


@pytest.mark.parametrize("make, message", [
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
])
def test_specs_reject_out_of_range_values(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ---------------------------------------------------------------- dropout

@pytest.mark.parametrize("n, p", [(1, 0.5), (10, 0.02), (200_000, 0.02), (200_000, 0.3)])
def test_dropped_positions_are_sorted_distinct_and_in_range(n, p):
    torch.manual_seed(0)
    hits = dropped_positions(n, p, torch.device("cpu"))
    assert hits.dtype == torch.long
    assert bool((hits >= 0).all()) and bool((hits < n).all())
    assert bool((hits[1:] > hits[:-1]).all())


@pytest.mark.parametrize("p", [0.02, 0.1, 0.5])
def test_dropped_positions_hit_each_element_with_probability_p_over_the_whole_range(p):
    torch.manual_seed(1)
    n, draws = 50_000, 40
    counts = torch.zeros(n)
    for _ in range(draws):
        counts[dropped_positions(n, p, torch.device("cpu"))] += 1
    # Per tenth of the range: mean rate within 6 standard errors of p (a truncated draw fails the last tenth).
    per_tenth = counts.view(10, -1).mean(1) / draws
    se = (p * (1 - p) / (draws * n / 10)) ** 0.5
    assert torch.allclose(per_tenth, torch.full((10,), p), atol=6 * se)
    # Independent neighbours: the rate of a hit next to a hit is p as well.
    both = ((counts[1:] > 0) & (counts[:-1] > 0)).float().mean()
    either = 1 - (1 - p) ** draws
    assert abs(both.item() - either ** 2) < 0.02


def test_dropout_zeroes_and_scales_like_torch():
    torch.manual_seed(2)
    x = torch.rand(64, 16, 24, 24) + 1  # no zeros of its own
    out = Dropout(0.25).train()(x)
    dropped = out == 0
    assert abs(dropped.float().mean().item() - 0.25) < 0.005
    assert torch.allclose(out[~dropped], x[~dropped] / 0.75)


def test_dropout_keeps_channels_last_and_passes_gradients_through_the_kept_elements():
    torch.manual_seed(3)
    x = torch.randn(8, 4, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = Dropout(0.5).train()(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    out.sum().backward()
    kept = out.detach() != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 2.0))
    assert bool((x.grad[~kept] == 0).all())


@pytest.mark.parametrize("grad_format", [torch.contiguous_format, torch.channels_last])
def test_dropout_gradient_is_the_upstream_gradient_through_the_same_mask(grad_format):
    torch.manual_seed(4)
    x = (torch.rand(4, 16, 6, 6) + 1).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = Dropout(0.3).train()(x)
    upstream = torch.randn(4, 16, 6, 6).contiguous(memory_format=grad_format)
    out.backward(upstream)
    kept = (out.detach() != 0).float()
    assert torch.allclose(x.grad, upstream * kept / 0.7)


def test_dropout_is_the_identity_in_eval_mode_and_at_p_zero():
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_dropout_masks_repeat_with_the_seed():
    x = torch.ones(2, 8, 10, 10)
    masks = []
    for _ in range(2):
        torch.manual_seed(7)
        masks.append(Dropout(0.1).train()(x))
    assert torch.equal(*masks)


def test_dropout_off_the_cpu_is_torchs_kernel(monkeypatch):
    # "meta" stands in for CUDA here: a device that is not the CPU, available without a GPU.
    def no_cpu_draw(*args):
        raise AssertionError("the CPU position draw ran off the CPU")

    monkeypatch.setattr(blocks, "dropped_positions", no_cpu_draw)
    x = torch.empty(4, 8, 6, 6, device="meta").contiguous(memory_format=torch.channels_last)
    out = Dropout(0.1).train()(x)
    assert out.device.type == "meta" and out.shape == x.shape
