"""Writing results safely, reading metrics.csv and run.json back strictly (a damaged file is named), provenance.
Every output goes through `atomic_path`: a failed write leaves the old file whole and raises one StorageError line."""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import io
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from ..errors import StorageError, UsageError, first_line

DEFAULT_OUT = "runs"  # where runs, evals and comparisons go: git-ignored, never the committed results/

# Why a write failed -> what the user can do about it (the message names the file and the cause first).
_FIXES = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space or raise the disk quota",
    errno.EFBIG: "the file-size limit is reached: raise it (ulimit -f) or write elsewhere with --out",
    errno.EACCES: "make the folder writable again",
    errno.EPERM: "make the folder writable again",
    errno.EROFS: "the file system is read-only: remount it read-write or write elsewhere with --out",
    errno.ENOENT: "the folder was removed or moved while writing",
    errno.ENOTDIR: "a file now stands where the folder was",
}
TEMP_SUFFIX = ".tmp"  # atomic_path's temporary files: .<name>.<random>.tmp beside the file


def storage_error(path: Path, err: BaseException) -> StorageError:
    if isinstance(err, FileExistsError) and not path.parent.is_dir():  # mkdir of a folder a file replaced
        err = NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
    cause = getattr(err, "strerror", None) or first_line(err)
    fix = _FIXES.get(getattr(err, "errno", None), f"check that {path.parent} is a writable folder with free space")
    return StorageError(f"{path}: cannot write ({cause}); {fix}")


@functools.lru_cache(maxsize=1)
def _file_mode() -> int:
    """0o666 less the umask: what open() would give; mkstemp's temporary files are 0o600."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yields a temporary path beside `path` and renames it over `path` only if the block succeeds, so a reader
    never sees a half-written file; on a failure the old `path` stays, and an OSError becomes StorageError."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        # Readable as a plain file is, and on the disk before the rename: a full disk that only tells at flush
        # time fails here, while the old file is still whole.
        os.chmod(tmp, _file_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(err, OSError):
            raise storage_error(path, err) from None
        raise


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def save_torch(path: Path, obj) -> None:
    """torch.save into memory, then an atomic write: a full disk is then an OSError with its errno, never torch's
    zip writer failing half-way through a file."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def append_line(path: Path, line: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError as err:
        raise storage_error(path, err) from None


def _metric_text(value):
    return f"{value:.6g}" if isinstance(value, float) else value


def as_written(value: float | int) -> float | int:
    """A metric as metrics.csv holds it (6 significant digits), as read back: what every copy of it shows."""
    return float(_metric_text(value)) if isinstance(value, float) else value


def write_metrics(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _metric_text(v) for k, v in row.items()} for row in rows)
    write_text(path, buf.getvalue())


def read_metrics(path: Path, columns: tuple[str, ...] | None = None) -> list[dict]:
    """The rows of a metrics.csv: epoch an int, the other columns floats; `columns`: the header it must have.
    A file mnist-drill did not write (another header, not a number, epochs not 1, 2, 3, ...) raises UsageError."""

    def damaged(why: str) -> UsageError:
        return UsageError(
            f"{path}: {why}; it is not the metrics.csv mnist-drill wrote: restore it, or pass "
            "--overwrite to train the run afresh"
        )

    try:
        with open(path, newline="", encoding="utf-8") as f:
            table = list(csv.reader(f))
    except FileNotFoundError:
        raise UsageError(f"{path}: missing; pass --overwrite to train the run afresh") from None
    except UnicodeDecodeError:
        raise damaged("not UTF-8 text") from None
    except (OSError, csv.Error) as err:
        raise damaged(f"unreadable ({getattr(err, 'strerror', None) or err})") from None
    if not table or (columns is not None and tuple(table[0]) != tuple(columns)) or "epoch" not in table[0]:
        expected = ",".join(columns) if columns else "a header with an epoch column"
        raise damaged(f"its header is {','.join(table[0]) if table else 'missing'!r}, not {expected!r}")
    header, rows = table[0], []
    for line, cells in enumerate(table[1:], start=2):
        if len(cells) != len(header):
            raise damaged(f"line {line} has {len(cells)} cells for {len(header)} columns")
        row = {}
        for key, cell in zip(header, cells):
            try:
                row[key] = int(cell) if key == "epoch" else float(cell)
            except ValueError:
                raise damaged(f"line {line}, {key}: {cell!r} is not a number") from None
        if row["epoch"] != len(rows) + 1:
            raise damaged(f"line {line}: epoch {row['epoch']} where epoch {len(rows) + 1} belongs")
        rows.append(row)
    return rows


def read_run_json(path: Path, strict: bool = True) -> dict | None:
    """A run folder's run.json, or None when there is none; UsageError when it is not a JSON object (`strict`
    False: None then too, for what only informs, such as a trial's note in a sweep table)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        why = None if isinstance(data, dict) else f"a JSON {type(data).__name__}, not an object"
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        why = err.strerror if isinstance(err, OSError) else f"not JSON: {first_line(err)}"
    if why is not None and strict:
        raise UsageError(
            f"{path}: damaged ({why}); remove it (--resume then continues from checkpoint.pt, "
            "if there is one), or pass --overwrite to train the run afresh"
        )
    return data if why is None else None


def git_commit(repo: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout holding `repo`, or (None, None) outside git. Dirty: a tracked file outside
    results/ differs, so regenerating the committed results does not mark those runs as made from modified code."""

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None, None
        status = git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)results")
        return head.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """Versions of everything that decides the numbers."""
    import torch
    import torchvision

    from .. import __version__

    commit, dirty = git_commit(Path(__file__).resolve().parent)
    return {
        "mnist_drill": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
    }
