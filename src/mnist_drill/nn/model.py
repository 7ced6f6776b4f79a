"""The network: the modules of the block list (nn/layers.py) in sequence, then log-probabilities. Its geometry
(shapes, receptive field, parameters, MACs) comes from the specs alone (config/blocks.py), so a block that does not
fit is named before any module is built."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..config.blocks import LayerInfo, layout
from ..config.schema import ModelConfig
from .layers import build_block


class Net(nn.Module):
    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return F.log_softmax(self.blocks(x).flatten(1), dim=1)


def build_model(cfg: ModelConfig) -> tuple[Net, list[LayerInfo]]:
    """The model and one LayerInfo per block. Raises ConfigError naming the block that does not fit."""
    layers = layout(cfg)
    return Net([build_block(layer.spec, *layer.in_shape) for layer in layers]), layers


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)
