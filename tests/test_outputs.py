"""Atomic writes, run folders that are never overwritten silently, metrics files, provenance."""

from __future__ import annotations

import json
import platform
import subprocess

import pytest

from mnist_drill.outputs import (atomic_path, git_commit, prepare_run_dir, provenance, read_metrics, save_torch,
                                 write_json, write_metrics, write_text)
from mnist_drill.errors import UsageError
from mnist_drill.train import METRIC_COLUMNS


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    write_text(path, "first")
    write_text(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("error", [RuntimeError("writer failed"), KeyboardInterrupt()])
def test_a_failing_writer_keeps_the_old_content_and_no_temp(tmp_path, error):
    path = tmp_path / "out.txt"
    write_text(path, "old content")
    with pytest.raises(type(error)):
        with atomic_path(path) as tmp:
            assert tmp.parent == path.parent and tmp != path
            tmp.write_text("half written")
            raise error
    assert path.read_text() == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_failing_first_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "new.txt") as tmp:
            tmp.write_text("x")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_write_json_and_save_torch(tmp_path):
    import torch

    write_json(tmp_path / "r.json", {"a": 1, "path": tmp_path})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1, "path": str(tmp_path)}
    save_torch(tmp_path / "t.pt", {"w": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "t.pt")["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "t.pt"]


def test_metrics_round_trip(tmp_path):
    rows = [{"epoch": 1, "train_loss": 0.123456789, "train_acc": 95.5, "test_loss": 0.0456, "test_acc": 98.76,
             "lr": 0.01, "seconds": 3.25},
            {"epoch": 2, "train_loss": 0.05, "train_acc": 98.123456, "test_loss": 0.03, "test_acc": 99.12,
             "lr": 0.001, "seconds": 2.5}]
    path = tmp_path / "metrics.csv"
    write_metrics(path, rows, METRIC_COLUMNS)
    assert path.read_text().splitlines()[0] == "epoch,train_loss,train_acc,test_loss,test_acc,lr,seconds"
    back = read_metrics(path)
    assert len(back) == 2 and all(list(r) == list(METRIC_COLUMNS) for r in back)
    for original, read in zip(rows, back):
        assert read["epoch"] == original["epoch"] and isinstance(read["epoch"], int)
        for key in METRIC_COLUMNS[1:]:
            assert read[key] == pytest.approx(original[key], rel=1e-5)
    # writing what was read gives the same file
    write_metrics(tmp_path / "again.csv", back, METRIC_COLUMNS)
    assert (tmp_path / "again.csv").read_text() == path.read_text()


def test_new_run_folder_is_created(tmp_path):
    prepare_run_dir(tmp_path / "a" / "b", overwrite=False, resume=False)
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []


def test_an_empty_folder_is_fine(tmp_path):
    (tmp_path / "run").mkdir()
    prepare_run_dir(tmp_path / "run", overwrite=False, resume=False)


def test_a_previous_run_is_never_overwritten_silently(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("precious")
    with pytest.raises(UsageError) as info:
        prepare_run_dir(run, overwrite=False, resume=False)
    assert "--overwrite" in str(info.value) and str(run) in str(info.value)
    assert (run / "metrics.csv").read_text() == "precious"


def test_overwrite_replaces_the_folder(tmp_path):
    run = tmp_path / "run"
    (run / "seed_1").mkdir(parents=True)
    (run / "metrics.csv").write_text("old")
    prepare_run_dir(run, overwrite=True, resume=False)
    assert run.is_dir() and list(run.iterdir()) == []


def test_resume_needs_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("old")
    with pytest.raises(UsageError, match="no checkpoint.pt to resume from"):
        prepare_run_dir(run, overwrite=False, resume=True)
    with pytest.raises(UsageError, match="no checkpoint.pt"):
        prepare_run_dir(tmp_path / "missing", overwrite=False, resume=True)
    (run / "checkpoint.pt").write_bytes(b"x")
    prepare_run_dir(run, overwrite=False, resume=True)
    assert (run / "metrics.csv").read_text() == "old"  # resuming keeps what is there


def test_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        prepare_run_dir(tmp_path / "file", overwrite=True, resume=False)
    with pytest.raises(UsageError, match="cannot write here"):
        prepare_run_dir(tmp_path / "file" / "run", overwrite=False, resume=False)
    assert (tmp_path / "file").read_text() == "x"


def test_provenance_has_versions():
    import torch
    import torchvision

    info = provenance()
    assert info["torch"] == torch.__version__ and info["torchvision"] == torchvision.__version__
    assert info["python"] == platform.python_version()
    assert {"mnist_drill", "git_commit", "git_dirty", "platform"} <= set(info)


def test_git_commit_outside_a_checkout(tmp_path):
    assert git_commit(tmp_path) == (None, None)


def test_git_commit_is_dirty_for_changed_code_but_not_for_regenerated_results(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "src").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "src" / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "metrics.csv").write_text("epoch\n1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    commit, dirty = git_commit(tmp_path / "src")
    assert len(commit) == 40 and dirty is False
    (tmp_path / "results" / "metrics.csv").write_text("epoch\n1\n2\n")
    assert git_commit(tmp_path / "src") == (commit, False)
    (tmp_path / "src" / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path / "src") == (commit, True)
