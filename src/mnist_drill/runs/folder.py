"""One run folder: what it holds, and the one rule (`plan_run`) for training, resuming or reusing it, so a
run folder is never overwritten silently."""

from __future__ import annotations

import dataclasses
import errno
import shutil
from pathlib import Path
from typing import Literal

from ..config.blocks import has_fc, layout
from ..config.loader import load_config, trains_alike
from ..config.schema import DESCRIPTIVE_KEYS, Config, config_changes
from ..errors import UsageError
from ..reporting import analysis, markdown
from ..storage.files import read_metrics, read_run_json, storage_error
from ..storage.lock import LOCK_NAME, refuse_if_in_use
from ..training.checkpoint import CHECKPOINT, WEIGHTS
from ..training.loop import METRIC_COLUMNS

Plan = Literal["run", "resume", "reuse"]
ATTEMPT = "attempt_"  # each run of a step gets a folder of its own: <out>/<step>/attempt_<n>/


def attempts(parent: Path) -> list[Path]:
    """The attempt folders in `parent`, oldest first (by number)."""
    found = [p for p in parent.glob(f"{ATTEMPT}*") if p.name[len(ATTEMPT) :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(ATTEMPT) :]))


def run_folders(path: Path) -> list[Path]:
    """The runs in `path`: itself when it holds one (config.yaml), else its seed_<n>/ runs, by seed."""
    if (path / "config.yaml").is_file():
        return [path]
    seeds = [p for p in path.glob("seed_*/") if (p / "config.yaml").is_file()]
    return sorted(seeds, key=lambda p: (len(p.name), p.name))  # seed_2 before seed_10


def unfinished(folder: Path) -> bool:
    """Whether a run in `folder` (or in a seed or step folder inside it) still has epochs to train."""
    statuses = [(read_run_json(p) or {}).get("status") for p in folder.rglob("run.json")]
    return any(folder.rglob(CHECKPOINT)) or not statuses or any(s != "completed" for s in statuses)


def attempt_dir(parent: Path, resume: bool) -> Path:
    """A new attempt in `parent`, so none changes an earlier run; with --resume the newest unfinished one (else
    the newest: reused when it is the same config)."""
    found = attempts(parent)
    if resume and found:
        return next((p for p in reversed(found) if unfinished(p)), found[-1])
    number = int(found[-1].name[len(ATTEMPT) :]) + 1 if found else 1
    return parent / f"{ATTEMPT}{number}"


def run_again(run_dir: Path) -> str:
    """How to train `run_dir`'s run afresh: an --exact folder that holds a run needs --overwrite."""
    in_attempt = any(part.startswith(ATTEMPT) for part in run_dir.parts)
    return "run it again" + (" with --overwrite" if holds_run(run_dir) and not in_attempt else "")


def differing_keys(run_dir: Path, cfg: Config) -> str:
    """The settings in which `cfg` differs from the run in `run_dir`, for a refusal to name them."""
    try:
        changes = config_changes(load_config(run_dir / "config.yaml"), cfg)
    except UsageError:
        return "compare with its config.yaml"
    return "; ".join(changes[:4]) + (" …" if len(changes) > 4 else "") if changes else "compare with its config.yaml"


def holds_run(path: Path) -> bool:
    """Whether `path` is a folder with something in it besides a lock file."""
    return path.is_dir() and any(p.name != LOCK_NAME for p in path.iterdir())


