"""The building blocks a model YAML can name, and the one registry that maps names to them.

Each block has a frozen spec (its YAML keys) and a small module. A spec also states its geometry
(the kernel/stride/dilation/padding of each spatial op) so shapes, receptive field and
multiply-accumulates are computed from the specs alone, without running the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn


class Op(NamedTuple):
    """One spatial operation, for shape and receptive-field arithmetic."""

    kernel: int
    stride: int = 1
    dilation: int = 1
    padding: int = 0


class Built(NamedTuple):
    module: nn.Module
    out_channels: int
    ops: list[Op]  # spatial ops in order (empty for 1x1-only or flat blocks)
    macs: int  # multiply-accumulates per image
    flat: bool = False  # the output is a feature vector, not a map


class BlockSpec:
    """Base of every block spec; TYPE is the name used in YAML."""

    TYPE: ClassVar[str] = ""


@dataclass(frozen=True)
class Defaults:
    """Model-wide defaults a block inherits when its own field is null."""

    bn: bool = False
    dropout: float = 0.0


def out_size(size: int, op: Op) -> int:
    return (size + 2 * op.padding - op.dilation * (op.kernel - 1) - 1) // op.stride + 1


def _check_common(spec) -> None:
    if spec.out < 1:
        raise ValueError("out: must be >= 1")
    if getattr(spec, "dropout", None) is not None and not 0 <= spec.dropout < 1:
        raise ValueError("dropout: must be in [0, 1)")
    for name in ("kernel", "stride", "dilation"):
        if getattr(spec, name, 1) is not None and getattr(spec, name, 1) < 1:
            raise ValueError(f"{name}: must be >= 1")
    if getattr(spec, "padding", 0) < 0:
        raise ValueError("padding: must be >= 0")


# ---------------------------------------------------------------- modules

def dropped_positions(n: int, p: float, device: torch.device) -> torch.Tensor:
    """The sorted indices in [0, n) that an i.i.d. Bernoulli(p) draw over n elements hits.

    The gaps between the hits of i.i.d. Bernoulli(p) trials are i.i.d. Geometric(p), so drawing the
    gaps (about n*p random numbers) gives the same distribution as drawing all n trials.
    """
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
    return hits[:int(torch.searchsorted(hits, n))].long()  # sorted: a slice, not a boolean mask


def _storage(t: torch.Tensor) -> torch.Tensor:
    """All of a freshly allocated dense tensor's elements as one flat view, in memory order (which
    differs from the logical order for channels_last; an i.i.d. mask doesn't care)."""
    return t.as_strided((t.numel(),), (1,))


class _DropPositions(torch.autograd.Function):
    """y = x / (1 - p) with the dropped positions set to 0, and the same for the gradient.

    One scaling pass each way plus a scatter of ~n*p zeros, where a mask tensor would cost a fill and
    a tensor multiply forward and another multiply backward.
    """

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


class Dropout(nn.Module):
    """Element-wise dropout with nn.Dropout's meaning (zero each element with probability p, scale
    the rest by 1/(1-p)), drawing the dropped positions from the gaps between them on the CPU.

    torch's CPU kernel draws one random number per element; at p=0.02 that was 29 % of a training
    step on 2 cores (benchmarks/README.md). Drawing the gaps needs about n*p numbers instead. On
    CUDA torch's kernel is already fast and needs no host sync, so it is used there.
    """

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


class ConvBNReLU(nn.Sequential):
    """conv -> [BatchNorm] -> [ReLU] -> [Dropout], holding only the layers asked for.

    `groups=cin` makes the conv depthwise. A Sequential, so summaries list the real layers only.
    """

    def __init__(self, cin: int, cout: int, kernel: int, *, padding: int = 0, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = False, bn: bool = False,
                 relu: bool = True, dropout: float = 0.0):
        layers = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation,
                            groups=groups, bias=bias)]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(Dropout(dropout))
        super().__init__(*layers)


