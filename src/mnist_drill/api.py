"""The Python API, for notebooks: `run`, `load_run`, `sweep`, `compare` and the `Run` they return: the CLI's code
(runs.steps, runs.sweep), a `Run` read back from its run folder's files, so `load_run(r.dir)` equals `r`."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config.loader import find_config, load_config
from .config.schema import Config, yaml_value
from .errors import ConfigError, UsageError
from .inference import load_run as load_model
from .reporting import analysis
from .runs.folder import ATTEMPT, run_folders
from .runs.folder import outcome as assess
from .runs.steps import compare_runs, run_steps
from .runs.sweep import run_sweep
from .storage.files import DEFAULT_OUT, read_metrics, read_run_json


@dataclass(frozen=True)
class Run:
    """A run folder read back: one run, or a step run once per seed (`seeds` then holds one Run per seed_<n>/, and
    `metrics` every seed's rows with a `seed` key). Results are None before a finished epoch."""

    dir: Path
    config: Config
    metrics: list[dict]
    status: str  # completed | interrupted | diverged | failed | running (as run.json says); a seeds run: the worst
    seeds: tuple[Run, ...] = ()
    outcome: analysis.Outcome | None = field(default=None, repr=False)  # a single run's, from folder.outcome

    @property
    def stats(self) -> analysis.StepStats | None:
        """Mean ± sd over the seeds, as the step's analysis.md has them; None before a finished epoch."""
        outcomes = {r.config.train.seed: r.outcome for r in self._runs() if r.outcome is not None}
        return analysis.aggregate(self.config, outcomes) if outcomes else None

    def _runs(self) -> tuple[Run, ...]:
        return self.seeds or (self,)

    def _value(self, name: str):
        value = getattr(self.stats if self.seeds else self.outcome, name, None)
        return getattr(value, "mean", value)  # a Stat's mean over the seeds; params and verdict as they are

    params = property(lambda self: self._value("params"), doc="Parameters of the model (int).")
    best_test_acc = property(lambda self: self._value("best_test_acc"), doc="Best test accuracy of any epoch, %.")
    final_test_acc = property(lambda self: self._value("final_test_acc"), doc="Test accuracy of the last epoch, %.")
    final_train_acc = property(lambda self: self._value("final_train_acc"), doc="Train accuracy of the last epoch, %.")
    gap = property(lambda self: self._value("gap"), doc="Final train minus test accuracy, percentage points.")
    verdict = property(lambda self: self._value("verdict"), doc="over-fitting | under-fitting | healthy.")

    @property
    def epochs(self) -> int:
        """Epochs finished (the fewest over the seeds)."""
        return min((r.outcome.epochs if r.outcome else 0) for r in self._runs())

    @property
    def targets(self) -> dict[str, bool]:
        """Target name -> met (over the seeds: met by every seed). Empty before a finished epoch."""
        done = [r.outcome for r in self._runs() if r.outcome is not None]
        every = len(done) == len(self._runs())
        return {name: every and all(o.targets[name] for o in done) for name in (done[0].targets if done else {})}

    @property
    def all_met(self) -> bool:
        return bool(self.targets) and all(self.targets.values())

    def model(self, seed: int | None = None):
        """The trained network from model.pt, on the CPU in eval mode; a seeds run's of `seed` (default: its first)."""
        if self.seeds:
            runs = {r.config.train.seed: r for r in self.seeds}
            if seed is not None and seed not in runs:
                raise UsageError(f"{self.dir}: no seed {seed} here (seeds: {', '.join(map(str, runs))})")
            return runs[seed if seed is not None else self.seeds[0].config.train.seed].model()
        if seed is not None and seed != self.config.train.seed:
            raise UsageError(f"{self.dir}: one run, of seed {self.config.train.seed}, not {seed}")
        return load_model(self.dir, "cpu")[1]

    def show(self) -> None:
        """analysis.md, then each seed's curves.png and misclassified.png, inline in a notebook, else their paths."""
        files = [self.dir / "analysis.md"] + [
            r.dir / name for r in self._runs() for name in ("curves.png", "misclassified.png")
        ]
        _display(files, f"{self.dir}: no analysis.md or figures yet")

    def __repr__(self) -> str:
        seeds = f", seeds {','.join(str(r.config.train.seed) for r in self.seeds)}" if self.seeds else ""
        if self.best_test_acc is None:
            return f"Run({self.config.name}{seeds}, {self.status}, no finished epoch, dir={_shown(self.dir)!r})"
        met = sum(self.targets.values())
        return (
            f"Run({self.config.name}{seeds}, {self.status}, {self.epochs} of {self.config.train.epochs} epochs, "
            f"best {self.best_test_acc:.2f} %, final {self.final_test_acc:.2f} %, gap {self.gap:+.2f}, "
            f"{self.verdict}, targets {met}/{len(self.targets)}, dir={_shown(self.dir)!r})"
        )


def _shown(path: Path) -> str:
    relative = os.path.relpath(path.resolve(), Path.cwd().resolve())
    return str(path.resolve()) if relative.startswith("..") else relative


def _display(files: list[Path], none: str) -> None:
    """Those of `files` that exist, inline with IPython.display (a markdown file's image links are relative to its
    folder, so they are left out: the figures are among `files`); without IPython, their paths."""
    files = [f for f in files if f.is_file()]
    try:
        from IPython.display import Image, Markdown, display
    except ImportError:
        print("\n".join(map(str, files)) or none)
        return
    for path in files:
        if path.suffix == ".md":
            display(Markdown(re.sub(r"!\[[^\]]*\]\([^)]+\)\n?", "", path.read_text(encoding="utf-8"))))
        else:
            display(Image(filename=str(path)))


def load_run(path: str | Path) -> Run:
    """The run in a run folder, or a step's seeds run (its seed_<n>/ folders), read back as `run` returns it."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{path}: no such run folder")
    folders = run_folders(path)
    if not folders:
        raise UsageError(f"{path}: no config.yaml and no seed_<n>/ run folders here: not a run folder")
    if folders == [path]:
        return _single(path)
    seeds = tuple(_single(p) for p in folders)
    metrics = [{**row, "seed": r.config.train.seed} for r in seeds for row in r.metrics]
    status = next((r.status for r in seeds if r.status != "completed"), "completed")
    return Run(path, seeds[0].config, metrics, status, seeds)


def _single(path: Path) -> Run:
    cfg = load_config(path / "config.yaml")
    rows = read_metrics(path / "metrics.csv") if (path / "metrics.csv").is_file() else []
    status = (read_run_json(path / "run.json") or {}).get("status", "running")
    return Run(path, cfg, rows, status, outcome=assess(cfg, rows) if rows else None)


# ---------------------------------------------------------------- running


def config_path(config: str | Path) -> Path:
    """A config file, or a step's name ('step3') looked up in the nearest configs/ from here up, else in the checkout
    mnist-drill was installed from (pip install -e)."""
    if isinstance(config, Path) or re.search(r"\.ya?ml$|/", str(config)) or Path(config).exists():
        return find_config(str(config))
    here = Path.cwd()
    folders = [p / "configs" for p in (here, *here.parents)] + [Path(__file__).resolve().parents[2] / "configs"]
    folder = next((f for f in folders if f.is_dir()), Path("configs"))
    return find_config(str(config), folder)


def override_items(overrides: Mapping[str, Any] | None, **train: Any) -> list[str]:
    """{'model.dropout': 0.05} -> ['model.dropout=0.05'] (what --set reads), then train.<key>=<value> per `train`'s."""
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError(f"overrides {overrides!r}: expected a dict such as {{'model.dropout': 0.05}}")
    items = [f"{key}={yaml_value(value)}" for key, value in (overrides or {}).items()]
    return items + [f"train.{k}={yaml_value(v)}" for k, v in train.items() if v is not None]


def _seed_list(seeds: Sequence[int] | None) -> list[int] | None:
    if seeds is None:
        return None
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise UsageError(f"seeds {seeds}: expected distinct non-negative integers, e.g. [1, 2, 3]")
    return seeds


def run(
    config: str | Path,
    *,
    epochs: int | None = None,
    seed: int | None = None,
    seeds: Sequence[int] | None = None,
    device: str = "auto",
    overrides: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    workers: int = 1,
    resume: bool = False,
    overwrite: bool = False,
) -> Run:
    """Train one step, as `mnist-drill run` does, and return its Run (docs/python.md has the arguments)."""
    if seed is not None and seeds is not None:
        raise UsageError("pass seed or seeds, not both")
    (step,) = run_steps(
        [config_path(config)],
        Path(out if out is not None else DEFAULT_OUT),
        None if data_dir is None else str(data_dir),
        overrides=override_items(overrides, epochs=epochs, seed=seed, device=device),
        seeds=_seed_list(seeds),
        overwrite=overwrite,
        resume=resume,
        workers=workers,
    )
    if not step.results:
        raise UsageError(step.error or f"{step.source}: nothing ran")
    return load_run(step.dir)  # where the runner put the step, never rebuilt here


@dataclass(frozen=True)
class Sweep:
    """A sweep folder: `rows` is sweep.csv (a dict per trial, as written), `runs` a Run per trial in grid order."""

    dir: Path
    rows: list[dict]
    runs: list[Run]

    def show(self) -> None:
        _display([self.dir / "sweep.md", self.dir / "sweep.png"], f"{self.dir}: empty")

    def __repr__(self) -> str:
        return f"Sweep({self.dir.name}, {len(self.runs)} trials, dir={_shown(self.dir)!r})"


def sweep(
    config: str | Path,
    vary: Mapping[str, Sequence[Any]],
    *,
    seeds: Sequence[int] | None = None,
    epochs: int | None = None,
    device: str = "auto",
    overrides: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    data_dir: str | Path | None = None,
    workers: int | None = None,
    threads: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> Sweep:
    """Train a grid, as `mnist-drill sweep` does: `vary` {'model.dropout': [0, 0.05]} is --vary model.dropout=0,0.05
    (several keys: their product, the first slowest). Returns the Sweep; a trial that failed is in its rows."""
    if not isinstance(vary, Mapping) or not vary:
        raise ConfigError("vary: expected a dict of key -> values, e.g. {'model.dropout': [0, 0.05]}")
    vary_args = []
    for key, values in vary.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"vary {key}: expected a list of values, e.g. [0, 0.05]")
        vary_args.append(f"{key}={','.join(yaml_value(v) for v in values)}")
    result = run_sweep(
        config_path(config),
        vary_args,
        Path(out if out is not None else DEFAULT_OUT),
        name=name,
        overrides=override_items(overrides, epochs=epochs, device=device),
        seeds=_seed_list(seeds),
        data_dir=None if data_dir is None else str(data_dir),
        workers=workers,
        threads=threads,
        resume=resume,
        overwrite=overwrite,
    )
    runs = [load_run(end.trial.run_dir) for end in result.ends if end.trial.run_dir.is_dir()]
    with open(result.sweep_dir / "sweep.csv", newline="", encoding="utf-8") as f:  # written by run_sweep
        return Sweep(result.sweep_dir, list(csv.DictReader(f)), runs)


@dataclass(frozen=True)
class Comparison:
    """What `compare` wrote: `text`, the markdown of `dir`/compare.md (curves in compare.png)."""

    dir: Path
    text: str

    def show(self) -> None:
        _display([self.dir / "compare.md", self.dir / "compare.png"], f"{self.dir}: empty")

    def __repr__(self) -> str:
        return self.text


def compare(*runs: Run | str | Path, out: str | Path | None = None) -> Comparison:
    """Runs side by side, as `mnist-drill compare` shows them: Runs or run folders (two or more); the files go to
    `out` (default runs/compare/)."""
    folder = Path(out if out is not None else Path(DEFAULT_OUT) / "compare")
    paths = [r.dir if isinstance(r, Run) else Path(r) for r in runs]
    labels = [f"{p.parent.name}/{p.name}" if p.name.startswith(ATTEMPT) else p.name for p in paths]
    labels = [str(p) if labels.count(label) > 1 else label for p, label in zip(paths, labels)]
    return Comparison(folder, compare_runs(dict(zip(labels, paths)), folder))
