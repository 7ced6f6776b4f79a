"""`mnist-drill sweep`: the grid and its folder names, --vary checked before anything runs, and sweeps through the
real CLI on a tiny model: the tables, a failing trial, Ctrl-C then --resume, and a worker killed outright.

The CLI sweeps are independent until --resume, so one module fixture starts them together and the tests read
the results.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from mnist_drill.config.schema import Config
from mnist_drill.errors import ConfigError, UsageError
from mnist_drill.reporting.analysis import assess
from mnist_drill.runs.run import Trial, TrialEnd
from mnist_drill.runs.sweep import (
    TRIAL_COLUMNS,
    Point,
    expand,
    parse_vary,
    point_names,
    run_sweep,
    split_values,
    sweep_markdown,
    trial_threads,
    write_sweep_csv,
)
from mnist_drill.storage.files import write_json

from helpers import CLI_TIMEOUT, cli_env, error_line, run_cli, tiny_config, write_yaml

SAFE_NAME = re.compile(r"[A-Za-z0-9_.+-]+")
# Two one-thread workers, three epochs each.
PARALLEL = ["--workers", "2", "--threads", "1", "--epochs", "3"]
# Two points x two seeds, long enough (3 epochs of 1,024 images) that a signal lands inside a trial.
GRID = ["--vary", "model.dropout=0,0.05", "--seeds", "1,2", *PARALLEL, "--set", "data.train_subset=1024"]


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


def without_seconds(table: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in table]


# ---------------------------------------------------------------- the grid, without training


@pytest.mark.parametrize(
    "text, values",
    [
        ("0,0.05", ["0", "0.05"]),
        ("8, 10 ,12", ["8", "10", "12"]),
        ("[0.9,1.1],[1,1]", ["[0.9,1.1]", "[1,1]"]),
        ("sgd", ["sgd"]),
    ],
)
def test_vary_values_split_at_commas_outside_brackets(text, values):
    assert split_values(text) == values


@pytest.fixture
def tiny_yaml(write_config, tiny):
    return write_config("tiny.yaml", tiny)


def test_the_grid_is_the_product_of_the_values_first_vary_slowest(tiny_yaml):
    points = expand(tiny_yaml, [parse_vary("model.dropout=0,0.05"), parse_vary("model.blocks[2].out=12,16")])
    assert [p.values for p in points] == [
        {"model.dropout": 0.0, "model.blocks[2].out": 12},
        {"model.dropout": 0.0, "model.blocks[2].out": 16},
        {"model.dropout": 0.05, "model.blocks[2].out": 12},
        {"model.dropout": 0.05, "model.blocks[2].out": 16},
    ]
    assert [p.name for p in points] == [
        "dropout_0.0__blocks2.out_12",
        "dropout_0.0__blocks2.out_16",
        "dropout_0.05__blocks2.out_12",
        "dropout_0.05__blocks2.out_16",
    ]
    assert [(p.cfg.model.dropout, p.cfg.model.blocks[2].out) for p in points] == [
        (0.0, 12),
        (0.0, 16),
        (0.05, 12),
        (0.05, 16),
    ]
    assert [p.cfg.name for p in points] == [p.name for p in points]  # each trial's logs say which variant it is


@pytest.mark.parametrize(
    "keys, grid",
    [
        (["model.dropout"], [{"model.dropout": v} for v in (0.0, 0.01, 0.1, 1e-3)]),
        (["augment.scale"], [{"augment.scale": [0.9, 1.1]}, {"augment.scale": [1.0, 1.0]}]),
        (
            ["model.blocks[1].out", "data.batch_size"],
            [{"model.blocks[1].out": o, "data.batch_size": b} for o in (8, 10) for b in (64, 128)],
        ),
        (
            ["optim.name", "scheduler.name"],
            [{"optim.name": o, "scheduler.name": s} for o in ("sgd", "adam") for s in ("none", "onecycle")],
        ),
        (["data.dir"], [{"data.dir": v} for v in ("a b", "a/b", "a-b", "../x")]),  # values that clash once made safe
    ],
)
def test_point_names_are_unique_filesystem_safe_and_deterministic(keys, grid):
    names = point_names(keys, grid)
    assert len(set(names)) == len(grid)
    assert all(SAFE_NAME.fullmatch(n) and n not in (".", "..") for n in names), names
    assert point_names(keys, grid) == names


def test_point_names_say_the_key_and_value():
    assert point_names(["model.blocks[1].out"], [{"model.blocks[1].out": 10}]) == ["blocks1.out_10"]
    assert point_names(["model.dropout"], [{"model.dropout": 0.02}]) == ["dropout_0.02"]
    # the same key name in two sections keeps the sections, so the name stays readable
    assert point_names(["optim.name", "scheduler.name"], [{"optim.name": "sgd", "scheduler.name": "none"}]) == [
        "optim.name_sgd__scheduler.name_none"
    ]


@pytest.mark.parametrize(
    "varies, message",
    [
        (["model.dropout=0,abc"], "--vary model.dropout=0,abc: model.dropout: expected a number, got 'abc'"),
        (["model.dropout=0,1.5"], "--vary model.dropout=0,1.5: model.dropout: must be in [0, 1)"),
        (["model.blocks[9].out=8"], "--vary model.blocks[9].out=8: index [9] is out of range"),
        (["model.dropot=0.1"], "--vary model.dropot=0.1: model.dropot: unknown key (did you mean 'dropout'?)"),
        (["model.dropout=0.1,0.10"], "--vary model.dropout=0.1,0.10: 0.10 is the same value as 0.1"),
        (["model.dropout=0", "model.dropout=0.1"], "--vary model.dropout: given twice"),
        (["scheduler.max_lr=0.05"], "--vary scheduler.max_lr=0.05: used only by scheduler.name onecycle"),
    ],
)
def test_a_bad_vary_value_is_a_config_error_naming_the_vary(tiny_yaml, varies, message):
    with pytest.raises(ConfigError) as err:
        expand(tiny_yaml, [parse_vary(v) for v in varies])
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def ended(point: Point, seed: int, last_test_accs: list[float] | None, params: int) -> TrialEnd:
    """A trial of `point` that completed with these last test accuracies, or (None) failed before an epoch."""
    trial = Trial(f"{point.name}/seed_{seed}", point.cfg, Path(point.name) / f"seed_{seed}")
    if last_test_accs is None:
        return TrialEnd(trial, "failed", 1, note="it broke")
    rows = [
        {"epoch": e, "train_loss": 0.1, "train_acc": acc, "test_loss": 0.1, "test_acc": acc, "lr": 0.01, "seconds": 1.0}
        for e, acc in enumerate([98.0, *last_test_accs], start=1)
    ]
    return TrialEnd(trial, "completed", 0, outcome=assess(rows, point.cfg, params, has_fc=False))


HOLDS, MISSES = [99.45, 99.41, 99.50], [99.45, 99.38, 99.50]


@pytest.mark.parametrize(
    "small, large, line",
    [
        (
            [HOLDS, HOLDS],
            [HOLDS, HOLDS],
            "Fewest parameters holding 99.4% in each of the last 3 epochs on every seed: small (5,000 params).",
        ),
        (
            [HOLDS, MISSES],
            [HOLDS, HOLDS],
            "Fewest parameters holding 99.4% in each of the last 3 epochs on every seed: large (6,000 params).",
        ),
        (
            [HOLDS, None],
            [HOLDS, HOLDS],
            "Fewest parameters holding 99.4% in each of the last 3 epochs on every seed: large (6,000 params).",
        ),
        ([MISSES, HOLDS], [HOLDS, MISSES], "No point holding 99.4% in each of the last 3 epochs on every seed."),
        ([HOLDS, MISSES], [HOLDS], None),  # large's seed 2 has not run yet
    ],
)
def test_sweep_md_names_the_smallest_point_that_holds_on_every_seed(small, large, line):
    points = [Point("small", {"model.dropout": 0.0}, Config()), Point("large", {"model.dropout": 0.1}, Config())]
    ends = {}
    for p, (point, params, per_seed) in enumerate(zip(points, (5_000, 6_000), (small, large))):
        for s, accs in enumerate(per_seed):
            ends[(p, s)] = ended(point, s + 1, accs, params)
    md = sweep_markdown("sweep_x", Path("x.yaml"), points, ends, [1, 2], figure=False)
    verdicts = [text for text in md.splitlines() if text.startswith(("Fewest parameters", "No point"))]
    assert verdicts == ([line] if line else [])


def point_table(per_point: dict[str, list[list[float]]]) -> dict[str, list[str]]:
    """sweep.md's table cells per point, for points whose seeds end at these last test accuracies (train alike)."""
    points = [Point(name, {"model.dropout": i / 10}, Config()) for i, name in enumerate(per_point)]
    seeds = list(range(1, max(len(v) for v in per_point.values()) + 1))
    ends = {
        (p, s): ended(point, s + 1, accs, 5_000)
        for p, point in enumerate(points)
        for s, accs in enumerate(per_point[point.name])
    }
    md = sweep_markdown("sweep_x", Path("x.yaml"), points, ends, seeds, figure=False)
    header = next(line for line in md.splitlines() if line.startswith("| point |"))
    names = [cell.strip() for cell in header.strip("|").split("|")]
    return {
        cells[0]: dict(zip(names, cells))
        for line in md.splitlines()
        if line.startswith("| ") and not line.startswith(("| point", "|---"))
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }


