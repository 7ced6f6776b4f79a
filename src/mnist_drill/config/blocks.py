"""The building blocks a model YAML can name, and the one registry that maps names to them.

Each block has a frozen spec (its YAML keys) and a small module. A spec also states its geometry
(the kernel/stride/dilation/padding of each spatial op) so shapes, receptive field and
multiply-accumulates are computed from the specs alone, without running the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from torch import nn

from ..nn.fast_dropout import FastDropout


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


class ConvBNReLU(nn.Sequential):
    """conv -> [BatchNorm] -> [ReLU] -> [Dropout], holding only the layers asked for.

    `groups=cin` makes the conv depthwise. A Sequential, so summaries list the real layers only.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        *,
        padding: int = 0,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        bn: bool = False,
        relu: bool = True,
        dropout: float = 0.0,
    ):
        layers = [
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias)
        ]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(FastDropout(dropout))
        super().__init__(*layers)


class SeparableConv(nn.Sequential):
    """Depthwise k x k conv (one filter per channel) then a pointwise 1x1 conv with BN/ReLU/dropout."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        *,
        padding: int,
        stride: int,
        dilation: int,
        bias: bool,
        bn: bool,
        relu: bool,
        dropout: float,
    ):
        super().__init__(
            nn.Conv2d(cin, cin, kernel, stride=stride, padding=padding, dilation=dilation, groups=cin, bias=False),
            ConvBNReLU(cin, cout, 1, bias=bias, bn=bn, relu=relu, dropout=dropout),
        )


class Transition(nn.Sequential):
    """Max-pool (halves the map) then a 1x1 conv that squeezes the channels."""

    def __init__(self, cin: int, cout: int, *, pool: int, bias: bool, bn: bool, relu: bool, dropout: float):
        super().__init__(
            nn.MaxPool2d(pool, pool), ConvBNReLU(cin, cout, 1, bias=bias, bn=bn, relu=relu, dropout=dropout)
        )


class LinearBlock(nn.Sequential):
    """Flatten -> Linear -> [ReLU] -> [Dropout]: the fully connected layer of the heavy early steps."""

    def __init__(self, fin: int, fout: int, *, bias: bool, relu: bool, dropout: float):
        layers = [nn.Flatten(), nn.Linear(fin, fout, bias=bias)]
        if relu:
            layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(FastDropout(dropout))
        super().__init__(*layers)


# ---------------------------------------------------------------- specs


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
    bn: bool | None = None  # null: the model's `bn`
    dropout: float | None = None  # null: the model's `dropout`
    relu: bool = True

    def __post_init__(self):
        _check_common(self)

    def layer_args(self) -> dict:
        """The keyword arguments its module takes, shared by `conv` and `sepconv`."""
        keys = ("padding", "stride", "dilation", "bias", "bn", "relu", "dropout")
        return {k: getattr(self, k) for k in keys}

    def build(self, cin: int, size: int) -> Built:
        op = Op(self.kernel, self.stride, self.dilation, self.padding)
        module = ConvBNReLU(cin, self.out, self.kernel, **self.layer_args())
        hw = out_size(size, op) ** 2
        return Built(module, self.out, [op], hw * self.out * cin * self.kernel**2)


@dataclass(frozen=True)
class PointwiseSpec(BlockSpec):
    """1x1 convolution: mixes channels, leaves the map and the receptive field alone."""

    TYPE: ClassVar[str] = "pointwise"
    out: int
    bias: bool = False
    bn: bool | None = None
    dropout: float | None = None
    relu: bool = True

    def __post_init__(self):
        _check_common(self)

    def build(self, cin: int, size: int) -> Built:
        module = ConvBNReLU(cin, self.out, 1, bias=self.bias, bn=self.bn, relu=self.relu, dropout=self.dropout)
        return Built(module, self.out, [], size * size * self.out * cin)


@dataclass(frozen=True)
class SepConvSpec(ConvSpec):
    """Depthwise-separable convolution: the same keys as `conv`, ~k*k times fewer weights."""

    TYPE: ClassVar[str] = "sepconv"

    def build(self, cin: int, size: int) -> Built:
        op = Op(self.kernel, self.stride, self.dilation, self.padding)
        module = SeparableConv(cin, self.out, self.kernel, **self.layer_args())
        hw = out_size(size, op) ** 2
        return Built(module, self.out, [op], hw * cin * self.kernel**2 + hw * cin * self.out)


@dataclass(frozen=True)
class MaxPoolSpec(BlockSpec):
    TYPE: ClassVar[str] = "maxpool"
    kernel: int = 2
    stride: int | None = None  # null: same as kernel

    def __post_init__(self):
        if self.kernel < 1 or (self.stride is not None and self.stride < 1):
            raise ValueError("kernel: must be >= 1")

    def build(self, cin: int, size: int) -> Built:
        stride = self.stride or self.kernel
        return Built(nn.MaxPool2d(self.kernel, stride), cin, [Op(self.kernel, stride)], 0)


@dataclass(frozen=True)
class TransitionSpec(PointwiseSpec):
    """Max-pool then 1x1 squeeze (the keys of `pointwise`, and `pool`): the end of a convolution block."""

    TYPE: ClassVar[str] = "transition"
    pool: int = 2

    def __post_init__(self):
        super().__post_init__()
        if self.pool < 1:
            raise ValueError("pool: must be >= 1")

    def build(self, cin: int, size: int) -> Built:
        op = Op(self.pool, self.pool)
        module = Transition(
            cin, self.out, pool=self.pool, bias=self.bias, bn=self.bn, relu=self.relu, dropout=self.dropout
        )
        return Built(module, self.out, [op], out_size(size, op) ** 2 * cin * self.out)


@dataclass(frozen=True)
class GapSpec(BlockSpec):
    """Global average pooling: each channel's map becomes one number; no parameters."""

    TYPE: ClassVar[str] = "gap"

    def build(self, cin: int, size: int) -> Built:
        return Built(nn.AdaptiveAvgPool2d(1), cin, [Op(size)], 0)


