"""The JSON Schema editors check step files with: generated from the config code, committed, and agreeing with the
loader on the step files and on the mistakes a schema can see."""

from __future__ import annotations

import os

import jsonschema
import pytest

from mnist_drill.config.json_schema import SCHEMA_FILE, json_schema, json_schema_text
from mnist_drill.config.loader import load_config
from mnist_drill.config.schema import to_dict
from mnist_drill.config.yaml_reader import read_yaml
from mnist_drill.errors import ConfigError

from helpers import CONFIGS, tiny_config, write_yaml

STEP_FILES = sorted(CONFIGS.rglob("*.yaml"))
VALIDATOR = jsonschema.Draft7Validator(json_schema())


def test_the_committed_schema_is_the_one_the_code_generates():
    assert (CONFIGS / SCHEMA_FILE).read_text() == json_schema_text(), (
        "the config code changed: python -m mnist_drill.config.json_schema > configs/mnist-drill.schema.json"
    )


def test_the_schema_is_a_draft_7_schema():
    jsonschema.Draft7Validator.check_schema(json_schema())


@pytest.mark.parametrize("path", STEP_FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_step_file_names_the_schema_on_its_first_line_and_validates(path):
    relative = os.path.relpath(CONFIGS / SCHEMA_FILE, path.parent)
    assert path.read_text().splitlines()[0] == f"# yaml-language-server: $schema={relative}"
    assert [e.message for e in VALIDATOR.iter_errors(read_yaml(path))] == []
    assert [e.message for e in VALIDATOR.iter_errors(to_dict(load_config(path)))] == []  # resolved: every key set


def test_a_section_lists_its_fields_with_their_defaults_and_comments():
    train = json_schema()["properties"]["train"]["properties"]
    assert train["device"] == {"type": "string", "enum": ["auto", "cpu", "cuda"], "default": "auto"}
    assert train["precision"]["description"] == "bf16 autocast is faster but changes results"
    assert json_schema()["definitions"]["maxpool"]["properties"]["stride"]["type"] == ["integer", "null"]


def conv(**keys) -> dict:
    return {"type": "conv", "out": 8, **keys}


# Mistakes an editor flags as they are typed, each refused by the loader too: (section or "blocks", the change).
MISTAKES = {
    "unknown top-level key": (None, {"epochs": 3}),
    "misspelt section key": ("train", {"epohcs": 2}),
    "unknown block key": ("blocks", conv(kernal=5)),
    "unknown block type": ("blocks", {"type": "conv2d", "out": 8}),
    "block without its required out": ("blocks", {"type": "conv"}),
    "text for a number": ("optim", {"lr": "fast"}),
    "fraction for an integer": ("data", {"batch_size": 64.5}),
    "true for an integer": ("train", {"epochs": True}),
    "a choice not offered": ("optim", {"name": "adamw"}),
    "an expectation not known": (None, {"expect": ["accuracy rises"]}),
    "an expectation twice": (None, {"expect": ["gap narrows", "gap narrows"]}),
    "three numbers for a pair": ("augment", {"scale": [0.9, 1.0, 1.1]}),
    "a section that is no mapping": (None, {"model": [1, 2]}),
    "extends no path": (None, {"extends": 3}),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_mistake_fails_the_schema_and_the_loader(mistake, tmp_path):
    where, change = MISTAKES[mistake]
    raw = tiny_config()
    if where == "blocks":
        raw["model"]["blocks"][0] = change
    elif where:
        raw.setdefault(where, {}).update(change)
    else:
        raw.update(change)
    assert list(VALIDATOR.iter_errors(raw))
    with pytest.raises(ConfigError):
        load_config(write_yaml(tmp_path, "mistake.yaml", raw))


def test_the_tiny_config_validates():
    assert [e.message for e in VALIDATOR.iter_errors(tiny_config())] == []