def test_sweep_md_shows_train_and_test_accuracy_gap_verdict_and_seeds_holding_per_point():
    row = point_table({"a": [HOLDS, HOLDS], "b": [MISSES, HOLDS]})["b"]
    assert row["final train_acc"] == row["final test_acc"] == "99.50 ± 0.00"
    assert row["final gap"] == "+0.00 ± 0.00" and row["verdict"] == "healthy"
    assert row["holds 99.4% over the last 3 epochs"] == "1/2" and row["seeds completed"] == "2/2"


@pytest.mark.parametrize(
    "per_point, cells",
    [
        # one seed a point: the value alone, never "± 0.00"; noise is 2 x the binomial errors on 10,000 images
        # combined, e.g. 2 x hypot(0.071, 0.122) = 0.28 for 99.5 against 98.5
        (
            {"a": [[99.5, 99.5, 99.5]], "b": [[98.5, 98.5, 98.5]]},
            {"a": ("99.50", "best"), "b": ("98.50", "**-1.00** (beyond noise ±0.28)")},
        ),
        # 0.05 points apart on one seed: within noise
        (
            {"a": [[99.5, 99.5, 99.5]], "b": [[99.45, 99.45, 99.45]]},
            {"a": ("99.50", "best"), "b": ("99.45", "-0.05 (within noise ±0.20)")},
        ),
        # the best point is the highest mean, wherever it sits in the grid
        (
            {"a": [[99.0, 99.0, 99.0]], "b": [[99.6, 99.6, 99.6]]},
            {"a": ("99.00", "**-0.60** (beyond noise ±0.24)"), "b": ("99.60", "best")},
        ),
    ],
)
def test_sweep_md_marks_differences_beyond_seed_noise_and_shows_one_seed_without_a_spread(per_point, cells):
    table = point_table(per_point)
    assert {name: (row["final test_acc"], row["vs best"]) for name, row in table.items()} == cells
    assert all("±" not in row["final train_acc"] + row["best test_acc"] + row["final gap"] for row in table.values())


