"""Every attempt kept: each run of a step gets a folder of its own, `runs` lists them, `compare` takes a step's
name, and run-all never collides with what ran before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnist_drill.errors import UsageError
from mnist_drill.runs.folder import attempt_dir
from mnist_drill.runs.listing import expand_runs, list_runs, runs_table
from mnist_drill.runs.steps import run_steps

from helpers import run_cli, tiny_config, write_yaml


def finished(folder: Path, status: str = "completed") -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"status": status}))
    return folder


@pytest.mark.parametrize(
    "existing, resume, expected",
    [
        ([], False, "attempt_1"),
        (["attempt_1", "attempt_2"], False, "attempt_3"),
        (["attempt_1", "attempt_9", "attempt_10"], False, "attempt_11"),  # by number, not by name
        (["attempt_1", "notes", "attempt_x"], False, "attempt_2"),
        ([], True, "attempt_1"),  # nothing to resume: a first attempt
        (["attempt_1", "attempt_2"], True, "attempt_2"),  # all finished: the newest (reused or refused)
    ],
)
def test_a_run_gets_the_next_attempt_and_resume_the_newest(tmp_path, existing, resume, expected):
    for name in existing:
        finished(tmp_path / name)
    assert attempt_dir(tmp_path, resume) == tmp_path / expected


def test_resume_takes_the_newest_unfinished_attempt(tmp_path):
    finished(tmp_path / "attempt_1", "interrupted")
    finished(tmp_path / "attempt_2", "interrupted")
    finished(tmp_path / "attempt_3")
    (tmp_path / "attempt_2" / "checkpoint.pt").write_bytes(b"")
    assert attempt_dir(tmp_path, resume=True) == tmp_path / "attempt_2"


@pytest.fixture
def steps(tmp_path):
    """Two tiny steps in a configs/ folder, the second extending the first."""
    first = tiny_config() | {"name": "step0_first"}
    second = {"extends": "step0_first.yaml", "name": "step1_second", "model": {"dropout": 0.05}}
    return [
        write_yaml(tmp_path / "configs", "step0_first.yaml", first),
        write_yaml(tmp_path / "configs", "step1_second.yaml", second),
    ]


def quiet(_line: str) -> None:
    pass


def test_runs_lists_every_attempt_newest_first_with_what_differs(tmp_path, steps, data_dir):
    out = tmp_path / "runs"
    run_steps(steps[1:], out, str(data_dir), echo=quiet)
    run_steps(steps[1:], out, str(data_dir), overrides=["model.dropout=0.1", "train.epochs=2"], echo=quiet)
    lines = list_runs(out, tmp_path / "configs")
    assert [(line.step, line.attempt, line.status) for line in lines] == [
        ("step1_second", "attempt_2", "finished"),
        ("step1_second", "attempt_1", "finished"),
    ]
    assert lines[0].changes == ("model.dropout=0.1", "train.epochs=2") and lines[1].changes == ()
    (newest,) = lines[0].outcomes
    assert newest.epochs == 2 and newest.params == 1432 and 0 < newest.final_test_acc <= 100
    assert runs_table(lines).splitlines()[1].split()[6:8] == ["1,432", "2/2"]
    assert [line.attempt for line in list_runs(out, tmp_path / "configs", where=("model.dropout=0.1",))] == [
        "attempt_2"
    ]
    assert list_runs(out, tmp_path / "configs", step="step0") == []
    assert list_runs(tmp_path / "no_runs_yet") == []


def test_compare_takes_a_step_name_for_all_its_attempts(tmp_path, steps, data_dir):
    out = tmp_path / "runs"
    for _ in range(2):
        run_steps(steps[:1], out, str(data_dir), echo=quiet)
    reference = tmp_path / "reference"
    run_steps(steps[:1], reference, str(data_dir), exact=True, echo=quiet)
    found = expand_runs(["step0"], out, reference)
    assert found == {
        "step0_first/attempt_1": out / "step0_first" / "attempt_1",
        "step0_first/attempt_2": out / "step0_first" / "attempt_2",
        "reference/step0_first": reference / "step0_first",
    }
    with pytest.raises(UsageError, match="no runs of a step of that name"):
        expand_runs(["step9"], out)


def test_overwrite_is_only_for_exact_folders(tmp_path, steps, data_dir):
    with pytest.raises(UsageError, match="--overwrite replaces a run in an --exact folder"):
        run_steps(steps[:1], tmp_path / "runs", str(data_dir), overwrite=True, echo=quiet)


@pytest.mark.slow  # the real CLI, as a student runs the loop
def test_the_drill_loop_keeps_every_attempt_and_run_all_never_collides(tmp_path, steps, data_dir):
    def cli(*args):
        proc = run_cli([*args], cwd=tmp_path, env={"MNIST_DRILL_DATA": str(data_dir.resolve())})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert cli("run", "step1").strip().endswith("runs/step1_second/attempt_1/")
    assert cli("run", "step1", "--set", "model.dropout=0.1").strip().endswith("runs/step1_second/attempt_2/")
    cli("run-all")
    assert sorted(p.name for p in (tmp_path / "runs" / "step1_second").iterdir()) == ["attempt_1", "attempt_2"]
    all_steps = tmp_path / "runs" / "run-all" / "attempt_1"
    assert (all_steps / "step0_first" / "model.pt").is_file() and (all_steps / "progression.md").is_file()
    listing = cli("runs").splitlines()
    assert len(listing) == 1 + 4  # the header, two attempts of step1, and run-all's two steps
    assert "model.dropout=0.1" in listing[-3] or "model.dropout=0.1" in " ".join(listing)
    assert "step1_second/attempt_2" in cli("compare", "step1")
    refused = run_cli(["run", "step1", "--resume"], cwd=tmp_path, env={"MNIST_DRILL_DATA": str(data_dir.resolve())})
    assert refused.returncode == 2
    assert "(model.dropout: 0.1 -> 0.05)" in refused.stderr  # the keys that differ, named
