"""The blocks a model YAML can name: frozen specs (their YAML keys) that compute their own shape, parameters
and MACs without torch (nn/layers.py builds their modules), and the one registry from YAML names to them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from ..errors import ConfigError


class Op(NamedTuple):
    """One spatial operation, for shape and receptive-field arithmetic."""

    kernel: int
    stride: int = 1
    dilation: int = 1
    padding: int = 0


class Shape(NamedTuple):
    """What a block makes of a `cin`-channel input map of `size` x `size`."""

    out_channels: int
    ops: list[Op]  # spatial ops in order (a 1x1 conv's Op(1) changes nothing)
    macs: int  # multiply-accumulates per image
    params: int  # learned parameters (BatchNorm's running statistics are buffers, not parameters)
    flat: bool = False  # the output is a feature vector, not a map


def out_size(size: int, op: Op) -> int:
    return (size + 2 * op.padding - op.dilation * (op.kernel - 1) - 1) // op.stride + 1


def conv_shape(cin: int, cout: int, size: int, op: Op, bias: bool, bn: bool) -> Shape:
    """A convolution with kernel op.kernel; its parameters are the weights, the bias and BatchNorm's scale and shift."""
    weights = cout * cin * op.kernel**2
    params = weights + (cout if bias else 0) + (2 * cout if bn else 0)
    return Shape(cout, [op], out_size(size, op) ** 2 * weights, params)


BLOCK_SPECS: dict[str, type] = {}  # YAML name -> spec, in the order the specs are defined


class BlockSpec:
    """Base of every block spec; `kind` is the name used in YAML (TYPE). Its check runs after every spec's __init__."""

    TYPE: ClassVar[str] = ""

    def __init_subclass__(cls, kind: str):
        cls.TYPE = kind
        BLOCK_SPECS[kind] = cls

    def __post_init__(self):
        for name, low in (("out", 1), ("kernel", 1), ("stride", 1), ("dilation", 1), ("padding", 0), ("pool", 1)):
            if getattr(self, name, None) is not None and getattr(self, name) < low:
                raise ValueError(f"{name}: must be >= {low}")
        if getattr(self, "dropout", None) is not None and not 0 <= self.dropout < 1:
            raise ValueError("dropout: must be in [0, 1)")


# ---------------------------------------------------------------- specs


@dataclass(frozen=True)
class ConvSpec(BlockSpec, kind="conv"):
    """k x k convolution with optional BN, ReLU and dropout."""

    out: int
    kernel: int = 3
    padding: int = 0
    stride: int = 1
    dilation: int = 1
    bias: bool = False
    bn: bool | None = None  # null: the model's `bn`
    dropout: float | None = None  # null: the model's `dropout`
    relu: bool = True

    def shape(self, cin: int, size: int) -> Shape:
        return conv_shape(
            cin, self.out, size, Op(self.kernel, self.stride, self.dilation, self.padding), self.bias, self.bn
        )


@dataclass(frozen=True)
class PointwiseSpec(BlockSpec, kind="pointwise"):
    """1x1 convolution: mixes channels, leaves the map and the receptive field alone."""

    out: int
    bias: bool = False
    bn: bool | None = None
    dropout: float | None = None
    relu: bool = True

    def shape(self, cin: int, size: int) -> Shape:
        return conv_shape(cin, self.out, size, Op(1), self.bias, self.bn)


@dataclass(frozen=True)
class SepConvSpec(ConvSpec, kind="sepconv"):
    """Depthwise-separable convolution: the same keys as `conv`, ~k*k times fewer weights."""

    def shape(self, cin: int, size: int) -> Shape:
        op = Op(self.kernel, self.stride, self.dilation, self.padding)
        depthwise = conv_shape(1, 1, size, op, False, False)  # one k x k filter per input channel
        pointwise = conv_shape(cin, self.out, out_size(size, op), Op(1), self.bias, self.bn)
        return Shape(self.out, [op], cin * depthwise.macs + pointwise.macs, cin * depthwise.params + pointwise.params)


@dataclass(frozen=True)
class MaxPoolSpec(BlockSpec, kind="maxpool"):
    kernel: int = 2
    stride: int | None = None  # null: same as kernel

    def shape(self, cin: int, size: int) -> Shape:
        return Shape(cin, [Op(self.kernel, self.stride or self.kernel)], 0, 0)


@dataclass(frozen=True)
class TransitionSpec(PointwiseSpec, kind="transition"):
    """Max-pool then 1x1 squeeze (the keys of `pointwise`, and `pool`): the end of a convolution block."""

    pool: int = 2

    def shape(self, cin: int, size: int) -> Shape:
        pool = Op(self.pool, self.pool)
        return conv_shape(cin, self.out, out_size(size, pool), Op(1), self.bias, self.bn)._replace(ops=[pool])


