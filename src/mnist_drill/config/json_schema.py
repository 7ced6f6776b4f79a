"""The JSON Schema of a step config, generated from the dataclasses (each field's comment its description), so an
editor validates and completes step files (README: "Config files in an editor"). Regenerate the committed copy with
`python -m mnist_drill.config.json_schema > configs/mnist-drill.schema.json`; a test fails when the two differ."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import types
import typing
from typing import Any, Literal, Union

from .blocks import BLOCK_SPECS, BlockSpec
from .schema import EXPECTATIONS, Config, to_dict

SCHEMA_FILE = "mnist-drill.schema.json"  # in configs/, beside the step files
_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+?)\s*$")  # `name: type = default  # what it means`
_SCALARS = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _comments(cls: type) -> dict[str, str]:
    """Each field's end-of-line comment in the source of `cls` and of the dataclasses it extends."""
    sources = [inspect.getsource(base) for base in reversed(cls.__mro__) if dataclasses.is_dataclass(base)]
    return dict(match.groups() for match in map(_COMMENT.match, "\n".join(sources).splitlines()) if match)


def _doc(cls: type) -> str | None:
    """The first paragraph of the class's own docstring (not the signature dataclass writes in its place)."""
    doc = cls.__dict__.get("__doc__")
    if not doc or doc.startswith(f"{cls.__name__}("):
        return None
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def _type(tp: Any, owner: type, name: str) -> dict:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [_type(arg, owner, name) for arg in typing.get_args(tp)]
        if all(option.keys() == {"type"} for option in options):  # int | None: {"type": ["integer", "null"]}
            return {"type": [option["type"] for option in options]}
        return {"anyOf": options}
    if tp is type(None):
        return {"type": "null"}
    if origin is Literal:
        return {"type": "string", "enum": list(typing.get_args(tp))}  # every choice in the config is a word
    if origin is tuple:  # the block list, `expect` (items of EXPECTATIONS, each once) or a fixed-length list
        if typing.get_args(tp)[0] is BlockSpec:
            return {"type": "array", "items": {"oneOf": [{"$ref": f"#/definitions/{kind}"} for kind in BLOCK_SPECS]}}
        if (owner, name) == (Config, "expect"):
            return {"type": "array", "items": {"enum": list(EXPECTATIONS)}, "uniqueItems": True}
        items = [_type(arg, owner, name) for arg in typing.get_args(tp)]
        return {"type": "array", "items": items, "minItems": len(items), "maxItems": len(items)}
    if dataclasses.is_dataclass(tp):
        return _object(tp)
    return {"type": _SCALARS[tp]}


def _object(cls: type, kind: str | None = None) -> dict:
    """A dataclass as an object of exactly its fields; a block spec with its `type` first, and required."""
    hints, comments = typing.get_type_hints(cls), _comments(cls)
    properties: dict[str, dict] = {"type": {"const": kind}} if kind else {}
    required = ["type"] if kind else []
    for f in dataclasses.fields(cls):
        prop = _type(hints[f.name], cls, f.name)
        if f.name in comments:
            prop = {"description": comments[f.name], **prop}
        if f.default is not dataclasses.MISSING:
            prop["default"] = to_dict(f.default)
        elif f.default_factory is dataclasses.MISSING:
            required.append(f.name)
        properties[f.name] = prop
    out = {"description": _doc(cls)} if _doc(cls) else {}
    out |= {"type": "object", "properties": properties, "additionalProperties": False}
    return out | ({"required": required} if required else {})


def json_schema() -> dict:
    """The JSON Schema (draft-07, which editors know best) of a step config file."""
    root = _object(Config)
    extends = {"description": "the step file this one builds on, its path relative to this file", "type": "string"}
    root["properties"] = {"extends": extends, **root["properties"]}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "mnist-drill step config",
        "description": "A step of the drill (configs/*.yaml): generated from mnist_drill/config/schema.py and "
        "blocks.py by `python -m mnist_drill.config.json_schema`; ranges and shapes are checked when it loads.",
        **{k: v for k, v in root.items() if k != "description"},
        "definitions": {kind: _object(spec, kind) for kind, spec in BLOCK_SPECS.items()},
    }


def json_schema_text() -> str:
    """The schema as the committed file holds it."""
    return json.dumps(json_schema(), indent=2) + "\n"


if __name__ == "__main__":
    print(json_schema_text(), end="")
