"""Loading a step config strictly: defaults < YAML (`extends:` chains) < `--set` (docs/config.md). Each file and
each `--set` is checked on its own before merging, so an error names it and the dotted key."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from ..errors import ConfigError, UsageError
from .blocks import BLOCK_SPECS, BlockSpec
from .schema import DESCRIPTIVE_KEYS, SCHEDULER_KEYS, Config, flatten, to_dict
from .yaml_reader import load_yaml_text, read_yaml


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


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            with contextlib.suppress(ConfigError):
                return _convert(value, arg, path)
        raise bad
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or (args[-1] is not Ellipsis and len(value) != len(args)):
            raise bad
        kinds = [args[0]] * len(value) if args[-1] is Ellipsis else args
        return tuple(_convert(v, kind, f"{path}[{i}]") for i, (v, kind) in enumerate(zip(value, kinds)))
    if tp is BlockSpec:  # a mapping whose `type` names its spec
        if not isinstance(value, dict) or "type" not in value:
            raise ConfigError(f"{path}: a block is a mapping with a 'type' key, got {value!r}")
        kind = value["type"]
        if kind not in BLOCK_SPECS:
            raise ConfigError(f"{path}.type: unknown block type {kind!r}{_suggest(str(kind), sorted(BLOCK_SPECS))}")
        tp, value = BLOCK_SPECS[kind], {k: v for k, v in value.items() if k != "type"}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad
        return _dataclass(tp, value, path)
    # a scalar: bool, int, float (an int will do), str or None; True is an int in Python, but not here
    if not isinstance(value, (int, float) if tp is float else tp) or (isinstance(value, bool) and tp is not bool):
        raise bad
    return float(value) if tp is float else value


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


def _merge(base: dict, over: dict) -> dict:
    return base | {
        k: _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v for k, v in over.items()
    }


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve() if path.exists() else path
    if path in seen:
        cycle = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"{path}: extends cycle: {cycle}")
    raw = read_yaml(path)
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


def _set_in(raw: dict, parts: list, value: Any, item: str) -> dict:
    """A copy of `raw` with the value at `parts` replaced; list items (blocks) are addressed by index."""
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if isinstance(head, int):
        if not isinstance(raw, list) or not 0 <= head < len(raw):
            size = len(raw) if isinstance(raw, list) else 0
            raise ConfigError(f"--set {item}: index [{head}] is out of range (the list has {size} items)")
        return [*raw[:head], _set_in(raw[head], rest, value, item), *raw[head + 1 :]]
    raw = raw if isinstance(raw, dict) else {}
    return raw | {head: _set_in(raw.get(head, {}), rest, value, item)}


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Load a step config: defaults < YAML chain < `--set` overrides ('model.blocks[2].out=12' changes one block)."""
    path = Path(path)
    raw = _load_chain(path)
    raw.setdefault("name", path.stem)
    for item in overrides:
        parts, value = set_path(item)
        if not any(isinstance(p, int) for p in parts):
            _validate(_set_in({}, parts, value, item), f"--set {item}")  # on its own first, so the error names it
        raw = _set_in(raw, parts, value, item)
        _validate(raw, f"--set {item}")
    cfg = _validate(raw, str(path))
    unused = dict(line.split(": ", 1) for line in unused_settings(cfg))
    for item in overrides:
        if (key := item.partition("=")[0].strip()) in unused:
            raise ConfigError(f"--set {item}: {unused[key]}")
    return cfg


def unused_settings(cfg: Config) -> list[str]:
    """'key: why' for each setting that differs from its default but has no effect under the options chosen:
    refused with `--set`, noted by `mnist-drill show` (docs/config.md)."""
    start = cfg.scheduler.max_lr / cfg.scheduler.div_factor
    why = {  # each setting's reason it has no effect, or False where it has one
        "optim.lr": cfg.scheduler.name == "onecycle"
        and f"one-cycle starts at scheduler.max_lr / scheduler.div_factor = {start:g} and ignores optim.lr; "
        "set scheduler.max_lr instead",
        "optim.momentum": cfg.optim.name != "sgd" and "adam has no momentum setting",
        "optim.nesterov": cfg.optim.name != "sgd" and "adam has no nesterov setting",
    }
    for name, keys in SCHEDULER_KEYS.items():
        why |= {f"scheduler.{k}": cfg.scheduler.name != name and f"used only by scheduler.name {name}" for k in keys}
    flat, default = flatten(to_dict(cfg)), flatten(to_dict(Config()))
    return [f"{key}: {text}" for key, text in why.items() if text and flat[key] != default[key]]


def trains_alike(path: Path, cfg: Config) -> bool:
    """Whether a run folder's config.yaml trains exactly what `cfg` trains (the DESCRIPTIVE_KEYS may differ: they
    describe the step, they don't change a number). It is validated afresh, so a key added to mnist-drill since, with
    its default, does not count as a change; a damaged or missing one is a UsageError that says what to do."""
    try:
        saved = read_yaml(path)
    except ConfigError as err:
        raise UsageError(
            f"{err}; it is the config of the run in {path.parent}: restore it, or pass --overwrite "
            "to train the run afresh"
        ) from None
    try:
        saved = _validate({k: v for k, v in saved.items() if k not in DESCRIPTIVE_KEYS}, "config.yaml")
    except ConfigError:
        return False
    return to_dict(saved) == to_dict(dataclasses.replace(cfg, **{k: getattr(saved, k) for k in DESCRIPTIVE_KEYS}))


def extends_path(path: Path) -> Path | None:
    """The file a config extends, or None."""
    parent = read_yaml(Path(path)).get("extends")
    return Path(path).parent / parent if isinstance(parent, str) else None


def find_config(name: str, folder: Path = Path("configs")) -> Path:
    """A config path as given, or a step's name: 'step3_dropout' or 'step3' -> configs/step3_dropout.yaml."""
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
