"""Reliability through the real CLI: the same seed gives the same numbers, Ctrl-C and SIGTERM
save the finished epochs and --resume continues exactly, and a diverging loss stops cleanly.

The runs are independent of each other until --resume, so they are started together in two
phases by one module fixture; the tests read the results.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from helpers import run_cli, start_cli, tiny_config, write_yaml

EPOCHS = 3
SIGNALS = {"SIGINT": (signal.SIGINT, 130, "Ctrl-C"), "SIGTERM": (signal.SIGTERM, 143, "SIGTERM")}


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def metrics_without_seconds(run: Path) -> list[list[str]]:
    with open(run / "metrics.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0][-1] == "seconds"
    return [row[:-1] for row in table]


def snapshot(run: Path) -> dict:
    """The files of a run folder that the interruption tests check (None where missing)."""

    def read(name, how):
        return how(run / name) if (run / name).is_file() else None

    return {
        "metrics": read("metrics.csv", lambda p: metrics_without_seconds(run)) or [],
        "checkpoint epoch": read("checkpoint.pt", lambda p: torch.load(p, weights_only=True)["epoch"]),
        "model.pt": (run / "model.pt").exists(),
        "analysis": read("analysis.md", lambda p: p.read_text()) or "",
        "run.json": read("run.json", lambda p: json.loads(p.read_text())) or {},
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("reliability")
    # dropout, augmentation and a per-batch LR schedule: resuming must restore all of their state
    cfg = tiny_config()
    cfg["name"] = "rel"
    cfg["data"].update(train_subset=2048)
    cfg["model"].update(dropout=0.05)
    cfg["augment"] = {"rotation": 5.0}
    cfg["scheduler"] = {"name": "onecycle", "max_lr": 0.1}
    cfg["train"].update(epochs=EPOCHS)
    config = write_yaml(tmp, "rel.yaml", cfg)
    nan = tiny_config()
    nan["name"] = "step1_nan"
    nan["model"]["bn"] = False  # without BN a huge step overflows to inf instead of dying quietly
    nan["optim"]["lr"] = 1.0e30  # NaN in the 2nd batch from any initialisation tried (20 of 20)
    nan["train"]["epochs"] = 2
    nan_config = write_yaml(tmp / "steps", "step1_nan.yaml", nan)
    after = tiny_config()
    after["name"] = "step2_after"
    write_yaml(tmp / "steps", "step2_after.yaml", after)

    def run_args(out):
        return ["run", config, "--data-dir", data_dir, "--out", tmp / out, "--exact"]

    def interrupt(out, sig) -> Finished:
        """Start a run, send `sig` once the first epoch has been reported, wait for the exit."""
        proc = start_cli(run_args(out))
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("epoch  1/"):
                proc.send_signal(sig)
                break
        try:
            rest, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, err = proc.communicate()
        return Finished(proc.returncode, "".join(seen) + rest, err)

    with ThreadPoolExecutor(max_workers=4) as pool:
        phase1 = {
            "a": pool.submit(run_cli, run_args("a")),
            "b": pool.submit(run_cli, run_args("b")),
            **{name: pool.submit(interrupt, name, sig) for name, (sig, _, _) in SIGNALS.items()},
        }
        done = {name: future.result() for name, future in phase1.items()}
        for name in SIGNALS:  # what the interrupted run left, before --resume continues it
            done[f"{name} left"] = snapshot(tmp / name / "rel")
        phase2 = {
            **{f"{name} resumed": pool.submit(run_cli, [*run_args(name), "--resume"]) for name in SIGNALS},
            "nan": pool.submit(run_cli, ["run", nan_config, "--data-dir", data_dir, "--out", tmp / "nan", "--exact"]),
            "run-all": pool.submit(
                run_cli,
                ["run-all", "--configs", tmp / "steps", "--data-dir", data_dir, "--out", tmp / "all", "--exact"],
            ),
        }
        done.update({name: future.result() for name, future in phase2.items()})
    return done, tmp / "a" / "rel", tmp


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_the_same_seed_gives_the_same_numbers(results):
    done, reference, tmp = results
    for name in ("a", "b"):
        assert done[name].returncode == 0, done[name].stderr
    table = metrics_without_seconds(reference)
    assert len(table) == EPOCHS + 1
    assert table == metrics_without_seconds(tmp / "b" / "rel")
    first, second = (torch.load(tmp / n / "rel" / "model.pt") for n in ("a", "b"))
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow  # starts the real CLI in subprocesses
@pytest.mark.parametrize("name", SIGNALS)
def test_an_interrupted_run_saves_what_it_finished(results, name):
    done, _, tmp = results
    _, code, by = SIGNALS[name]
    proc = done[name]
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    left = done[f"{name} left"]
    finished = len(left["metrics"]) - 1
    assert 1 <= finished < EPOCHS
    assert left["checkpoint epoch"] == finished
    assert not left["model.pt"]
    note = f"stopped by {by} after {finished} finished epoch(s); continue with --resume"
    assert f"**Run interrupted**: {note}" in left["analysis"]
    assert note in proc.stdout
    assert left["run.json"]["status"] == "interrupted" and left["run.json"]["epochs_finished"] == finished


@pytest.mark.slow  # starts the real CLI in subprocesses
@pytest.mark.parametrize("name", SIGNALS)
def test_resume_continues_exactly(results, name):
    done, reference, tmp = results
    proc = done[f"{name} resumed"]
    assert proc.returncode == 0, proc.stderr
    run = tmp / name / "rel"
    assert "resuming rel after epoch" in proc.stdout
    assert metrics_without_seconds(run) == metrics_without_seconds(reference)
    resumed, uninterrupted = torch.load(run / "model.pt"), torch.load(reference / "model.pt")
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    assert not (run / "checkpoint.pt").exists()
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert "Run interrupted" not in (run / "analysis.md").read_text()


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_a_diverging_run_stops_with_exit_1(results):
    done, _, tmp = results
    proc = done["nan"]
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "the loss became NaN or infinite in epoch 1, batch " in proc.stdout
    run = tmp / "nan" / "step1_nan"
    analysis = (run / "analysis.md").read_text()
    assert "**Run diverged**" in analysis and "epoch 1, batch" in analysis
    assert json.loads((run / "run.json").read_text())["status"] == "diverged"
    assert not (run / "model.pt").exists()


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_run_all_goes_on_after_a_diverging_step(results):
    done, _, tmp = results
    proc = done["run-all"]
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp / "all" / "step2_after" / "model.pt").is_file()
    progression = (tmp / "all" / "progression.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in progression.splitlines() if line.startswith("| step")}
    assert "diverged" in rows["step1_nan"] and "step2_after" in rows
    assert "diverged" not in rows["step2_after"]
