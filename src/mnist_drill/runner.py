"""Orchestration: which runs to train, reuse or resume, and every output of a run folder.

One function, `run_steps`, serves `run` (one step), `run --seeds`, `run-all` and `run-all --seeds`.
For each (step, seed) it decides, in `plan_run`, whether to train afresh, resume from a checkpoint,
reuse a finished run of the same config, or refuse; `run_step` then trains one run folder. Every
epoch is saved as it finishes (metrics.csv and a checkpoint, both atomically), so Ctrl-C, SIGTERM or
a diverging loss lose at most the epoch in progress, and `--resume` continues exactly.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal, Optional


from . import analysis, plots
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint, save_weights
from .config import Config, load_config, to_yaml, trains_alike
from .data import resolve_dir
from .errors import EXIT_FAILED, EXIT_SIGINT, EXIT_SIGTERM, DrillError, Terminated, UsageError, report
from .model import build_model, count_params, has_fc, macs_per_image
from .outputs import prepare_run_dir, provenance, read_metrics, write_json, write_metrics, write_text
from .runtime import device_name
from .summary import summary_text
from .train import METRIC_COLUMNS, NonFiniteLoss, run_epoch, setup

Echo = Callable[[str], None]


@dataclass
class StepResult:
    cfg: Config
    run_dir: Path
    status: str  # completed | reused | interrupted | diverged | failed
    exit_code: int
    outcome: Optional[analysis.Outcome]


def epoch_line(row: dict, epochs: int) -> str:
    return (f"epoch {row['epoch']:>2}/{epochs}  train_loss {row['train_loss']:.4f}  train_acc {row['train_acc']:6.2f}  "
            f"test_loss {row['test_loss']:.4f}  test_acc {row['test_acc']:6.2f}  lr {row['lr']:.5f}  "
            f"{row['seconds']:.1f}s")


# ---------------------------------------------------------------- one run folder

def run_step(cfg: Config, run_dir: Path, data_dir: Optional[str] = None, *, overwrite: bool = False,
             resume: bool = False, echo: Echo = print) -> StepResult:
    """Train one run into `run_dir`. User errors (config, data, device, folder) raise before anything
    is written; interruptions and divergence are reported in the result, with outputs written."""
    t = setup(cfg, resolve_dir(data_dir, cfg.data.dir))
    prepare_run_dir(run_dir, overwrite, resume)
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
    write_text(run_dir / "config.yaml", to_yaml(cfg))
    write_text(run_dir / "summary.txt", summary_text(cfg, t.model, t.layers))
    params, macs = count_params(t.model)[0], macs_per_image(t.layers)
    rows, start_epoch = [], 1
    if resume:
        done = load_checkpoint(run_dir, t.model, t.optimizer, t.scheduler, t.device)
        rows, start_epoch = read_metrics(run_dir / "metrics.csv")[:done], done + 1
        log(f"resuming {cfg.name} after epoch {done}")

    log(f"{cfg.name}: {params:,} params, {macs:,} MACs/image, device {t.device}, seed {cfg.train.seed}, "
        f"{cfg.train.epochs} epochs")
    status, exit_code, note, last_eval = "completed", 0, "", None
    try:
        for epoch in range(start_epoch, cfg.train.epochs + 1):
            row, last_eval = run_epoch(t.net, t.train, t.test, t.optimizer, t.scheduler, cfg, epoch, t.device)
            rows.append(row)
            write_metrics(run_dir / "metrics.csv", rows, METRIC_COLUMNS)
            save_checkpoint(run_dir, epoch, t.model, t.optimizer, t.scheduler)
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
        save_weights(run_dir, t.model)
        if last_eval is not None:
            wrong = plots.misclassified(t.test.images, t.test.labels, last_eval.predictions,
                                        run_dir / "misclassified.png", cfg.name)
    write_text(run_dir / "analysis.md", analysis.analysis_markdown(cfg, outcome, status, note, wrong is not None))
    seconds = [r["seconds"] for r in rows[start_epoch - 1:]]
    write_json(run_dir / "run.json", {
        **versions, "config": cfg.name, "status": status, "note": note, "device": str(t.device),
        "device_name": device_name(t.device),
        "seed": cfg.train.seed, "precision": cfg.train.precision, "params": params,
        "macs_per_image": macs, "epochs_finished": len(rows),
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


Plan = Literal["run", "resume", "reuse"]


def plan_run(cfg: Config, run_dir: Path, *, overwrite: bool, resume: bool) -> tuple[Plan, Optional[analysis.Outcome]]:
    """The one rule for a run folder: train afresh, resume its checkpoint, or reuse its finished run.

    --resume: a finished run of the same config is reused, a checkpoint is continued, an empty or
    missing folder is trained afresh; --overwrite: anything there is replaced; neither: a folder
    that holds a run is refused (runs never overwrite each other silently)."""
    if overwrite and resume:
        raise UsageError("--resume and --overwrite contradict each other: pass one")
    if not resume:
        return "run", None
    done = finished_run(cfg, run_dir)
    if done is not None:
        return "reuse", done
    if (run_dir / CHECKPOINT).is_file():
        return "resume", None
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise UsageError(f"{run_dir}: holds a run with no finished epoch to resume from; "
                         "pass --overwrite to start it afresh")
    return "run", None


# ---------------------------------------------------------------- steps x seeds

@dataclass
class StepReport:
    """What `run_steps` did for one step: its config (None if it did not load) and one result per seed."""

    source: str
    cfg: Optional[Config]
    results: list[StepResult]
    error: str = ""  # the one-line error that stopped the step before it trained

    @property
    def exit_code(self) -> int:
        if self.error:
            return EXIT_FAILED
        return max((r.exit_code for r in self.results), default=0)


def with_seed(cfg: Config, seed: int) -> Config:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))


def run_steps(sources: list[Path], out: Path, data_dir: Optional[str] = None, *, overrides: list[str] = (),
              seeds: Optional[list[int]] = None, overwrite: bool = False, resume: bool = False,
              progression: bool = False, workers: int = 1, echo: Echo = print) -> list[StepReport]:
    """Run (or reuse, or resume) each step config into `out/<name>/`, once per seed into
    `out/<name>/seed_<n>/` when seeds are given, and write the step's seed table and, for a list of
    steps, `out/progression.md`. With several steps a step that fails is reported and the next one
    runs; with one, its error is raised (the CLI prints it). Ctrl-C or SIGTERM stops everything.
    `workers` > 1 trains a step's seeds in parallel worker processes (executor.run_trials)."""
    reports: list[StepReport] = []
    for source in sources:
        if len(sources) > 1:
            echo(f"== {source}")
        report_ = StepReport(str(source), None, [])
        reports.append(report_)
        try:
            report_.cfg = load_config(source, overrides)
            _run_one_step(report_, out / report_.cfg.name, data_dir, seeds, overwrite, resume, echo, workers)
        except DrillError as err:
            if len(sources) == 1:
                raise
            report(err)
            report_.error = str(err)
            continue
        if any(r.status == "interrupted" for r in report_.results):
            break
    if progression:
        _write_progression(out, reports, echo)
    return reports


