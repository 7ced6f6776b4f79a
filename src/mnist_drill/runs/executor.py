"""Where trials train: in this process, in a pool of local worker processes, or as tasks on a Ray cluster. A trial
is one run folder, and that folder is the only channel: a worker trains it with `run.run_step` and the parent reads
the outcome back from metrics.csv and run.json, so nothing large crosses a process boundary."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Literal

import torch

from ..config.schema import Config
from ..errors import EXIT_FAILED, EXIT_SIGINT, EXIT_SIGTERM, DrillError, Echo, Terminated, UsageError, first_line
from ..storage.files import atomic_path, read_metrics, read_run_json
from ..storage.lock import run_lock
from ..training.data import FILES, load_cached, locate, resolve_dir
from ..training.runtime import choose_device, torch_threads
from .folder import outcome, prepare_run_dir
from .run import Trial, TrialEnd, run_step

Executor = Literal["local", "ray"]
RESEND_SECONDS = 1.0  # while stopping, a worker still alive gets the signal again this often
STOP_DEADLINE_SECONDS = 30.0  # then a worker that has not exited is killed: saving takes a second or two


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (containers, taskset), not the machine
    except AttributeError:
        return os.cpu_count() or 1


def default_threads(workers: int) -> int:
    """Torch threads per worker: $OMP_NUM_THREADS when set, else the CPUs shared out among the workers, at least 1."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) >= 1:
        return int(env)
    return max(1, available_cpus() // workers)


def run_trials(
    trials: list[Trial],
    data_dir: str | None = None,
    *,
    workers: int = 1,
    threads: int | None = None,
    executor: Executor = "local",
    address: str | None = None,
    keep_going: bool = False,
    echo: Echo = print,
    on_end: Callable[[TrialEnd], None] = lambda end: None,
) -> list[TrialEnd]:
    """Train `trials` in this process, in worker processes, or as Ray tasks (`address` None: a local Ray) and
    return how each ended, as they ended (those never started left out); `on_end` sees each end as it comes.
    After an interrupted trial none starts. Without keep_going a user error in a trial is raised at the end."""
    ends: list[TrialEnd] = []

    def ended(end: TrialEnd) -> None:
        ends.append(end)
        on_end(end)

    if executor == "ray":
        _run_ray(trials, data_dir, threads or 1, address, echo, ended)
    elif min(workers, len(trials)) <= 1:  # a process of its own would only add torch's start-up time
        _run_here(trials, data_dir, threads, keep_going, echo, ended)
    else:
        _run_pool(trials, data_dir, workers, threads or default_threads(workers), echo, ended)
    errors = [e.error for e in ends if e.error is not None]
    if errors and not keep_going:
        raise errors[0]
    return ends


def _ended(
    trial: Trial, started: float, status: str, exit_code: int, note: str, error: DrillError | None = None, result=None
) -> TrialEnd:
    """How `trial` ended, with the outcome of whatever epochs its folder finished and, if not completed, why."""
    if result is None and status != "failed":
        try:
            rows = read_metrics(trial.run_dir / "metrics.csv")
        except (OSError, ValueError, KeyError, DrillError):  # none yet (no epoch finished), or not readable
            rows = []
        result = outcome(trial.cfg, rows) if rows else None
    if not note and status != "completed":
        note = (read_run_json(trial.run_dir / "run.json", strict=False) or {}).get("note", "")
    return TrialEnd(trial, status, exit_code, note, round(time.perf_counter() - started, 2), result, error)


def _announce(end: TrialEnd, echo: Echo, on_end: Callable[[TrialEnd], None]) -> TrialEnd:
    echo(f"[{end.trial.label}] {end.status}" + (f": {end.note}" if end.note else ""))
    on_end(end)
    return end


def _train(trial: Trial, data_dir, echo):
    how = {"overwrite": trial.overwrite, "resume": trial.resume, "previous": trial.previous, "written": trial.written}
    return run_step(trial.cfg, trial.run_dir, data_dir, echo=echo, **how)


def _message(trial: Trial, data_dir: str | None, cancelled: str, setup: Callable[[], None] = lambda: None) -> tuple:
    """How a trial in a worker or a Ray task ended, for the parent: (status, exit code, note, the user error or
    None). `cancelled` is the note for a Ctrl-C."""
    try:
        setup()
        result = _train(trial, data_dir, lambda line: print(f"[{trial.label}] {line}", flush=True))
        return (result.status, result.exit_code, "", None)
    except DrillError as err:
        return ("failed", err.exit_code, str(err), err)
    except KeyboardInterrupt:
        return ("interrupted", EXIT_SIGINT, cancelled, None)
    except Terminated:
        return ("interrupted", EXIT_SIGTERM, "stopped by SIGTERM before its first epoch finished", None)
    except Exception as err:  # a crash is this trial's failure; its finished epochs are kept
        return ("failed", EXIT_FAILED, first_line(err, named=True), None)


# ---------------------------------------------------------------- in this process


def _run_here(trials, data_dir, threads, keep_going, echo, on_end) -> None:
    with torch_threads(threads):
        for trial in trials:
            started = time.perf_counter()
            try:
                result = _train(trial, data_dir, echo)
                end = _ended(trial, started, result.status, result.exit_code, result.note, result=result.outcome)
            except Exception as err:  # a crash in one trial of a sweep is that trial's failure, not the sweep's
                if not keep_going:
                    raise
                user = err if isinstance(err, DrillError) else None
                note = str(err) if user else first_line(err, named=True)
                end = _ended(trial, started, "failed", EXIT_FAILED, note, user)
            on_end(end)
            if end.status == "interrupted":
                break


# ---------------------------------------------------------------- local worker processes


def _stop_once(signum, frame):
    """A worker's first SIGINT or SIGTERM unwinds run_step, which saves what finished; later ones (Ctrl-C reaches
    the whole process group, and the parent passes it on) are ignored, so they cannot cut that saving short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()


def _worker(trial: Trial, data_dir: str | None, threads: int, gpu: str, conn) -> None:
    """A worker process: train one trial, send _message's tuple back, exit. `gpu` is the one GPU it may see ('' for
    none, so a CPU trial cannot create a CUDA context)."""
    signal.signal(signal.SIGINT, _stop_once)
    signal.signal(signal.SIGTERM, _stop_once)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for anything this worker starts; torch is told below
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu

    def setup() -> None:
        # The parent blocks SIGINT while it starts a worker, and a child may inherit that mask: a signal that
        # came in meanwhile is delivered here, to the handler above.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        from tqdm import tqdm

        torch.set_num_threads(threads)
        # tqdm's default lock is a cross-process semaphore, which a worker killed outright leaves behind (and
        # Python warns about at exit); one worker's bars need only a lock of its own.
        tqdm.set_lock(threading.RLock())

    message = ("failed", EXIT_FAILED, "", None)
    try:
        message = _message(trial, data_dir, "stopped by Ctrl-C before its first epoch finished", setup)
    finally:
        with contextlib.suppress(OSError):
            conn.send(message)
            conn.close()


@dataclass
class _Running:
    trial: Trial
    process: multiprocessing.Process
    conn: object  # the reading end of the worker's pipe
    started: float
    gpu: str  # what the worker's CUDA_VISIBLE_DEVICES says ('' for none)


@contextlib.contextmanager
def _signals_ignored(*signums: int, blocked: bool = False):
    """`signums` ignored for the block; `blocked`: held back too, so one that comes in is delivered after it."""
    if threading.current_thread() is not threading.main_thread():  # signals are the main thread's alone
        yield
        return
    if blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, signums)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signums)


def check_local(data_dir: str | None, cfgs: list[Config]) -> None:
    """The devices and MNIST every local trial needs, checked once before any worker starts (one error line, not
    one failed trial each)."""
    for device in dict.fromkeys(c.train.device for c in cfgs):
        choose_device(device)
    for root in dict.fromkeys(resolve_dir(data_dir, c.data.dir) for c in cfgs):
        load_cached(root, 1, 1)


def visible_gpus() -> list[str]:
    """The GPUs this process may hand to workers, as CUDA_VISIBLE_DEVICES entries (ids or UUIDs)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]  # counts devices; creates no context


