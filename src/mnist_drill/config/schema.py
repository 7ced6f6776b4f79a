"""The typed, frozen config tree: each section a dataclass whose `__post_init__` checks its values
(as "key: why", which the loader prefixes with the file and section), and the tree as plain data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from .blocks import BlockSpec


def _check(ok: bool, key: str, why: str) -> None:
    if not ok:
        raise ValueError(f"{key}: {why}")


@dataclass(frozen=True)
class TargetConfig:
    """What the drill asks of a step; analysis.md reports each one as met or not."""

    test_acc: float = 99.4  # percent
    max_params: int = 8000  # strictly fewer than this
    max_epochs: int = 15
    no_fc: bool = True
    consistent_epochs: int = 3  # test_acc must hold the target in each of the last N epochs

    def __post_init__(self):
        _check(0 < self.test_acc <= 100, "test_acc", "must be in (0, 100]")
        _check(self.max_params >= 1, "max_params", "must be >= 1")
        _check(self.max_epochs >= 1, "max_epochs", "must be >= 1")
        _check(self.consistent_epochs >= 1, "consistent_epochs", "must be >= 1")


@dataclass(frozen=True)
class DataConfig:
    dir: str | None = None  # where MNIST is: see data.LOOKUP_ORDER
    batch_size: int = 128
    test_batch_size: int = 128  # among the fastest on 2 CPU cores, same predictions at any size (benchmarks/README.md)
    train_subset: int | None = None  # first N training images (smoke runs, tests)
    test_subset: int | None = None

    def __post_init__(self):
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        _check(self.test_batch_size >= 1, "test_batch_size", "must be >= 1")
        for name in ("train_subset", "test_subset"):
            _check(getattr(self, name) is None or getattr(self, name) >= 1, name, "must be >= 1 (or null for all)")


@dataclass(frozen=True)
class AugmentConfig:
    """Batch augmentation on the training device, applied before normalisation, black fill."""

    rotation: float = 0.0  # degrees: angle ~ U(-rotation, rotation), as RandomRotation
    translate: float = 0.0  # fraction of width/height, as RandomAffine(translate=(t, t))
    scale: tuple[float, float] = (1.0, 1.0)  # as RandomAffine(scale=...)
    shear: float = 0.0  # degrees, x-shear ~ U(-shear, shear), as RandomAffine(shear=...)
    brightness: float = 0.0  # factor ~ U(1-b, 1+b), as ColorJitter(brightness=b)
    contrast: float = 0.0  # factor ~ U(1-c, 1+c), as ColorJitter(contrast=c)
    interpolation: Literal["nearest", "bilinear"] = "nearest"  # torchvision's default is nearest

    def __post_init__(self):
        _check(0 <= self.rotation <= 180, "rotation", "must be in [0, 180] degrees")
        _check(0 <= self.translate < 1, "translate", "must be in [0, 1)")
        _check(0 < self.scale[0] <= self.scale[1], "scale", "must be [low, high] with 0 < low <= high")
        _check(0 <= self.shear < 90, "shear", "must be in [0, 90) degrees")
        _check(0 <= self.brightness < 1, "brightness", "must be in [0, 1)")
        _check(0 <= self.contrast < 1, "contrast", "must be in [0, 1)")

    @property
    def enabled(self) -> bool:
        return self != AugmentConfig(interpolation=self.interpolation)  # the interpolation alone changes nothing


@dataclass(frozen=True)
class ModelConfig:
    """The network as a list of blocks. `bn` and `dropout` are defaults for every conv-like block
    that does not set its own, so "add BN everywhere" is a one-line change."""

    blocks: tuple[BlockSpec, ...] = ()
    bn: bool = False
    dropout: float = 0.0
    in_channels: int = 1
    input_size: int = 28  # pixels, square
    num_classes: int = 10

    def __post_init__(self):
        _check(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        _check(self.in_channels >= 1, "in_channels", "must be >= 1")
        _check(self.input_size >= 1, "input_size", "must be >= 1")
        _check(self.num_classes >= 2, "num_classes", "must be >= 2")


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0

    def __post_init__(self):
        _check(self.lr > 0, "lr", "must be > 0")
        _check(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _check(not self.nesterov or self.momentum > 0, "nesterov", "needs momentum > 0")


@dataclass(frozen=True)
class SchedulerConfig:
    name: Literal["none", "step", "onecycle", "plateau"] = "none"
    step_size: int = 6  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    max_lr: float = 0.1  # onecycle: peak learning rate
    pct_start: float = 0.25  # onecycle: fraction of steps spent warming up
    div_factor: float = 10.0  # onecycle: initial lr = max_lr / div_factor
    final_div_factor: float = 100.0  # onecycle: final lr = initial lr / final_div_factor
    factor: float = 0.1  # plateau: decay factor on test_loss plateaus
    patience: int = 2  # plateau: epochs without improvement before decaying

    def __post_init__(self):
        _check(self.step_size >= 1, "step_size", "must be >= 1")
        _check(0 < self.gamma <= 1, "gamma", "must be in (0, 1]")
        _check(self.max_lr > 0, "max_lr", "must be > 0")
        _check(0 < self.pct_start < 1, "pct_start", "must be in (0, 1)")
        _check(self.div_factor > 0 and self.final_div_factor > 0, "div_factor", "must be > 0")
        _check(0 < self.factor < 1, "factor", "must be in (0, 1)")
        _check(self.patience >= 0, "patience", "must be >= 0")


SCHEDULER_KEYS = {  # the settings each scheduler uses, named as its torch class's arguments
    "step": ("step_size", "gamma"),
    "onecycle": ("max_lr", "pct_start", "div_factor", "final_div_factor"),
    "plateau": ("factor", "patience"),
}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15
    seed: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast is faster but changes results
    channels_last: bool = True  # memory layout only: same numbers, faster convolutions
    compile: bool = False  # torch.compile the model (CUDA; slow to start)
    fast_batchnorm: bool = False  # CPU BatchNorm for <16-channel layers (fast_batchnorm.py): faster, changes results
    label_smoothing: float = 0.0  # share of each training target spread evenly over the classes (train loss only)

    def __post_init__(self):
        _check(self.epochs >= 1, "epochs", "must be >= 1")
        _check(0.0 <= self.label_smoothing < 1.0, "label_smoothing", "must be in [0, 1)")
        _check(self.seed >= 0, "seed", "must be >= 0")


# What a step's `expect:` may list: effects checked against the step before it (reporting.comparison).
# Accuracies are the best epoch's, the gap is the final epoch's train - test accuracy (its size, either
# sign), and a rise or fall counts only beyond seed noise (analysis.NOISE_Z).
EXPECTATIONS = {
    "params fall": "fewer parameters than the step before",
    "params rise": "more parameters than the step before",
    "params under budget": "fewer parameters than target.max_params",
    "train_acc rises": "best train accuracy higher, beyond seed noise",
    "train_acc falls": "best train accuracy lower, beyond seed noise",
    "test_acc rises": "best test accuracy higher, beyond seed noise",
    "test_acc holds": "best test accuracy not lower beyond seed noise",
    "test_acc falls": "best test accuracy lower, beyond seed noise",
    "gap narrows": "final train/test gap smaller, beyond seed noise",
    "gap widens": "final train/test gap larger, beyond seed noise",
    "target reached": "test accuracy reaches target.test_acc in some epoch, on every seed",
    "targets met": "every target met, on every seed",
}
_CONTRADICTIONS = [
    ("params fall", "params rise"),
    ("train_acc rises", "train_acc falls"),
    ("test_acc rises", "test_acc falls"),
    ("test_acc holds", "test_acc falls"),
    ("gap narrows", "gap widens"),
]


@dataclass(frozen=True)
class Config:
    name: str = "run"  # the output folder's name; defaults to the config file's stem
    change: str = ""  # one line: what this step changes from the one before it
    reason: str = ""  # 1-3 sentences: what the change aims at and why (analysis.md's Target)
    expect: tuple[str, ...] = ()  # effects the change should have on the step before: EXPECTATIONS
    target: TargetConfig = field(default_factory=TargetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        _check(self.name not in ("", ".", "..") and "/" not in self.name, "name", "must be a plain folder name")
        for item in self.expect:
            _check(item in EXPECTATIONS, "expect", f"unknown item {item!r} (valid: {', '.join(EXPECTATIONS)})")
        _check(len(set(self.expect)) == len(self.expect), "expect", "lists an item twice")
        for a, b in _CONTRADICTIONS:
            _check(not {a, b} <= set(self.expect), "expect", f"{a!r} and {b!r} contradict each other")


DESCRIPTIVE_KEYS = ("name", "change", "reason", "expect")  # what a step is called and why, not what it trains


def to_dict(cfg: Any) -> Any:
    """The config as plain YAML-able data; blocks carry their `type` first."""
    if dataclasses.is_dataclass(cfg):
        kind = {"type": cfg.TYPE} if isinstance(cfg, BlockSpec) else {}
        return kind | {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, tuple):
        return [to_dict(v) for v in cfg]
    return cfg


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=100)


def yaml_value(value: Any) -> str:
    """A value as YAML writes it inline: false, 0.02, null, [1.0, 1.0], {type: conv, out: 8}."""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _settings(cfg: Config) -> dict[str, Any]:
    """Dotted key -> value of what trains; each block one value, the keys that differ from its defaults."""
    flat = flatten(to_dict(cfg))
    out = {k: v for k, v in flat.items() if not k.startswith(("model.blocks", *DESCRIPTIVE_KEYS))}
    for i, block in enumerate(cfg.model.blocks):
        defaults = {f.name: f.default for f in dataclasses.fields(block)}
        out[f"model.blocks[{i}]"] = {k: v for k, v in to_dict(block).items() if k not in defaults or defaults[k] != v}
    return out


def config_changes(old: Config, new: Config, arrow: str = "->") -> list[str]:
    """One line per changed setting, values in YAML; blocks are compared position by position."""
    a, b = _settings(old), _settings(new)
    return [
        f"{k}: {yaml_value(a.get(k, '<absent>'))} {arrow} {yaml_value(b.get(k, '<absent>'))}"
        for k in dict.fromkeys([*a, *b])
        if a.get(k, "<absent>") != b.get(k, "<absent>")
    ]


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to leaf values; list items are indexed (model.blocks[2].out)."""
    if isinstance(data, dict):
        children = {f"{prefix}.{key}" if prefix else str(key): value for key, value in data.items()}
    elif isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        children = {f"{prefix}.length": len(data)} | {f"{prefix}[{i}]": value for i, value in enumerate(data)}
    else:
        return {prefix: data}
    return {k: v for key, value in children.items() for k, v in flatten(value, key).items()}
