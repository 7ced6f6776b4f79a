"""Orchestration: which runs to train, reuse or resume, and every output of a run folder.

One function, `run_steps`, serves `run` (one step), `run --seeds`, `run-all` and `run-all --seeds`.
For each (step, seed) it decides, in `plan_run`, whether to train afresh, resume from a checkpoint,
reuse a finished run of the same config, or refuse; `run_step` then trains one run folder. Every
epoch is saved as it finishes (metrics.csv and a checkpoint, both atomically), so Ctrl-C, SIGTERM or
a diverging loss lose at most the epoch in progress, and `--resume` continues exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from ..config.blocks import has_fc, macs_per_image
from ..config.schema import Config, extends_path, load_config, read_saved_config, to_yaml, trains_alike
from ..errors import (
    EXIT_FAILED,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_STORAGE,
    DrillError,
    StorageError,
    Terminated,
    UsageError,
)
from ..errors import report as print_error
from ..nn.model import build_model, count_params
from ..nn.summary import summary_text
from ..reporting import analysis, plots
from ..reporting import markdown as report
from ..storage.files import (
    append_line,
    holds_run,
    prepare_run_dir,
    provenance,
    read_metrics,
    read_run_json,
    write_json,
    write_metrics,
    write_text,
)
from ..storage.lock import refuse_if_in_use, run_lock
from ..training.checkpoint import CHECKPOINT, WEIGHTS, load_checkpoint, save_checkpoint, save_weights
from ..training.data import resolve_dir
from ..training.loop import METRIC_COLUMNS, NonFiniteLoss, evaluate, run_epoch, setup
from ..training.runtime import device_name

Echo = Callable[[str], None]


@dataclass
class StepResult:
    cfg: Config
    run_dir: Path
    status: str  # completed | reused | interrupted | diverged | failed
    exit_code: int
    outcome: analysis.Outcome | None


def epoch_line(row: dict, epochs: int) -> str:
    return (
        f"epoch {row['epoch']:>2}/{epochs}  train_loss {row['train_loss']:.4f}  train_acc {row['train_acc']:6.2f}  "
        f"test_loss {row['test_loss']:.4f}  test_acc {row['test_acc']:6.2f}  lr {row['lr']:.5f}  "
        f"{row['seconds']:.1f}s"
    )


# ---------------------------------------------------------------- one run folder


def out_of_memory(err: BaseException) -> bool:
    """torch's CPU allocator, CUDA and Python all run out of memory differently."""
    text = str(err)
    return isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