def gpu_for(cfg: Config, gpus: list[str], running) -> str:
    """The GPU a new worker for `cfg` sees: none for a CPU trial, else the one the fewest running workers use."""
    if cfg.train.device == "cpu" or not gpus:
        return ""
    in_use = [r.gpu for r in running]
    return min(gpus, key=in_use.count)


def _run_pool(trials, data_dir, workers, threads, echo, on_end) -> None:
    # At most `workers` processes of the spawn context (forking a process that has started torch's threads is
    # unsafe) alive at once. Not concurrent.futures: its process pool breaks as a whole when one worker dies.
    gpus = visible_gpus() if any(t.cfg.train.device != "cpu" for t in trials) else []
    context = multiprocessing.get_context("spawn")
    pending = list(reversed(trials))
    running: dict[int, _Running] = {}  # by the process's sentinel
    stop = False
    try:
        while running or (pending and not stop):
            while pending and not stop and len(running) < workers:
                trial = pending.pop()
                gpu = gpu_for(trial.cfg, gpus, running.values())
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(
                    target=_worker, args=(trial, data_dir, threads, gpu, writer), name=f"mnist-drill {trial.label}"
                )
                # The child keeps SIGINT ignored until _worker sets its handler, so a Ctrl-C while it imports torch
                # cannot kill it with a traceback (the parent resends signals until its workers exit).
                with _signals_ignored(signal.SIGINT, blocked=True):
                    process.start()
                writer.close()  # the worker holds the writing end; the parent sees EOF if it dies
                running[process.sentinel] = _Running(trial, process, reader, time.perf_counter(), gpu)
                echo(
                    f"[{trial.label}] started in worker process {process.pid}, {threads} torch "
                    f"thread{'s' if threads > 1 else ''}" + (f", GPU {gpu}" if gpu else "")
                )
            for sentinel in wait(list(running)):
                run = running.pop(sentinel)
                end = _announce(_collect(run, stopping=False), echo, on_end)
                stop = stop or end.status == "interrupted"
    except (KeyboardInterrupt, Terminated) as err:
        sig = signal.SIGINT if isinstance(err, KeyboardInterrupt) else signal.SIGTERM
        with _signals_ignored(signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the waiting short
            if running:
                echo(f"stopping: waiting for {len(running)} running trial(s) to save their finished epochs")
            _stop_all(list(running.values()), sig)
            for run in running.values():
                _announce(_collect(run, stopping=True), echo, on_end)
        raise


def _stop_all(runs: list[_Running], sig: int, deadline: float = STOP_DEADLINE_SECONDS) -> None:
    """Signal every worker until it has exited (one still starting up ignores SIGINT until it can save); one still
    alive after `deadline` seconds is killed, so Ctrl-C always ends."""
    alive = {r.process.sentinel: r for r in runs}
    give_up = time.monotonic() + deadline
    while alive:
        late = time.monotonic() >= give_up
        for r in alive.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(r.process.pid, signal.SIGKILL if late else sig)
        for sentinel in wait(list(alive), timeout=RESEND_SECONDS):
            alive.pop(sentinel)


def _collect(run: _Running, stopping: bool) -> TrialEnd:
    run.process.join()
    message = None
    with contextlib.suppress(EOFError, OSError):
        if run.conn.poll():
            message = run.conn.recv()
    run.conn.close()
    code = run.process.exitcode
    if message is None:  # killed by a signal (a negative code) or gone before it could say anything
        if stopping and code == -signal.SIGKILL:
            note = f"killed: still running {STOP_DEADLINE_SECONDS:.0f} s after the signal; its saved epochs are kept"
            message = ("interrupted", EXIT_FAILED, note)
        elif stopping and code in (-signal.SIGINT, -signal.SIGTERM):
            exit_code = EXIT_SIGINT if code == -signal.SIGINT else EXIT_SIGTERM
            message = ("interrupted", exit_code, "stopped before its first epoch finished")
        elif code is not None and code < 0:
            message = ("failed", EXIT_FAILED, f"worker killed by signal {-code}")
        else:
            message = ("failed", EXIT_FAILED, f"worker exited with code {code} without a result")
    return _ended(run.trial, run.started, *message)


# ---------------------------------------------------------------- Ray


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray: Ray is not installed here; pip install 'mnist-drill[ray]'") from None
    return ray


def _ray_trial(trial: Trial, mnist: dict[str, bytes], threads: int, files: dict[str, bytes]):
    """A Ray task: train the trial in a temporary folder on whichever node runs it and return _message's tuple and
    the files it made. `mnist`: the driver's MNIST files (a node needs neither its folders nor the internet);
    `files`: the run folder's, when it resumes."""
    with torch_threads(threads), tempfile.TemporaryDirectory(prefix="mnist-drill-") as tmp:
        data_dir = Path(tmp) / "mnist"
        run_dir = Path(tmp) / trial.run_dir.name
        for folder, contents in ((data_dir, mnist), (run_dir, files)):
            folder.mkdir()
            for name, data in contents.items():
                (folder / name).write_bytes(data)
        here = dataclasses.replace(trial, run_dir=run_dir, overwrite=True)  # the files came with it
        return (*_message(here, str(data_dir), cancelled="cancelled"), _read_files(run_dir))  # cancelled: ray.cancel


def _read_files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file() and not p.name.startswith(".")}


