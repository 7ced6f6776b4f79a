"""Build a network from the block list and describe it layer by layer.

The builder walks the blocks once, tracking channels, map size, receptive field and jump, so no
layer needs a hand-computed input size and a block that does not fit is named before training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config.blocks import BlockSpec, LinearSpec, out_size
from ..config.schema import ModelConfig
from ..errors import ConfigError


@dataclass(frozen=True)
class LayerInfo:
    index: int
    type: str
    out_shape: tuple[int, ...]  # (C, H, W), or (F,) after a linear layer
    params: int
    rf: int  # receptive field at the output, pixels
    jump: int  # input pixels between neighbouring outputs
    macs: int  # multiply-accumulates per image


class Net(nn.Module):
    """The blocks in sequence, then log-probabilities over the classes."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return F.log_softmax(self.blocks(x).flatten(1), dim=1)


def with_model_defaults(spec: BlockSpec, cfg: ModelConfig) -> BlockSpec:
    """The block with its unset (null) `bn` and `dropout` taken from the model's: the one place
    where "BN everywhere" or "dropout everywhere" reaches the blocks."""
    unset = {name: getattr(cfg, name) for name in ("bn", "dropout") if getattr(spec, name, False) is None}
    return dataclasses.replace(spec, **unset) if unset else spec


def build_model(cfg: ModelConfig) -> tuple[Net, list[LayerInfo]]:
    """The model and one LayerInfo per block. Raises ConfigError naming the block that does not fit."""
    if not cfg.blocks:
        raise ConfigError("model.blocks: the model has no blocks")
    channels, size, rf, jump, flat = cfg.in_channels, cfg.input_size, 1, 1, False
    modules, layers = [], []
    for i, spec in enumerate(cfg.blocks):
        where = f"model.blocks[{i}] ({spec.TYPE})"
        if flat and not isinstance(spec, LinearSpec):
            raise ConfigError(f"{where}: follows a linear layer, whose output has no spatial map")
        built = with_model_defaults(spec, cfg).build(channels, size)
        for op in built.ops:
            if op.dilation * (op.kernel - 1) + 1 > size + 2 * op.padding:
                raise ConfigError(
                    f"{where}: kernel {op.kernel} (dilation {op.dilation}) does not fit the "
                    f"{size}x{size} map it receives"
                )
            size = out_size(size, op)
            rf += (op.kernel - 1) * op.dilation * jump
            jump *= op.stride
        channels, flat = built.out_channels, built.flat
        if flat:
            size = 1
        params = sum(p.numel() for p in built.module.parameters())
        shape = (channels,) if flat else (channels, size, size)
        layers.append(LayerInfo(i, spec.TYPE, shape, params, rf, jump, built.macs))
        modules.append(built.module)
    if channels != cfg.num_classes or size != 1:
        got = "x".join(map(str, layers[-1].out_shape))
        raise ConfigError(
            f"model.blocks: the last block must output {cfg.num_classes} channels at 1x1 "
            f"(one score per class), got {got}"
        )
    return Net(modules), layers


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameters."""
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)


def has_fc(cfg: ModelConfig) -> bool:
    return any(isinstance(b, LinearSpec) for b in cfg.blocks)


def input_shape(cfg: ModelConfig) -> tuple[int, int, int]:
    return cfg.in_channels, cfg.input_size, cfg.input_size


def macs_per_image(layers: list[LayerInfo]) -> int:
    return sum(layer.macs for layer in layers)


@torch.no_grad()
def check_forward(model: Net, cfg: ModelConfig) -> None:
    """One tiny forward pass: the shapes the builder predicted are the ones torch computes."""
    model.eval()
    out = model(torch.zeros(2, *input_shape(cfg)))
    assert out.shape == (2, cfg.num_classes), out.shape
