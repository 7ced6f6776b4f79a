"""Where trials train: seeds in parallel worker processes give the numbers one process gives, trials in this
process keep going past a failing one, the thread count per worker, and a sweep on a local Ray instance."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mnist_drill.config.loader import load_config
from mnist_drill.errors import ConfigError
from mnist_drill.runs import executor
from mnist_drill.runs.executor import default_threads, run_trials
from mnist_drill.runs.run import Trial

from helpers import CLI_TIMEOUT, cli_env, error_line, run_cli, run_cli_many


def metrics_without_seconds(run: Path) -> list[list[str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [row[:-1] for row in csv.reader(f)]


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_run_seeds_with_two_workers_gives_the_same_numbers_as_one(tmp_path, tiny, write_config, data_dir):
    tiny["train"]["epochs"] = 2
    config = write_config("tiny.yaml", tiny)
    done = run_cli_many(
        {
            n: [
                "run",
                config,
                "--seeds",
                "1,2",
                "--workers",
                n,
                "--data-dir",
                data_dir,
                "--out",
                tmp_path / n,
                "--exact",
            ]
            for n in ("1", "2")
        }
    )
    for proc in done.values():
        assert proc.returncode == 0, proc.stderr
    assert "started in worker process" in done["2"].stdout and "worker process" not in done["1"].stdout
    for seed in ("seed_1", "seed_2"):
        one, two = tmp_path / "1" / "tiny" / seed, tmp_path / "2" / "tiny" / seed
        assert metrics_without_seconds(one) == metrics_without_seconds(two)
        first, second = torch.load(one / "model.pt"), torch.load(two / "model.pt")
        assert all(torch.equal(first[k], second[k]) for k in first)
    tables = [(tmp_path / n / "tiny" / "analysis.md").read_text() for n in ("1", "2")]
    assert tables[0] == tables[1]


def test_trials_in_this_process_keep_going_past_a_failing_one(tmp_path, tiny, write_config, data_dir):
    config = write_config("tiny.yaml", tiny)
    good = load_config(config)
    bad = load_config(config, ["model.blocks[2].kernel=15"])  # does not fit its 13x13 map
    trials = [Trial("bad", bad, tmp_path / "bad"), Trial("good", good, tmp_path / "good")]
    seen = []
    ends = run_trials(trials, str(data_dir), keep_going=True, echo=lambda line: None, on_end=seen.append)
    assert [(e.trial.label, e.status) for e in ends] == [("bad", "failed"), ("good", "completed")]
    assert seen == ends
    assert "does not fit" in ends[0].note and isinstance(ends[0].error, ConfigError)
    assert ends[1].outcome.epochs == 1 and (tmp_path / "good" / "model.pt").is_file()
    with pytest.raises(ConfigError, match="does not fit"):  # as `run` reports it: the error itself
        run_trials(trials[:1], str(data_dir), echo=lambda line: None)


@pytest.mark.slow  # spawns worker processes
def test_a_user_error_in_a_worker_reaches_the_parent_as_that_error(tmp_path, tiny, write_config, data_dir):
    """Workers send a DrillError to the parent pickled: it must arrive typed, with its message (errors.py)."""
    config = write_config("tiny.yaml", tiny)
    bad = load_config(config, ["model.blocks[2].kernel=15"])  # does not fit its 13x13 map
    trials = [Trial(f"bad{i}", bad, tmp_path / f"bad{i}") for i in (1, 2)]
    ends = run_trials(trials, str(data_dir), workers=2, keep_going=True, echo=lambda line: None)
    assert [e.status for e in ends] == ["failed", "failed"]
    assert all(isinstance(e.error, ConfigError) and "does not fit" in str(e.error) for e in ends)


@pytest.mark.parametrize(
    "env, cpus, workers, threads",
    [(None, 16, 4, 4), (None, 16, 3, 5), (None, 2, 4, 1), ("1", 16, 4, 1), ("3", 2, 2, 3), ("x", 8, 2, 4)],
)
def test_each_worker_gets_its_share_of_the_cpus_or_omp_num_threads(monkeypatch, env, cpus, workers, threads):
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    monkeypatch.setattr(executor, "available_cpus", lambda: cpus)
    assert default_threads(workers) == threads


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_the_ray_executor_without_ray_says_how_to_install_it(tmp_path, tiny, write_config):
    fake = tmp_path / "no_ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    path = os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])
    proc = run_cli(
        [
            "sweep",
            write_config("tiny.yaml", tiny),
            "--vary",
            "model.dropout=0,0.05",
            "--executor",
            "ray",
            "--out",
            tmp_path / "out",
        ],
        env={"PYTHONPATH": path},
    )
    assert proc.returncode == 2
    assert (
        error_line(proc) == "mnist-drill: error: --executor ray: Ray is not installed here; "
        "pip install 'mnist-drill[ray]'"
    )
    assert not (tmp_path / "out").exists()


def session_processes(sid: int) -> list[int]:
    """The pids of the processes in session `sid` (from /proc: the field after the process group)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow  # starts a Ray instance