@dataclass(frozen=True)
class LargeConvSpec(BlockSpec):
    """A large-kernel conv that collapses the map (the skeleton's 7x7 at the end).

    kernel null means "the whole incoming map". No BN/ReLU by default: it is usually the output layer.
    """

    TYPE: ClassVar[str] = "large_conv"
    out: int
    kernel: int | None = None
    bias: bool = False
    bn: bool = False
    relu: bool = False
    dropout: float = 0.0

    def __post_init__(self):
        _check_common(self)

    def build(self, cin: int, size: int) -> Built:
        kernel = self.kernel or size
        op = Op(kernel)
        module = ConvBNReLU(cin, self.out, kernel, bias=self.bias, bn=self.bn, relu=self.relu, dropout=self.dropout)
        hw = out_size(size, op) ** 2
        return Built(module, self.out, [op], hw * self.out * cin * kernel**2)


@dataclass(frozen=True)
class HeadSpec(BlockSpec):
    """1x1 conv to the class scores: no BN, no ReLU, no dropout before the softmax."""

    TYPE: ClassVar[str] = "head"
    out: int = 10
    bias: bool = False

    def __post_init__(self):
        _check_common(self)

    def build(self, cin: int, size: int) -> Built:
        module = ConvBNReLU(cin, self.out, 1, bias=self.bias, relu=False)
        return Built(module, self.out, [], size * size * self.out * cin)


@dataclass(frozen=True)
class LinearSpec(BlockSpec):
    """Fully connected layer (flattens its input). The drill's target forbids it."""

    TYPE: ClassVar[str] = "linear"
    out: int
    bias: bool = True
    relu: bool = True
    dropout: float | None = None

    def __post_init__(self):
        _check_common(self)

    def build(self, cin: int, size: int) -> Built:
        fin = cin * size * size
        module = LinearBlock(fin, self.out, bias=self.bias, relu=self.relu, dropout=self.dropout)
        return Built(module, self.out, [Op(size)] if size > 1 else [], fin * self.out, flat=True)


BLOCK_SPECS: dict[str, type] = {
    spec.TYPE: spec
    for spec in (
        ConvSpec,
        PointwiseSpec,
        SepConvSpec,
        MaxPoolSpec,
        TransitionSpec,
        GapSpec,
        LargeConvSpec,
        HeadSpec,
        LinearSpec,
    )
}