def _memory_line(cfg: Config, err: BaseException, resumable: bool) -> str:
    """What ran out of memory (read from the traceback) and what to lower."""
    frames, tb = set(), err.__traceback__
    while tb is not None:
        frames.add(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    if "evaluate" in frames:
        doing, lower = "testing", f"data.test_batch_size ({cfg.data.test_batch_size})"
    elif "train_epoch" in frames:
        doing, lower = "training", f"data.batch_size ({cfg.data.batch_size})"
    else:
        doing = "loading the data and the model" if "setup" in frames else "writing the results"
        lower = f"data.batch_size ({cfg.data.batch_size}) / data.test_batch_size ({cfg.data.test_batch_size})"
    again = ", or free memory and continue with --resume (the finished epochs are kept)" if resumable else ""
    return f"out of memory while {doing} {cfg.name}: lower {lower} and run it again with --overwrite{again}"


def _faults_named(step):
    """run_step holding the run folder's lock (lock.py: a second process refuses, a killed one's lock
    is taken over), with a storage fault completed by what to do next and out of memory in one line."""

    @functools.wraps(step)
    def guarded(cfg: Config, run_dir: Path, *args, echo: Echo = print, **kwargs) -> StepResult:
        with run_lock(run_dir, echo):
            try:
                return step(cfg, run_dir, *args, echo=echo, **kwargs)
            except StorageError as err:
                if (run_dir / CHECKPOINT).is_file():
                    then = "continue with --resume (the finished epochs are kept)"
                else:
                    then = "run it again" + (" with --overwrite" if holds_run(run_dir) else "")
                raise StorageError(f"{err}, then {then}") from None
            except (MemoryError, RuntimeError) as err:
                if not out_of_memory(err):
                    raise
                raise UsageError(_memory_line(cfg, err, (run_dir / CHECKPOINT).is_file())) from None

    return guarded


@_faults_named
def run_step(
    cfg: Config,
    run_dir: Path,
    data_dir: str | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    previous: report.Previous = None,
    echo: Echo = print,
) -> StepResult:
    """Train one run into `run_dir`. User errors (config, data, device, folder) raise before anything
    is written; interruptions and divergence are reported in the result, with outputs written. A full
    disk or a lost permission (StorageError) or running out of memory stops the run like Ctrl-C, its
    finished epochs kept, and raises one line. `previous` is the step before, (Config, {seed: Outcome}),
    for analysis.md to compare against."""
    t = setup(cfg, resolve_dir(data_dir, cfg.data.dir))
    prepare_run_dir(run_dir, overwrite, resume)
    if resume and not trains_alike(read_saved_config(run_dir / "config.yaml"), cfg):
        raise UsageError(
            f"{run_dir}: --resume needs the same config as the run it continues (compare with its config.yaml)"
        )

    def log(line: str) -> None:
        echo(line)
        append_line(run_dir / "train.log", line)

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    versions = provenance()  # now: the code that trains, not what the checkout holds when it ends
    write_text(run_dir / "config.yaml", to_yaml(cfg))
    write_text(run_dir / "summary.txt", summary_text(cfg, t.model, t.layers))
    params, macs = count_params(t.model)[0], macs_per_image(t.layers)
    rows, start_epoch = [], 1
    if resume:
        done = load_checkpoint(run_dir, t.model, t.optimizer, t.scheduler, t.device)
        rows, start_epoch = read_metrics(run_dir / "metrics.csv", METRIC_COLUMNS)[:done], done + 1
        if len(rows) < done:
            raise UsageError(
                f"{run_dir / 'metrics.csv'}: {len(rows)} epoch(s), fewer than the {done} of "
                f"{run_dir / CHECKPOINT}; restore it, or pass --overwrite to train the run afresh"
            )
        log(f"resuming {cfg.name} after epoch {done}")

    log(
        f"{cfg.name}: {params:,} params, {macs:,} MACs/image, device {t.device}, seed {cfg.train.seed}, "
        f"{cfg.train.epochs} epochs"
    )
    status, exit_code, note, last_eval, fault = "completed", 0, "", None, None
    try:
        for epoch in range(start_epoch, cfg.train.epochs + 1):
            row, last_eval = run_epoch(t.net, t.train, t.test, t.optimizer, t.scheduler, cfg, epoch, t.device)
            write_metrics(run_dir / "metrics.csv", [*rows, row], METRIC_COLUMNS)
            save_checkpoint(run_dir, epoch, t.model, t.optimizer, t.scheduler)
            rows.append(row)  # finished: its row and its checkpoint are on disk
            log(epoch_line(row, cfg.train.epochs))
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
        note = f"stopped after {len(rows)} finished epoch(s): {_memory_line(cfg, err, bool(rows))}"

    def attempt(write: Callable, *args):
        """A write after a fault is best effort: the full disk (or memory) that stopped training may
        fail it too, and the fault that stopped the run is the one to report."""
        if fault is None:
            return write(*args)
        with contextlib.suppress(StorageError, MemoryError):
            return write(*args)

    if note:
        attempt(log, f"{cfg.name}: {note}")
    outcome = analysis.assess(rows, cfg, params, has_fc(cfg.model)) if rows else None
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
    attempt(
        write_text,
        run_dir / "analysis.md",
        report.run_markdown(cfg, outcome, rows, status, note, wrong is not None, previous),
    )
    seconds = [r["seconds"] for r in rows[start_epoch - 1 :]]
    attempt(
        write_json,
        run_dir / "run.json",
        {
            **versions,
            "config": cfg.name,
            "status": status,
            "note": note,
            "device": str(t.device),
            "device_name": device_name(t.device),
            "seed": cfg.train.seed,
            "precision": cfg.train.precision,
            "params": params,
            "macs_per_image": macs,
            "epochs_finished": len(rows),
            "misclassified": wrong,
            "started": started.isoformat(timespec="seconds"),
            "seconds_total": round(time.perf_counter() - t0, 2),
            "seconds_per_epoch": round(sum(seconds) / len(seconds), 2) if seconds else None,
            "argv": sys.argv,
        },
    )
    if fault is not None:
        raise fault
    if outcome is not None:
        log(
            f"{cfg.name}: {status}; best test_acc {outcome.best_test_acc:.2f}% (epoch {outcome.best_test_epoch}), "
            f"verdict {outcome.verdict}, all targets {'met' if outcome.all_met else 'not met'}"
        )
    if status == "completed":  # last: until run.json says completed, --resume needs the checkpoint
        with contextlib.suppress(OSError):
            (run_dir / CHECKPOINT).unlink(missing_ok=True)  # model.pt holds the finished weights
    return StepResult(cfg, run_dir, status, exit_code, outcome)


def finished_run(cfg: Config, run_dir: Path) -> analysis.Outcome | None:
    """The outcome of a run of exactly `cfg` that already completed in `run_dir` (what --resume skips
    instead of retraining), or None when there is none. A completed run of another config is an error,
    and so is a folder another process is training into, or a damaged run.json, config.yaml or metrics.csv."""
    refuse_if_in_use(run_dir)
    status = (read_run_json(run_dir / "run.json") or {}).get("status")
    if status != "completed":
        return None
    if not trains_alike(read_saved_config(run_dir / "config.yaml"), cfg):
        raise UsageError(
            f"{run_dir}: holds a finished run of a different config (compare with its config.yaml); "
            "pass --overwrite to replace it or --out to write elsewhere"
        )
    if not (run_dir / WEIGHTS).is_file():
        raise UsageError(
            f"{run_dir}: its run.json says completed, but {WEIGHTS} is missing; pass --overwrite to train it again"
        )
    params = count_params(build_model(cfg.model)[0])[0]
    return analysis.assess(read_metrics(run_dir / "metrics.csv", METRIC_COLUMNS), cfg, params, has_fc(cfg.model))


Plan = Literal["run", "resume", "reuse"]


def plan_run(cfg: Config, run_dir: Path, *, overwrite: bool, resume: bool) -> tuple[Plan, analysis.Outcome | None]:
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
    if holds_run(run_dir):  # a lock file left by a killed run is not a run
        raise UsageError(
            f"{run_dir}: holds a run with no finished epoch to resume from; pass --overwrite to start it afresh"
        )
    return "run", None


# ---------------------------------------------------------------- steps x seeds


@dataclass
class StepReport:
    """What `run_steps` did for one step: its config (None if it did not load) and one result per seed."""

    source: str
    cfg: Config | None
    results: list[StepResult]
    error: str = ""  # the one-line error that stopped the step before it trained

    def outcomes(self) -> dict[int, analysis.Outcome]:
        return {r.cfg.train.seed: r.outcome for r in self.results if r.outcome is not None}

    @property
    def exit_code(self) -> int:
        if self.error:
            return EXIT_FAILED
        return max((r.exit_code for r in self.results), default=0)


def with_seed(cfg: Config, seed: int) -> Config:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))


