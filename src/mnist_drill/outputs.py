"""Writing results safely: atomic files, run folders that never overwrite silently, provenance."""

from __future__ import annotations

import contextlib
import functools
import csv
import io
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from .errors import UsageError

OUTPUT_FILES = ("config.yaml", "metrics.csv", "summary.txt", "analysis.md", "curves.png", "misclassified.png",
                "model.pt", "checkpoint.pt", "run.json", "train.log")


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yields a temporary path beside `path`; renames it over `path` only if the block succeeds,
    so a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def save_torch(path: Path, obj) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_metrics(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buf.getvalue())


def read_metrics(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def prepare_run_dir(path: Path, overwrite: bool, resume: bool) -> None:
    """Create the run folder; refuse to write into a previous run unless asked to."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: exists and is not a folder")
    holds_run = path.is_dir() and any(path.iterdir())
    if resume:
        if not (path / "checkpoint.pt").is_file():
            raise UsageError(f"{path}: no checkpoint.pt to resume from")
        return
    if holds_run:
        if not overwrite:
            raise UsageError(f"{path}: already holds a run; pass --overwrite to replace it, --resume to continue "
                            "it, or --out to write elsewhere")
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"{path}: cannot write here ({err.strerror})") from None


def git_commit(repo: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout holding `repo`, or (None, None) outside git.

    Dirty means a tracked file outside results/ differs from the commit: regenerating the committed
    results in place must not mark the runs that do it as made from modified code.
    """
    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None, None
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)results").stdout.strip())
        return head.stdout.strip(), dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """Versions of everything that decides the numbers."""
    import torch
    import torchvision

    from . import __version__

    commit, dirty = git_commit(Path(__file__).resolve().parent)
    return {"mnist_drill": __version__, "git_commit": commit, "git_dirty": dirty,
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "platform": platform.platform()}
