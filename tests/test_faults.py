"""Faults through the real CLI: a full disk, a lost permission, a killed run, two processes on one
run folder, damaged files on --resume, running out of memory, and config text that YAML reads
differently from what it says. Each ends in one `mnist-drill: error:` line without a traceback,
with the exit code of errors.py, and keeps every finished epoch; `--resume` finishes the run.

How each fault is made, honestly:
- a full disk is RLIMIT_FSIZE (a file-size limit) in the child, SIGXFSZ ignored, so a write fails
  with EFBIG as it would with ENOSPC: the same OSError path, another errno. Set from the start, or
  lowered with prlimit while the child is stopped (SIGSTOP) after an epoch, so the fault lands in
  the middle of a run deterministically;
- a lost permission is chmod 555 on the run folder while the child is stopped; as root, the child
  runs without CAP_DAC_OVERRIDE (bounding set) so the permission counts;
- "out of memory" is RLIMIT_AS in the child, a little above what importing torch takes.
"""

from __future__ import annotations

import csv
import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mnist_drill.config.loader import load_config
from mnist_drill.errors import ConfigError, UsageError
from mnist_drill.storage import lock
from mnist_drill.storage.lock import LOCK_NAME, run_lock

from helpers import CLI_TIMEOUT, REPO_ROOT, cli_env, run_cli_many, stderr_lines, tiny_config, write_yaml

EPOCHS = 6
ERROR = "mnist-drill: error: "


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def start(args, preexec: Callable | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_drill", *map(str, args)],
        cwd=REPO_ROOT,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec,
    )