def run_steps(
    sources: list[Path],
    out: Path,
    data_dir: str | None = None,
    *,
    overrides: list[str] = (),
    seeds: list[int] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progression: bool = False,
    workers: int = 1,
    echo: Echo = print,
) -> list[StepReport]:
    """Run (or reuse, or resume) each step config into `out/<name>/`, once per seed into
    `out/<name>/seed_<n>/` when seeds are given, and write the step's seed table and, for a list of
    steps, `out/progression.md`. With several steps a step that fails is reported and the next one
    runs; with one, its error is raised (the CLI prints it). Ctrl-C or SIGTERM stops everything.
    `workers` > 1 trains a step's seeds in parallel worker processes (executor.run_trials)."""
    reports: list[StepReport] = []
    previous: report.Previous = None
    for source in sources:
        if len(sources) > 1:
            echo(f"== {source}")
        report_ = StepReport(str(source), None, [])
        reports.append(report_)
        try:
            report_.cfg = load_config(source, overrides)
            if len(sources) == 1:  # a step run on its own compares with the step it extends, if that ran in `out`
                previous = parent_results(source, out, overrides)
            _run_one_step(report_, out / report_.cfg.name, data_dir, seeds, overwrite, resume, previous, echo, workers)
        except StorageError:
            raise  # a full disk fails the next step too: stop here, the finished ones are kept
        except DrillError as err:
            if len(sources) == 1:
                raise
            print_error(err)
            report_.error = str(err)
            previous = None
            continue
        if any(r.status == "interrupted" for r in report_.results):
            break
        finished = report_.outcomes()
        previous = (report_.cfg, finished) if finished and report_.exit_code == 0 else None
    if progression:
        _write_progression(out, reports, echo)
    return reports


