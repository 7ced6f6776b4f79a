"""TensorBoard: each run's metrics.csv as scalars and its config as hparams, read back with TensorBoard's reader."""

from __future__ import annotations

import struct
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import plugin_data_pb2

from mnist_drill.config.loader import load_config
from mnist_drill.config.schema import flatten, to_dict
from mnist_drill.runs import run as runner
from mnist_drill.runs.run import run_step
from mnist_drill.storage.files import read_metrics

from helpers import ctrl_c_at_epoch, tiny_config, write_yaml

SCALARS = ["train_loss", "train_acc", "test_loss", "test_acc", "lr"]


def quiet(_line: str) -> None:
    pass


def tiny(folder, epochs: int):
    cfg = tiny_config()
    cfg["train"]["epochs"] = epochs
    return load_config(write_yaml(folder, "tiny.yaml", cfg))


def f32(value: float) -> float:
    """What an event file holds of a float (TensorBoard's scalars are float32)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def read_events(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every event
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("tensorboard")
    cfg = tiny(tmp, epochs=2)
    assert run_step(cfg, tmp / "run", str(data_dir), echo=quiet).status == "completed"
    return cfg, tmp / "run"


@pytest.mark.parametrize("tag", SCALARS)
def test_each_epoch_of_each_scalar_is_the_value_in_metrics_csv(two_epochs, tag):
    _, run_dir = two_epochs
    rows = read_metrics(run_dir / "metrics.csv")
    assert scalars(read_events(run_dir), tag) == [(row["epoch"], f32(row[tag])) for row in rows]


def test_one_event_file_in_the_run_folder_so_a_logdir_above_finds_every_run(two_epochs):
    _, run_dir = two_epochs
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    above = EventMultiplexer()  # what `tensorboard --logdir` reads: each folder holding events is a run
    above.AddRunsFromDirectory(str(run_dir.parent))
    assert list(above.Runs()) == ["run"]


def test_the_hparams_are_the_config_keys_that_train_with_best_and_final_test_acc_as_metrics(two_epochs):
    cfg, run_dir = two_epochs
    events = read_events(run_dir)
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = {key: getattr(value, value.WhichOneof("kind")) for key, value in start.session_start_info.hparams.items()}
    expected = {
        key: value
        for key, value in flatten(to_dict(cfg)).items()
        if key not in ("change", "reason", "expect") and value is not None
    }
    assert set(values) == set(expected)
    assert values["name"] == "tiny" and values["optim.name"] == "sgd" and values["augment.scale"] == "[1.0, 1.0]"
    assert (values["optim.lr"], values["train.epochs"], values["data.test_subset"]) == (0.05, 2, 256)
    assert (values["model.blocks[2].out"], values["model.blocks[3].type"], values["model.bn"]) == (16, "gap", 1)
    assert "_hparams_/experiment" not in content  # TensorBoard's HParams table then joins every run's keys
    test_acc = [row["test_acc"] for row in read_metrics(run_dir / "metrics.csv")]
    assert scalars(events, "best_test_acc") == [(2, f32(max(test_acc)))]
    assert scalars(events, "final_test_acc") == [(2, f32(test_acc[-1]))]


def test_a_resumed_run_continues_its_events_with_each_epoch_once(monkeypatch, tmp_path, data_dir):
    cfg = tiny(tmp_path, epochs=3)
    monkeypatch.setattr(runner, "run_epoch", ctrl_c_at_epoch(3))
    assert run_step(cfg, tmp_path / "run", str(data_dir), echo=quiet).status == "interrupted"
    assert [step for step, _ in scalars(read_events(tmp_path / "run"), "test_acc")] == [1, 2]
    monkeypatch.undo()
    assert run_step(cfg, tmp_path / "run", str(data_dir), resume=True, echo=quiet).status == "completed"
    events, rows = read_events(tmp_path / "run"), read_metrics(tmp_path / "run" / "metrics.csv")
    for tag in SCALARS:
        assert scalars(events, tag) == [(row["epoch"], f32(row[tag])) for row in rows]
    assert scalars(events, "final_test_acc") == [(3, f32(rows[-1]["test_acc"]))]


def test_without_tensorboard_a_run_writes_no_events_and_says_nothing_of_it(monkeypatch, tmp_path, data_dir):
    for name in [m for m in sys.modules if m.startswith(("tensorboard", "torch.utils.tensorboard"))]:
        monkeypatch.setitem(sys.modules, name, None)  # `import` raises ImportError, as without the package
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    lines = []
    assert run_step(tiny(tmp_path, epochs=1), tmp_path / "run", str(data_dir), echo=lines.append).status == "completed"
    assert not list((tmp_path / "run").glob("*tfevents*"))
    assert not any("tensorboard" in line.lower() for line in lines)
    assert "tensorboard" not in (tmp_path / "run" / "train.log").read_text().lower()