@pytest.mark.parametrize(
    "info, threads",
    [
        ({"threads": 4, "device_name": "Intel(R) Xeon(R) Processor, 1 thread"}, 4),  # run.json's own count first
        ({"device_name": "Intel(R) Xeon(R) Processor, 1 thread"}, 1),  # a run.json from before `threads`
        ({"device_name": "AMD EPYC, 8 threads"}, 8),
        ({"device_name": "NVIDIA H200"}, None),
        ({}, None),
    ],
)
def test_the_thread_count_of_a_trial_is_read_from_its_run_json(info, threads):
    assert trial_threads(info) == threads


def test_sweep_md_says_which_thread_count_trained_the_trials(tmp_path):
    point = Point("a", {"model.dropout": 0.0}, Config())
    end = ended(point, 1, HOLDS, 5_000)
    end = dataclasses.replace(end, trial=dataclasses.replace(end.trial, run_dir=tmp_path / "a" / "seed_1"))
    write_json(tmp_path / "a" / "seed_1" / "run.json", {"status": "completed", "threads": 2})
    md = sweep_markdown("sweep_x", Path("x.yaml"), [point], {(0, 0): end}, [1], figure=False)
    assert "Torch threads per trial: 2 (each trial's run.json" in md
    write_sweep_csv(tmp_path / "sweep.csv", [point], {(0, 0): end}, [1])
    csv_rows = rows(tmp_path)
    assert csv_rows[0]["threads"] == "2" and csv_rows[0]["verdict"] == "healthy" and csv_rows[0]["gap"] == "0"


