"""Steps and seeds: `run_steps` serves `run`, `run --seeds`, `run-all` and `run-all --seeds`; `read_step` reads
finished steps back (for `compare`, `runs` and the reports)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from ..config.loader import extends_path, load_config
from ..config.schema import Config
from ..errors import EXIT_FAILED, EXIT_SIGINT, EXIT_SIGTERM, DrillError, Echo, StorageError, UsageError
from ..errors import report as print_error
from ..reporting import analysis, markdown, plots
from ..storage.files import read_metrics, read_run_json, write_text
from .executor import check_local, run_trials
from .folder import attempt_dir, attempts, described, outcome, plan_run, prepare_run_dir, read_analysis, run_folders
from .run import Trial, TrialEnd

# ---------------------------------------------------------------- steps x seeds


@dataclass
class StepReport:
    """What `run_steps` did for one step: its config (None if it did not load) and one result per seed."""

    source: str
    cfg: Config | None
    results: list[TrialEnd]
    error: str = ""  # the one-line error that stopped the step before it trained
    dir: Path | None = None  # the step's folder: its run, or its seed_<n>/ runs
    written: Config | None = None  # its config file as written, before --set, --epochs (for analysis.md)

    def outcomes(self) -> dict[int, analysis.Outcome]:
        return {r.trial.cfg.train.seed: r.outcome for r in self.results if r.outcome is not None}

    @property
    def status(self) -> str:  # the first seed's that did not complete, else completed
        return next((r.status for r in self.results if r.status not in ("completed", "reused")), "completed")

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.error else max((r.exit_code for r in self.results), default=0)


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
    exact: bool = False,
    echo: Echo = print,
) -> list[StepReport]:
    """Run (or reuse, or resume) each step config, once per seed into `seed_<n>/` when seeds are given, as a new
    attempt `out/<name>/attempt_<n>/` (run-all: `out/run-all/attempt_<n>/<name>/`; `exact`: `out/<name>/`). With
    several steps a step that fails is reported and the next one runs; with one, its error is raised."""
    if overwrite and not exact:
        raise UsageError("--overwrite replaces a run in an --exact folder; without it every run is a new attempt")
    root = out if exact or not progression else attempt_dir(out / "run-all", resume)
    reports: list[StepReport] = []
    previous: markdown.Previous = None
    for source in sources:
        if len(sources) > 1:
            echo(f"== {source}")
        report_ = StepReport(str(source), None, [])
        reports.append(report_)
        try:
            report_.cfg = load_config(source, overrides)
            report_.written = load_config(source) if overrides else report_.cfg
            if len(sources) == 1:  # a step run on its own compares with the step it extends, if that ran in `out`
                previous = parent_results(source, out, overrides, exact)
            step_dir = root / report_.cfg.name
            report_.dir = step_dir if exact or progression else attempt_dir(step_dir, resume)
            _run_one_step(report_, data_dir, seeds, overwrite, resume, previous, echo, workers)
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
        _write_progression(root, reports, echo)
    return reports


def _run_one_step(
    step: StepReport, data_dir, seeds, overwrite: bool, resume: bool, previous: markdown.Previous, echo: Echo, workers
) -> None:
    cfg, step_dir = step.cfg, step.dir
    if seeds and not resume:
        prepare_run_dir(step_dir, overwrite, resume=False)  # the step folder holds the seed folders
        overwrite = False
    jobs = [(with_seed(cfg, s), step_dir / f"seed_{s}") for s in seeds] if seeds else [(cfg, step_dir)]
    ends: dict[Path, TrialEnd] = {}  # by run folder; step.results keeps the seeds' order
    trials = []
    for job_cfg, run_dir in jobs:
        plan, done = plan_run(job_cfg, run_dir, overwrite=overwrite, resume=resume)
        if plan == "reuse":
            echo(f"{run_dir}: already complete, reused (pass --overwrite to train it again)")
            # Its analysis and curves are read again from its metrics, against the step before as it stands now.
            write_text(run_dir / "analysis.md", read_analysis(run_dir, previous, job_cfg, step.written))
            rows = read_metrics(run_dir / "metrics.csv")
            plots.curves(rows, run_dir / "curves.png", job_cfg.name, job_cfg.target.test_acc)
            ends[run_dir] = TrialEnd(Trial(job_cfg.name, job_cfg, run_dir), "reused", 0, outcome=done)
            continue
        label = f"{cfg.name}/{run_dir.name}" if seeds else cfg.name
        trials.append(Trial(label, job_cfg, run_dir, plan == "resume", overwrite, previous, step.written))
    if min(workers, len(trials)) > 1:
        check_local(data_dir, [trial.cfg for trial in trials])  # once, before any worker starts
    try:  # seeds run in parallel with workers > 1; a signal there is raised again once the workers saved
        run_trials(
            trials, data_dir, workers=workers, echo=echo, on_end=lambda end: ends.update({end.trial.run_dir: end})
        )
    finally:
        step.results += [ends[run_dir] for _, run_dir in jobs if run_dir in ends]
        finished = step.outcomes()
        if seeds and finished:
            rows = {s: read_metrics(step_dir / f"seed_{s}" / "metrics.csv") for s in finished}
            text = markdown.step_markdown(cfg, finished, rows, previous, step.status, written=step.written)
            write_text(step_dir / "analysis.md", text)
            echo(f"wrote {step_dir / 'analysis.md'}")


def _write_progression(out: Path, reports: list[StepReport], echo: Echo) -> None:
    """progression.md and .png over the steps that ran; none when nothing did, so a run-all that was refused
    everywhere never replaces an earlier table."""
    if not any(r.results for r in reports):
        echo("no step ran, so no progression was written")
        return
    # A step that could not train keeps its row, with no results: no step is compared across a missing one.
    ran = [(r.cfg, r.outcomes() or None, r.status if r.results else "failed") for r in reports if r.cfg]
    missing = [(r.source, r.error or "not run") for r in reports if not r.results]
    text = markdown.progression_markdown(ran)
    if missing:
        text += "\nDid not train: " + "; ".join(f"{s} ({why})" for s, why in missing) + "\n"
    write_text(out / "progression.md", text)
    done = [(c, o) for c, o, _ in ran if o is not None]
    if done:
        plots.progression([(c.name, o) for c, o in done], out / "progression.png", done[-1][0].target.test_acc)
    echo(f"wrote {out / 'progression.md'}")


# ---------------------------------------------------------------- reading finished runs


@dataclass
class FinishedStep:
    """A step's finished runs read back from disk, by seed."""

    cfg: Config
    outcomes: dict[int, analysis.Outcome]
    rows: dict[int, list[dict]]


