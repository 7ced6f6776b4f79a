"""Device, precision and seed: chosen once, here, for the whole run."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import random

import torch

from ..config.schema import TrainConfig
from ..errors import UsageError
from ..nn.fast_batchnorm import use_fast_batchnorm


def choose_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available on this machine (use --device cpu or auto)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """What the run ran on, for run.json and the bench: the GPU's name, or the CPU's model and the
    threads torch uses (machines of the same kind differ, and timings differ with them)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"{_cpu_model()}, {threads} thread{'' if threads == 1 else 's'}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def seed_everything(seed: int) -> None:
    """Seeds Python and torch (CPU and every CUDA device); numpy is not used for randomness."""
    random.seed(seed)
    torch.manual_seed(seed)


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks for reuse instead of handing them back to the kernel.

    torch has no caching allocator on the CPU: every activation and gradient of a batch is a fresh
    malloc of 0.1-1.5 MB here. glibc hands such blocks back to the kernel on free (munmap, or a
    trim of the heap's top) and takes them again for the next batch, which costs page faults and
    page zeroing every batch. Blocks up to 32 MB now come from the heap, which is never trimmed:
    the process keeps its peak heap size. Same numbers, fewer system calls; both pipelines of
    `mnist-drill bench` got about 12 % faster (benchmarks/README.md). Returns False where the C
    library has no mallopt (not glibc), and changes nothing there.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def configure(cfg: TrainConfig) -> torch.device:
    """Pick the device, seed everything, and set the numerics the config asks for."""
    device = choose_device(cfg.device)
    seed_everything(cfg.seed)
    if device.type == "cpu":
        keep_freed_memory()
    if device.type == "cuda":
        deterministic_cuda()
    return device


def deterministic_cuda() -> None:
    """The same seed gives the same numbers on the same GPU, and --resume continues to them exactly.

    fp32 means fp32 (TF32 would change results between GPU generations); cuDNN picks deterministic
    kernels; cuBLAS needs a fixed workspace before its first call (CUDA's documented requirement for
    reproducible GEMMs). `use_deterministic_algorithms` swaps in the deterministic variant where torch
    has one; `warn_only` because a missing one (none in the blocks we ship) should warn, not stop a
    run half-way: the `gpu` test tier checks that two runs of one seed agree to the last digit."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def place(model: torch.nn.Module, device: torch.device, cfg: TrainConfig) -> torch.nn.Module:
    """The model on its device, in the memory layout and with the BatchNorm the config asks for."""
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    return use_fast_batchnorm(model) if cfg.fast_batchnorm else model


def autocast(device: torch.device, precision: str):
    """bf16 autocast when asked for (an explicit, result-changing speed option); otherwise nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def rng_state(device: torch.device) -> dict:
    """The generators a run draws from: Python's, the CPU's, and the training GPU's only. A CPU run never
    touches CUDA (no context, no GPU memory in a CPU worker), and a checkpoint holds no state of GPUs it did
    not use, so it resumes on a machine with fewer of them."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what rng_state saved. Every state is a CPU byte tensor, whatever the training device."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Train with `count` torch threads for the block (None: leave them), then restore the count before it.
    CPU results depend on the thread count (how reductions are split), so a resumed run uses the count it
    started with."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
