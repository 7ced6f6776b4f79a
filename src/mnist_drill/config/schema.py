"""Typed, frozen config tree and its strict YAML loader.

Precedence: dataclass defaults < YAML (a file may `extends:` another, path relative to itself)
< `--set section.key=value`. Mappings merge key by key; lists (the block list) are replaced whole.
Every file and every `--set` is checked on its own before merging, so an error names the file
(or the `--set`) it came from and the dotted key, in one line.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import math
import re
import types
import typing
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ..config.blocks import BLOCK_SPECS, BlockSpec
from ..errors import ConfigError, UsageError


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
            value = getattr(self, name)
            _check(value is None or value >= 1, name, "must be >= 1 (or null for all)")


@dataclass(frozen=True)
class AugmentConfig:
    """Batch augmentation on the training device, applied before normalisation, black fill.

    Each knob means what the torchvision transform of the same name means.
    """

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
        return (self.rotation, self.translate, self.scale, self.shear, self.brightness, self.contrast) != (
            0.0,
            0.0,
            (1.0, 1.0),
            0.0,
            0.0,
            0.0,
        )


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


# What a step's `expect:` may list: effects checked against the step before it (analysis.check_expectations).
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
        _check(
            bool(self.name) and "/" not in self.name and self.name not in (".", ".."),
            "name",
            "must be a plain folder name",
        )
        for item in self.expect:
            _check(item in EXPECTATIONS, "expect", f"unknown item {item!r} (valid: {', '.join(EXPECTATIONS)})")
        _check(len(set(self.expect)) == len(self.expect), "expect", "lists an item twice")
        for a, b in _CONTRADICTIONS:
            _check(not {a, b} <= set(self.expect), "expect", f"{a!r} and {b!r} contradict each other")


# ---------------------------------------------------------------- dict -> dataclass, strictly


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        return "a list" if args[-1] is Ellipsis else f"a list of {len(args)} numbers"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(valid)})"


_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError:
                pass
        raise bad
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise bad
        if args[-1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad
        return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is BlockSpec:
        return _block(value, path)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad
        return _dataclass(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str) and _SCIENTIFIC.match(value):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; users mean a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def _dataclass(cls: type, raw: dict, path: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    prefix = f"{path}." if path else ""
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key{_suggest(str(key), names)}")
        kwargs[key] = _convert(value, hints[key], f"{prefix}{key}")
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in kwargs:
            raise ConfigError(f"{prefix}{f.name}: missing required key")
    try:
        return cls(**kwargs)
    except ValueError as err:  # raised by __post_init__ as "field: why"
        raise ConfigError(f"{prefix}{err}") from None


def _block(raw: Any, path: str) -> BlockSpec:
    if not isinstance(raw, dict) or "type" not in raw:
        raise ConfigError(f"{path}: a block is a mapping with a 'type' key, got {raw!r}")
    kind = raw["type"]
    if kind not in BLOCK_SPECS:
        raise ConfigError(f"{path}.type: unknown block type {kind!r}{_suggest(str(kind), sorted(BLOCK_SPECS))}")
    return _dataclass(BLOCK_SPECS[kind], {k: v for k, v in raw.items() if k != "type"}, path)


# ---------------------------------------------------------------- files, extends, --set

CONFIG_MAX_BYTES = 1_000_000  # a step config is a few hundred bytes; a file this large is something else
MAX_DEPTH = 16  # nesting levels: a step config needs 4 (model.blocks[i].key)

_BOOL, _NULL, _INT, _FLOAT, _STR = (f"tag:yaml.org,2002:{t}" for t in ("bool", "null", "int", "float", "str"))
_TRAP = "tag:mnist-drill:yaml-1.1-trap"  # plain scalars YAML 1.1 reads as something they do not look like
_TRAP_WORD = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$")
_TRAP_BASE60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_TRAP_OCTAL = re.compile(r"^[-+]?0[0-9_]+$")
# Invisible characters: control characters but tab/newline/CR, format characters (zero-width space,
# BOM, direction marks) and the line and paragraph separators, which YAML reads as line breaks.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]"
)


class _Refused(Exception):
    """A scalar, key or construct the strict loader does not accept: where (dotted key, line) and why."""

    def __init__(self, key: str, mark, why: str):
        super().__init__(why)
        self.key, self.line, self.why = key, mark.line + 1 if mark else None, why


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading what a config author means, and refusing what is ambiguous.

    Scalars resolve as in YAML 1.2's core schema (booleans are only true/false; 1e-3 is a number; no
    dates), and the YAML 1.1 readings that surprise refuse with the dotted key and the line: the words
    yes/no/on/off/y/n (1.1 booleans, also as keys: `on:` would become the key True), base-60 numbers
    (1:30 is 90), leading-zero numbers (010 is octal 8). Also refused: a key that appears twice
    (PyYAML keeps the last silently), keys that are not strings (`1: x`), merge keys (`<<:`),
    anchors and aliases, explicit tags (!!float), non-finite numbers (.inf, .nan, 1e999),
    invisible characters in keys and values, nesting deeper than MAX_DEPTH.
    """

    yaml_implicit_resolvers: dict = {}

    def __init__(self, stream):
        super().__init__(stream)
        self._paths: list[str] = []  # dotted key of each node being composed, outermost first

    def compose_node(self, parent, index):
        path = self._path_of(parent, index)
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            raise _Refused(
                path,
                event.start_mark,
                "an anchor or alias (&name, *name): repeat the value, or share settings between files with extends:",
            )
        if getattr(event, "tag", None) not in (None, "!"):
            tag = event.tag.replace("tag:yaml.org,2002:", "!!")
            raise _Refused(path, event.start_mark, f"an explicit tag ({tag}): write the plain value")
        if len(self._paths) >= MAX_DEPTH:
            raise _Refused(path, event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
        self._paths.append(path)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._paths.pop()
        if parent is not None and index is None:  # a mapping key
            self._check_key(node, path)
        elif isinstance(node, yaml.ScalarNode):
            self._check_scalar(node, path)
        elif isinstance(node, yaml.MappingNode):
            self._check_unique(node, path)
        return node

    def _path_of(self, parent, index) -> str:
        if parent is None:
            return ""
        base = self._paths[-1]
        if isinstance(index, int):
            return f"{base}[{index}]"
        if isinstance(index, yaml.ScalarNode):
            return _join(base, index.value)
        return base  # a key: named once it is read

    def _check_key(self, node, base: str) -> None:
        if not isinstance(node, yaml.ScalarNode):
            raise _Refused(base, node.start_mark, "a key that is a list or mapping: keys are names")
        path = _join(base, node.value)
        if node.tag == _TRAP and _TRAP_WORD.match(node.value):
            raise _Refused(
                path,
                node.start_mark,
                f"the key {node.value!r} is a YAML 1.1 boolean; quote it if you "
                "mean the word (is it a misplaced value?)",
            )
        if node.tag != _STR:
            kind = {_NULL: "null", _BOOL: "true/false"}.get(node.tag, "a number")
            raise _Refused(
                path,
                node.start_mark,
                f"the key {node.value or '(empty)'} is not a name (YAML reads it as {kind}); keys are names such as lr",
            )
        if node.value == "<<" and node.style is None:
            raise _Refused(path, node.start_mark, "a merge key (<<): share settings between files with extends:")
        self._check_text(node, path)

    def _check_scalar(self, node, path: str) -> None:
        value = node.value
        if node.tag == _TRAP:
            if _TRAP_WORD.match(value):
                meaning = "true" if value.lower() in ("y", "yes", "on") else "false"
                why = f'{value} is YAML 1.1 for {meaning}: write true or false, or quote it ("{value}") for the word'
            elif _TRAP_BASE60.match(value):
                why = (
                    f"{value} is a base-60 number in YAML 1.1 (= {_base60(value):g}): write the number, or "
                    "quote it for text"
                )
            else:
                why = (
                    f"{value} has a leading zero, which YAML 1.1 reads as octal: write the number without it, "
                    "or quote it for text"
                )
            raise _Refused(path, node.start_mark, why)
        if node.tag == _FLOAT and not math.isfinite(_construct_float(self, node)):
            raise _Refused(path, node.start_mark, f"{value} is not a finite number")
        self._check_text(node, path)

    @staticmethod
    def _check_text(node, path: str) -> None:
        bad = _INVISIBLE.search(node.value) or re.search(r"[\t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]", node.value)
        if bad:
            char = bad.group()
            name = unicodedata.name(char, "a control character")
            raise _Refused(path, node.start_mark, f"holds an invisible character U+{ord(char):04X} ({name}): retype it")

    @staticmethod
    def _check_unique(node, path: str) -> None:
        seen = {}
        for key, _ in node.value:
            if key.value in seen:
                raise _Refused(
                    _join(path, key.value),
                    key.start_mark,
                    f"the key appears twice (first at line {seen[key.value] + 1}); YAML would keep only "
                    "the last: remove one",
                )
            seen[key.value] = key.start_mark.line


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _base60(text: str) -> float:
    sign = -1 if text.startswith("-") else 1
    total = 0.0
    for part in text.lstrip("+-").replace("_", "").split(":"):
        total = total * 60 + float(part)
    return sign * total


def _construct_int(loader, node) -> int:
    return int(node.value, 0)  # 12, 0x1f, 0o17: YAML 1.2 spellings


def _construct_float(loader, node) -> float:
    text = node.value.lower()
    if text.lstrip("+-") == ".inf":
        return -math.inf if text.startswith("-") else math.inf
    return math.nan if text == ".nan" else float(text)


for _tag, _pattern, _first in (
    (_BOOL, r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    (_NULL, r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    (_TRAP, _TRAP_WORD.pattern, "yYnNoO"),
    (_TRAP, f"{_TRAP_BASE60.pattern}|{_TRAP_OCTAL.pattern}", "-+0123456789"),
    (_INT, r"^[-+]?(?:0|[1-9][0-9]*)$|^[-+]?0x[0-9a-fA-F]+$|^[-+]?0o[0-7]+$", "-+0123456789"),
    (
        _FLOAT,
        r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$"
        r"|^\.(?:nan|NaN|NAN)$",
        "-+.0123456789",
    ),
):
    StrictLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
StrictLoader.add_constructor(_INT, _construct_int)
StrictLoader.add_constructor(_FLOAT, _construct_float)


def load_yaml_text(text: str, source: str) -> Any:
    """YAML text read by StrictLoader; every refusal is a ConfigError naming `source`, the dotted key
    and the line. `--set` values are read with it too."""
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else loader.construct_document(node)
    except _Refused as err:
        key = f" {err.key}:" if err.key else ""
        line = f" (line {err.line})" if err.line else ""
        raise ConfigError(f"{source}:{key} {err.why}{line}") from None
    except yaml.composer.ComposerError as err:
        if err.context == "expected a single document in the stream":
            raise ConfigError(
                f"{source}: holds several YAML documents (another starts at line "
                f"{err.problem_mark.line + 1}): a step config is one document"
            ) from None
        raise _invalid(err, source) from None
    except yaml.YAMLError as err:
        raise _invalid(err, source) from None
    finally:
        loader.dispose()


def _invalid(err: yaml.YAMLError, source: str) -> ConfigError:
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return ConfigError(f"{source}: invalid YAML{where}: {problem}")


def config_text(path: Path) -> str:
    """A config file's text, refused in one line when it is not a small UTF-8 text file."""
    try:
        with open(path, "rb") as f:
            data = f.read(CONFIG_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    if len(data) > CONFIG_MAX_BYTES:
        raise ConfigError(
            f"{path}: larger than {CONFIG_MAX_BYTES // 1_000_000} MB, so not a step config "
            "(they are a few hundred bytes)"
        )
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # also the UTF-32 marks
        raise ConfigError(f"{path}: UTF-16 or UTF-32 text; save it as UTF-8")
    if data.startswith(codecs.BOM_UTF8):
        raise ConfigError(
            f"{path}: starts with a byte-order mark (saved as 'UTF-8 with BOM'); save it as UTF-8 without one"
        )
    if b"\0" in data:
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise ConfigError(f"{path}: holds NUL bytes (first at line {line}): a binary file, not YAML text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at line {line}, column {column}; "
            "Latin-1 or Windows-1252?); save it as UTF-8"
        ) from None
    for number, line in enumerate(text.split("\n"), start=1):
        if (bad := _INVISIBLE.search(line.rstrip("\r"))) is not None:
            char = bad.group()
            raise ConfigError(
                f"{path}: holds an invisible character U+{ord(char):04X} "
                f"({unicodedata.name(char, 'a control character')}) at line {number}: retype that line"
            )
        if line[: len(line) - len(line.lstrip(" \t"))].count("\t"):
            raise ConfigError(f"{path}: a tab in the indentation of line {number}: YAML indents with spaces")
    return text


def _read_yaml(path: Path) -> dict:
    raw = load_yaml_text(config_text(path), str(path))
    if raw is None:
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {_yaml_kind(raw)}")
    return raw


def _yaml_kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


def read_saved_config(path: Path) -> dict:
    """A run folder's config.yaml, read as strictly as a step config; a damaged, foreign or missing
    one is a UsageError that says what to do (the run cannot be resumed or reused without it)."""
    try:
        return _read_yaml(path)
    except ConfigError as err:
        raise UsageError(
            f"{err}; it is the config of the run in {path.parent}: restore it, or pass --overwrite "
            "to train the run afresh"
        ) from None


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve() if path.exists() else path
    if path in seen:
        cycle = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"{path}: extends cycle: {cycle}")
    raw = _read_yaml(path)
    parent = raw.pop("extends", None)
    _validate(raw, str(path))  # each file on its own, so errors name the file they are in
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: expected a path, got {parent!r}")
    parent_path = path.parent / parent
    if not parent_path.exists():
        raise ConfigError(f"{path}: extends: no such file {parent_path}")
    base = _load_chain(parent_path, (*seen, path))
    for key in DESCRIPTIVE_KEYS:  # these describe the parent step, not the one extending it
        base.pop(key, None)
    return _merge(base, raw)


def _validate(raw: dict, source: str) -> Config:
    try:
        return _dataclass(Config, raw, "")
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


_INDEXED = re.compile(r"^(\w+)\[(\d+)\]$")  # blocks[2]


def set_path(item: str) -> tuple[list, Any]:
    """'model.blocks[2].out=12' -> (['model', 'blocks', 2, 'out'], 12); the value is read as YAML."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item}: expected section.key=value")
    try:
        value = load_yaml_text(text, f"--set {item}") if text.strip() else ""  # as strict as a file: 1:30 is no 90
    except ConfigError as err:
        if ": invalid YAML" not in str(err):
            raise
        raise ConfigError(f"--set {item}: the value is not valid YAML") from None
    parts: list = []
    for part in key.strip().split("."):
        m = _INDEXED.match(part)
        parts += [m.group(1), int(m.group(2))] if m else [part]
    return parts, value


def parse_set(item: str) -> dict:
    """'model.dropout=0.1' -> {'model': {'dropout': 0.1}}, for a key without a list index."""
    parts, value = set_path(item)
    tree: Any = value
    for part in reversed(parts):
        tree = {part: tree}
    return tree


def _set_in(raw: dict, parts: list, value: Any, item: str) -> dict:
    """A copy of `raw` with the value at `parts` replaced; list items (blocks) are addressed by index."""
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if isinstance(head, int):
        if not isinstance(raw, list) or not 0 <= head < len(raw):
            size = len(raw) if isinstance(raw, list) else 0
            raise ConfigError(f"--set {item}: index [{head}] is out of range (the list has {size} items)")
        out = list(raw)
        out[head] = _set_in(out[head] if isinstance(out[head], dict) else {}, rest, value, item)
        return out
    out = dict(raw) if isinstance(raw, dict) else {}
    out[head] = _set_in(out.get(head, {}), rest, value, item) if rest else value
    return out


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Load a step config: defaults < YAML chain < overrides ('section.key=value' strings;
    'model.blocks[2].out=12' changes one block)."""
    path = Path(path)
    raw = _load_chain(path)
    raw.setdefault("name", path.stem)
    for item in overrides:
        parts, value = set_path(item)
        if not any(isinstance(p, int) for p in parts):
            _validate(parse_set(item), f"--set {item}")  # on its own first, so the error names the --set
        raw = _set_in(raw, parts, value, item)
        _validate(raw, f"--set {item}")
    cfg = _validate(raw, str(path))
    for item in overrides:
        key = item.partition("=")[0].strip()
        for why in unused_settings(cfg):
            if why.startswith(f"{key}:"):
                raise ConfigError(f"--set {item}: {why.split(': ', 1)[1]}")
    return cfg


# What each setting needs to have any effect: (dotted key, the condition, why it has none otherwise).
_WHEN_USED = (
    (
        "optim.lr",
        lambda c: c.scheduler.name != "onecycle",
        lambda c: (
            f"one-cycle starts at scheduler.max_lr / scheduler.div_factor = "
            f"{c.scheduler.max_lr / c.scheduler.div_factor:g} "
            "and ignores optim.lr; set scheduler.max_lr instead"
        ),
    ),
    ("optim.momentum", lambda c: c.optim.name == "sgd", lambda c: "adam has no momentum setting"),
    ("optim.nesterov", lambda c: c.optim.name == "sgd", lambda c: "adam has no nesterov setting"),
    *(
        (f"scheduler.{k}", lambda c, n=n: c.scheduler.name == n, lambda c, n=n: f"used only by scheduler.name {n}")
        for n, keys in (
            ("step", ("step_size", "gamma")),
            ("onecycle", ("max_lr", "pct_start", "div_factor", "final_div_factor")),
            ("plateau", ("factor", "patience")),
        )
        for k in keys
    ),
)


def unused_settings(cfg: Config) -> list[str]:
    """'key: why' for each setting that differs from its default but has no effect under the options
    chosen. `--set` of such a key is refused; one that comes from a file is noted in the run's log."""
    flat, default = flatten(to_dict(cfg)), flatten(to_dict(Config()))
    return [f"{key}: {why(cfg)}" for key, used, why in _WHEN_USED if not used(cfg) and flat[key] != default[key]]


def to_dict(cfg: Any) -> Any:
    """The config as plain YAML-able data; blocks carry their `type` first."""
    if dataclasses.is_dataclass(cfg):
        out = {"type": cfg.TYPE} if isinstance(cfg, BlockSpec) else {}
        for f in dataclasses.fields(cfg):
            out[f.name] = to_dict(getattr(cfg, f.name))
        return out
    if isinstance(cfg, tuple):
        return [to_dict(v) for v in cfg]
    return cfg


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=100)


DESCRIPTIVE_KEYS = ("name", "change", "reason", "expect")  # what a step is called and why, not what it trains


def trains_alike(saved: Any, cfg: Config) -> bool:
    """Whether a run folder's saved config (read_saved_config) trains exactly what `cfg` trains (the
    DESCRIPTIVE_KEYS may differ: they describe the step, they don't change a number). The saved config is
    validated afresh, so a key added to mnist-drill since, with its default, does not count as a change."""
    if not isinstance(saved, dict):
        return False
    try:
        saved = to_dict(_validate({k: v for k, v in saved.items() if k not in DESCRIPTIVE_KEYS}, "config.yaml"))
    except ConfigError:
        return False
    ours = to_dict(cfg)
    return {k: v for k, v in saved.items() if k not in DESCRIPTIVE_KEYS} == {
        k: v for k, v in ours.items() if k not in DESCRIPTIVE_KEYS
    }


def yaml_value(value: Any) -> str:
    """A value as YAML writes it inline: false, 0.02, null, [1.0, 1.0], {type: conv, out: 8}."""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _block_text(block: BlockSpec) -> str:
    """A block as a YAML flow mapping, keeping only fields that differ from the defaults."""
    shown = {"type": block.TYPE}
    for f in dataclasses.fields(block):
        value = getattr(block, f.name)
        if f.default is dataclasses.MISSING or f.default != value:
            shown[f.name] = to_dict(value)
    return yaml_value(shown)


def config_changes(old: Config, new: Config) -> list[str]:
    """One line per changed setting, values in YAML; blocks are compared position by position."""
    flat_old, flat_new = flatten(to_dict(old)), flatten(to_dict(new))
    lines = [
        f"{k}: {yaml_value(flat_old.get(k, '<absent>'))} -> {yaml_value(flat_new.get(k, '<absent>'))}"
        for k in dict.fromkeys([*flat_old, *flat_new])
        if not k.startswith(("model.blocks", *DESCRIPTIVE_KEYS))
        and flat_old.get(k, "<absent>") != flat_new.get(k, "<absent>")
    ]
    a, b = old.model.blocks, new.model.blocks
    for i in range(max(len(a), len(b))):
        before = _block_text(a[i]) if i < len(a) else "<absent>"
        after = _block_text(b[i]) if i < len(b) else "<absent>"
        if before != after:
            lines.append(f"model.blocks[{i}]: {before} -> {after}")
    return lines


def extends_path(path: Path) -> Path | None:
    """The file a config extends, or None."""
    parent = _read_yaml(Path(path)).get("extends")
    return Path(path).parent / parent if isinstance(parent, str) else None


def find_config(name: str, folder: Path = Path("configs")) -> Path:
    """A config path as given, or a step's name: 'step3_dropout' or 'step3' -> configs/step3_dropout.yaml.
    A name that matches nothing lists the steps there are."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in name:
        return path
    steps = sorted(folder.glob("*.yaml"))
    exact = [p for p in steps if p.stem == name]
    prefixed = [p for p in steps if p.stem.startswith(f"{name}_")]
    if exact or len(prefixed) == 1:
        return (exact or prefixed)[0]
    names = ", ".join(p.stem for p in steps) or f"none in {folder}/"
    raise ConfigError(f"{name}: no such config file or step (steps: {names})")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to leaf values; list items are indexed (model.blocks[2].out)."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        out = {f"{prefix}.length": len(data)}
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}[{i}]"))
        return out
    return {prefix: data}
