"""One run: train a config into its run folder and write every output of it. Every epoch is saved as it finishes
(metrics.csv and a checkpoint, atomically), so Ctrl-C, SIGTERM or a diverging loss lose at most the epoch in progress.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..config.blocks import macs_per_image
from ..config.loader import trains_alike
from ..config.schema import Config, to_yaml
from ..errors import (
    EXIT_FAILED,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_STORAGE,
    DrillError,
    Echo,
    StorageError,
    Terminated,
    UsageError,
)
from ..nn.summary import summary_text
from ..reporting import analysis, markdown, plots
from ..storage.files import append_line, provenance, read_metrics, read_run_json, write_json, write_metrics, write_text
from ..storage.lock import run_lock
from ..training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint, save_weights
from ..training.data import resolve_dir
from ..training.loop import METRIC_COLUMNS, NonFiniteLoss, Training, evaluate, run_epoch, setup
from ..training.runtime import device_name, torch_threads
from .folder import differing_keys, outcome, prepare_run_dir, run_again
from .tensorboard import open_board


@dataclass(frozen=True)
class Trial:
    """One run folder to train, wherever (executor.py); `label` names it in the log (e.g. 'dropout_0.02/seed_1')."""

    label: str
    cfg: Config
    run_dir: Path
    resume: bool = False  # continue the checkpoint in run_dir
    overwrite: bool = False  # replace what run_dir holds
    previous: markdown.Previous = None  # the step before, (Config, {seed: Outcome}), for analysis.md
    written: Config | None = None  # its step's config file as written (before --set, --epochs), for analysis.md


@dataclass(frozen=True)
class TrialEnd:
    """How a run ended; `outcome` when an epoch finished."""

    trial: Trial
    status: str  # completed | reused | interrupted | diverged | failed
    exit_code: int
    note: str = ""  # why it did not complete
    seconds: float = 0.0  # wall time
    outcome: analysis.Outcome | None = None
    error: DrillError | None = None  # the user error that stopped it before training, if that is what did


def epoch_line(row: dict, epochs: int) -> str:
    return (
        f"epoch {row['epoch']:>2}/{epochs}  train_loss {row['train_loss']:.4f}  train_acc {row['train_acc']:6.2f}  "
        f"test_loss {row['test_loss']:.4f}  test_acc {row['test_acc']:6.2f}  lr {row['lr']:.5f}  "
        f"{row['seconds']:.1f}s"
    )


def out_of_memory(err: BaseException) -> bool:
    """torch's CPU allocator, CUDA and Python all run out of memory differently."""
    text = str(err)
    return isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


def _memory_line(cfg: Config, err: BaseException, run_dir: Path, resumable: bool) -> str:
    """What ran out of memory (read from the traceback) and what to lower."""
    frames = {frame.f_code.co_name for frame, _ in traceback.walk_tb(err.__traceback__)}
    if "evaluate" in frames:
        doing, lower = "testing", f"data.test_batch_size ({cfg.data.test_batch_size})"
    elif "train_epoch" in frames:
        doing, lower = "training", f"data.batch_size ({cfg.data.batch_size})"
    else:
        doing = "loading the data and the model" if "setup" in frames else "writing the results"
        lower = f"data.batch_size ({cfg.data.batch_size}) / data.test_batch_size ({cfg.data.test_batch_size})"
    again = ", or free memory and continue with --resume (the finished epochs are kept)" if resumable else ""
    return f"out of memory while {doing} {cfg.name}: lower {lower} and {run_again(run_dir)}{again}"