def test_a_sweep_on_a_local_ray_instance_brings_every_run_folder_back(tmp_path, tiny, write_config, data_dir):
    config = write_config("tiny.yaml", tiny)
    # No --address: the CLI starts a local Ray instance and shuts it down. In a session of its own, so that
    # whatever Ray leaves running afterwards can be found (and stopped) here.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnist_drill",
            "sweep",
            str(config),
            "--vary",
            "model.dropout=0,0.05",
            "--executor",
            "ray",
            "--data-dir",
            str(data_dir),
            "--out",
            str(tmp_path / "out"),
        ],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
    finally:
        deadline = time.monotonic() + 30
        while session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = session_processes(proc.pid)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert not left, "Ray was left running after the sweep"
    sweep_dir = tmp_path / "out" / "sweep_tiny"
    with open(sweep_dir / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["point"], r["status"]) for r in table] == [("dropout_0.0", "completed"), ("dropout_0.05", "completed")]
    for row in table:
        run = sweep_dir / row["point"] / "seed_1"
        assert {"config.yaml", "metrics.csv", "model.pt", "run.json", "analysis.md", "train.log"} <= {
            p.name for p in run.iterdir()
        }
        assert not (run / "checkpoint.pt").exists()
        with open(run / "metrics.csv", newline="") as f:
            last = list(csv.DictReader(f))[-1]
        assert float(row["final_test_acc"]) == pytest.approx(float(last["test_acc"]), abs=1e-3)
    assert "sent to Ray" in out


def ignore_sigint_and_sleep(ready) -> None:  # a worker that hangs, deaf to Ctrl-C (module level: spawn pickles it)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ready.set()
    time.sleep(120)


def test_ctrl_c_kills_a_worker_that_does_not_stop_within_the_deadline():
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    process = context.Process(target=ignore_sigint_and_sleep, args=(ready,))
    process.start()
    assert ready.wait(60)
    run = executor._Running(None, process, None, time.perf_counter(), "")
    started = time.monotonic()
    executor._stop_all([run], signal.SIGINT, deadline=1.0)
    process.join(5)
    assert process.exitcode == -signal.SIGKILL
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "device, gpus, running, expected",
    [
        ("cpu", ["0", "1"], [], ""),  # a CPU trial sees no GPU
        ("cuda", [], [], ""),
        ("cuda", ["0", "1"], [], "0"),
        ("cuda", ["0", "1"], ["0"], "1"),  # two workers on two GPUs: one each
        ("auto", ["0", "1"], ["0", "1", "0"], "1"),
        ("cuda", ["GPU-a", "GPU-b"], ["GPU-b"], "GPU-a"),  # CUDA_VISIBLE_DEVICES may hold UUIDs
    ],
)
def test_each_local_worker_gets_the_least_used_gpu(tiny, write_config, device, gpus, running, expected):
    tiny["train"]["device"] = device
    cfg = load_config(write_config("tiny.yaml", tiny))
    assert executor.gpu_for(cfg, gpus, [SimpleNamespace(gpu=g) for g in running]) == expected


