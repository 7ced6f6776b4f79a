"""The strict config loader: defaults, extends chains, --set overrides, one-line errors, round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mnist_drill.config.blocks import ConvSpec, GapSpec, HeadSpec, MaxPoolSpec
from mnist_drill.config.loader import load_config, set_path, trains_alike
from mnist_drill.config.schema import (
    DESCRIPTIVE_KEYS,
    EXPECTATIONS,
    AugmentConfig,
    Config,
    ModelConfig,
    TrainConfig,
    flatten,
    to_dict,
    to_yaml,
)
from mnist_drill.config.yaml_reader import load_yaml_text
from mnist_drill.errors import ConfigError, UsageError

REPO = Path(__file__).resolve().parents[1]
STEP_CONFIGS = sorted((REPO / "configs").glob("step*.yaml"))
ALL_CONFIGS = [*STEP_CONFIGS, REPO / "configs" / "seeds" / "seed002_12k.yaml"]


# ---------------------------------------------------------------- defaults and merging


def test_defaults_fill_everything_not_in_the_file(write_config):
    cfg = load_config(write_config("minimal.yaml", "model: {bn: true}"))
    assert cfg.name == "minimal"  # the file's stem
    assert cfg.model.bn is True
    assert cfg.model.dropout == ModelConfig().dropout == 0.0
    assert cfg.train == TrainConfig()
    assert cfg.augment == AugmentConfig()
    assert cfg.data.batch_size == 128
    assert cfg.target.test_acc == 99.4 and cfg.target.max_params == 8000


def test_extends_chain_merges_mappings_key_by_key_and_replaces_lists(write_config):
    write_config(
        "base.yaml",
        """
        name: base
        optim: {name: sgd, lr: 0.02, momentum: 0.8}
        model:
          bn: true
          dropout: 0.1
          blocks:
            - {type: conv, out: 8}
            - {type: conv, out: 16}
            - {type: gap}
            - {type: head}
        """,
    )
    write_config(
        "middle.yaml",
        """
        extends: base.yaml
        name: middle
        optim: {lr: 0.05}
        model:
          blocks:
            - {type: conv, out: 4}
            - {type: gap}
            - {type: head}
        """,
    )
    leaf = write_config(
        "sub/leaf.yaml",
        """
        extends: ../middle.yaml
        name: leaf
        model: {dropout: 0.2}
        """,
    )
    cfg = load_config(leaf)
    assert cfg.name == "leaf"
    assert cfg.optim.name == "sgd" and cfg.optim.lr == 0.05 and cfg.optim.momentum == 0.8  # merged key by key
    assert cfg.model.bn is True and cfg.model.dropout == 0.2
    assert cfg.model.blocks == (ConvSpec(out=4), GapSpec(), HeadSpec())  # the list replaced whole


def changed_keys(old: Config, new: Config) -> set[str]:
    a, b = flatten(to_dict(old)), flatten(to_dict(new))
    return {k for k in a.keys() | b.keys() if k not in DESCRIPTIVE_KEYS and a.get(k) != b.get(k)}


@pytest.mark.parametrize(
    "old, new, changed",
    [
        ("step1_skeleton", "step2_bn", {"model.bn"}),
        ("step2_bn", "step3_dropout", {"model.dropout"}),
        ("step5_capacity", "step6_augmentation", {"augment.rotation"}),
    ],
)
def test_a_step_inherits_everything_it_does_not_change(old, new, changed):
    old_cfg, new_cfg = (load_config(REPO / "configs" / f"{n}.yaml") for n in (old, new))
    assert changed_keys(old_cfg, new_cfg) == changed
    assert new_cfg.name == new and new_cfg.change != old_cfg.change


def test_step7_keeps_the_augmentation_and_adds_one_cycle():
    step6 = load_config(REPO / "configs" / "step6_augmentation.yaml")
    step7 = load_config(REPO / "configs" / "step7_lr_scheduler.yaml")
    assert step7.scheduler.name == "onecycle" and step6.scheduler.name == "none"
    assert step7.augment == step6.augment and step7.augment.rotation > 0
    assert step7.model == step6.model


def test_precedence_defaults_then_yaml_then_set(write_config):
    path = write_config("p.yaml", "model: {dropout: 0.05, bn: true}\ntrain: {epochs: 4}")
    cfg = load_config(path)
    assert (cfg.model.dropout, cfg.train.epochs, cfg.train.seed) == (0.05, 4, 1)
    cfg = load_config(path, ["model.dropout=0.1", "train.seed=7"])
    assert (cfg.model.dropout, cfg.model.bn, cfg.train.epochs, cfg.train.seed) == (0.1, True, 4, 7)
    # later --set wins over earlier
    assert load_config(path, ["train.epochs=2", "train.epochs=3"]).train.epochs == 3


def test_set_can_replace_the_block_list(write_config):
    path = write_config("p.yaml", "model: {blocks: [{type: conv, out: 8}, {type: gap}, {type: head}]}")
    cfg = load_config(path, ["model.blocks=[{type: gap}, {type: head}]"])
    assert cfg.model.blocks == (GapSpec(), HeadSpec())


def test_child_without_a_name_is_named_after_its_own_file(write_config):
    # Config.name "defaults to the config file's stem"; a child that does not set a name must not
    # inherit its parent's (both runs would then write into the same results folder).
    write_config("parent.yaml", "name: parent\nmodel: {bn: true}")
    child = write_config("child.yaml", "extends: parent.yaml\nmodel: {dropout: 0.1}")
    assert load_config(child).name == "child"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("optim: {lr: 1e-3}", 0.001),
        ("optim: {lr: 5e-2}", 0.05),
        ("optim: {lr: 0.001}", 0.001),
        ("optim: {lr: 1}", 1.0),
    ],
)
def test_numbers_in_scientific_notation_are_numbers(write_config, text, expected):
    # PyYAML reads `1e-3` (no dot) as a string; a config loader that asks for "a number" should
    # still accept the way everyone writes learning rates.
    assert load_config(write_config("lr.yaml", text)).optim.lr == pytest.approx(expected)


def test_set_accepts_scientific_notation(write_config):
    path = write_config("p.yaml", "model: {bn: true}")
    assert load_config(path, ["optim.lr=1e-3"]).optim.lr == pytest.approx(0.001)


# ---------------------------------------------------------------- errors: one line, file and key


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("model: {dropotu: 0.1}", ["model.dropotu", "unknown key", "did you mean 'dropout'"]),
        ("trian: {epochs: 3}", ["trian", "unknown key", "did you mean 'train'"]),
        ("model: {blocks: [{type: conv, out: 8, kernal: 3}]}", ["model.blocks[0].kernal", "did you mean 'kernel'"]),
        ("train: {epochs: ten}", ["train.epochs", "expected an integer", "'ten'"]),
        ("train: {epochs: true}", ["train.epochs", "expected an integer", "True"]),
        ("model: {bn: 1}", ["model.bn", "expected true/false"]),
        ("optim: {lr: fast}", ["optim.lr", "expected a number"]),
        ("augment: {interpolation: cubic}", ["augment.interpolation", "'nearest'", "'bilinear'"]),
        ("augment: {scale: [0.9]}", ["augment.scale", "a list of 2 numbers"]),
        ("model: {dropout: 1.0}", ["model.dropout", "[0, 1)"]),
        ("train: {epochs: 0}", ["train.epochs", ">= 1"]),
        ("train: {label_smoothing: 1.0}", ["train.label_smoothing", "[0, 1)"]),
        ("train: {label_smoothing: -0.1}", ["train.label_smoothing", "[0, 1)"]),
        ("augment: {rotation: -1}", ["augment.rotation", "[0, 180]"]),
        ("augment: {scale: [1.2, 1.1]}", ["augment.scale", "low <= high"]),
        ("optim: {lr: 0}", ["optim.lr", "> 0"]),
        ("target: {test_acc: 101}", ["target.test_acc", "(0, 100]"]),
        ("name: a/b", ["name", "plain folder name"]),
        ("expect: [gap shrinks]", ["expect", "unknown item 'gap shrinks'", "valid: params fall,", "gap narrows"]),
        ("expect: gap narrows", ["expect", "expected a list"]),
        ("expect: [gap narrows, gap narrows]", ["expect", "twice"]),
        ("expect: [gap narrows, gap widens]", ["expect", "'gap narrows' and 'gap widens' contradict"]),
        ("reason: [a, b]", ["reason", "expected a string"]),
        ("model: {blocks: [{type: conv, out: 0}]}", ["model.blocks[0].out", ">= 1"]),
        ("model: {blocks: [{type: conv, out: 8, dropout: 1.5}]}", ["model.blocks[0].dropout", "[0, 1)"]),
        ("model: {blocks: [{type: gap}, {type: conv, out: 8, kernel: 0}]}", ["model.blocks[1].kernel", ">= 1"]),
        (
            "model: {blocks: [{type: convv, out: 8}]}",
            ["model.blocks[0].type", "unknown block type 'convv'", "did you mean 'conv'"],
        ),
        ("model: {blocks: [{type: conv}]}", ["model.blocks[0].out", "missing required key"]),
        ("model: {blocks: [{out: 8}]}", ["model.blocks[0]", "'type'"]),
        ("model: {blocks: [conv]}", ["model.blocks[0]", "mapping"]),
        ("model: [1, 2]", ["model", "expected a mapping"]),
    ],
)
def test_errors_name_the_file_and_the_dotted_key(write_config, text, fragments):
    path = write_config("bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_an_error_in_a_parent_file_names_the_parent(write_config):
    parent = write_config("parent.yaml", "model: {dropotu: 0.1}")
    child = write_config("child.yaml", "extends: parent.yaml\nmodel: {bn: true}")
    with pytest.raises(ConfigError, match="did you mean 'dropout'") as info:
        load_config(child)
    assert str(info.value).startswith(f"{parent.resolve()}: model.dropotu")


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_missing_extends_file(write_config, tmp_path):
    path = write_config("child.yaml", "extends: nothere.yaml\nmodel: {bn: true}")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "extends" in str(info.value) and str(tmp_path / "nothere.yaml") in str(info.value)


def test_extends_must_be_a_path(write_config):
    with pytest.raises(ConfigError, match="extends: expected a path"):
        load_config(write_config("c.yaml", "extends: [a.yaml]"))


@pytest.mark.parametrize(
    "files",
    [
        {"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"},
        {"a.yaml": "extends: a.yaml\n"},
        {"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: c.yaml\n", "c.yaml": "extends: b.yaml\n"},
    ],
)
def test_extends_cycle(write_config, files):
    for name, text in files.items():
        write_config(name, text)
    with pytest.raises(ConfigError, match="extends cycle"):
        load_config(Path(write_config("a.yaml", files["a.yaml"])))


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("", ["the file is empty"]),
        ("# only a comment\n", ["the file is empty"]),
        ("model:\n  bn: true\n   dropout: 0.1\n", ["invalid YAML", "line 3", "column"]),
        ("model: {bn: true\n", ["invalid YAML", "line", "column"]),
        ("- a\n- b\n", ["expected a mapping at the top level", "list"]),
        ("just a string\n", ["expected a mapping at the top level", "str"]),
    ],
)
def test_file_level_errors(write_config, text, fragments):
    path = write_config("f.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_invalid_yaml_reports_the_exact_position(write_config):
    path = write_config("f.yaml", "model:\n  bn: true\n   dropout: 0.1\n")
    with pytest.raises(ConfigError, match=r"at line 3, column 11"):
        load_config(path)


# ---------------------------------------------------------------- the strict YAML reader (refusals: test_faults.py)


@pytest.mark.parametrize(
    "text, value",
    [
        ("1e-3", 0.001),  # YAML 1.1 reads a string; everybody means a number
        ("-.5", -0.5),
        ("1.", 1.0),
        ("0x10", 16),
        ("0o17", 15),
        ("0", 0),
        ("true", True),
        ("FALSE", False),
        ("~", None),
        ("'yes'", "yes"),  # quoted, the word is a word
        ('"1:30"', "1:30"),
        ("2024-01-01", "2024-01-01"),  # no dates: a step named after a day is a name
        ("1_000", "1_000"),  # YAML 1.2: not a number, so an integer key says so instead of guessing
        ("[1.0, 1.1]", [1.0, 1.1]),
    ],
)
def test_the_strict_reader_reads_what_the_text_says(text, value):
    read = load_yaml_text(f"key: {text}\n", "f.yaml")["key"]
    assert read == value and type(read) is type(value)


def test_a_step_config_may_use_quotes_comments_and_a_document_marker(write_config):
    cfg = load_config(
        write_config(
            "q.yaml",
            """
        --- # one document, marked
        name: "on"      # a quoted YAML 1.1 word is a name like any other
        change: 'yes: 1:30, 010'
        optim: {lr: 1e-3}
        ...
        """,
        )
    )
    assert (cfg.name, cfg.change, cfg.optim.lr) == ("on", "yes: 1:30, 010", 0.001)


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.stem)
def test_a_saved_config_passes_the_strict_reader(path, tmp_path):
    cfg = load_config(path)
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(cfg))
    assert trains_alike(saved, cfg)


def test_words_and_numbers_yaml_1_1_reads_otherwise_round_trip_through_a_saved_config(write_config, tmp_path):
    cfg = load_config(write_config("w.yaml", "name: 'off'\nchange: '1:30'\n"))
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(cfg))  # safe_dump quotes what would read back otherwise
    assert load_config(saved).change == "1:30" and load_config(saved).name == "off"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("- a\n", "expected a mapping at the top level, got a list"),
        ("model: {bn: yes}\n", "model.bn: yes is YAML 1.1 for true"),
        ("optim: {lr: 0.1\n", "invalid YAML"),
        ("\x89PNG\r\n\x1a\n\x00", "holds NUL bytes"),
    ],
)
def test_a_damaged_saved_config_says_to_restore_it_or_overwrite(tmp_path, text, fragment):
    saved = tmp_path / "run" / "config.yaml"
    saved.parent.mkdir()
    saved.write_text(text)
    with pytest.raises(UsageError) as info:
        trains_alike(saved, Config())
    message = str(info.value)
    assert message.startswith(f"{saved}: ") and fragment in message
    assert message.endswith(
        f"it is the config of the run in {saved.parent}: restore it, or pass --overwrite to train the run afresh"
    )


def test_a_missing_saved_config_is_named(tmp_path):
    with pytest.raises(UsageError, match=r"config.yaml: no such config file; it is the config of the run in"):
        trains_alike(tmp_path / "config.yaml", Config())


@pytest.mark.parametrize(
    "item, fragments",
    [
        ("model.dropotu=0.1", ["--set model.dropotu=0.1", "model.dropotu", "did you mean 'dropout'"]),
        ("model.dropout=1.5", ["--set model.dropout=1.5", "model.dropout", "[0, 1)"]),
        ("train.epochs=ten", ["--set train.epochs=ten", "expected an integer"]),
        ("nodot", ["--set nodot", "section.key=value"]),
        ("=3", ["--set =3", "section.key=value"]),
        ("model.dropout=[0.1", ["--set model.dropout=[0.1", "not valid YAML"]),
    ],
)
def test_set_errors_name_the_set(write_config, item, fragments):
    path = write_config("ok.yaml", "model: {bn: true}")
    with pytest.raises(ConfigError) as info:
        load_config(path, [item])
    message = str(info.value)
    assert message.startswith("--set "), message
    for fragment in fragments:
        assert fragment in message, message


def test_set_path_splits_the_dotted_key_and_reads_the_value_as_yaml():
    assert set_path("model.dropout=0.1") == (["model", "dropout"], 0.1)
    assert set_path("augment.scale=[0.9, 1.1]") == (["augment", "scale"], [0.9, 1.1])
    assert set_path("model.blocks[2].out=12") == (["model", "blocks", 2, "out"], 12)
    assert set_path("change=") == (["change"], "")


# ---------------------------------------------------------------- round trip, frozen, flatten


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.stem)
def test_to_yaml_round_trip(path, tmp_path):
    cfg = load_config(path, ["augment.scale=[0.9, 1.1]"])
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(to_yaml(cfg))
    assert load_config(dumped) == cfg


def test_to_dict_puts_the_block_type_first():
    cfg = Config(model=ModelConfig(blocks=(ConvSpec(out=8), MaxPoolSpec())))
    blocks = to_dict(cfg)["model"]["blocks"]
    assert [list(b)[0] for b in blocks] == ["type", "type"]
    assert blocks[0]["type"] == "conv" and blocks[0]["out"] == 8 and blocks[1]["type"] == "maxpool"


@pytest.mark.parametrize(
    "assign",
    [
        lambda c: setattr(c, "name", "other"),
        lambda c: setattr(c.model, "dropout", 0.5),
        lambda c: setattr(c.train, "epochs", 3),
        lambda c: setattr(c.model.blocks[0], "out", 3),
    ],
)
def test_configs_are_frozen(assign):
    cfg = load_config(REPO / "configs" / "step3_dropout.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        assign(cfg)


def test_flatten_indexes_block_lists():
    cfg = Config(model=ModelConfig(blocks=(ConvSpec(out=8), GapSpec())))
    flat = flatten(to_dict(cfg))
    assert flat["model.blocks.length"] == 2
    assert flat["model.blocks[0].out"] == 8 and flat["model.blocks[1].type"] == "gap"
    assert flat["model.dropout"] == 0.0 and flat["augment.scale"] == [1.0, 1.0]


def test_trains_alike_ignores_the_name_and_change_note_only(write_config):
    cfg = load_config(write_config("a.yaml", "name: a\nchange: first note\nmodel: {dropout: 0.05}"))
    renamed = load_config(write_config("b.yaml", "name: b\nchange: another note\nmodel: {dropout: 0.05}"))
    retuned = load_config(write_config("c.yaml", "name: a\nchange: first note\nmodel: {dropout: 0.1}"))
    assert trains_alike(write_config("saved/renamed.yaml", to_yaml(renamed)), cfg)
    assert not trains_alike(write_config("saved/retuned.yaml", to_yaml(retuned)), cfg)


# ---------------------------------------------------------------- reason and expect: what a step aims at


@pytest.mark.parametrize("path", STEP_CONFIGS[1:], ids=lambda p: p.name)
def test_every_step_after_the_first_states_its_reason_and_expectations(path):
    cfg = load_config(path)
    assert cfg.reason and "\n" not in cfg.reason  # one paragraph, shown in analysis.md's Target
    assert cfg.expect and set(cfg.expect) <= set(EXPECTATIONS)


def test_step0_states_its_reason_and_expects_nothing_without_a_step_before():
    cfg = load_config(STEP_CONFIGS[0])
    assert cfg.reason and cfg.expect == ()


def test_a_parents_reason_and_expectations_do_not_leak_into_the_child(write_config):
    write_config(
        "parent.yaml", "name: parent\nchange: p\nreason: why the parent\nexpect: [gap narrows]\nmodel: {bn: true}"
    )
    child = load_config(write_config("child.yaml", "extends: parent.yaml\nmodel: {dropout: 0.1}"))
    assert (child.name, child.change, child.reason, child.expect) == ("child", "", "", ())
    assert child.model.bn is True  # training keys are inherited as before
    own = load_config(write_config("own.yaml", "extends: parent.yaml\nreason: mine\nexpect: [test_acc holds]"))
    assert (own.reason, own.expect) == ("mine", ("test_acc holds",))


def test_reason_and_expect_can_be_set_on_the_command_line(write_config):
    cfg = load_config(write_config("a.yaml", "model: {bn: true}"), ["reason=try it", "expect=[params fall]"])
    assert (cfg.reason, cfg.expect) == ("try it", ("params fall",))
    with pytest.raises(ConfigError, match=r"^--set expect=\[params drop\]: expect: unknown item 'params drop'"):
        load_config(write_config("b.yaml", "model: {bn: true}"), ["expect=[params drop]"])


@pytest.mark.parametrize(
    "key, value",
    [("name", "b"), ("change", "another note"), ("reason", "another reason"), ("expect", ["test_acc rises"])],
)
def test_trains_alike_ignores_each_descriptive_key(write_config, key, value):
    cfg = load_config(
        write_config("a.yaml", "name: a\nchange: c\nreason: r\nexpect: [gap narrows]\nmodel: {dropout: 0.05}")
    )
    described = to_dict(cfg) | {key: value}
    assert key in DESCRIPTIVE_KEYS
    assert trains_alike(write_config("saved/described.yaml", described), cfg)
    retuned = described | {"model": to_dict(cfg.model) | {"dropout": 0.1}}
    assert not trains_alike(write_config("saved/retuned.yaml", retuned), cfg)