def run_step(
    cfg: Config,
    run_dir: Path,
    data_dir: str | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    previous: markdown.Previous = None,
    written: Config | None = None,
    echo: Echo = print,
) -> TrialEnd:
    """Train one run into `run_dir`, holding its lock. User errors raise before anything is written; interruptions
    and divergence are reported in the result. A full disk or running out of memory stops the run like Ctrl-C,
    its finished epochs kept, and raises one line saying what to do next."""
    with run_lock(run_dir, echo):
        try:
            return _run_step(cfg, run_dir, data_dir, overwrite, resume, previous, written, echo)
        except StorageError as err:
            resume_it = "continue with --resume (the finished epochs are kept)"
            then = resume_it if (run_dir / CHECKPOINT).is_file() else run_again(run_dir)
            raise StorageError(f"{err}, then {then}") from None
        except (MemoryError, RuntimeError) as err:
            if not out_of_memory(err):
                raise
            raise UsageError(_memory_line(cfg, err, run_dir, (run_dir / CHECKPOINT).is_file())) from None


def _run_step(cfg, run_dir, data_dir, overwrite, resume, previous, written, echo) -> TrialEnd:
    t = setup(cfg, resolve_dir(data_dir, cfg.data.dir))
    prepare_run_dir(run_dir, overwrite, resume)
    if resume and not trains_alike(run_dir / "config.yaml", cfg):
        raise UsageError(
            f"{run_dir}: --resume needs the same config as the run it continues ({differing_keys(run_dir, cfg)})"
        )

    def log(line: str) -> None:
        echo(line)
        append_line(run_dir / "train.log", line)

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    info = dict(provenance())  # now: the code that trains, not what the checkout holds when it ends
    rows, threads = _start(cfg, run_dir, t, resume, log)
    params, macs = sum(layer.params for layer in t.layers), macs_per_image(t.layers)
    log(
        f"{cfg.name}: {params:,} params, {macs:,} MACs/image, device {t.device}, seed {cfg.train.seed}, "
        f"{cfg.train.epochs} epochs"
    )
    board = open_board(run_dir, cfg, rows)  # TensorBoard's copy of metrics.csv, with the extra installed
    start_epoch = len(rows) + 1
    with torch_threads(threads):
        status, exit_code, note, last_eval, fault = _train(cfg, run_dir, t, rows, log, board.epoch)

    def attempt(write: Callable, *args):
        # After a fault, writes are best effort: the full disk (or memory) that stopped training may fail them
        # too, and the fault that stopped the run is the one to report.
        with contextlib.suppress(*((StorageError, MemoryError) if fault else ())):
            return write(*args)

    if note:
        attempt(log, f"{cfg.name}: {note}")
    result = outcome(cfg, rows) if rows else None
    board.close(result)
    wrong = None
    if rows:
        attempt(plots.curves, rows, run_dir / "curves.png", cfg.name, cfg.target.test_acc)
    if status == "completed":
        save_weights(run_dir, t.model)
        if last_eval is None:  # resumed after the last epoch, whose outputs had failed to write
            last_eval = evaluate(t.net, t.test, cfg, t.device)
        wrong = plots.misclassified(
            t.test.images, t.test.labels, last_eval.predictions, run_dir / "misclassified.png", cfg.name
        )
    seconds = [r["seconds"] for r in rows[start_epoch - 1 :]]
    info |= {"config": cfg.name, "status": status, "note": note, "device": str(t.device)}
    info |= {"device_name": device_name(t.device), "seed": cfg.train.seed, "precision": cfg.train.precision}
    info |= {"threads": threads, "params": params, "macs_per_image": macs}
    info |= {"epochs_finished": len(rows), "misclassified": wrong, "started": started.isoformat(timespec="seconds")}
    info["seconds_total"] = round(time.perf_counter() - t0, 2)
    info["seconds_per_epoch"] = round(sum(seconds) / len(seconds), 2) if seconds else None
    text = markdown.run_markdown(cfg, result, rows, status, note, wrong is not None, previous, written)
    attempt(write_text, run_dir / "analysis.md", text)
    attempt(write_json, run_dir / "run.json", {**info, "argv": sys.argv})
    if fault is not None:
        raise fault
    if result is not None:
        log(
            f"{cfg.name}: {status}; best test_acc {result.best_test_acc:.2f}% (epoch {result.best_test_epoch}), "
            f"verdict {result.verdict}, all targets {'met' if result.all_met else 'not met'}"
        )
    if status == "completed":  # last: until run.json says completed, --resume needs the checkpoint
        with contextlib.suppress(OSError):
            (run_dir / CHECKPOINT).unlink(missing_ok=True)  # model.pt holds the finished weights
    return TrialEnd(Trial(cfg.name, cfg, run_dir), status, exit_code, note, outcome=result)


