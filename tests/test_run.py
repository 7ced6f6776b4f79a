"""run_step in-process on the tiny model: reproducibility, and user errors before anything is written."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mnist_drill.config.loader import load_config
from mnist_drill.errors import ConfigError, UsageError
from mnist_drill.runs.folder import plan_run
from mnist_drill.runs.run import epoch_line, run_step
from mnist_drill.storage.files import read_metrics


@pytest.fixture
def tiny_cfg(write_config, tiny):
    return load_config(write_config("tiny.yaml", tiny))


def quiet(_line: str) -> None:
    pass


def test_run_step_result(tiny_cfg, tmp_path, data_dir):
    result = run_step(tiny_cfg, tmp_path / "run", str(data_dir), echo=quiet)
    assert (result.status, result.exit_code) == ("completed", 0)
    assert result.outcome is not None and result.outcome.epochs == 1 and result.outcome.params == 1432
    assert (tmp_path / "run" / "model.pt").is_file() and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_the_seed_makes_a_run_reproducible_in_one_process(tiny_cfg, tmp_path, data_dir):
    # The model must be initialised from train.seed: the same config gives the same weights and
    # numbers whatever ran before it in the process (run-all runs the steps one after another,
    # --seeds the seeds); here the global generator is left in two different states before the runs.
    for name, previous in (("first", 100), ("second", 200)):
        torch.manual_seed(previous)
        run_step(tiny_cfg, tmp_path / name, str(data_dir), echo=quiet)
    first, second = (read_metrics(tmp_path / n / "metrics.csv") for n in ("first", "second"))
    for a, b in zip(first, second):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    weights = [torch.load(tmp_path / n / "model.pt") for n in ("first", "second")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_resume_needs_the_same_config(tiny_cfg, tmp_path, data_dir):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: something else\n")
    (run / "checkpoint.pt").write_bytes(b"not loaded")
    with pytest.raises(UsageError, match="--resume needs the same config"):
        run_step(tiny_cfg, run, str(data_dir), resume=True, echo=quiet)


def test_a_finished_run_is_reused_only_for_the_same_config(tiny_cfg, tmp_path, data_dir):
    run = tmp_path / "run"
    assert plan_run(tiny_cfg, run, overwrite=False, resume=True) == ("run", None)  # nothing there yet
    result = run_step(tiny_cfg, run, str(data_dir), echo=quiet)
    plan, reused = plan_run(tiny_cfg, run, overwrite=False, resume=True)
    assert plan == "reuse"
    # Read back from metrics.csv (6 significant digits), not retrained.
    assert (reused.params, reused.verdict, reused.epochs) == (result.outcome.params, result.outcome.verdict, 1)
    assert reused.best_test_acc == pytest.approx(result.outcome.best_test_acc, abs=1e-3)
    other = dataclasses.replace(tiny_cfg, optim=dataclasses.replace(tiny_cfg.optim, lr=0.5))
    with pytest.raises(UsageError, match="finished run of a different config"):
        plan_run(other, run, overwrite=False, resume=True)


def test_an_interrupted_run_is_not_reused(tiny_cfg, tmp_path, data_dir):
    run = tmp_path / "run"
    run_step(tiny_cfg, run, str(data_dir), echo=quiet)
    info = (run / "run.json").read_text()
    (run / "run.json").write_text(info.replace('"status": "completed"', '"status": "interrupted"'))
    with pytest.raises(UsageError, match="no finished epoch to resume from"):  # not reused
        plan_run(tiny_cfg, run, overwrite=False, resume=True)


def test_a_config_that_does_not_build_writes_nothing(tmp_path, data_dir, write_config, tiny):
    tiny["model"]["blocks"][2]["kernel"] = 15  # 15x15 on a 13x13 map
    cfg = load_config(write_config("nofit.yaml", tiny))
    with pytest.raises(ConfigError, match=r"model.blocks\[2\]"):
        run_step(cfg, tmp_path / "run", str(data_dir), echo=quiet)
    assert not (tmp_path / "run").exists()


def test_a_missing_gpu_writes_nothing(tmp_path, data_dir, write_config, tiny, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    tiny["train"]["device"] = "cuda"
    cfg = load_config(write_config("cuda.yaml", tiny))
    with pytest.raises(UsageError, match="CUDA is not available"):
        run_step(cfg, tmp_path / "run", str(data_dir), echo=quiet)
    assert not (tmp_path / "run").exists()


def test_epoch_line():
    row = {
        "epoch": 3,
        "train_loss": 0.12345,
        "train_acc": 98.7654,
        "test_loss": 0.04321,
        "test_acc": 99.41,
        "lr": 0.0123456,
        "seconds": 12.34,
    }
    assert epoch_line(row, 15) == (
        "epoch  3/15  train_loss 0.1235  train_acc  98.77  test_loss 0.0432  test_acc  99.41  lr 0.01235  12.3s"
    )


def test_resume_continues_with_the_thread_count_the_run_started_with(
    monkeypatch, write_config, tiny, tmp_path, data_dir
):
    from mnist_drill.runs import run as runner
    from mnist_drill.storage.files import read_run_json
    from mnist_drill.training.runtime import torch_threads

    tiny["train"]["epochs"] = 2
    cfg = load_config(write_config("tiny.yaml", tiny))
    real_epoch, threads_seen = runner.run_epoch, []

    def stop_at_epoch_2(*args):
        raise KeyboardInterrupt

    def record_threads(*args):
        threads_seen.append(torch.get_num_threads())
        return real_epoch(*args)

    monkeypatch.setattr(runner, "run_epoch", lambda *a: (stop_at_epoch_2 if a[6] == 2 else real_epoch)(*a))
    with torch_threads(1):  # as a sweep worker trains
        assert run_step(cfg, tmp_path / "run", str(data_dir), echo=quiet).status == "interrupted"
    assert read_run_json(tmp_path / "run" / "run.json")["threads"] == 1
    monkeypatch.setattr(runner, "run_epoch", record_threads)
    lines = []
    with torch_threads(2):  # resumed in a process of two threads
        assert run_step(cfg, tmp_path / "run", str(data_dir), resume=True, echo=lines.append).status == "completed"
        assert torch.get_num_threads() == 2
    assert threads_seen == [1]
    assert "continuing with 1 torch thread(s), as the run started (not 2)" in lines
    assert read_run_json(tmp_path / "run" / "run.json")["threads"] == 1


def test_a_cpu_run_on_a_gpu_machine_never_touches_cuda(cuda_that_must_not_be_touched, tiny_cfg, tmp_path, data_dir):
    # Every worker of a CPU sweep used to create a CUDA context (rng_state read every GPU's generator).
    tiny_cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, epochs=2))
    assert run_step(tiny_cfg, tmp_path / "run", str(data_dir), echo=quiet).status == "completed"