class SeparableConv(nn.Sequential):
    """Depthwise k x k conv (one filter per channel) then a pointwise 1x1 conv with BN/ReLU/dropout."""

    def __init__(self, cin: int, cout: int, kernel: int, *, padding: int, stride: int, dilation: int,
                 bias: bool, bn: bool, relu: bool, dropout: float):
        super().__init__(
            nn.Conv2d(cin, cin, kernel, stride=stride, padding=padding, dilation=dilation, groups=cin, bias=False),
            ConvBNReLU(cin, cout, 1, bias=bias, bn=bn, relu=relu, dropout=dropout))


class Transition(nn.Sequential):
    """Max-pool (halves the map) then a 1x1 conv that squeezes the channels."""

    def __init__(self, cin: int, cout: int, *, pool: int, bias: bool, bn: bool, relu: bool, dropout: float):
        super().__init__(nn.MaxPool2d(pool, pool),
                         ConvBNReLU(cin, cout, 1, bias=bias, bn=bn, relu=relu, dropout=dropout))


class LinearBlock(nn.Sequential):
    """Flatten -> Linear -> [ReLU] -> [Dropout]: the fully connected layer of the heavy early steps."""

    def __init__(self, fin: int, fout: int, *, bias: bool, relu: bool, dropout: float):
        layers = [nn.Flatten(), nn.Linear(fin, fout, bias=bias)]
        if relu:
            layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(Dropout(dropout))
        super().__init__(*layers)


# ---------------------------------------------------------------- specs

def _pick(own, default):
    return default if own is None else own


@dataclass(frozen=True)
class ConvSpec(BlockSpec):
    """k x k convolution with optional BN, ReLU and dropout."""

    TYPE: ClassVar[str] = "conv"
    out: int
    kernel: int = 3
    padding: int = 0
    stride: int = 1
    dilation: int = 1
    bias: bool = False
    bn: Optional[bool] = None  # null: the model's `bn`
    dropout: Optional[float] = None  # null: the model's `dropout`
    relu: bool = True

    def __post_init__(self):
        _check_common(self)

    def build(self, cin: int, size: int, d: Defaults) -> Built:
        op = Op(self.kernel, self.stride, self.dilation, self.padding)
        module = ConvBNReLU(cin, self.out, self.kernel, padding=self.padding, stride=self.stride,
                            dilation=self.dilation, bias=self.bias, bn=_pick(self.bn, d.bn), relu=self.relu,
                            dropout=_pick(self.dropout, d.dropout))
        hw = out_size(size, op) ** 2
        return Built(module, self.out, [op], hw * self.out * cin * self.kernel ** 2)


@dataclass(frozen=True)
class PointwiseSpec(BlockSpec):
    """1x1 convolution: mixes channels, leaves the map and the receptive field alone."""

    TYPE: ClassVar[str] = "pointwise"
    out: int
    bias: bool = False
    bn: Optional[bool] = None
    dropout: Optional[float] = None
    relu: bool = True

    def __post_init__(self):
        _check_common(self)

    def build(self, cin: int, size: int, d: Defaults) -> Built:
        module = ConvBNReLU(cin, self.out, 1, bias=self.bias, bn=_pick(self.bn, d.bn), relu=self.relu,
                            dropout=_pick(self.dropout, d.dropout))
        return Built(module, self.out, [], size * size * self.out * cin)


@dataclass(frozen=True)
class SepConvSpec(ConvSpec):
    """Depthwise-separable convolution: the same keys as `conv`, ~k*k times fewer weights."""

    TYPE: ClassVar[str] = "sepconv"

    def build(self, cin: int, size: int, d: Defaults) -> Built:
        op = Op(self.kernel, self.stride, self.dilation, self.padding)
        module = SeparableConv(cin, self.out, self.kernel, padding=self.padding, stride=self.stride,
                               dilation=self.dilation, bias=self.bias, bn=_pick(self.bn, d.bn), relu=self.relu,
                               dropout=_pick(self.dropout, d.dropout))
        hw = out_size(size, op) ** 2
        return Built(module, self.out, [op], hw * cin * self.kernel ** 2 + hw * cin * self.out)


