"""The benchmark runs end to end and reports both pipelines (a smoke test: no timing is asserted)."""

import json

import pytest
import torch
from torch import nn

from mnist_drill.bench import with_torch_dropout
from mnist_drill.config.loader import load_config
from mnist_drill.nn.fast_dropout import FastDropout
from mnist_drill.nn.model import build_model, count_params

from helpers import run_cli


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_bench_smoke(data_dir, tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli(
        [
            "bench",
            "configs/step7_lr_scheduler.yaml",
            "--device",
            "cpu",
            "--data-dir",
            data_dir,
            "--repeats",
            "1",
            "--json",
            out,
            "--set",
            "data.train_subset=3000",
            "--set",
            "data.test_subset=500",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert "mnist-drill" in result.stdout and "classic" in result.stdout
    figures = json.loads(out.read_text())
    assert figures["train_images"] == 3000 and figures["test_images"] == 500
    model = build_model(load_config("configs/step7_lr_scheduler.yaml").model)[0]
    assert figures["params"] == count_params(model)[0] and figures["device"] == "cpu"
    for key in ("ours_train_img_s", "classic_train_img_s", "ours_test_img_s", "classic_test_img_s"):
        assert figures[key] > 0
    assert abs(figures["train_ratio"] - figures["ours_train_img_s"] / figures["classic_train_img_s"]) < 1e-9
    assert figures["versions"]["torch"] == torch.__version__ and "git_commit" in figures["versions"]


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_bench_rejects_zero_repeats(data_dir):
    result = run_cli(
        ["bench", "configs/step7_lr_scheduler.yaml", "--device", "cpu", "--data-dir", data_dir, "--repeats", "0"]
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "--repeats" in result.stderr


def test_the_classic_model_is_the_same_network_with_torchs_dropout():
    ours = build_model(load_config("configs/step7_lr_scheduler.yaml").model)[0]
    rates = [m.p for m in ours.modules() if isinstance(m, FastDropout)]
    classic = with_torch_dropout(build_model(load_config("configs/step7_lr_scheduler.yaml").model)[0])
    assert rates and [m.p for m in classic.modules() if isinstance(m, nn.Dropout)] == rates
    assert not any(isinstance(m, FastDropout) for m in classic.modules())
    classic.load_state_dict(ours.state_dict())  # same parameters, same names
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(ours.eval()(x), classic.eval()(x))