def _run_one_step(
    step: StepReport,
    step_dir: Path,
    data_dir,
    seeds,
    overwrite: bool,
    resume: bool,
    previous: report.Previous,
    echo: Echo,
    workers: int = 1,
) -> None:
    from ..runs.executor import Trial, run_trials

    cfg = step.cfg
    if seeds and not resume:
        prepare_run_dir(step_dir, overwrite, resume=False)  # the step folder holds the seed folders
        overwrite = False
    jobs = [(with_seed(cfg, s), step_dir / f"seed_{s}") for s in seeds] if seeds else [(cfg, step_dir)]
    results: list[StepResult | None] = []
    trials = []
    for job_cfg, run_dir in jobs:
        plan, done = plan_run(job_cfg, run_dir, overwrite=overwrite, resume=resume)
        if plan == "reuse":
            echo(f"{run_dir}: already complete, reused (pass --overwrite to train it again)")
            # Its analysis and curves are read again from its metrics, against the step before as it stands now.
            rows = read_metrics(run_dir / "metrics.csv")
            write_text(
                run_dir / "analysis.md",
                report.run_markdown(
                    job_cfg, done, rows, "completed", "", (run_dir / "misclassified.png").is_file(), previous
                ),
            )
            plots.curves(rows, run_dir / "curves.png", job_cfg.name, job_cfg.target.test_acc)
            results.append(StepResult(job_cfg, run_dir, "reused", 0, done))
            continue
        results.append(None)  # filled when its trial ends, so results keep the seeds' order
        label = f"{cfg.name}/{run_dir.name}" if seeds else cfg.name
        trials.append(Trial(label, job_cfg, run_dir, resume=plan == "resume", overwrite=overwrite, previous=previous))
    slots = [i for i, r in enumerate(results) if r is None]

    def ended(end) -> None:
        results[slots[trials.index(end.trial)]] = StepResult(
            end.trial.cfg, end.trial.run_dir, end.status, end.exit_code, end.outcome
        )

    try:  # seeds run in parallel with workers > 1; a signal there is raised again once the workers saved
        run_trials(trials, data_dir, workers=workers, echo=echo, on_end=ended)
    finally:
        step.results += [r for r in results if r is not None]
        finished = step.outcomes()
        if seeds and finished:
            rows = {s: read_metrics(step_dir / f"seed_{s}" / "metrics.csv") for s in finished}
            write_text(
                step_dir / "analysis.md", report.step_markdown(cfg, finished, rows, previous, _step_status(step))
            )
            echo(f"wrote {step_dir / 'analysis.md'}")


