"""`mnist-drill runs`: every run under a folder (a run folder, or a step folder of `seed_<n>/` runs), newest first,
one line each, read from its files alone; and `compare`'s step names expanded to those runs."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..config.loader import find_config, load_config
from ..config.schema import Config, config_changes, flatten, to_dict, yaml_value
from ..errors import DrillError, UsageError
from ..reporting.analysis import Outcome
from ..storage.files import read_run_json
from ..storage.lock import LOCK_NAME, lock_holder
from .folder import ATTEMPT, run_folders
from .steps import read_step


@dataclass(frozen=True)
class RunLine:
    """One run as `mnist-drill runs` lists it; `outcomes`: its seeds' that finished an epoch."""

    dir: Path
    step: str
    attempt: str  # attempt_<n>, run-all/attempt_<n>, or '' for an --exact folder
    started: str  # ISO time from run.json, '' when unknown
    status: str  # running | finished | interrupted | failed | diverged
    seeds: tuple[int, ...]
    changes: tuple[str, ...]  # key=value where the run differs from configs/<step>.yaml
    cfg: Config
    outcomes: tuple[Outcome, ...]


def _status(run_dirs: list[Path]) -> str:
    if any(lock_holder(d / LOCK_NAME) for d in run_dirs):
        return "running"
    statuses = [(read_run_json(d / "run.json") or {}).get("status") for d in run_dirs]
    if all(s == "completed" for s in statuses):
        return "finished"
    return next((s for s in statuses if s in ("failed", "diverged")), "interrupted")  # killed: no run.json


def _changes(step: str, cfg: Config, configs: Path) -> tuple[str, ...]:
    try:
        base = load_config(find_config(step, configs))
    except DrillError:
        return ()
    changes = [line.split(": ", 1) for line in config_changes(base, cfg)]  # 'key: old -> new'
    return tuple(f"{key}={change.split(' -> ', 1)[1]}" for key, change in changes if key != "train.seed")


def read_line(unit: Path, configs: Path) -> RunLine | None:
    """The line for the run (or seed runs) in `unit`, or None when it holds no run."""
    run_dirs = run_folders(unit)
    if not run_dirs:
        return None
    if unit.name.startswith(ATTEMPT):  # <step>/attempt_<n>/
        step, attempt = unit.parent.name, unit.name
    elif unit.parent.name.startswith(ATTEMPT):  # run-all/attempt_<n>/<step>/
        step, attempt = unit.name, f"{unit.parent.parent.name}/{unit.parent.name}"
    else:  # an --exact folder
        step, attempt = unit.name, ""
    try:  # the finished epochs, read as `compare` reads them
        found = read_step(unit)
        cfg, outcomes = found.cfg, list(found.outcomes.values())
    except DrillError:  # no epoch finished yet
        cfg, outcomes = load_config(run_dirs[0] / "config.yaml"), []
    seeds = tuple(load_config(d / "config.yaml").train.seed for d in run_dirs)
    started = str((read_run_json(run_dirs[0] / "run.json") or {}).get("started", ""))
    changes = _changes(step, cfg, configs)
    return RunLine(unit, step, attempt, started, _status(run_dirs), seeds, changes, cfg, tuple(outcomes))


def list_runs(root: Path, configs: Path = Path("configs"), step: str | None = None, where: tuple[str, ...] = ()):
    """Every run under `root`, newest first; `step` keeps the runs of steps whose name starts with it, each
    `where` ('key=value', a dotted config key) the runs whose resolved config has that value."""
    if not root.is_dir():
        return []  # no run yet (runs/ appears with the first), said as such
    wanted = []
    for pair in where:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--where {pair}: expected KEY=VALUE, e.g. --where model.dropout=0.05")
        wanted.append((key.strip(), value.strip()))
    units = {d.parent.parent if d.parent.name.startswith("seed_") else d.parent for d in root.rglob("config.yaml")}
    lines = [line for unit in units if (line := read_line(unit, configs)) is not None]
    lines = [
        line
        for line in lines
        if (step is None or line.step.startswith(step))
        and all(yaml_value(flatten(to_dict(line.cfg)).get(k)) == v for k, v in wanted)
    ]
    return sorted(lines, key=lambda line: (line.started, str(line.dir)), reverse=True)


def _cells(line: RunLine) -> tuple[str, ...]:
    """A run's row: accuracies and gap the means over its seeds, the verdict the most common, the targets how many
    seeds met every one."""
    done = line.outcomes
    means = [
        f"{statistics.fmean(getattr(o, key) for o in done):{spec}}" if done else "-"
        for key, spec in (("best_test_acc", ".2f"), ("final_test_acc", ".2f"), ("gap", "+.2f"))
    ]
    return (
        line.started[:16].replace("T", " ") or "-",
        line.step,
        line.attempt or "(exact)",
        line.status,
        ",".join(map(str, line.seeds)),
        f"{done[0].params:,}" if done else "-",
        f"{min((o.epochs for o in done), default=0)}/{line.cfg.train.epochs}",
        *means,
        Counter(o.verdict for o in done).most_common(1)[0][0] if done else "-",
        f"{sum(o.all_met for o in done)}/{len(line.seeds)}",
        " ".join(line.changes) or "-",
    )


def runs_table(lines: list[RunLine]) -> str:
    """The lines as a fixed-width table, one run a line."""
    header = ("started", "step", "attempt", "status", "seeds", "params", "epochs", "best", "final", "gap", "verdict",
              "targets", "changes")  # fmt: skip
    rows = [header, *map(_cells, lines)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def expand_runs(names: list[str], runs_dir: Path, reference: Path | None = None) -> dict[str, Path]:
    """`compare`'s arguments as {label: folder}: a folder as given; a step's name (step3, step3_dropout) as every
    attempt of it under `runs_dir`, labelled as `runs` lists them (step3_dropout/attempt_2), and, with
    `reference`, the step's committed run there (labelled reference/<step>)."""
    found: dict[str, Path] = {}
    for name in names:
        if Path(name).is_dir():
            found[name] = Path(name)
            continue
        lines = sorted(list_runs(runs_dir, step=name) if runs_dir.is_dir() else [], key=lambda line: line.started)
        steps = {line.step for line in lines}
        if len(steps) > 1:
            raise UsageError(f"{name}: names more than one step ({', '.join(sorted(steps))}): give the whole name")
        found |= {f"{line.step}/{line.attempt}" if line.attempt else line.step: line.dir for line in lines}
        if reference is not None and (step := next(iter(steps), name)) and (reference / step).is_dir():
            found[f"reference/{step}"] = reference / step
        if not lines:
            raise UsageError(f"{name}: no such run folder, and no runs of a step of that name in {runs_dir}/")
    return found