def _start(cfg: Config, run_dir: Path, t: Training, resume: bool, log: Echo) -> tuple[list[dict], int]:
    """Write config.yaml and summary.txt and, resuming, load the checkpoint: the rows finished so far and the
    torch thread count to train with."""
    write_text(run_dir / "config.yaml", to_yaml(cfg))
    write_text(run_dir / "summary.txt", summary_text(cfg, t.model, t.layers))
    rows, threads = [], torch.get_num_threads()
    if resume:
        done = load_checkpoint(run_dir, t.model, t.optimizer, t.scheduler, t.device)
        rows = read_metrics(run_dir / "metrics.csv", METRIC_COLUMNS)[:done]
        if len(rows) < done:
            raise UsageError(
                f"{run_dir / 'metrics.csv'}: {len(rows)} epoch(s), fewer than the {done} of "
                f"{run_dir / CHECKPOINT}; restore it, or pass --overwrite to train the run afresh"
            )
        log(f"resuming {cfg.name} after epoch {done}")
        # CPU results depend on the thread count, and --resume promises the numbers of an uninterrupted run.
        recorded = (read_run_json(run_dir / "run.json") or {}).get("threads")
        if t.device.type == "cpu" and (type(recorded) is not int or recorded < 1):
            log(
                "run.json does not say how many CPU threads the run started with: the numbers may differ in the last "
                "digits"
            )
        elif t.device.type == "cpu" and recorded != threads:
            log(f"continuing with {recorded} torch thread(s), as the run started (not {threads})")
            threads = recorded
    return rows, threads


def _train(cfg: Config, run_dir: Path, t: Training, rows: list[dict], log: Echo, finished: Callable[[dict], None]):
    """Train the remaining epochs, appending each to `rows` once it is on disk. Returns (status, exit code, note,
    the last epoch's evaluation, the storage or memory fault that stopped it)."""
    status, exit_code, note, last_eval, fault = "completed", 0, "", None, None
    try:
        for epoch in range(len(rows) + 1, cfg.train.epochs + 1):
            row, last_eval = run_epoch(t.net, t.train, t.test, t.optimizer, t.scheduler, cfg, epoch, t.device)
            write_metrics(run_dir / "metrics.csv", [*rows, row], METRIC_COLUMNS)
            save_checkpoint(run_dir, epoch, t.model, t.optimizer, t.scheduler, t.device)
            rows.append(row)  # finished: its row and its checkpoint are on disk
            log(epoch_line(row, cfg.train.epochs))
            finished(row)
    except (KeyboardInterrupt, Terminated) as err:
        exit_code = EXIT_SIGINT if isinstance(err, KeyboardInterrupt) else EXIT_SIGTERM
        status = "interrupted"
        note = (
            f"stopped by {'Ctrl-C' if exit_code == EXIT_SIGINT else 'SIGTERM'} after {len(rows)} finished "
            f"epoch(s); continue with --resume"
        )
    except NonFiniteLoss as err:
        status, exit_code, note = "diverged", EXIT_FAILED, str(err)
    except StorageError as err:
        status, exit_code, fault = "interrupted", EXIT_STORAGE, err
        note = f"stopped after {len(rows)} finished epoch(s): {err}" + (", then continue with --resume" if rows else "")
    except (MemoryError, RuntimeError) as err:
        if not out_of_memory(err):
            raise
        status, exit_code, fault = "failed", EXIT_FAILED, err
        note = f"stopped after {len(rows)} finished epoch(s): {_memory_line(cfg, err, run_dir, bool(rows))}"
    return status, exit_code, note, last_eval, fault
