"""What the tests share: the real CLI in a subprocess, writing YAML configs, the tiny test config.

Every test that trains uses a tiny model on a few hundred or thousand images on the CPU, so the
whole suite stays within a few minutes on a 2-core machine. Independent CLI runs inside one test
module are started concurrently (`run_cli_many`), because most of each run is importing torch.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


CONFIGS = REPO_ROOT / "configs"


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


CLI_TIMEOUT = 300  # seconds; a tiny run takes ~10 s, mostly imports


# A model of ~1.4k parameters that trains an epoch of 512 images in a fraction of a second on a CPU.
TINY = {
    "name": "tiny",
    "change": "a tiny model for tests",
    "data": {"batch_size": 64, "test_batch_size": 256, "train_subset": 512, "test_subset": 256},
    "model": {
        "bn": True,
        "blocks": [
            {"type": "conv", "out": 8},  # 26x26
            {"type": "maxpool"},  # 13x13
            {"type": "conv", "out": 16},  # 11x11
            {"type": "gap"},
            {"type": "head", "out": 10},
        ],
    },
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "train": {"epochs": 1, "seed": 1, "device": "cpu"},
}


def cli_env(extra: dict | None = None) -> dict:
    """The environment for a CLI subprocess: no GPU, unbuffered output, one CPU thread (several
    runs share two cores; more threads than cores make torch's OpenMP workers spin and crawl),
    `extra` on top."""
    env = dict(os.environ)
    env.update({"CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    env.update(extra or {})
    return env


def run_cli(
    args, *, cwd: Path = REPO_ROOT, env: dict | None = None, timeout: float = CLI_TIMEOUT
) -> subprocess.CompletedProcess:
    """`python -m mnist_drill ARGS` in a subprocess, text output captured."""
    return subprocess.run(
        [sys.executable, "-m", "mnist_drill", *map(str, args)],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(args, *, cwd: Path = REPO_ROOT, env: dict | None = None) -> subprocess.Popen:
    """`python -m mnist_drill ARGS` started in the background, stdout and stderr as text pipes."""
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_drill", *map(str, args)],
        cwd=cwd,
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli_many(calls: dict, jobs: int = 3) -> dict:
    """Run independent CLI calls concurrently. `calls` maps a name to an argument list, or to
    (argument list, extra env); returns name -> CompletedProcess."""

    def one(item):
        name, spec = item
        args, env = spec if isinstance(spec, tuple) else (spec, None)
        return name, run_cli(args, env=env)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return dict(pool.map(one, calls.items()))


def write_yaml(folder: Path, name: str, content: str | dict) -> Path:
    """Write `content` (YAML text, dedented, or a mapping) to folder/name; returns the path."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(content, sort_keys=False) if isinstance(content, dict) else textwrap.dedent(content)
    path.write_text(text)
    return path


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def error_line(proc: subprocess.CompletedProcess) -> str:
    """Asserts a CLI failure reported exactly one non-empty line on stderr, without a traceback;
    returns that line."""
    lines = stderr_lines(proc)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{proc.stderr}"
    return lines[0]


def tiny_config() -> dict:
    """A fresh copy of the tiny test config (a mapping), to modify and write."""
    return copy.deepcopy(TINY)


def ctrl_c_at_epoch(epoch: int):
    """runs.run's epoch function, but a Ctrl-C as epoch `epoch` starts (the epochs before it finish and are saved):
    `monkeypatch.setattr(run, "run_epoch", ctrl_c_at_epoch(2))`, and `monkeypatch.undo()` to train on."""
    from mnist_drill.runs import run

    real = run.run_epoch

    def interrupted(*args):
        if args[6] == epoch:  # run_epoch(model, train, test, optimizer, scheduler, cfg, epoch, device)
            raise KeyboardInterrupt
        return real(*args)

    return interrupted