@pytest.mark.parametrize(
    "arg, message",
    [
        ("model.dropout", "expected section.key=value1,value2"),
        ("model.dropout=0,,1", "an empty value"),
        ("train.seed=1,2", "use --seeds instead"),
        ("name=a,b", "cannot be varied"),
    ],
)
def test_a_malformed_vary_is_refused(arg, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_vary(arg)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"address": "auto"}, "--address is for --executor ray"),
        ({"executor": "ray", "workers": 2}, "--workers is for --executor local"),
        ({"workers": 0}, "--workers 0: must be >= 1"),
        ({"threads": 0}, "--threads 0: must be >= 1"),
        ({"name": "a/b"}, "--name a/b: must be a plain folder name"),
        ({"resume": True, "overwrite": True}, "--resume and --overwrite contradict each other"),
    ],
)
def test_options_that_cannot_work_together_are_refused_before_anything_is_written(
    tiny_yaml, tmp_path, options, message
):
    with pytest.raises(UsageError, match=re.escape(message)):
        run_sweep(tiny_yaml, ["model.dropout=0,0.05"], tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- sweeps through the real CLI


def start_sweep(args) -> subprocess.Popen:
    """The CLI in a session of its own, so a signal can go to its whole process group, as Ctrl-C at a terminal does."""
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_drill", "sweep", *map(str, args)],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, seen: list[str]) -> Finished:
    try:
        rest, err = proc.communicate(timeout=CLI_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rest, err = proc.communicate()
    return Finished(proc.returncode, "".join(seen) + rest, err)


def interrupt(args) -> Finished:
    """Ctrl-C to the sweep's process group once a trial that started after the first one finished is one epoch in."""
    proc = start_sweep(args)
    seen, finished_one = [], False
    for line in proc.stdout:
        seen.append(line)
        finished_one = finished_one or line.rstrip().endswith("] completed")
        if finished_one and line.startswith("[dropout_0.05/") and "epoch  1/" in line:
            os.killpg(proc.pid, signal.SIGINT)
            break
    return finish(proc, seen)


def kill_worker(args, out: Path, victim: str) -> Finished:
    """SIGKILL the worker process of trial `victim` once it has started training (its train.log exists)."""
    proc = start_sweep(args)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        started = re.match(rf"\[{re.escape(victim)}\] started in worker process (\d+)", line)
        if started:
            log = out / victim / "train.log"
            deadline = time.monotonic() + CLI_TIMEOUT
            while not log.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(int(started.group(1)), signal.SIGKILL)
            break
    return finish(proc, seen)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("sweep")
    config = write_yaml(tmp, "tiny.yaml", tiny_config())
    common = [config, "--data-dir", data_dir]
    with ThreadPoolExecutor(max_workers=4) as pool:
        phase1 = {
            "full": pool.submit(run_cli, ["sweep", *common, *GRID, "--out", tmp / "full"]),
            "interrupted": pool.submit(interrupt, [*common, *GRID, "--out", tmp / "interrupted"]),
            # blocks[2] sees a 13x13 map: a 15x15 kernel does not fit, which only building the model finds out
            "failing": pool.submit(
                run_cli,
                ["sweep", *common, "--vary", "model.blocks[2].kernel=3,15", "--workers", "1", "--out", tmp / "failing"],
            ),
            "killed": pool.submit(
                kill_worker,
                [
                    *common,
                    "--vary",
                    "model.dropout=0,0.05,0.1",
                    *PARALLEL,
                    "--out",
                    tmp / "killed",
                ],
                tmp / "killed" / "sweep_tiny",
                "dropout_0.0/seed_1",
            ),
        }
        done = {name: future.result() for name, future in phase1.items()}
    done["interrupted left"] = rows(tmp / "interrupted" / "sweep_tiny")
    done["checkpoints left"] = sorted(p.parent.name for p in (tmp / "interrupted").rglob("checkpoint.pt"))
    done["resumed"] = run_cli(["sweep", *common, *GRID, "--out", tmp / "interrupted", "--resume"])
    before = (tmp / "full" / "sweep_tiny" / "sweep.csv").stat().st_mtime_ns
    done["again"] = run_cli(["sweep", *common, *GRID, "--out", tmp / "full"])
    done["untouched"] = (tmp / "full" / "sweep_tiny" / "sweep.csv").stat().st_mtime_ns == before
    return done, tmp


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_a_sweep_writes_a_run_folder_per_trial_and_its_tables(sweeps):
    done, tmp = sweeps
    assert done["full"].returncode == 0, done["full"].stderr
    sweep_dir = tmp / "full" / "sweep_tiny"
    table = rows(sweep_dir)
    assert list(table[0]) == ["point", "model.dropout", *TRIAL_COLUMNS]
    assert [(r["point"], r["model.dropout"], r["seed"], r["status"]) for r in table] == [
        ("dropout_0.0", "0.0", "1", "completed"),
        ("dropout_0.0", "0.0", "2", "completed"),
        ("dropout_0.05", "0.05", "1", "completed"),
        ("dropout_0.05", "0.05", "2", "completed"),
    ]
    for row in table:
        run = sweep_dir / row["point"] / f"seed_{row['seed']}"
        with open(run / "metrics.csv", newline="") as f:
            accs = [float(r["test_acc"]) for r in csv.DictReader(f)]
        assert (run / "model.pt").is_file() and (run / "analysis.md").is_file()
        assert len(accs) == int(row["epochs"]) == 3
        assert float(row["final_test_acc"]) == pytest.approx(accs[-1], abs=1e-3)
        assert float(row["best_test_acc"]) == pytest.approx(max(accs), abs=1e-3)
        assert float(row["min_last_test_acc"]) == pytest.approx(min(accs[-3:]), abs=1e-3)
        assert int(row["params"]) > 0 and int(row["macs_per_image"]) > 0 and row["targets_met"].endswith("/4")
    assert table[0]["final_test_acc"] != table[1]["final_test_acc"]  # the seeds differ
    md = (sweep_dir / "sweep.md").read_text()
    point_rows = [line for line in md.splitlines() if line.startswith("| dropout_")]
    assert [line.split(" | ")[0] for line in point_rows] == ["| dropout_0.0", "| dropout_0.05"]
    assert all(" | 2/2 | " in line and " ± " in line for line in point_rows)
    assert all(row["threads"] == "1" and row["verdict"] and row["final_train_acc"] for row in table)
    assert "Torch threads per trial: 1 (each trial's run.json" in md
    assert "![sweep](sweep.png)" in md
    assert (sweep_dir / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "2 worker processes x 1 torch thread(s)" in done["full"].stdout


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_a_failing_trial_is_recorded_and_the_others_finish(sweeps):
    done, tmp = sweeps
    proc = done["failing"]
    assert proc.returncode == 1, proc.stderr
    line = error_line(proc)
    assert "1 of 2 trials did not complete" in line and "kernel_15/seed_1 (failed)" in line
    table = rows(tmp / "failing" / "sweep_tiny")
    assert [(r["point"], r["status"]) for r in table] == [
        ("blocks2.kernel_3", "completed"),
        ("blocks2.kernel_15", "failed"),
    ]
    assert "kernel 15 (dilation 1) does not fit the 13x13 map" in table[1]["note"]
    assert "in this process" in proc.stdout  # one worker trains in the CLI's own process


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_ctrl_c_keeps_finished_trials_and_resume_ends_with_the_same_table(sweeps):
    done, tmp = sweeps
    proc = done["interrupted"]
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "--resume" in proc.stdout
    left = done["interrupted left"]
    assert any(r["status"] == "completed" for r in left)
    assert any(r["status"] == "interrupted" for r in left)
    assert done["checkpoints left"], "the signal should land inside a trial that finished an epoch"
    resumed = done["resumed"]
    assert resumed.returncode == 0, resumed.stderr
    assert "already complete" in resumed.stdout and "resuming dropout_0.05 after epoch" in resumed.stdout
    resumed_table, full_table = (rows(tmp / name / "sweep_tiny") for name in ("interrupted", "full"))
    assert without_seconds(resumed_table) == without_seconds(full_table)


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_a_worker_killed_outright_loses_only_its_trial(sweeps):
    done, tmp = sweeps
    proc = done["killed"]
    assert proc.returncode == 1, proc.stderr
    assert "dropout_0.0/seed_1 (failed)" in error_line(proc)
    table = {r["point"]: r for r in rows(tmp / "killed" / "sweep_tiny")}
    assert table["dropout_0.0"]["status"] == "failed"
    assert table["dropout_0.0"]["note"] == "worker killed by signal 9"
    assert table["dropout_0.05"]["status"] == table["dropout_0.1"]["status"] == "completed"


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_a_sweep_never_overwrites_an_earlier_one(sweeps):
    done, _ = sweeps
    assert done["again"].returncode == 2
    assert "already holds a sweep; pass --resume" in error_line(done["again"])
    assert done["untouched"]


@pytest.mark.slow  # starts the real CLI in subprocesses
@pytest.mark.parametrize("vary", ["model.dropout=0,abc", "model.blocks[2].out=8,x"])
def test_a_bad_vary_value_through_the_cli_is_one_line_and_writes_nothing(tmp_path, tiny, write_config, vary):
    proc = run_cli(["sweep", write_config("tiny.yaml", tiny), "--vary", vary, "--out", tmp_path / "out"])
    assert proc.returncode == 2
    assert error_line(proc).startswith(f"mnist-drill: error: --vary {vary}: ")
    assert not (tmp_path / "out").exists()
