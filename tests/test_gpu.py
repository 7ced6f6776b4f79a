"""The `gpu` tier: what only CUDA shows. `pytest -m gpu` on a machine with a GPU; skipped here, with the reason.

Exact --resume and same-seed repeatability on CUDA, a CUDA-trained model evaluated on the CPU and the GPU,
local sweep workers on the GPU, and bf16 and torch.compile runs. `benchmarks/gpu_check.sh` runs this tier.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import pytest
import torch

from mnist_drill.config.loader import load_config
from mnist_drill.inference import evaluate_run
from mnist_drill.runs import run as runner
from mnist_drill.runs.run import run_step

from helpers import ctrl_c_at_epoch, run_cli

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; none on this machine"),
]
DEVICE = "cuda"


def quiet(_line: str) -> None:
    pass


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def same_weights(a: Path, b: Path) -> bool:
    first, second = (torch.load(p / "model.pt", weights_only=True) for p in (a, b))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture
def cuda_cfg(write_config, tiny):
    def make(**train):
        tiny["train"].update({"device": DEVICE, "epochs": 3, **train})
        tiny["model"]["dropout"] = 0.05  # draws from the CUDA generator, which a resume must restore
        tiny["augment"] = {"rotation": 7.0}
        return load_config(write_config("tiny.yaml", tiny))

    return make


def test_the_same_seed_twice_gives_the_same_numbers_without_nondeterminism_warnings(cuda_cfg, tmp_path, data_dir):
    cfg = cuda_cfg()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*does not have a deterministic implementation.*")
        for name in ("first", "second"):
            assert run_step(cfg, tmp_path / name, str(data_dir), echo=quiet).status == "completed"
    assert metrics(tmp_path / "first") == metrics(tmp_path / "second")
    assert same_weights(tmp_path / "first", tmp_path / "second")


def test_an_interrupted_cuda_run_resumes_to_the_numbers_of_an_uninterrupted_one(
    monkeypatch, cuda_cfg, tmp_path, data_dir
):
    cfg = cuda_cfg()
    run_step(cfg, tmp_path / "whole", str(data_dir), echo=quiet)
    monkeypatch.setattr(runner, "run_epoch", ctrl_c_at_epoch(2))
    assert run_step(cfg, tmp_path / "cut", str(data_dir), echo=quiet).status == "interrupted"
    monkeypatch.undo()
    assert run_step(cfg, tmp_path / "cut", str(data_dir), resume=True, echo=quiet).status == "completed"
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")
    assert same_weights(tmp_path / "cut", tmp_path / "whole")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_cuda_trained_model_evaluates_on_either_device(cuda_cfg, tmp_path, data_dir, device):
    run_step(cuda_cfg(), tmp_path / "run", str(data_dir), echo=quiet)
    report = evaluate_run(tmp_path / "run", str(data_dir), device)
    assert report["device"].startswith(device)
    assert report["test_acc"] == pytest.approx(float(metrics(tmp_path / "run")[-1]["test_acc"]), abs=0.5)


@pytest.mark.slow  # starts the real CLI
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_predict_with_a_cuda_trained_model(cuda_cfg, tmp_path, data_dir, device):
    from PIL import Image, ImageDraw

    run_step(cuda_cfg(), tmp_path / "run", str(data_dir), echo=quiet)
    image = tmp_path / "one.png"
    one = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(one).rectangle((12, 4, 15, 23), fill=255)  # a stroke: something a model can call a digit
    one.save(image)
    proc = run_cli(["predict", tmp_path / "run", image, "--device", device], env=visible_gpus())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{image}: digit ")


def visible_gpus() -> dict:
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0")}  # the CLI helper hides them


@pytest.mark.slow  # starts the real CLI and worker processes
def test_a_sweep_with_two_local_workers_on_cuda(tmp_path, tiny, write_config, data_dir):
    config = write_config("tiny.yaml", tiny)
    args = ["sweep", config, "--vary", "model.dropout=0,0.05", "--workers", "2", "--device", DEVICE]
    proc = run_cli([*args, "--data-dir", data_dir, "--out", tmp_path], env=visible_gpus())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(", GPU ") == 2  # each worker was handed a GPU
    with open(tmp_path / "sweep_tiny" / "sweep.csv", newline="") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["completed", "completed"]


@pytest.mark.parametrize("train", [{"precision": "bf16"}, {"compile": True}, {"channels_last": True}])
def test_speed_options_train_on_cuda_as_fp32_does(cuda_cfg, tmp_path, data_dir, train):
    plain = run_step(cuda_cfg(epochs=2), tmp_path / "fp32", str(data_dir), echo=quiet).outcome
    fast = run_step(cuda_cfg(epochs=2, **train), tmp_path / "fast", str(data_dir), echo=quiet)
    assert fast.status == "completed"
    assert fast.outcome.final_test_acc > 15  # it learned (10 % is chance; the tiny run reaches about 20 %)
    assert fast.outcome.final_test_acc == pytest.approx(plain.final_test_acc, abs=5)