@dataclass(frozen=True)
class MaxPoolSpec(BlockSpec):
    TYPE: ClassVar[str] = "maxpool"
    kernel: int = 2
    stride: Optional[int] = None  # null: same as kernel

    def __post_init__(self):
        if self.kernel < 1 or (self.stride is not None and self.stride < 1):
            raise ValueError("kernel: must be >= 1")

    def build(self, cin: int, size: int, d: Defaults) -> Built:
        stride = self.stride or self.kernel
        return Built(nn.MaxPool2d(self.kernel, stride), cin, [Op(self.kernel, stride)], 0)


@dataclass(frozen=True)
class TransitionSpec(BlockSpec):
    """Max-pool then 1x1 squeeze: the end of a convolution block."""

    TYPE: ClassVar[str] = "transition"
    out: int
    pool: int = 2
    bias: bool = False
    bn: Optional[bool] = None
    dropout: Optional[float] = None
    relu: bool = True

    def __post_init__(self):
        _check_common(self)
        if self.pool < 1:
            raise ValueError("pool: must be >= 1")

    def build(self, cin: int, size: int, d: Defaults) -> Built:
        op = Op(self.pool, self.pool)
        module = Transition(cin, self.out, pool=self.pool, bias=self.bias, bn=_pick(self.bn, d.bn),
                            relu=self.relu, dropout=_pick(self.dropout, d.dropout))
        return Built(module, self.out, [op], out_size(size, op) ** 2 * cin * self.out)


@dataclass(frozen=True)
class GapSpec(BlockSpec):
    """Global average pooling: each channel's map becomes one number; no parameters."""

    TYPE: ClassVar[str] = "gap"

    def build(self, cin: int, size: int, d: Defaults) -> Built:
        return Built(nn.AdaptiveAvgPool2d(1), cin, [Op(size)], 0)


@dataclass(frozen=True)
class LargeConvSpec(BlockSpec):
    """A large-kernel conv that collapses the map (the skeleton's 7x7 at the end).

    kernel null means "the whole incoming map". No BN/ReLU by default: it is usually the output layer.
    """

    TYPE: ClassVar[str] = "large_conv"
    out: int
    kernel: Optional[int] = None
    bias: bool = False
    bn: bool = False
    relu: bool = False
    dropout: float = 0.0

    def __post_init__(self):
        _check_common(self)

    def build(self, cin: int, size: int, d: Defaults) -> Built:
        kernel = self.kernel or size
        op = Op(kernel)
        module = ConvBNReLU(cin, self.out, kernel, bias=self.bias, bn=self.bn, relu=self.relu,
                            dropout=self.dropout)
        hw = out_size(size, op) ** 2
        return Built(module, self.out, [op], hw * self.out * cin * kernel ** 2)


@dataclass(frozen=True)
class HeadSpec(BlockSpec):
    """1x1 conv to the class scores: no BN, no ReLU, no dropout before the softmax."""

    TYPE: ClassVar[str] = "head"
    out: int = 10
    bias: bool = False

    def __post_init__(self):
        _check_common(self)

    def build(self, cin: int, size: int, d: Defaults) -> Built:
        module = ConvBNReLU(cin, self.out, 1, bias=self.bias, relu=False)
        return Built(module, self.out, [], size * size * self.out * cin)


@dataclass(frozen=True)
class LinearSpec(BlockSpec):
    """Fully connected layer (flattens its input). The drill's target forbids it."""

    TYPE: ClassVar[str] = "linear"
    out: int
    bias: bool = True
    relu: bool = True
    dropout: Optional[float] = None

    def __post_init__(self):
        _check_common(self)

    def build(self, cin: int, size: int, d: Defaults) -> Built:
        fin = cin * size * size
        module = LinearBlock(fin, self.out, bias=self.bias, relu=self.relu, dropout=_pick(self.dropout, d.dropout))
        return Built(module, self.out, [Op(size)] if size > 1 else [], fin * self.out, flat=True)


BLOCK_SPECS: dict[str, type] = {
    spec.TYPE: spec
    for spec in (ConvSpec, PointwiseSpec, SepConvSpec, MaxPoolSpec, TransitionSpec, GapSpec, LargeConvSpec,
                 HeadSpec, LinearSpec)
}