def _run_one_step(step: StepReport, step_dir: Path, data_dir, seeds, overwrite: bool, resume: bool, echo: Echo,
                  workers: int = 1) -> None:
    from .executor import Trial, run_trials

    cfg = step.cfg
    if seeds and not resume:
        prepare_run_dir(step_dir, overwrite, resume=False)  # the step folder holds the seed folders
        overwrite = False
    jobs = [(with_seed(cfg, s), step_dir / f"seed_{s}") for s in seeds] if seeds else [(cfg, step_dir)]
    results: list[Optional[StepResult]] = []
    trials = []
    for job_cfg, run_dir in jobs:
        plan, done = plan_run(job_cfg, run_dir, overwrite=overwrite, resume=resume)
        if plan == "reuse":
            echo(f"{run_dir}: already complete, reused (pass --overwrite to train it again)")
            results.append(StepResult(job_cfg, run_dir, "reused", 0, done))
            continue
        results.append(None)  # filled when its trial ends, so results keep the seeds' order
        label = f"{cfg.name}/{run_dir.name}" if seeds else cfg.name
        trials.append(Trial(label, job_cfg, run_dir, resume=plan == "resume", overwrite=overwrite))
    slots = [i for i, r in enumerate(results) if r is None]

    def ended(end) -> None:
        results[slots[trials.index(end.trial)]] = StepResult(end.trial.cfg, end.trial.run_dir, end.status,
                                                             end.exit_code, end.outcome)

    try:  # seeds run in parallel with workers > 1; a signal there is raised again once the workers saved
        run_trials(trials, data_dir, workers=workers, echo=echo, on_end=ended)
    finally:
        step.results += [r for r in results if r is not None]
        finished = {r.cfg.train.seed: r.outcome for r in step.results if r.outcome is not None}
        if seeds and finished:
            write_text(step_dir / "analysis.md", analysis.seeds_markdown(cfg, finished))
            echo(f"wrote {step_dir / 'analysis.md'}")


def _write_progression(out: Path, reports: list[StepReport], echo: Echo) -> None:
    """progression.md and .png over the steps that ran (or were reused); none when nothing did, so a
    run-all that was refused everywhere never replaces an earlier table."""
    ran = [(r.cfg, r.results[0].outcome, r.results[0].status) for r in reports if r.results]
    if not ran:
        echo("no step ran, so no progression was written")
        return
    missing = [(r.source, r.error or "not run") for r in reports if not r.results]
    text = analysis.progression_markdown([(c, o, "completed" if s == "reused" else s) for c, o, s in ran])
    if missing:
        text += "\nNot in the table (did not run): " + "; ".join(f"{s} ({why})" for s, why in missing) + "\n"
    write_text(out / "progression.md", text)
    done = [(c, o, s) for c, o, s in ran if o is not None]
    if done:
        plots.progression([plots.StepPoint(c.name, o.params, [o.best_train_acc], [o.best_test_acc]) for c, o, _ in done],
                          out / "progression.png", done[-1][0].target.test_acc)
    echo(f"wrote {out / 'progression.md'}")


def exit_code(reports: list[StepReport]) -> int:
    """Interrupted wins (the user stopped it); otherwise any failure is 1."""
    codes = [r.exit_code for r in reports]
    return next((c for c in codes if c in (EXIT_SIGINT, EXIT_SIGTERM)), max(codes, default=0))
