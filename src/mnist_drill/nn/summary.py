"""The model, layer by layer: shapes, parameters, receptive field and jump from the block specs,
then torchsummary's own table as a cross-check. Needs no data and no training."""

from __future__ import annotations

import contextlib
import copy
import io

import torch
from torchsummary import summary as torchsummary

from ..config.blocks import BlockSpec, LayerInfo, has_fc, macs_per_image
from ..config.schema import Config
from .model import Net, count_params


def _describe(spec: BlockSpec) -> str:
    """'conv 3x3 p1 -> 16': the kernel, non-default padding/dilation/stride, and output channels."""
    parts = [spec.TYPE]
    kernel = getattr(spec, "kernel", None) or getattr(spec, "pool", None)
    if kernel:
        parts.append(f"{kernel}x{kernel}")
    for key, short in (("padding", "p"), ("dilation", "d"), ("stride", "s")):
        value = getattr(spec, key, None)
        if value not in (None, 0 if key == "padding" else 1):
            parts.append(f"{short}{value}")
    if hasattr(spec, "out"):
        parts.append(f"-> {spec.out}")
    return " ".join(parts)


def layer_table(cfg: Config, layers: list[LayerInfo]) -> str:
    header = f"{'#':>3}  {'block':<24} {'output':>12} {'params':>9} {'RF':>4} {'jump':>4} {'MACs':>11}"
    lines = [header, "-" * len(header)]
    c, s = cfg.model.in_channels, cfg.model.input_size
    lines.append(f"{'':>3}  {'input':<24} {f'{c}x{s}x{s}':>12} {'':>9} {1:>4} {1:>4} {'':>11}")
    for i, layer in enumerate(layers):
        shape = "x".join(map(str, layer.out_shape))
        lines.append(
            f"{i:>3}  {_describe(layer.spec):<24} {shape:>12} {layer.params:>9,} "
            f"{layer.rf:>4} {layer.jump:>4} {layer.macs:>11,}"
        )
    return "\n".join(lines)


def summary_text(cfg: Config, model: Net, layers: list[LayerInfo]) -> str:
    total, trainable = count_params(model)
    macs = macs_per_image(layers)
    buf, c, s = io.StringIO(), cfg.model.in_channels, cfg.model.input_size
    # torchsummary runs a forward pass on random input: do it on a copy, in eval mode, with the RNG
    # state restored afterwards, so writing a summary never changes the run that follows.
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(buf):
        torchsummary(
            copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).eval(),
            (c, s, s),
            device="cpu",
        )
    return "\n".join(
        [
            f"Model of {cfg.name}" + (f": {cfg.change}" if cfg.change else ""),
            "",
            layer_table(cfg, layers),
            "",
            f"Total params:      {total:,}",
            f"Trainable params:  {trainable:,}",
            f"MACs per image:    {macs:,}  (~{2 * macs / 1e6:.2f} MFLOPs forward)",
            f"Receptive field:   {layers[-1].rf} px at the output (input {cfg.model.input_size} px)",
            f"Fully connected:   {'yes' if has_fc(cfg.model) else 'no'}",
            "",
            "torchsummary:",
            buf.getvalue().rstrip(),
            "",
        ]
    )