def prepare_run_dir(path: Path, overwrite: bool, resume: bool) -> None:
    """Create the run folder; refuse to write into a previous run unless asked to. --overwrite empties it, but
    never while another process holds a lock in it."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: exists and is not a folder")
    if resume:
        if not (path / CHECKPOINT).is_file():
            raise UsageError(f"{path}: no {CHECKPOINT} to resume from")
        return
    if holds_run(path):
        if not overwrite:
            raise UsageError(
                f"{path}: already holds a run; pass --overwrite to replace it, --resume to continue "
                "it, or --out to write elsewhere"
            )
        for lock in path.rglob(LOCK_NAME):  # a seed folder of a --seeds run, say
            refuse_if_in_use(lock.parent)
        try:  # all but its lock file, which this process holds
            for entry in path.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                elif entry.name != LOCK_NAME:
                    entry.unlink()
        except OSError as err:
            raise UsageError(f"{path}: cannot remove the run it holds ({err.strerror}: {err.filename})") from None
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise storage_error(path, err) from None
        raise UsageError(f"{path}: cannot write here ({err.strerror})") from None


def outcome(cfg: Config, rows: list[dict]) -> analysis.Outcome:
    """How a run's metrics rows fare against `cfg`'s target; its parameters counted from the block specs."""
    params = sum(layer.params for layer in layout(cfg.model))
    return analysis.assess(rows, cfg, params, has_fc(cfg.model))


def read_analysis(
    run_dir: Path, previous: markdown.Previous = None, step: Config | None = None, written: Config | None = None
) -> str:
    """The analysis.md today's code writes for the run in `run_dir`, from its files alone (no weights, no training);
    `step` as in `described`."""
    info = read_run_json(run_dir / "run.json")
    if info is None:
        raise UsageError(f"{run_dir}: no run.json, so how the run ended is unknown")
    rows = read_metrics(run_dir / "metrics.csv", METRIC_COLUMNS)
    cfg = described(load_config(run_dir / "config.yaml"), run_dir, step)
    result = outcome(cfg, rows) if rows else None
    wrong = info.get("misclassified") is not None
    return markdown.run_markdown(cfg, result, rows, info["status"], info.get("note", ""), wrong, previous, written)


def described(cfg: Config, run_dir: Path, step: Config | None = None) -> Config:
    """`cfg` with the descriptive keys of `step`, or, without one, named after the step its run folder belongs to
    (`<step>/` or `<step>/seed_<n>/`), as the runner names it."""
    if step is not None:
        return dataclasses.replace(cfg, **{key: getattr(step, key) for key in DESCRIPTIVE_KEYS})
    return dataclasses.replace(cfg, name=(run_dir.parent if run_dir.name.startswith("seed_") else run_dir).name)


def refuse_contradiction(overwrite: bool, resume: bool) -> None:
    if overwrite and resume:
        raise UsageError("--resume and --overwrite contradict each other: pass one")


def plan_run(cfg: Config, run_dir: Path, *, overwrite: bool, resume: bool) -> tuple[Plan, analysis.Outcome | None]:
    """--resume: a finished run of the same config is reused, a checkpoint is continued, an empty or missing folder
    is trained afresh; a completed run of another config, a folder in use or a damaged file is refused. Without
    --resume the run trains (prepare_run_dir refuses a folder that holds a run, unless --overwrite)."""
    refuse_contradiction(overwrite, resume)
    if not resume:
        return "run", None
    refuse_if_in_use(run_dir)
    if (read_run_json(run_dir / "run.json") or {}).get("status") == "completed":
        if not trains_alike(run_dir / "config.yaml", cfg):
            raise UsageError(
                f"{run_dir}: holds a finished run of a different config ({differing_keys(run_dir, cfg)}); "
                "leave out --resume to train a new attempt beside it"
            )
        if not (run_dir / WEIGHTS).is_file():
            raise UsageError(
                f"{run_dir}: its run.json says completed, but {WEIGHTS} is missing; pass --overwrite to train it again"
            )
        return "reuse", outcome(cfg, read_metrics(run_dir / "metrics.csv", METRIC_COLUMNS))
    if (run_dir / CHECKPOINT).is_file():
        return "resume", None
    if holds_run(run_dir):  # a lock file left by a killed run is not a run
        raise UsageError(
            f"{run_dir}: holds a run with no finished epoch to resume from; pass --overwrite to start it afresh"
        )
    return "run", None