def _write_back(run_dir: Path, files: dict[str, bytes]) -> None:
    """Make `run_dir` hold exactly the files a Ray task returned (a finished run drops its checkpoint). Hidden
    files are not the run's (the lock the driver holds, another process's temporary file): they stay."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for old in run_dir.iterdir():
        if old.is_file() and not old.name.startswith(".") and old.name not in files:
            old.unlink()
    for name, data in files.items():
        with atomic_path(run_dir / name) as tmp:
            tmp.write_bytes(data)


@contextlib.contextmanager
def ray_session(address: str | None):
    """Ray, connected to the cluster at `address` (None: a local one) for the block; within an open session, that
    one. A cluster that does not answer is one error line."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise UsageError(
            f"--address {address}: no Ray cluster answered ({first_line(err, named=True)}); start one with "
            "`ray start --head`, or leave --address out for a local one"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _run_ray(trials, data_dir, threads, address, echo, on_end) -> None:
    mnist = {}  # each MNIST folder the trials read, verified (or downloaded once) here, as its four files' bytes
    for root in dict.fromkeys(resolve_dir(data_dir, t.cfg.data.dir) for t in trials):
        load_cached(root, 1, 1)
        mnist[root] = {path.name: path.read_bytes() for path in (locate(root, name) for name in FILES)}
    with ray_session(address) as ray, contextlib.ExitStack() as locks:
        for trial in trials:  # the same folder rules as a local run, checked before anything is sent
            locks.enter_context(run_lock(trial.run_dir, echo))  # held until the task's files are back
            prepare_run_dir(trial.run_dir, trial.overwrite, trial.resume)
        mnist_refs = {root: ray.put(files) for root, files in mnist.items()}  # sent once, read by every task
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(_ray_trial)
        refs = {}  # each task's ref -> (its trial, when it was sent)
        for trial in trials:
            device = trial.cfg.train.device
            num_gpus = 1 if device == "cuda" or (device == "auto" and gpus) else 0
            files = _read_files(trial.run_dir) if trial.resume else {}
            data = mnist_refs[resolve_dir(data_dir, trial.cfg.data.dir)]
            ref = task.options(num_cpus=threads, num_gpus=num_gpus).remote(trial, data, threads, files)
            refs[ref] = (trial, time.perf_counter())
            gpu = ", 1 GPU" if num_gpus else ""
            echo(f"[{trial.label}] sent to Ray ({threads} CPU{'s' if threads > 1 else ''}{gpu})")
        try:
            while refs:
                (ref,), _ = ray.wait(list(refs), num_returns=1)
                trial, started = refs.pop(ref)
                try:
                    *message, files = ray.get(ref)
                    _write_back(trial.run_dir, files)
                    end = _ended(trial, started, *message)
                except ray.exceptions.RayError as err:  # the task crashed, or its node went away
                    end = _ended(trial, started, "failed", EXIT_FAILED, first_line(err, named=True))
                _announce(end, echo, on_end)
        except (KeyboardInterrupt, Terminated):
            echo(f"stopping: cancelling {len(refs)} Ray task(s); their epochs are lost, the finished trials are kept")
            for ref in refs:
                ray.cancel(ref)
            raise
