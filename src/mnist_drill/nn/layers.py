"""The nn.Module each block spec (config/blocks.py) becomes: small Sequentials holding only the layers asked for."""

from __future__ import annotations

import torch
from torch import nn

from ..config.blocks import BlockSpec
from .fast_dropout import FastDropout


def _then(*layers: nn.Module, relu: bool, dropout: float, inplace: bool = True) -> nn.Sequential:
    """`layers` -> [ReLU] -> [Dropout]. A Sequential of the layers asked for only, so summaries list the real ones."""
    if relu:
        layers += (nn.ReLU(inplace=inplace),)
    if dropout > 0:
        layers += (FastDropout(dropout),)
    return nn.Sequential(*layers)


def conv_bn_relu(cin: int, cout: int, kernel: int, *, bias: bool, bn=False, relu=True, dropout=0.0, **conv):
    """conv -> [BatchNorm] -> [ReLU] -> [Dropout]; `conv`: nn.Conv2d's padding, stride and dilation."""
    layers = [nn.Conv2d(cin, cout, kernel, bias=bias, **conv)] + ([nn.BatchNorm2d(cout)] if bn else [])
    return _then(*layers, relu=relu, dropout=dropout)


class GlobalAvgPool(nn.Module):
    """Each channel's map averaged to one number. A mean, not nn.AdaptiveAvgPool2d(1): the same numbers on the
    CPU (bit for bit), but its CUDA backward is an expand where AdaptiveAvgPool2d's is non-deterministic."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


def build_block(spec: BlockSpec, cin: int, size: int) -> nn.Module:
    """The module of `spec` (its `bn` and `dropout` already resolved) for a `cin`-channel `size` x `size` input."""
    s = spec
    if s.TYPE == "maxpool":
        return nn.MaxPool2d(s.kernel, s.stride or s.kernel)
    if s.TYPE == "gap":
        return GlobalAvgPool()
    if s.TYPE == "head":  # to the class scores: no BN, no ReLU, no dropout
        return conv_bn_relu(cin, s.out, 1, bias=s.bias, relu=False)
    if s.TYPE == "linear":  # flattened: the fully connected layer of the heavy early steps
        linear = nn.Linear(cin * size * size, s.out, bias=s.bias)
        return _then(nn.Flatten(), linear, relu=s.relu, dropout=s.dropout, inplace=False)
    pointwise = {"bias": s.bias, "bn": s.bn, "relu": s.relu, "dropout": s.dropout}
    if s.TYPE == "conv":
        return conv_bn_relu(cin, s.out, s.kernel, padding=s.padding, stride=s.stride, dilation=s.dilation, **pointwise)
    if s.TYPE == "sepconv":  # a depthwise k x k conv (one filter per channel), then a pointwise one
        depthwise = nn.Conv2d(
            cin, cin, s.kernel, stride=s.stride, padding=s.padding, dilation=s.dilation, groups=cin, bias=False
        )
        return nn.Sequential(depthwise, conv_bn_relu(cin, s.out, 1, **pointwise))
    if s.TYPE == "pointwise":
        return conv_bn_relu(cin, s.out, 1, **pointwise)
    if s.TYPE == "transition":  # halve the map, then squeeze the channels
        return nn.Sequential(nn.MaxPool2d(s.pool, s.pool), conv_bn_relu(cin, s.out, 1, **pointwise))
    if s.TYPE == "large_conv":
        return conv_bn_relu(cin, s.out, s.kernel or size, **pointwise)
    raise ValueError(f"no module for block type {s.TYPE!r}")