@dataclass(frozen=True)
class GapSpec(BlockSpec, kind="gap"):
    """Global average pooling: each channel's map becomes one number; no parameters."""

    def shape(self, cin: int, size: int) -> Shape:
        return Shape(cin, [Op(size)], 0, 0)


@dataclass(frozen=True)
class LargeConvSpec(BlockSpec, kind="large_conv"):
    """A large-kernel conv that collapses the map (the skeleton's 7x7 at the end).

    kernel null means "the whole incoming map". No BN/ReLU by default: it is usually the output layer.
    """

    out: int
    kernel: int | None = None
    bias: bool = False
    bn: bool = False
    relu: bool = False
    dropout: float = 0.0

    def shape(self, cin: int, size: int) -> Shape:
        return conv_shape(cin, self.out, size, Op(self.kernel or size), self.bias, self.bn)


@dataclass(frozen=True)
class HeadSpec(BlockSpec, kind="head"):
    """1x1 conv to the class scores: no BN, no ReLU, no dropout before the softmax."""

    out: int = 10
    bias: bool = False

    def shape(self, cin: int, size: int) -> Shape:
        return conv_shape(cin, self.out, size, Op(1), self.bias, False)


@dataclass(frozen=True)
class LinearSpec(BlockSpec, kind="linear"):
    """Fully connected layer (flattens its input). The drill's target forbids it."""

    out: int
    bias: bool = True
    relu: bool = True
    dropout: float | None = None

    def shape(self, cin: int, size: int) -> Shape:  # a conv whose kernel is the whole map, its output flat
        return conv_shape(cin, self.out, size, Op(size), self.bias, False)._replace(flat=True)


# ---------------------------------------------------------------- a block list's geometry


@dataclass(frozen=True)
class LayerInfo:
    out_shape: tuple[int, ...]  # (C, H, W), or (F,) after a linear layer
    params: int
    rf: int  # receptive field at the output, pixels
    jump: int  # input pixels between neighbouring outputs
    macs: int  # multiply-accumulates per image
    spec: BlockSpec  # with the model's bn/dropout filled in
    in_shape: tuple[int, int]  # (channels, size) it receives


def with_model_defaults(spec: BlockSpec, cfg) -> BlockSpec:
    """The block with its unset (null) `bn` and `dropout` taken from the model's: how "BN everywhere" reaches it."""
    unset = {name: getattr(cfg, name) for name in ("bn", "dropout") if getattr(spec, name, False) is None}
    return dataclasses.replace(spec, **unset) if unset else spec


def layout(cfg) -> list[LayerInfo]:
    """One LayerInfo per block of a ModelConfig. Raises ConfigError naming the block that does not fit."""
    if not cfg.blocks:
        raise ConfigError("model.blocks: the model has no blocks")
    channels, size, rf, jump, flat = cfg.in_channels, cfg.input_size, 1, 1, False
    layers = []
    for i, spec in enumerate(cfg.blocks):
        where = f"model.blocks[{i}] ({spec.TYPE})"
        if flat and not isinstance(spec, LinearSpec):
            raise ConfigError(f"{where}: follows a linear layer, whose output has no spatial map")
        spec, in_shape = with_model_defaults(spec, cfg), (channels, size)
        shape = spec.shape(channels, size)
        for op in shape.ops:
            if op.dilation * (op.kernel - 1) + 1 > size + 2 * op.padding:
                raise ConfigError(
                    f"{where}: kernel {op.kernel} (dilation {op.dilation}) does not fit the "
                    f"{size}x{size} map it receives"
                )
            size = out_size(size, op)
            rf += (op.kernel - 1) * op.dilation * jump
            jump *= op.stride
        channels, flat = shape.out_channels, shape.flat
        out_shape = (channels,) if flat else (channels, size, size)
        layers.append(LayerInfo(out_shape, shape.params, rf, jump, shape.macs, spec, in_shape))
    if channels != cfg.num_classes or size != 1:
        raise ConfigError(
            f"model.blocks: the last block must output {cfg.num_classes} channels at 1x1 "
            f"(one score per class), got {'x'.join(map(str, out_shape))}"
        )
    return layers


def has_fc(cfg) -> bool:
    return any(isinstance(b, LinearSpec) for b in cfg.blocks)


def macs_per_image(layers: list[LayerInfo]) -> int:
    return sum(layer.macs for layer in layers)
