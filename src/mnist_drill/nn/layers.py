"""The nn.Module each block spec (config/blocks.py) becomes: small Sequentials holding only the layers asked for."""

from __future__ import annotations

import torch
from torch import nn

from ..config.blocks import BlockSpec
from .fast_dropout import FastDropout


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


class GlobalAvgPool(nn.Module):
    """Each channel's map averaged to one number. A mean, not nn.AdaptiveAvgPool2d(1): the same numbers on the
    CPU (bit for bit), but its CUDA backward is an expand where AdaptiveAvgPool2d's is non-deterministic."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class LinearBlock(nn.Sequential):
    """Flatten -> Linear -> [ReLU] -> [Dropout]: the fully connected layer of the heavy early steps."""

    def __init__(self, fin: int, fout: int, *, bias: bool, relu: bool, dropout: float):
        layers = [nn.Flatten(), nn.Linear(fin, fout, bias=bias)]
        if relu:
            layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(FastDropout(dropout))
        super().__init__(*layers)


def build_block(spec: BlockSpec, cin: int, size: int) -> nn.Module:
    """The module of `spec` (its `bn` and `dropout` already resolved) for a `cin`-channel `size` x `size` input."""
    s = spec
    if s.TYPE in ("conv", "sepconv"):
        layer = ConvBNReLU if s.TYPE == "conv" else SeparableConv
        return layer(cin, s.out, s.kernel, **s.layer_args())
    if s.TYPE == "pointwise":
        return ConvBNReLU(cin, s.out, 1, bias=s.bias, bn=s.bn, relu=s.relu, dropout=s.dropout)
    if s.TYPE == "maxpool":
        return nn.MaxPool2d(s.kernel, s.stride or s.kernel)
    if s.TYPE == "transition":
        return Transition(cin, s.out, pool=s.pool, bias=s.bias, bn=s.bn, relu=s.relu, dropout=s.dropout)
    if s.TYPE == "gap":
        return GlobalAvgPool()
    if s.TYPE == "large_conv":
        return ConvBNReLU(cin, s.out, s.kernel or size, bias=s.bias, bn=s.bn, relu=s.relu, dropout=s.dropout)
    if s.TYPE == "head":
        return ConvBNReLU(cin, s.out, 1, bias=s.bias, relu=False)
    if s.TYPE == "linear":
        return LinearBlock(cin * size * size, s.out, bias=s.bias, relu=s.relu, dropout=s.dropout)
    raise ValueError(f"no module for block type {s.TYPE!r}")
