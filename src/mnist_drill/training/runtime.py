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
    """For run.json and the bench: the GPU's name, or the CPU's model and torch's threads (timings differ with both)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"{_cpu_model()}, {threads} thread{'' if threads == 1 else 's'}"


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks (up to 32 MB, heap never trimmed) for the next batch.

    torch has no CPU caching allocator, so each batch's 0.1-1.5 MB activations were otherwise mapped,
    faulted in and zeroed afresh: same numbers, about 12 % faster `mnist-drill bench` (benchmarks/README.md).
    False, changing nothing, where the C library has no mallopt (not glibc).
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def configure(cfg: TrainConfig) -> torch.device:
    """Pick the device, seed Python and torch (CPU and every GPU; numpy draws nothing), set the numerics."""
    device = choose_device(cfg.device)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if device.type == "cpu":
        keep_freed_memory()
    if device.type == "cuda":
        deterministic_cuda()
    return device


def deterministic_cuda() -> None:
    """One seed, one GPU, the same numbers, also across --resume (the `gpu` tests check it). No TF32 (it differs
    between GPU generations); `warn_only`: an op with no deterministic variant should warn, not stop a run."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it before its first call
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
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def rng_state(device: torch.device) -> dict:
    """Python's, the CPU's and the training GPU's generators only: a CPU run never touches CUDA, and a
    checkpoint holds no state of GPUs it did not use, so it resumes on a machine with fewer of them."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@contextlib.contextmanager
def torch_threads(count: int | None):
    """`count` torch threads (None: leave them) for the block. CPU results depend on the thread count
    (how reductions are split), so a resumed run uses the count it started with."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
