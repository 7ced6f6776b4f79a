"""The strict YAML reader: a step config's bytes and text refused in one line when they are not what
an author means (size, encoding, invisible characters, tabs), and StrictLoader for the YAML itself."""

from __future__ import annotations

import codecs
import math
import re
import unicodedata
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

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
    """A scalar, key or construct the strict loader does not accept, as "dotted.key: why (line N)"."""

    def __init__(self, key: str, mark, why: str):
        super().__init__(f"{key}: {why} (line {mark.line + 1})" if key else f"{why} (line {mark.line + 1})")


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core scalars (true/false only, 1e-3 a number, no dates), refusing with
    the dotted key and the line what a config author would not mean: the list in docs/config.md, "Strict errors"."""

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
                    f"{value} is a base-60 number in YAML 1.1 (= {self.construct_yaml_float(node):g}): write the "
                    "number, or quote it for text"
                )
            else:
                why = (
                    f"{value} has a leading zero, which YAML 1.1 reads as octal: write the number without it, "
                    "or quote it for text"
                )
            raise _Refused(path, node.start_mark, why)
        if node.tag == _FLOAT and not math.isfinite(self.construct_yaml_float(node)):
            raise _Refused(path, node.start_mark, f"{value} is not a finite number")
        self._check_text(node, path)

    @staticmethod
    def _check_text(node, path: str) -> None:
        bad = _INVISIBLE.search(node.value) or re.search(r"[\t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]", node.value)
        if bad:
            raise _Refused(path, node.start_mark, f"holds {_invisible(bad.group())}: retype it")

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


def _invisible(char: str) -> str:
    return f"an invisible character U+{ord(char):04X} ({unicodedata.name(char, 'a control character')})"


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
StrictLoader.add_constructor(_INT, lambda loader, node: int(node.value, 0))  # 12, 0x1f, 0o17: YAML 1.2 spellings


def load_yaml_text(text: str, source: str) -> Any:
    """YAML text (a file's or a `--set` value) read by StrictLoader; a refusal is a ConfigError naming `source`."""
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else loader.construct_document(node)
    except _Refused as err:
        raise ConfigError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        if getattr(err, "context", None) == "expected a single document in the stream":
            raise ConfigError(
                f"{source}: holds several YAML documents (another starts at line {mark.line + 1}): "
                "a step config is one document"
            ) from None
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    finally:
        loader.dispose()


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
        if bad := _INVISIBLE.search(line):  # not \r: a Windows line end is no invisible character
            raise ConfigError(f"{path}: holds {_invisible(bad.group())} at line {number}: retype that line")
        if line[: len(line) - len(line.lstrip(" \t"))].count("\t"):
            raise ConfigError(f"{path}: a tab in the indentation of line {number}: YAML indents with spaces")
    return text


def read_yaml(path: Path) -> dict:
    raw = load_yaml_text(config_text(path), str(path))
    if raw is None:
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(raw, dict):
        kind = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false"}[type(raw)]
        raise ConfigError(f"{path}: expected a mapping at the top level, got {kind}")
    return raw