def read_step(path: Path, configs: Path | None = None) -> FinishedStep:
    """The finished runs in a run folder or a step folder of seed_<n>/ runs; with `configs`, described by the step
    config there named after `path`, as the runner describes it."""
    if not path.is_dir():
        raise UsageError(f"{path}: no such run folder")
    outcomes, rows, cfg = {}, {}, None
    for folder in run_folders(path):
        if not (folder / "metrics.csv").is_file():
            continue
        run_cfg = load_config(folder / "config.yaml")
        run_rows = read_metrics(folder / "metrics.csv")
        if not run_rows:
            continue
        outcomes[run_cfg.train.seed] = outcome(run_cfg, run_rows)
        rows[run_cfg.train.seed], cfg = run_rows, cfg or run_cfg
    if cfg is None:
        raise UsageError(f"{path}: holds no run with a finished epoch (config.yaml and metrics.csv)")
    if configs is not None:
        cfg = described(cfg, path, _step_config(path, configs))
    return FinishedStep(cfg, outcomes, rows)


def parent_results(
    source: Path, out: Path, overrides: list[str] = (), exact: bool = True, configs: Path | None = None
) -> markdown.Previous:
    """The step that `source` extends, as (Config, {seed: Outcome}), if a run of it finished in `out`: in
    `out/<name>/` itself when `exact`, else in its newest attempt that finished an epoch."""
    parent = extends_path(source) if source.is_file() else None
    if parent is None:
        return None
    try:
        step_dir = out / load_config(parent, overrides).name
    except DrillError:
        return None
    if configs is not None and step_dir.is_dir():  # re-deriving the evidence: a broken step before is named
        found = read_step(step_dir, configs)
        return found.cfg, found.outcomes
    for folder in [step_dir] if exact else reversed(attempts(step_dir)):
        with contextlib.suppress(DrillError):  # none finished an epoch there: the attempt before
            found = read_step(folder, configs)
            return found.cfg, found.outcomes
    return None


def _step_config(step_dir: Path, configs: Path) -> Config | None:
    source = configs / f"{step_dir.name}.yaml"
    return load_config(source) if source.is_file() else None


def reports_from_files(out: Path, configs: Path) -> dict[Path, str]:
    """Every analysis.md and progression.md that today's code writes for the runs under `out`, from their files
    alone (no weights, no training), described by the step configs in `configs`, each against the step before it."""
    texts: dict[Path, str] = {}
    for config in sorted(out.rglob("config.yaml")):
        run_dir = config.parent
        step_dir = run_dir.parent if run_dir.name.startswith("seed_") else run_dir
        written = _step_config(step_dir, configs)
        previous = parent_results(configs / f"{step_dir.name}.yaml", step_dir.parent, configs=configs)
        texts[run_dir / "analysis.md"] = read_analysis(run_dir, previous, written, written)
        if step_dir != run_dir and step_dir / "analysis.md" not in texts:
            step = read_step(step_dir, configs)
            statuses = [(read_run_json(f / "run.json") or {}).get("status") for f in step_dir.glob("seed_*/")]
            status = next((s for s in statuses if s != "completed"), "completed")
            texts[step_dir / "analysis.md"] = markdown.step_markdown(
                step.cfg, step.outcomes, step.rows, previous, status, written=written
            )
    for progression in sorted(out.rglob("progression.md")):
        folders = {int(m[1]): p for p in progression.parent.glob("step*/") if (m := re.match(r"step(\d+)", p.name))}
        steps = [read_step(folders[n], configs) for n in sorted(folders)]
        texts[progression] = markdown.progression_markdown([(s.cfg, s.outcomes, "completed") for s in steps])
    return texts


def compare_runs(runs: dict[str, Path], out: Path) -> str:
    """`mnist-drill compare`: the runs ({label: folder}) side by side as markdown (returned, and written to
    out/compare.md) and their curves overlaid in out/compare.png."""
    if len(runs) < 2:
        raise UsageError(f"compare needs at least two runs (found {len(runs)}: {', '.join(runs) or 'none'})")
    labels, steps = list(runs), [read_step(p) for p in runs.values()]
    text = markdown.compare_markdown([(label, s.cfg, s.outcomes) for label, s in zip(labels, steps)])
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
