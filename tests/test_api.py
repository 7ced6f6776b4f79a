"""The Python API (mnist_drill.run, load_run, sweep, Run) on the tiny model, in-process: what a notebook calls."""

from __future__ import annotations

import sys

import pytest
import torch

import mnist_drill
from mnist_drill.api import Run, config_path, override_items
from mnist_drill.errors import ConfigError, UsageError
from mnist_drill.training.data import load_split, normalize

from helpers import CONFIGS, REPO_ROOT, tiny_config, write_yaml


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    return write_yaml(tmp_path_factory.mktemp("configs"), "tiny.yaml", tiny_config())


@pytest.fixture(scope="module")
def trained(tiny_file, tmp_path_factory, data_dir) -> Run:
    """One 2-epoch tiny run through the API, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("runs")
    return mnist_drill.run(tiny_file, epochs=2, device="cpu", out=out, data_dir=data_dir)


def test_run_returns_the_run_it_trained(trained):
    assert isinstance(trained, mnist_drill.Run) and trained.dir.is_dir() and (trained.dir / "model.pt").is_file()
    assert trained.status == "completed" and trained.config.train.epochs == 2 and trained.epochs == 2
    assert [row["epoch"] for row in trained.metrics] == [1, 2]
    assert all(isinstance(v, float) for row in trained.metrics for k, v in row.items() if k != "epoch")
    assert trained.final_test_acc == trained.metrics[-1]["test_acc"]
    assert trained.best_test_acc == max(row["test_acc"] for row in trained.metrics)
    assert trained.gap == pytest.approx(trained.metrics[-1]["train_acc"] - trained.metrics[-1]["test_acc"])
    assert trained.verdict in ("over-fitting", "under-fitting", "healthy")
    assert set(trained.targets) and trained.all_met == all(trained.targets.values())
    assert trained.params == 1432 and trained.seeds == ()
    text = repr(trained)
    assert "\n" not in text and "tiny" in text and "2 of 2 epochs" in text and str(trained.dir) in text


def test_load_run_reads_a_run_folder_back_the_same(trained):
    again = mnist_drill.load_run(trained.dir)
    assert again.metrics == trained.metrics
    assert again == trained  # config, status and outcome too
    assert mnist_drill.load_run(str(trained.dir)).metrics == trained.metrics


def test_model_scores_as_the_last_epoch_did(trained, data_dir):
    model = trained.model()
    assert isinstance(model, torch.nn.Module) and not model.training
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    test = load_split(data_dir, train=False, subset=trained.config.data.test_subset)
    with torch.inference_mode():
        predictions = model(normalize(test.images)).argmax(1)
    acc = 100.0 * (predictions == test.labels).sum().item() / len(test)
    assert acc == pytest.approx(trained.metrics[-1]["test_acc"], abs=1e-3)  # metrics.csv keeps 6 digits


def test_show_without_ipython_prints_the_files(trained, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "IPython.display", None)  # import fails as where IPython is not installed
    trained.show()
    shown = capsys.readouterr().out.split()
    assert shown == [str(trained.dir / n) for n in ("analysis.md", "curves.png", "misclassified.png")]


def test_overrides_dict_is_applied_as_set(tiny_file, tmp_path, data_dir):
    r = mnist_drill.run(
        tiny_file,
        overrides={"model.dropout": 0.05, "data.batch_size": 32, "model.blocks[2].out": 12},
        device="cpu",
        out=tmp_path,
        data_dir=data_dir,
    )
    assert (r.config.model.dropout, r.config.data.batch_size, r.config.model.blocks[2].out) == (0.05, 32, 12)
    assert len(r.metrics) == 1 and r.status == "completed"


def test_a_bad_key_raises_the_one_line_config_error_before_anything_is_written(tiny_file, tmp_path):
    with pytest.raises(ConfigError) as err:
        mnist_drill.run(tiny_file, overrides={"model.dropuot": 0.1}, out=tmp_path / "out")
    assert "model.dropuot" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="expected a dict"):
        mnist_drill.run(tiny_file, overrides=["model.dropout=0.1"], out=tmp_path / "out")
    with pytest.raises(UsageError, match="seed or seeds"):
        mnist_drill.run(tiny_file, seed=1, seeds=[1, 2], out=tmp_path / "out")


def test_seeds_run_is_the_step_folder_with_a_run_per_seed(tiny_file, tmp_path, data_dir):
    r = mnist_drill.run(tiny_file, seeds=[1, 2], device="cpu", out=tmp_path, data_dir=data_dir)
    assert [s.config.train.seed for s in r.seeds] == [1, 2]
    assert all(s.dir.parent == r.dir for s in r.seeds) and (r.dir / "analysis.md").is_file()
    assert [(row["seed"], row["epoch"]) for row in r.metrics] == [(1, 1), (2, 1)]
    assert r.final_test_acc == pytest.approx(sum(s.final_test_acc for s in r.seeds) / 2)
    assert r.targets == {k: all(s.targets[k] for s in r.seeds) for k in r.seeds[0].targets}
    assert "seeds 1,2" in repr(r)
    again = mnist_drill.load_run(r.dir)
    assert again.metrics == r.metrics and again == r
    assert mnist_drill.load_run(r.seeds[1].dir).metrics == r.seeds[1].metrics
    assert isinstance(r.model(seed=2), torch.nn.Module)
    with pytest.raises(UsageError, match="no seed 7"):
        r.model(seed=7)
    side_by_side = mnist_drill.compare(*r.seeds, out=tmp_path / "compare")
    assert "seed_1" in side_by_side.text and "seed_2" in side_by_side.text
    assert (tmp_path / "compare" / "compare.md").is_file() and (tmp_path / "compare" / "compare.png").is_file()


def test_sweep_of_two_points(tiny_file, tmp_path, data_dir):
    s = mnist_drill.sweep(
        tiny_file, {"model.dropout": [0, 0.05]}, device="cpu", out=tmp_path, data_dir=data_dir, workers=1
    )
    assert s.dir == tmp_path / "sweep_tiny" and (s.dir / "sweep.md").is_file()
    assert [row["point"] for row in s.rows] == ["dropout_0.0", "dropout_0.05"]
    assert [row["status"] for row in s.rows] == ["completed", "completed"]
    assert [r.config.model.dropout for r in s.runs] == [0.0, 0.05]
    assert all(r.dir.parent.parent == s.dir and len(r.metrics) == 1 for r in s.runs)
    assert "2 trials" in repr(s)


def test_load_run_of_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(UsageError, match="no such run folder"):
        mnist_drill.load_run(tmp_path / "missing")
    with pytest.raises(UsageError, match="not a run folder"):
        mnist_drill.load_run(tmp_path)


def test_a_step_name_is_found_from_the_repo_or_a_folder_below_it(monkeypatch):
    monkeypatch.chdir(REPO_ROOT / "notebooks")
    assert config_path("step3") == CONFIGS / "step3_dropout.yaml"
    monkeypatch.chdir(REPO_ROOT)
    assert config_path("step3").resolve() == CONFIGS / "step3_dropout.yaml"
    with pytest.raises(ConfigError, match="no such config file or step"):
        config_path("step99")


def test_overrides_become_set_items_with_yaml_values():
    items = override_items({"model.dropout": 0.05, "data.augment.scale": [0.9, 1.1], "model.bn": False}, epochs=2)
    assert items == ["model.dropout=0.05", "data.augment.scale=[0.9, 1.1]", "model.bn=false", "train.epochs=2"]
    assert override_items(None, device="auto") == ["train.device=auto"]
