"""Dropout for the CPU that draws where the zeros go instead of a random number per activation.

Why: torch's CPU kernel draws one number per element, 29 % of a training step at p = 0.02 on 2 cores,
where the gaps between the zeros need about n*p. Same distribution as nn.Dropout (tests/test_fast_dropout.py),
so every block uses it; off the CPU torch's own kernel runs. Measured by: `mnist-drill bench
configs/step7_lr_scheduler.yaml --device cpu` (against the classic loop's nn.Dropout) and
`python benchmarks/profile_step.py configs/step7_lr_scheduler.yaml` (the draw's share of a step).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def dropped_positions(n: int, p: float, device: torch.device) -> torch.Tensor:
    """The sorted indices in [0, n) that i.i.d. Bernoulli(p) trials hit, drawn as the gaps between hits,
    which are i.i.d. Geometric(p): about n*p random numbers for the same distribution as n trials."""
    log_keep = math.log1p(-p)
    found, last = [], -1
    while last < n - 1:
        expected = (n - 1 - last) * p
        draws = int(expected + 6 * math.sqrt(expected) + 16)  # one round almost always covers [0, n)
        gaps = torch.rand(draws, dtype=torch.float64, device=device)  # u in [0, 1), so 1 - u is in (0, 1]
        gaps.neg_().log1p_().div_(log_keep).floor_().add_(1)  # P(gap > k) = (1 - p)^k
        # Whole numbers far below 2**53, so float64 sums are exact; in place, and long only at the
        # end, because each extra pass and allocation showed in the profile of a training step.
        hits = torch.cumsum(gaps, 0).add_(last)
        found.append(hits)
        last = int(hits[-1])
    hits = found[0] if len(found) == 1 else torch.cat(found)
    return hits[: int(torch.searchsorted(hits, n))].long()  # sorted: a slice, not a boolean mask


def _storage(t: torch.Tensor) -> torch.Tensor:
    """A fresh dense tensor's elements as one flat view in memory order (an i.i.d. mask ignores the layout)."""
    return t.as_strided((t.numel(),), (1,))


class _DropPositions(torch.autograd.Function):
    """y = x / (1 - p) with the dropped positions set to 0, and the same for the gradient: one scaling pass
    each way plus a scatter of ~n*p zeros, where a mask would cost a fill and a multiply each way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        out = x * (1 / (1 - p))  # a new dense tensor in x's memory format
        dropped = dropped_positions(out.numel(), p, x.device)
        _storage(out).index_fill_(0, dropped, 0)
        ctx.save_for_backward(dropped)
        ctx.scale, ctx.size, ctx.stride = 1 / (1 - p), out.size(), out.stride()
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (dropped,) = ctx.saved_tensors
        # Same strides as the forward output, so a storage position is the same element in both.
        grad_x = torch.empty_strided(ctx.size, ctx.stride, dtype=grad.dtype, device=grad.device)
        torch.mul(grad, ctx.scale, out=grad_x)
        _storage(grad_x).index_fill_(0, dropped, 0)
        return grad_x, None


class FastDropout(nn.Module):
    """Element-wise dropout with nn.Dropout's meaning, drawing the dropped positions on the CPU."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        return _DropPositions.apply(x, self.p)