@pytest.mark.parametrize("listed, gpus", [("", []), ("2", ["2"]), ("1, 3", ["1", "3"])])
def test_workers_get_only_the_gpus_this_process_may_use(monkeypatch, listed, gpus):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", listed)
    assert executor.visible_gpus() == gpus


def test_writing_a_ray_trial_back_keeps_hidden_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".mnist-drill.lock").write_text("the driver's lock")
    (run / "checkpoint.pt").write_text("an older epoch")
    executor._write_back(run, {"metrics.csv": b"epoch\n1\n", "model.pt": b"weights"})
    assert sorted(p.name for p in run.iterdir()) == [".mnist-drill.lock", "metrics.csv", "model.pt"]


def test_a_ray_task_that_crashes_returns_its_files(monkeypatch, tmp_path, tiny, write_config):
    def crash_after_an_epoch(trial, data_dir, echo):
        (trial.run_dir / "checkpoint.pt").write_bytes(b"epoch 1")
        raise RuntimeError("CUDA error: an illegal memory access\nmore detail")

    monkeypatch.setattr(executor, "_train", crash_after_an_epoch)
    trial = Trial("t", load_config(write_config("tiny.yaml", tiny)), tmp_path / "run")
    status, code, note, error, files = executor._ray_trial(trial, {}, 1, {})
    assert (status, code, error) == ("failed", 1, None)
    assert note == "RuntimeError: CUDA error: an illegal memory access"
    assert files == {"checkpoint.pt": b"epoch 1"}


class FakeRay:
    """Enough of Ray to run `_run_ray` in this process: each task runs when its result is asked for. Before it
    runs, the driver's MNIST folder is removed (a node does not see the driver's folders) and it is noted
    whether this process holds the trial's run folder lock."""

    class RayError(Exception):
        pass

    exceptions = SimpleNamespace(RayError=RayError)

    def __init__(self, driver_data: Path):
        self.driver_data, self.store, self.locked = driver_data, {}, []

    def put(self, value):
        ref = object()
        self.store[ref] = value
        return ref

    def cluster_resources(self):
        return {"CPU": 2.0}

    def remote(self, fn):
        ray = self

        class Task:
            def options(self, **resources):
                return self

            def remote(self, *args):
                return ray.put(lambda: fn(*[ray.store.get(a, a) if type(a) is object else a for a in args]))

        return Task()

    def wait(self, refs, num_returns):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        from mnist_drill.storage import lock

        trial = [t for t in self.trials if t.label == "t"][0]
        self.locked.append((trial.run_dir / lock.LOCK_NAME).resolve() in lock._HELD)
        shutil.rmtree(self.driver_data, ignore_errors=True)
        return self.store[ref]()


def test_ray_tasks_get_mnist_from_the_driver_and_the_run_folder_stays_locked(
    monkeypatch, tmp_path, tiny, write_config, data_dir
):
    driver_data = tmp_path / "driver_mnist"
    shutil.copytree(data_dir, driver_data)
    monkeypatch.delenv("MNIST_DRILL_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # no data/mnist here either
    fake = FakeRay(driver_data)
    trial = Trial("t", load_config(write_config("tiny.yaml", tiny)), tmp_path / "out" / "run")
    fake.trials = [trial]
    monkeypatch.setattr(executor, "ray_session", lambda address: contextlib.nullcontext(fake))
    (end,) = run_trials([trial], str(driver_data), executor="ray", echo=lambda line: None)
    assert end.status == "completed", end.note
    assert fake.locked == [True]
    assert (trial.run_dir / "model.pt").is_file() and not (trial.run_dir / ".mnist-drill.lock").exists()
