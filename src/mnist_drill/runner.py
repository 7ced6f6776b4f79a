"""Run a step end to end: build, train, and write every output of the run folder.

Every epoch is saved as it finishes (metrics.csv and a checkpoint, both atomically), so Ctrl-C,
SIGTERM or a diverging loss lose at most the epoch in progress, and `--resume` continues exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import torch

from . import analysis, plots
from .config import Config, to_yaml, trains_alike
from .data import Split, load_mnist, resolve_dir, to_device
from .model import build_model, count_params, has_fc, macs_per_image
from .outputs import prepare_run_dir, provenance, read_metrics, write_json, write_metrics, write_text
from .errors import EXIT_FAILED, EXIT_SIGINT, EXIT_SIGTERM, Terminated, UsageError
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint, save_weights
from .runtime import configure, device_name, place
from .summary import summary_text
from .train import (METRIC_COLUMNS, NonFiniteLoss, check_schedule, make_optimizer, make_scheduler, run_epoch,
                    steps_per_epoch)

@dataclass
class StepResult:
    cfg: Config
    run_dir: Path
    status: str  # completed | interrupted | diverged
    exit_code: int
    outcome: Optional[analysis.Outcome]


@functools.lru_cache(maxsize=2)
def _load_cpu(root: Path, train_subset, test_subset) -> tuple[Split, Split]:
    return load_mnist(root, train_subset, test_subset)


def epoch_line(row: dict, epochs: int) -> str:
    return (f"epoch {row['epoch']:>2}/{epochs}  train_loss {row['train_loss']:.4f}  train_acc {row['train_acc']:6.2f}  "
            f"test_loss {row['test_loss']:.4f}  test_acc {row['test_acc']:6.2f}  lr {row['lr']:.5f}  "
            f"{row['seconds']:.1f}s")


def run_step(cfg: Config, run_dir: Path, data_dir: Optional[str] = None, *, overwrite: bool = False,
             resume: bool = False, echo: Callable[[str], None] = print) -> StepResult:
    """Train one step into `run_dir`. User errors (config, data, device, folder) raise before anything
    is written; interruptions and divergence are reported in the result, with outputs written."""
    device = configure(cfg.train)  # seeds torch, so the initial weights below follow train.seed
    model, layers = build_model(cfg.model)
    train_cpu, test_cpu = _load_cpu(resolve_dir(data_dir, cfg.data.dir), cfg.data.train_subset, cfg.data.test_subset)
    check_schedule(cfg, steps_per_epoch(len(train_cpu), cfg.data.batch_size))
    prepare_run_dir(run_dir, overwrite, resume)
    config_text = to_yaml(cfg)
    if resume and not trains_alike((run_dir / "config.yaml").read_text(), cfg):
        raise UsageError(f"{run_dir}: --resume needs the same config as the run it continues "
                        "(compare with its config.yaml)")

    def log(line: str) -> None:
        echo(line)
        with open(run_dir / "train.log", "a") as f:
            f.write(line + "\n")

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    versions = provenance()  # now: the code that trains, not what the checkout holds when it ends
    write_text(run_dir / "config.yaml", config_text)
    write_text(run_dir / "summary.txt", summary_text(cfg, model, layers))
    params = count_params(model)[0]

    train, test = to_device(train_cpu, device), to_device(test_cpu, device)
    model = place(model, device, cfg.train)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch(len(train), cfg.data.batch_size))
    rows, start_epoch = [], 1
    if resume:
        done = load_checkpoint(run_dir, model, optimizer, scheduler, device)
        rows, start_epoch = read_metrics(run_dir / "metrics.csv")[:done], done + 1
        log(f"resuming {cfg.name} after epoch {done}")
    net = torch.compile(model) if cfg.train.compile else model

    log(f"{cfg.name}: {params:,} params, {macs_per_image(layers):,} MACs/image, device {device}, seed {cfg.train.seed}, "
        f"{cfg.train.epochs} epochs")
    status, exit_code, note, last_eval = "completed", 0, "", None
    try:
        for epoch in range(start_epoch, cfg.train.epochs + 1):
            row, last_eval = run_epoch(net, train, test, optimizer, scheduler, cfg, epoch, device)
            rows.append(row)
            write_metrics(run_dir / "metrics.csv", rows, METRIC_COLUMNS)
            save_checkpoint(run_dir, epoch, model, optimizer, scheduler)
            log(epoch_line(row, cfg.train.epochs))
    except (KeyboardInterrupt, Terminated) as err:
        exit_code = EXIT_SIGINT if isinstance(err, KeyboardInterrupt) else EXIT_SIGTERM
        status = "interrupted"
        note = (f"stopped by {'Ctrl-C' if exit_code == EXIT_SIGINT else 'SIGTERM'} after {len(rows)} finished "
                f"epoch(s); continue with --resume")
    except NonFiniteLoss as err:
        status, exit_code, note = "diverged", EXIT_FAILED, str(err)
    if note:
        log(f"{cfg.name}: {note}")

    outcome = analysis.assess(rows, cfg, params, has_fc(cfg.model)) if rows else None
    wrong = None
    if rows:
        plots.curves(rows, run_dir / "curves.png", cfg.name, cfg.target.test_acc)
    if status == "completed":
        (run_dir / CHECKPOINT).unlink(missing_ok=True)  # model.pt holds the finished weights
        save_weights(run_dir, model)
        if last_eval is not None:
            wrong = plots.misclassified(test.images, test.labels, last_eval.predictions,
                                        run_dir / "misclassified.png", cfg.name)
    write_text(run_dir / "analysis.md", analysis.analysis_markdown(cfg, outcome, status, note, wrong is not None))
    seconds = [r["seconds"] for r in rows[start_epoch - 1:]]
    write_json(run_dir / "run.json", {
        **versions, "config": cfg.name, "status": status, "note": note, "device": str(device),
        "device_name": device_name(device),
        "seed": cfg.train.seed, "precision": cfg.train.precision, "params": params,
        "macs_per_image": macs_per_image(layers), "epochs_finished": len(rows),
        "misclassified": wrong, "started": started.isoformat(timespec="seconds"),
        "seconds_total": round(time.perf_counter() - t0, 2),
        "seconds_per_epoch": round(sum(seconds) / len(seconds), 2) if seconds else None,
        "argv": sys.argv})
    if outcome is not None:
        log(f"{cfg.name}: {status}; best test_acc {outcome.best_test_acc:.2f}% (epoch {outcome.best_test_epoch}), "
            f"verdict {outcome.verdict}, all targets {'met' if outcome.all_met else 'not met'}")
    return StepResult(cfg, run_dir, status, exit_code, outcome)


def finished_run(cfg: Config, run_dir: Path) -> Optional[analysis.Outcome]:
    """The outcome of a run of exactly `cfg` that already completed in `run_dir` (what --resume skips
    instead of retraining), or None when there is none. A completed run of another config is an error."""
    try:
        status = json.loads((run_dir / "run.json").read_text()).get("status")
    except (OSError, ValueError):
        return None
    if status != "completed":
        return None
    if not trains_alike((run_dir / "config.yaml").read_text(), cfg):
        raise UsageError(f"{run_dir}: holds a finished run of a different config (compare with its config.yaml); "
                        "pass --overwrite to replace it or --out to write elsewhere")
    params = count_params(build_model(cfg.model)[0])[0]
    return analysis.assess(read_metrics(run_dir / "metrics.csv"), cfg, params, has_fc(cfg.model))


def run_seeds(cfg: Config, seeds: list[int], step_dir: Path, data_dir: Optional[str] = None, *,
              overwrite: bool = False, resume: bool = False, echo: Callable[[str], None] = print) -> list[StepResult]:
    """Train the step once per seed into `step_dir/seed_<n>/`, then write the per-seed table."""
    if not resume:
        prepare_run_dir(step_dir, overwrite, resume=False)
    results = []
    for seed in seeds:
        seed_dir = step_dir / f"seed_{seed}"
        seeded = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
        done = finished_run(seeded, seed_dir) if resume else None
        if done is not None:
            echo(f"seed {seed}: already complete in {seed_dir}")
            results.append(StepResult(seeded, seed_dir, "completed", 0, done))
            continue
        result = run_step(seeded, seed_dir, data_dir, resume=resume and (seed_dir / "checkpoint.pt").is_file(),
                          echo=echo)
        results.append(result)
        if result.status == "interrupted":
            break
    finished = {r.cfg.train.seed: r.outcome for r in results if r.outcome is not None}
    if finished:
        write_text(step_dir / "analysis.md", analysis.seeds_markdown(cfg, finished))
    return results
