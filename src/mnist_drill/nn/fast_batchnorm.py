"""A faster training-mode BatchNorm2d for channels_last maps with few channels on the CPU.

Opt-in (`train.fast_batchnorm: true`): it rounds differently from torch's kernel. torch's channels_last
kernel vectorizes across channels, and with fewer than one AVX-512 register (16 floats) it was 3-4x slower
(benchmarks/bn_layout_xeon.txt), a fifth of a step for the drill's 8- and 10-channel layers. Here the
(N*H*W, C) memory is read as (N*H, W*C) rows, so sums and per-channel scales are long vectorized passes.
Measured by: `python benchmarks/bn_layout.py` (one layer, forward + backward, against torch's) and
`mnist-drill bench configs/step7_lr_scheduler.yaml --device cpu --set train.fast_batchnorm=true`.
"""

from __future__ import annotations

import torch
from torch import nn

FEW_CHANNELS = 16  # from here on torch's kernel is the faster one (benchmarks/bn_layout_xeon.txt)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """A channels_last (N, C, H, W) tensor's memory as an (N*H, W*C) matrix (a view, no copy)."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).reshape(n * h, w * c)


def _channel_sums(rows: torch.Tensor, w: int, c: int) -> torch.Tensor:
    return rows.sum(0).view(w, c).sum(0)


class _FastBatchNormFunction(torch.autograd.Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the batch statistics, and its gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float):
        n, c, h, w = x.shape
        count = n * h * w
        mean = _channel_sums(_rows(x), w, c) / count
        centered = _rows(x) - mean.repeat(w)  # two passes (mean, then variance), as torch's kernel
        var = _channel_sums(centered * centered, w, c) / count
        invstd = torch.rsqrt(var + eps)
        out = torch.empty_like(x)  # channels_last, and not a view: the ReLU after it works in place
        torch.addcmul(bias.repeat(w), centered, (weight * invstd).repeat(w), out=_rows(out))
        ctx.save_for_backward(centered, invstd, weight)
        ctx.dims = (n, c, h, w)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad_out, _grad_mean, _grad_var):
        centered, invstd, weight = ctx.saved_tensors
        n, c, h, w = ctx.dims
        count = n * h * w
        grad = _rows(grad_out.contiguous(memory_format=torch.channels_last))
        sum_grad = _channel_sums(grad, w, c)
        sum_grad_centered = _channel_sums(grad * centered, w, c)
        scale = weight * invstd
        # dx = scale * (g - mean(g) - centered * invstd^2 * mean(g * centered)), as two fused passes.
        grad_x = torch.addcmul((-scale * sum_grad / count).repeat(w), grad, scale.repeat(w))
        grad_x.addcmul_(centered, (-scale * invstd * invstd * sum_grad_centered / count).repeat(w))
        return (grad_x.view(n, h, w, c).permute(0, 3, 1, 2), sum_grad_centered * invstd, sum_grad, None)


class FastBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d that trains through _FastBatchNormFunction where torch's kernel is slow (fp32 channels_last
    input with fewer than FEW_CHANNELS channels on the CPU); elsewhere, evaluation included, it is its own."""

    def _applies(self, x: torch.Tensor) -> bool:
        return (
            self.training
            and self.affine
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 4
            and 1 < x.size(1) < FEW_CHANNELS
            and x.numel() > x.size(1)
            and x.is_contiguous(memory_format=torch.channels_last)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._applies(x):
            return super().forward(x)
        out, mean, var = _FastBatchNormFunction.apply(x, self.weight, self.bias, self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                count = x.numel() // x.size(1)
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(var * (count / max(count - 1, 1)), factor)  # unbiased, as torch's
        return out


def use_fast_batchnorm(model: nn.Module) -> nn.Module:
    """Make every nn.BatchNorm2d in model a FastBatchNorm2d, in place. The subclass adds methods only, so
    swapping the class keeps each layer's parameters, buffers, device and mode as they are."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = FastBatchNorm2d
    return model
