"""Atomic writes, storage faults, run folders that are never overwritten silently, reading a run
folder back (damaged files named), provenance."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import platform
import resource
import signal
import stat
import subprocess

import pytest

from mnist_drill.errors import StorageError, UsageError
from mnist_drill.runs.folder import holds_run, prepare_run_dir
from mnist_drill.storage.files import (
    append_line,
    atomic_path,
    git_commit,
    provenance,
    read_metrics,
    read_run_json,
    save_torch,
    write_json,
    write_metrics,
    write_text,
)
from mnist_drill.storage.lock import LOCK_NAME, run_lock
from mnist_drill.training.loop import METRIC_COLUMNS


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    write_text(path, "first")
    write_text(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("error", [RuntimeError("writer failed"), KeyboardInterrupt()])
def test_a_failing_writer_keeps_the_old_content_and_no_temp(tmp_path, error):
    path = tmp_path / "out.txt"
    write_text(path, "old content")
    with pytest.raises(type(error)):
        with atomic_path(path) as tmp:
            assert tmp.parent == path.parent and tmp != path
            tmp.write_text("half written")
            raise error
    assert path.read_text() == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_failing_first_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "new.txt") as tmp:
            tmp.write_text("x")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_write_json_and_save_torch(tmp_path):
    import torch

    write_json(tmp_path / "r.json", {"a": 1, "path": tmp_path})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1, "path": str(tmp_path)}
    save_torch(tmp_path / "t.pt", {"w": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "t.pt")["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "t.pt"]


def test_metrics_round_trip(tmp_path):
    rows = [
        {
            "epoch": 1,
            "train_loss": 0.123456789,
            "train_acc": 95.5,
            "test_loss": 0.0456,
            "test_acc": 98.76,
            "lr": 0.01,
            "seconds": 3.25,
        },
        {
            "epoch": 2,
            "train_loss": 0.05,
            "train_acc": 98.123456,
            "test_loss": 0.03,
            "test_acc": 99.12,
            "lr": 0.001,
            "seconds": 2.5,
        },
    ]
    path = tmp_path / "metrics.csv"
    write_metrics(path, rows, METRIC_COLUMNS)
    assert path.read_text().splitlines()[0] == "epoch,train_loss,train_acc,test_loss,test_acc,lr,seconds"
    back = read_metrics(path)
    assert len(back) == 2 and all(list(r) == list(METRIC_COLUMNS) for r in back)
    for original, read in zip(rows, back):
        assert read["epoch"] == original["epoch"] and isinstance(read["epoch"], int)
        for key in METRIC_COLUMNS[1:]:
            assert read[key] == pytest.approx(original[key], rel=1e-5)
    # writing what was read gives the same file
    write_metrics(tmp_path / "again.csv", back, METRIC_COLUMNS)
    assert (tmp_path / "again.csv").read_text() == path.read_text()


def test_new_run_folder_is_created(tmp_path):
    prepare_run_dir(tmp_path / "a" / "b", overwrite=False, resume=False)
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []


def test_an_empty_folder_is_fine(tmp_path):
    (tmp_path / "run").mkdir()
    prepare_run_dir(tmp_path / "run", overwrite=False, resume=False)


def test_a_previous_run_is_never_overwritten_silently(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("precious")
    with pytest.raises(UsageError) as info:
        prepare_run_dir(run, overwrite=False, resume=False)
    assert "--overwrite" in str(info.value) and str(run) in str(info.value)
    assert (run / "metrics.csv").read_text() == "precious"


def test_overwrite_replaces_the_folder(tmp_path):
    run = tmp_path / "run"
    (run / "seed_1").mkdir(parents=True)
    (run / "metrics.csv").write_text("old")
    prepare_run_dir(run, overwrite=True, resume=False)
    assert run.is_dir() and list(run.iterdir()) == []


def test_resume_needs_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("old")
    with pytest.raises(UsageError, match="no checkpoint.pt to resume from"):
        prepare_run_dir(run, overwrite=False, resume=True)
    with pytest.raises(UsageError, match="no checkpoint.pt"):
        prepare_run_dir(tmp_path / "missing", overwrite=False, resume=True)
    (run / "checkpoint.pt").write_bytes(b"x")
    prepare_run_dir(run, overwrite=False, resume=True)
    assert (run / "metrics.csv").read_text() == "old"  # resuming keeps what is there


def test_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        prepare_run_dir(tmp_path / "file", overwrite=True, resume=False)
    with pytest.raises(UsageError, match="cannot write here"):
        prepare_run_dir(tmp_path / "file" / "run", overwrite=False, resume=False)
    assert (tmp_path / "file").read_text() == "x"


def test_provenance_has_versions():
    import torch
    import torchvision

    info = provenance()
    assert info["torch"] == torch.__version__ and info["torchvision"] == torchvision.__version__
    assert info["python"] == platform.python_version()
    assert {"mnist_drill", "git_commit", "git_dirty", "platform"} <= set(info)


def test_git_commit_outside_a_checkout(tmp_path):
    assert git_commit(tmp_path) == (None, None)


def test_git_commit_is_dirty_for_changed_code_but_not_for_regenerated_results(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "src").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "src" / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "metrics.csv").write_text("epoch\n1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    commit, dirty = git_commit(tmp_path / "src")
    assert len(commit) == 40 and dirty is False
    (tmp_path / "results" / "metrics.csv").write_text("epoch\n1\n2\n")
    assert git_commit(tmp_path / "src") == (commit, False)
    (tmp_path / "src" / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path / "src") == (commit, True)


# ---------------------------------------------------------------- storage faults


@pytest.mark.parametrize(
    "code, fragments",
    [
        (errno.ENOSPC, ["No space left on device", "free some space"]),
        (errno.EFBIG, ["File too large", "the file-size limit is reached"]),
        (errno.EACCES, ["Permission denied", "make the folder writable again"]),
        (errno.EROFS, ["Read-only file system", "write elsewhere with --out"]),
    ],
)
def test_a_write_that_fails_on_the_disk_is_one_storage_error_and_keeps_the_old_file(tmp_path, code, fragments):
    path = tmp_path / "metrics.csv"
    write_text(path, "old content")
    with pytest.raises(StorageError) as info:
        with atomic_path(path) as tmp:
            tmp.write_text("half writ")
            raise OSError(code, os.strerror(code))
    message = str(info.value)
    assert message.startswith(f"{path}: cannot write (") and "\n" not in message
    assert all(fragment in message for fragment in fragments), message
    assert info.value.exit_code == 74
    assert path.read_text() == "old content" and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


@contextlib.contextmanager
def file_size_limit(size: int):
    """RLIMIT_FSIZE for this process (SIGXFSZ ignored, so a write past it fails with EFBIG), restored on the way
    out: inside the test, not in a fixture's teardown, because pytest writes the test's report to its own stdout
    (a log file in CI, larger than the limit) before fixtures are torn down."""
    old_limit, old_handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_save_torch_past_a_file_size_limit_raises_storage_error_and_keeps_the_old_file(tmp_path):
    import torch

    path = tmp_path / "checkpoint.pt"
    save_torch(path, {"w": torch.zeros(10)})
    old = path.read_bytes()
    with file_size_limit(20_000), pytest.raises(StorageError, match=r"checkpoint.pt: cannot write \(File too large\)"):
        save_torch(path, {"w": torch.zeros(100_000)})
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_appending_to_the_log_where_it_cannot_be_written_is_a_storage_error(tmp_path):
    (tmp_path / "train.log").mkdir()
    with pytest.raises(StorageError, match=r"train.log: cannot write \(Is a directory\)"):
        append_line(tmp_path / "train.log", "epoch 1")


def test_written_files_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


# ---------------------------------------------------------------- reading a run folder back

HEADER = "epoch,train_loss,train_acc,test_loss,test_acc,lr,seconds\n"
ROW = "1,0.5,90,0.4,91,0.01,2.5\n"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("a,b\n1,2\n", "its header is 'a,b', not 'epoch,train_loss,"),
        ("", "its header is 'missing'"),
        (HEADER + "1,0.5,90,0.4\n", "line 2 has 4 cells for 7 columns"),
        (HEADER + ROW.replace("90", "n/a"), "line 2, train_acc: 'n/a' is not a number"),
        (HEADER + ROW.replace("1,", "1.5,", 1), "line 2, epoch: '1.5' is not a number"),
        (HEADER + ROW + ROW, "line 3: epoch 1 where epoch 2 belongs"),
        (HEADER.encode() + b"1,0.5,9\xe9", "not UTF-8 text"),
    ],
)
def test_a_metrics_file_that_mnist_drill_did_not_write_is_named(tmp_path, text, fragment):
    path = tmp_path / "metrics.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UsageError) as info:
        read_metrics(path, METRIC_COLUMNS)
    message = str(info.value)
    assert (
        message.startswith(f"{path}: ")
        and fragment in message
        and message.endswith("pass --overwrite to train the run afresh")
    )


def test_a_missing_metrics_file_is_named(tmp_path):
    with pytest.raises(UsageError, match=r"metrics.csv: missing; pass --overwrite"):
        read_metrics(tmp_path / "metrics.csv", METRIC_COLUMNS)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"status": "completed"', "damaged (not JSON: "),
        ("[1, 2]\n", "damaged (a JSON list, not an object)"),
        ('"completed"\n', "damaged (a JSON str, not an object)"),
    ],
)
def test_a_run_json_that_is_not_a_json_object_is_named(tmp_path, text, fragment):
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(UsageError) as info:
        read_run_json(tmp_path / "run.json")
    assert fragment in str(info.value) and "pass --overwrite" in str(info.value)


def test_no_run_json_is_no_finished_run(tmp_path):
    assert read_run_json(tmp_path / "run.json") is None
    (tmp_path / "run.json").write_text('{"status": "completed"}')
    assert read_run_json(tmp_path / "run.json") == {"status": "completed"}


# ---------------------------------------------------------------- run folders and their lock


def test_a_folder_holding_only_a_lock_file_holds_no_run(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).write_text("")
    assert not holds_run(tmp_path / "run")
    prepare_run_dir(tmp_path / "run", overwrite=False, resume=False)


def test_overwrite_keeps_the_lock_of_the_process_that_overwrites(tmp_path):
    run = tmp_path / "run"
    with run_lock(run, echo=print):
        (run / "metrics.csv").write_text("old")
        prepare_run_dir(run, overwrite=True, resume=False)
        assert [p.name for p in run.iterdir()] == [LOCK_NAME]


def test_overwrite_refuses_while_another_process_holds_a_seed_folder(tmp_path):
    seed = tmp_path / "step" / "seed_1"
    seed.mkdir(parents=True)
    (seed / "metrics.csv").write_text("running")
    lock = seed / LOCK_NAME
    lock.write_text('{"pid": 4242, "host": "there", "since": "now"}\n')
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a second open file: to flock, another holder
        with pytest.raises(UsageError, match=r"seed_1: in use by another mnist-drill \(pid 4242 on there since now\)"):
            prepare_run_dir(tmp_path / "step", overwrite=True, resume=False)
        assert (seed / "metrics.csv").read_text() == "running"
    finally:
        os.close(fd)


def test_taking_the_lock_removes_a_stale_temporary_file_and_nothing_else(tmp_path):
    (tmp_path / ".metrics.csv.abc123.tmp").write_text("half")
    (tmp_path / "metrics.csv").write_text("whole")
    with run_lock(tmp_path, echo=print):
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "metrics.csv"]