def _write_progression(out: Path, reports: list[StepReport], echo: Echo) -> None:
    """progression.md and .png over the steps that ran (or were reused); none when nothing did, so a
    run-all that was refused everywhere never replaces an earlier table."""
    ran = [(r.cfg, r.outcomes() or None, _step_status(r)) for r in reports if r.results]
    if not ran:
        echo("no step ran, so no progression was written")
        return
    missing = [(r.source, r.error or "not run") for r in reports if not r.results]
    text = report.progression_markdown(ran)
    if missing:
        text += "\nNot in the table (did not run): " + "; ".join(f"{s} ({why})" for s, why in missing) + "\n"
    write_text(out / "progression.md", text)
    done = [(c, o, s) for c, o, s in ran if o is not None]
    if done:
        points = [
            plots.StepPoint(
                c.name,
                next(iter(o.values())).params,
                [x.best_train_acc for x in o.values()],
                [x.best_test_acc for x in o.values()],
            )
            for c, o, _ in done
        ]
        plots.progression(points, out / "progression.png", done[-1][0].target.test_acc)
    echo(f"wrote {out / 'progression.md'}")


def _step_status(step: StepReport) -> str:
    """The step's status for the progression: the first seed that did not complete, else completed."""
    return next((r.status for r in step.results if r.status not in ("completed", "reused")), "completed")


# ---------------------------------------------------------------- reading finished runs


@dataclass
class FinishedStep:
    """A step's finished runs read back from disk: one run folder, or one per seed_<n>/ inside it."""

    cfg: Config
    outcomes: dict[int, analysis.Outcome]
    rows: dict[int, list[dict]]


def read_step(path: Path) -> FinishedStep:
    """The finished runs in a run folder or a step folder of seed_<n>/ runs; names what is missing."""
    folders = sorted(path.glob("seed_*/"), key=lambda p: p.name) if not (path / "config.yaml").is_file() else [path]
    if not path.is_dir():
        raise UsageError(f"{path}: no such run folder")
    outcomes, rows, cfg = {}, {}, None
    for folder in folders:
        if not (folder / "config.yaml").is_file() or not (folder / "metrics.csv").is_file():
            continue
        run_cfg = load_config(folder / "config.yaml")
        run_rows = read_metrics(folder / "metrics.csv")
        if not run_rows:
            continue
        params = count_params(build_model(run_cfg.model)[0])[0]
        outcomes[run_cfg.train.seed] = analysis.assess(run_rows, run_cfg, params, has_fc(run_cfg.model))
        rows[run_cfg.train.seed], cfg = run_rows, cfg or run_cfg
    if cfg is None:
        raise UsageError(f"{path}: holds no run with a finished epoch (config.yaml and metrics.csv)")
    return FinishedStep(cfg, outcomes, rows)


def parent_results(source: Path, out: Path, overrides: list[str]) -> report.Previous:
    """The step that `source` extends, as (Config, {seed: Outcome}), if a run of it finished in `out`."""
    parent = extends_path(source)
    if parent is None:
        return None
    try:
        name = load_config(parent, overrides).name
        found = read_step(out / name)
    except DrillError:
        return None
    return found.cfg, found.outcomes


def compare_runs(paths: list[Path], out: Path) -> str:
    """`mnist-drill compare`: the runs' differing config keys and results as markdown (returned, and
    written to out/compare.md) and their curves overlaid in out/compare.png."""
    if len(paths) < 2:
        raise UsageError("compare needs at least two run folders")
    steps = [read_step(p) for p in paths]
    names = [p.resolve().name for p in paths]
    labels = [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names)]
    text = report.compare_markdown([(label, s.cfg, s.outcomes) for label, s in zip(labels, steps)])
    curves = {
        (label if len(s.rows) == 1 else f"{label} seed {seed}"): rows
        for label, s in zip(labels, steps)
        for seed, rows in s.rows.items()
    }
    write_text(out / "compare.md", text + "\n![curves](compare.png)\n")
    plots.compare(curves, out / "compare.png", steps[-1].cfg.target.test_acc)
    return text


def exit_code(reports: list[StepReport]) -> int:
    """Interrupted wins (the user stopped it); otherwise any failure is 1."""
    codes = [r.exit_code for r in reports]
    return next((c for c in codes if c in (EXIT_SIGINT, EXIT_SIGTERM)), max(codes, default=0))
