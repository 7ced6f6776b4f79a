"""FastDropout has nn.Dropout's meaning: where it zeroes, how it scales, its gradient, its seed."""

from __future__ import annotations

import pytest
import torch

from mnist_drill.nn import fast_dropout
from mnist_drill.nn.fast_dropout import FastDropout, dropped_positions


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
    assert abs(both.item() - either**2) < 0.02


def test_dropout_zeroes_and_scales_like_torch():
    torch.manual_seed(2)
    x = torch.rand(64, 16, 24, 24) + 1  # no zeros of its own
    out = FastDropout(0.25).train()(x)
    dropped = out == 0
    assert abs(dropped.float().mean().item() - 0.25) < 0.005
    assert torch.allclose(out[~dropped], x[~dropped] / 0.75)


def test_dropout_keeps_channels_last_and_passes_gradients_through_the_kept_elements():
    torch.manual_seed(3)
    x = torch.randn(8, 4, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = FastDropout(0.5).train()(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    out.sum().backward()
    kept = out.detach() != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 2.0))
    assert bool((x.grad[~kept] == 0).all())


@pytest.mark.parametrize("grad_format", [torch.contiguous_format, torch.channels_last])
def test_dropout_gradient_is_the_upstream_gradient_through_the_same_mask(grad_format):
    torch.manual_seed(4)
    x = (torch.rand(4, 16, 6, 6) + 1).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = FastDropout(0.3).train()(x)
    upstream = torch.randn(4, 16, 6, 6).contiguous(memory_format=grad_format)
    out.backward(upstream)
    kept = (out.detach() != 0).float()
    assert torch.allclose(x.grad, upstream * kept / 0.7)


def test_dropout_is_the_identity_in_eval_mode_and_at_p_zero():
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(FastDropout(0.5).eval()(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)


def test_dropout_masks_repeat_with_the_seed():
    x = torch.ones(2, 8, 10, 10)
    masks = []
    for _ in range(2):
        torch.manual_seed(7)
        masks.append(FastDropout(0.1).train()(x))
    assert torch.equal(*masks)


def test_dropout_off_the_cpu_is_torchs_kernel(monkeypatch):
    # "meta" stands in for CUDA here: a device that is not the CPU, available without a GPU.
    def no_cpu_draw(*args):
        raise AssertionError("the CPU position draw ran off the CPU")

    monkeypatch.setattr(fast_dropout, "dropped_positions", no_cpu_draw)
    x = torch.empty(4, 8, 6, 6, device="meta").contiguous(memory_format=torch.channels_last)
    out = FastDropout(0.1).train()(x)
    assert out.device.type == "meta" and out.shape == x.shape