def run(args, preexec: Callable | None = None, at_epoch: tuple[int, Callable] | None = None) -> Finished:
    """The CLI in a subprocess; `at_epoch` = (n, action): once "epoch n/" is printed, stop the child
    (SIGSTOP), call action(child), and let it go on (SIGCONT)."""
    proc = start(args, preexec)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if at_epoch and line.startswith(f"epoch {at_epoch[0]:>2}/"):
            proc.send_signal(signal.SIGSTOP)
            try:
                at_epoch[1](proc)
            finally:
                proc.send_signal(signal.SIGCONT)
            break
    try:
        rest, err = proc.communicate(timeout=CLI_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, err = proc.communicate()
    return Finished(proc.returncode, "".join(seen) + rest, err)


def one_error_line(proc) -> str:
    """The single stderr line of a failed command; no traceback anywhere."""
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = stderr_lines(proc)
    assert len(lines) == 1 and lines[0].startswith(ERROR), proc.stderr
    return lines[0]


def metrics(run_dir: Path) -> list[list[str]]:
    """metrics.csv without the seconds column (the only one that differs between equal runs)."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [row[:-1] for row in csv.reader(f)]


def checkpoint_epoch(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"]


def leftovers(run_dir: Path) -> list[str]:
    """Temporary files of atomic writes and lock files: a clean stop leaves none."""
    return sorted(p.name for p in run_dir.rglob("*") if p.name.endswith(".tmp") or p.name == LOCK_NAME)


def state(run_dir: Path) -> dict:
    """What a stopped run left in its folder (None where a file is missing)."""

    def read(name, how):
        return how(run_dir / name) if (run_dir / name).is_file() else None

    return {
        "metrics": read("metrics.csv", lambda p: metrics(run_dir)),
        "checkpoint": read("checkpoint.pt", lambda p: checkpoint_epoch(run_dir)),
        "run.json": read("run.json", lambda p: json.loads(p.read_text())),
        "leftovers": leftovers(run_dir) if run_dir.is_dir() else None,
    }


def file_limit(size: int) -> Callable:
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), not the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return preexec


def lower_file_limit(size: int) -> Callable:
    return lambda proc: resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (size, size))


def without_root_override():
    """As root, drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set: the program
    then runs as root but honours file permissions, as any user's run would."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def permissions_count(tmp: Path) -> bool:
    """Whether a child started like the permission test can be refused a write (not so where root's
    override cannot be dropped, e.g. a container without CAP_SETPCAP)."""
    folder = tmp / "probe"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        probe = subprocess.run(
            [sys.executable, "-c", f"open({str(folder / 'x')!r}, 'w')"],
            preexec_fn=without_root_override,
            capture_output=True,
        )
        return probe.returncode != 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        folder.chmod(0o755)


# ---------------------------------------------------------------- storage, killed and concurrent runs


@pytest.fixture(scope="module")
def faults(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("faults")
    cfg = tiny_config()
    cfg["train"]["epochs"] = EPOCHS
    config = write_yaml(tmp, "tiny.yaml", cfg)

    def args(out, *extra):
        return ["run", config, "--data-dir", data_dir, "--out", tmp / out, "--exact", *extra]

    def replace_folder_by_file(proc):
        (tmp / "replaced" / "tiny").rename(tmp / "replaced" / "moved")
        (tmp / "replaced" / "tiny").write_text("a file where the run folder was\n")

    def concurrent(proc_a):
        """While run A is stopped after epoch 1, three more starts of its folder."""
        done["while held"] = {
            how: run(args("held", *extra))
            for how, extra in (("run", ()), ("--resume", ("--resume",)), ("--overwrite", ("--overwrite",)))
        }

    permissions = permissions_count(tmp)
    done: dict = {}
    with ThreadPoolExecutor(max_workers=3) as pool:
        phase1 = {
            "reference": pool.submit(run, args("reference")),
            "full disk": pool.submit(run, args("full"), file_limit(10**7), (2, lower_file_limit(4000))),
            # checkpoint.pt (~28 kB) fits, curves.png (~66 kB) does not
            "plot": pool.submit(run, args("plot"), file_limit(40_000)),
            "no space": pool.submit(run, args("nospace"), file_limit(500)),  # not even config.yaml fits
            "replaced": pool.submit(run, args("replaced"), None, (1, replace_folder_by_file)),
            "killed": pool.submit(run, args("killed"), None, (1, lambda proc: proc.kill())),
            "held": pool.submit(run, args("held"), None, (1, concurrent)),
        }
        if permissions:
            phase1["permission"] = pool.submit(
                run, args("perm"), without_root_override, (1, lambda proc: (tmp / "perm" / "tiny").chmod(0o555))
            )
        done.update({name: future.result() for name, future in phase1.items()})

        # the state each fault left, then put right what the user would put right, and --resume
        done["left"] = {
            name: state(tmp / folder / "tiny")
            for name, folder in (("full disk", "full"), ("plot", "plot"), ("perm", "perm"), ("killed", "killed"))
        }
        if permissions:
            (tmp / "perm" / "tiny").chmod(0o755)
        (tmp / "replaced" / "tiny").unlink()
        done["replaced left"] = metrics(tmp / "replaced" / "moved")
        (tmp / "replaced" / "moved").rename(tmp / "replaced" / "tiny")
        # a killed process may leave a half-written temporary file behind
        (tmp / "killed" / "tiny" / ".metrics.csv.k1ll3d.tmp").write_text("epoch,train_lo")
        phase2 = {
            f"{name} resumed": pool.submit(run, args(folder, "--resume"))
            for name, folder in (
                ("full disk", "full"),
                ("plot", "plot"),
                ("replaced", "replaced"),
                ("killed", "killed"),
                *((("permission", "perm"),) if permissions else ()),
            )
        }
        done.update({name: future.result() for name, future in phase2.items()})
    done["permissions"] = permissions
    return done, tmp


@pytest.mark.slow  # the real CLI in subprocesses
def test_a_full_disk_mid_run_stops_with_exit_74_keeping_the_finished_epochs(faults):
    done, tmp = faults
    proc, left = done["full disk"], done["left"]["full disk"]
    assert proc.returncode == 74, proc.stderr
    line = one_error_line(proc)
    assert "full/tiny/checkpoint.pt: cannot write (File too large)" in line
    assert line.endswith("then continue with --resume (the finished epochs are kept)")
    kept = left["checkpoint"]
    assert 2 <= kept < EPOCHS
    reference = metrics(tmp / "reference" / "tiny")
    assert left["metrics"][: kept + 1] == reference[: kept + 1]  # the header and every finished epoch
    assert left["leftovers"] == []  # no temporary file, no lock
    assert left["run.json"]["status"] == "interrupted" and left["run.json"]["epochs_finished"] == kept


@pytest.mark.slow  # the real CLI in subprocesses
def test_after_a_full_disk_resume_gives_the_uninterrupted_numbers(faults):
    done, tmp = faults
    proc = done["full disk resumed"]
    assert proc.returncode == 0, proc.stderr
    assert f"resuming tiny after epoch {done['left']['full disk']['checkpoint']}" in proc.stdout
    assert metrics(tmp / "full" / "tiny") == metrics(tmp / "reference" / "tiny")
    assert (tmp / "full" / "tiny" / "model.pt").is_file() and not (tmp / "full" / "tiny" / "checkpoint.pt").exists()


@pytest.mark.slow  # the real CLI in subprocesses
def test_a_plot_that_cannot_be_written_is_a_storage_fault_and_resume_writes_the_rest(faults):
    done, tmp = faults
    proc, left = done["plot"], done["left"]["plot"]
    assert proc.returncode == 74, proc.stderr
    line = one_error_line(proc)
    assert "plot/tiny/curves.png: cannot write (File too large)" in line and "--resume" in line
    assert left["checkpoint"] == EPOCHS and left["metrics"] == metrics(tmp / "reference" / "tiny")
    assert left["leftovers"] == []
    resumed = done["plot resumed"]
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming tiny after epoch {EPOCHS}" in resumed.stdout and "epoch  1/" not in resumed.stdout
    run = tmp / "plot" / "tiny"
    assert all((run / name).is_file() for name in ("curves.png", "misclassified.png", "model.pt", "analysis.md"))
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


@pytest.mark.slow  # the real CLI in subprocesses
def test_a_disk_full_before_anything_is_written_leaves_no_folder(faults):
    done, tmp = faults
    proc = done["no space"]
    assert proc.returncode == 74, proc.stderr
    line = one_error_line(proc)
    assert "nospace/tiny/config.yaml: cannot write (File too large)" in line and line.endswith("then run it again")
    assert not (tmp / "nospace").exists()


@pytest.mark.slow  # the real CLI in subprocesses
def test_losing_write_permission_mid_run_stops_with_exit_74_and_resume_finishes(faults):
    done, tmp = faults
    if not done["permissions"]:
        pytest.skip("this machine's root writes into a read-only folder regardless (no CAP_SETPCAP to drop it)")
    proc, left = done["permission"], done["left"]["perm"]
    assert proc.returncode == 74, proc.stderr
    line = one_error_line(proc)
    assert "perm/tiny/" in line and "cannot write (Permission denied); make the folder writable again" in line
    kept = left["checkpoint"]
    assert 1 <= kept < EPOCHS
    assert left["metrics"][: kept + 1] == metrics(tmp / "reference" / "tiny")[: kept + 1]
    resumed = done["permission resumed"]
    assert resumed.returncode == 0, resumed.stderr
    assert metrics(tmp / "perm" / "tiny") == metrics(tmp / "reference" / "tiny")


@pytest.mark.slow  # the real CLI in subprocesses
def test_a_run_folder_replaced_by_a_file_mid_run_is_a_storage_fault(faults):
    done, tmp = faults
    proc = done["replaced"]
    assert proc.returncode == 74, proc.stderr
    line = one_error_line(proc)
    assert "replaced/tiny/" in line and "(Not a directory); a file now stands where the folder was" in line
    left = done["replaced left"]
    assert len(left) >= 2 and left[:2] == metrics(tmp / "reference" / "tiny")[:2]
    resumed = done["replaced resumed"]  # the folder moved back: its lock, left by a process now gone, is taken over
    assert resumed.returncode == 0, resumed.stderr
    assert "took over the lock left by pid" in resumed.stdout
    assert metrics(tmp / "replaced" / "tiny") == metrics(tmp / "reference" / "tiny")


@pytest.mark.slow  # the real CLI in subprocesses
def test_a_killed_run_leaves_a_resumable_folder_whose_lock_resume_takes_over(faults):
    done, tmp = faults
    assert done["killed"].returncode == -signal.SIGKILL
    left = done["left"]["killed"]
    assert left["checkpoint"] >= 1 and LOCK_NAME in left["leftovers"]
    resumed = done["killed resumed"]
    assert resumed.returncode == 0, resumed.stderr
    note = [line for line in resumed.stdout.splitlines() if "took over the lock" in line]
    assert len(note) == 1 and f"on {socket.gethostname()} since " in note[0] and "which no longer runs" in note[0]
    run = tmp / "killed" / "tiny"
    assert metrics(run) == metrics(tmp / "reference" / "tiny")
    assert leftovers(run) == []  # the stale lock and the killed run's temporary file are gone


@pytest.mark.slow  # the real CLI in subprocesses
@pytest.mark.parametrize("how", ["run", "--resume", "--overwrite"])
def test_a_second_process_on_a_run_folder_in_use_is_refused_naming_the_holder(faults, how):
    done, tmp = faults
    proc = done["while held"][how]
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert "held/tiny: in use by another mnist-drill (pid " in line and f"on {socket.gethostname()} since" in line
    assert line.endswith("wait for it to finish, or stop it first")


@pytest.mark.slow  # the real CLI in subprocesses
def test_the_run_holding_the_folder_finishes_untouched(faults):
    done, tmp = faults
    assert done["held"].returncode == 0, done["held"].stderr
    assert metrics(tmp / "held" / "tiny") == metrics(tmp / "reference" / "tiny")
    assert leftovers(tmp / "held" / "tiny") == []


# ---------------------------------------------------------------- the lock itself


def test_a_lock_refuses_a_second_holder_and_is_gone_after(tmp_path):
    run_dir = tmp_path / "out" / "run"
    with run_lock(run_dir, echo=lambda line: None):
        info = json.loads((run_dir / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        # flock locks belong to an open file: a second open in this process is a second holder
        with pytest.raises(UsageError, match=rf"in use by another mnist-drill \(pid {os.getpid()} on "):
            with run_lock(run_dir, echo=print):
                pass
    assert not tmp_path.joinpath("out").exists()  # the folders it made, empty again, are removed


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_note(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_NAME).write_text('{"pid": 999999, "host": "elsewhere", "since": "yesterday"}\n')
    (run_dir / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half")
    notes = []
    with run_lock(run_dir, echo=notes.append):
        assert not (run_dir / ".checkpoint.pt.x1y2.tmp").exists()
    assert notes == [
        f"{run_dir}: took over the lock left by pid 999999 on elsewhere since yesterday, which no longer runs"
    ]
    assert list(run_dir.iterdir()) == []


def test_where_files_cannot_be_locked_a_run_goes_ahead_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "fcntl", None)
    notes = []
    with run_lock(tmp_path / "run", echo=notes.append):
        assert list((tmp_path / "run").iterdir()) == []
    assert notes == [
        f"{tmp_path / 'run'}: cannot be locked here (no file locks on this system); a second run of "
        "this folder would not be refused"
    ]


# ---------------------------------------------------------------- damaged or foreign files on --resume


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _foreign_checkpoint(path: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, path)


def _other_architecture(path: Path) -> None:
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if not k.startswith("blocks.2.")}
    torch.save(ckpt, path)


def _fewer_rows(path: Path) -> None:
    path.write_text("\n".join(path.read_text().splitlines()[:1]) + "\n")


# name -> (the run to damage: resumable | finished, the file, how, fragments of the error line). More kinds of
# damage to run.json, metrics.csv and config.yaml are read in-process: test_files.py, test_config.py.
DAMAGE = {
    "truncated checkpoint": ("resumable", "checkpoint.pt", _truncate, ["checkpoint.pt: damaged or not a PyTorch file"]),
    "foreign checkpoint": (
        "resumable",
        "checkpoint.pt",
        _foreign_checkpoint,
        ["checkpoint.pt: not a mnist-drill checkpoint"],
    ),
    "checkpoint of another model": (
        "resumable",
        "checkpoint.pt",
        _other_architecture,
        ["checkpoint.pt: its weights do not fit the config's model", "missing blocks.2.0.weight"],
    ),
    "config.yaml of another config": (
        "resumable",
        "config.yaml",
        lambda p: p.write_text(p.read_text().replace("lr: 0.05", "lr: 0.07")),
        ["--resume needs the same config"],
    ),
    "config.yaml not a mapping": (
        "resumable",
        "config.yaml",
        lambda p: p.write_text("- a\n- b\n"),
        ["config.yaml: expected a mapping at the top level, got a list", "restore it, or pass --overwrite"],
    ),
    "metrics.csv bad header": (
        "resumable",
        "metrics.csv",
        lambda p: p.write_text("a,b\n1,2\n"),
        ["metrics.csv: its header is 'a,b'", "pass --overwrite"],
    ),
    "metrics.csv not numbers": (
        "resumable",
        "metrics.csv",
        lambda p: p.write_text(p.read_text().replace("\n1,", "\n1,abc", 1)),
        ["metrics.csv: line 2, train_loss: 'abc", "is not a number"],
    ),
    "metrics.csv fewer rows": (
        "resumable",
        "metrics.csv",
        _fewer_rows,
        ["metrics.csv: 0 epoch(s), fewer than the", "of", "checkpoint.pt"],
    ),
    "run.json not JSON": (
        "resumable",
        "run.json",
        lambda p: p.write_text("{status: done"),
        ["run.json: damaged (not JSON", "pass --overwrite"],
    ),
    "finished run, model.pt missing": (
        "finished",
        "model.pt",
        Path.unlink,
        ["run.json says completed, but model.pt is missing"],
    ),
}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("damaged")
    cfg = tiny_config()
    cfg["train"]["epochs"] = 3
    config = write_yaml(tmp, "tiny.yaml", cfg)
    bases = {
        "resumable": run(
            ["run", config, "--data-dir", data_dir, "--out", tmp / "resumable", "--exact"],
            None,
            (1, lambda proc: proc.send_signal(signal.SIGINT)),
        ),
        "finished": run(["run", config, "--data-dir", data_dir, "--out", tmp / "finished", "--exact", "--epochs", "1"]),
    }
    assert bases["resumable"].returncode == 130 and bases["finished"].returncode == 0
    calls, before = {}, {}
    for name, (base, file_name, damage, _) in DAMAGE.items():
        out = tmp / name.replace(" ", "_").replace(",", "")
        shutil.copytree(tmp / base, out)
        damage(out / "tiny" / file_name)
        before[name] = {p.name: p.read_bytes() for p in (out / "tiny").iterdir()}
        epochs = ["--epochs", "1"] if base == "finished" else []
        calls[name] = ["run", config, "--data-dir", data_dir, "--out", out, "--exact", "--resume", *epochs]
    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = dict(zip(calls, pool.map(run, calls.values())))
    after = {
        name: {p.name: p.read_bytes() for p in (tmp / name.replace(" ", "_").replace(",", "") / "tiny").iterdir()}
        for name in DAMAGE
    }
    return procs, before, after


@pytest.mark.slow  # the real CLI in subprocesses
@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_or_foreign_file_is_named_and_left_as_it_is(damaged, name):
    procs, before, after = damaged
    proc = procs[name]
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    for fragment in DAMAGE[name][3]:
        assert fragment in line, line
    assert after[name] == before[name]  # nothing was used, rewritten or removed


# ---------------------------------------------------------------- out of memory


def torch_import_vm() -> int:
    """Bytes of address space a process holds after importing what a run imports."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import mnist_drill.cli, mnist_drill.runs.steps, matplotlib.pyplot\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmPeak')][0].split()[1])",
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    return int(probe.stdout) * 1024


def test_run_all_fails_the_step_that_runs_out_of_memory_and_goes_on(tmp_path, data_dir, write_config):
    wide = tiny_config()  # 64 channels over 10,000 test images in one batch: ~1.7 GB per activation
    wide["name"] = "step1_wide"
    wide["model"]["blocks"][0]["out"] = 64
    wide["data"].update(test_subset=10_000, test_batch_size=10_000)
    write_config("step1_wide.yaml", wide, tmp_path / "steps")
    after = tiny_config()
    after["name"] = "step2_after"
    write_config("step2_after.yaml", after, tmp_path / "steps")
    limit = torch_import_vm() + (1536 << 20)  # the tiny step needs ~0.5 GB beyond the imports

    def short_of_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = run(
        ["run-all", "--configs", tmp_path / "steps", "--data-dir", data_dir, "--out", tmp_path / "out", "--exact"],
        short_of_memory,
    )
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc)
    assert line == (
        f"{ERROR}out of memory while testing step1_wide: lower data.test_batch_size (10000) and run it "
        "again with --overwrite"
    )
    assert json.loads((tmp_path / "out" / "step1_wide" / "run.json").read_text())["status"] == "failed"
    assert (tmp_path / "out" / "step2_after" / "model.pt").is_file()
    progression = (tmp_path / "out" / "progression.md").read_text()
    assert "| step2_after |" in progression and "step1_wide.yaml (out of memory while testing" in progression


# ---------------------------------------------------------------- config text YAML reads differently

# name -> (the file's content, fragments of the error line after "<file>: ")
CONFIG_TEXT = {
    "duplicate key": (
        "optim:\n  lr: 0.1\n  lr: 0.2\n",
        ["optim.lr: the key appears twice (first at line 2)", "(line 3)"],
    ),
    "duplicate section": ("model: {bn: true}\nmodel: {dropout: 0.1}\n", ["model: the key appears twice"]),
    "duplicate key in a flow mapping": (
        "model:\n  blocks:\n    - {type: conv, out: 8, out: 16}\n",
        ["model.blocks[0].out: the key appears twice"],
    ),
    "yes as a bool": ("model:\n  bn: yes\n", ["model.bn: yes is YAML 1.1 for true: write true or false"]),
    "off in a block": (
        "model:\n  blocks:\n    - {type: conv, out: 8, bn: off}\n",
        ["model.blocks[0].bn: off is YAML 1.1 for false"],
    ),
    "On as a key": ("On: 1\n", ["On: the key 'On' is a YAML 1.1 boolean"]),
    "y as a value": ("train:\n  compile: y\n", ["train.compile: y is YAML 1.1 for true"]),
    "sexagesimal": ("train:\n  epochs: 1:30\n", ["train.epochs: 1:30 is a base-60 number in YAML 1.1 (= 90)"]),
    "leading zero": ("train:\n  epochs: 010\n", ["train.epochs: 010 has a leading zero, which YAML 1.1 reads as"]),
    "nan": ("optim:\n  lr: .nan\n", ["optim.lr: .nan is not a finite number"]),
    "inf": ("optim:\n  lr: .inf\n", ["optim.lr: .inf is not a finite number"]),
    "overflowing float": ("scheduler:\n  max_lr: 1e999\n", ["scheduler.max_lr: 1e999 is not a finite number"]),
    "integer key": ("model:\n  1: x\n", ["model.1: the key 1 is not a name (YAML reads it as a number)"]),
    "null key": ("~: 1\n", ["~: the key ~ is not a name (YAML reads it as null)"]),
    "list as a key": ("? [a, b]\n: 1\n", ["a key that is a list or mapping"]),
    "two documents": ("model: {bn: true}\n---\nmodel: {bn: false}\n", ["holds several YAML documents", "line 2"]),
    "anchor and alias": ("optim: {lr: &lr 0.1}\nscheduler: {max_lr: *lr}\n", ["optim.lr: an anchor or alias"]),
    "merge key": ("model:\n  <<: {bn: true}\n", ["model.<<: a merge key (<<)"]),
    "explicit tag": ("optim:\n  lr: !!float 1\n", ["optim.lr: an explicit tag (!!float)"]),
    "python tag": ("optim: !!python/object:os.system {}\n", ["optim: an explicit tag (!!python/object:os.system)"]),
    "tab indentation": ("model:\n\tbn: true\n", ["a tab in the indentation of line 2"]),
    "tab in a value": ('change: "a\tb"\n', ["change: holds an invisible character U+0009"]),
    "no-break space in a key": ("model:\n  \u00a0bn: true\n", ["holds an invisible character U+00A0 (NO-BREAK SPACE)"]),
    "zero-width space": ("name: run\u200b\n", ["invisible character U+200B (ZERO WIDTH SPACE) at line 1"]),
    "line separator": ("name: a\u2028b\n", ["invisible character U+2028 (LINE SEPARATOR)"]),
    "byte-order mark": (b"\xef\xbb\xbfmodel: {bn: true}\n", ["starts with a byte-order mark"]),
    "UTF-16": ("model: {bn: true}\n".encode("utf-16"), ["UTF-16 or UTF-32 text; save it as UTF-8"]),
    "Latin-1": (
        "change: caf\u00e9\n".encode("latin-1"),
        ["not UTF-8 text (byte 0xe9 at line 1, column 12; Latin-1 or Windows-1252?); save it as UTF-8"],
    ),
    "binary": (bytes(range(256)) * 4, ["holds NUL bytes (first at line 1): a binary file, not YAML text"]),
    "NUL byte": (b"model:\n  bn: true\x00\n", ["holds NUL bytes (first at line 2)"]),
    "control character": ("name: a\x07b\n", ["invisible character U+0007 (a control character) at line 1"]),
    "huge file": ("# padding\n" * 110_000, ["larger than 1 MB, so not a step config"]),
    "deep nesting": ("a: " + "[" * 40 + "]" * 40 + "\n", ["nested more than 16 levels deep"]),
}


# Through the real CLI: one case of each kind of check (text, loader, scalar); every case in-process below.
CLI_CASES = ["Latin-1", "binary", "duplicate key", "yes as a bool", "nan", "two documents"]


@pytest.fixture(scope="module")
def config_text_runs(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("config_text")
    calls = {
        name: ["run", write_case(tmp, name), "--data-dir", data_dir, "--out", tmp / "out", "--exact"]
        for name in CLI_CASES
    }
    return run_cli_many(calls), tmp


def write_case(folder: Path, name: str) -> Path:
    content = CONFIG_TEXT[name][0]
    path = folder / f"{name.replace(' ', '_')}.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@pytest.mark.slow  # starts the real CLI in subprocesses
@pytest.mark.parametrize("name", CLI_CASES)
def test_config_text_yaml_reads_otherwise_ends_the_cli_with_one_line_and_exit_2(config_text_runs, name):
    procs, tmp = config_text_runs
    proc = procs[name]
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert line.startswith(f"{ERROR}{tmp / name.replace(' ', '_')}.yaml: "), line
    for fragment in CONFIG_TEXT[name][1]:
        assert fragment in line, line
    assert not (tmp / "out").exists()


@pytest.mark.parametrize("name", list(CONFIG_TEXT))
def test_config_text_yaml_reads_otherwise_is_refused_naming_the_file_and_key(tmp_path, name):
    path = write_case(tmp_path, name)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    for fragment in CONFIG_TEXT[name][1]:
        assert fragment in message, message
