"""Device choice, seeding and random-state snapshots."""

from __future__ import annotations

import os
import random

import pytest
import torch

from mnist_drill.config.schema import TrainConfig
from mnist_drill.errors import UsageError
from mnist_drill.training.runtime import (
    autocast,
    choose_device,
    configure,
    deterministic_cuda,
    device_name,
    place,
    rng_state,
    set_rng_state,
    torch_threads,
)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cpu_is_always_there():
    assert choose_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("threads, says", [(1, "1 thread"), (3, "3 threads")])
def test_cpu_device_name_gives_the_model_and_threads(monkeypatch, threads, says):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    model, count = device_name(torch.device("cpu")).rsplit(", ", 1)
    assert count == says
    assert model and model != "unknown CPU"


def test_auto_falls_back_to_cpu(no_cuda):
    assert choose_device("auto") == torch.device("cpu")


def test_cuda_without_a_gpu_is_a_user_error(no_cuda):
    with pytest.raises(UsageError, match=r"--device cuda: CUDA is not available"):
        choose_device("cuda")


def test_configure_seeds_python_and_torch(no_cuda):
    assert configure(TrainConfig(seed=5, device="auto")) == torch.device("cpu")
    first = (torch.rand(3), random.random())
    configure(TrainConfig(seed=5, device="cpu"))
    second = (torch.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and first[1] == second[1]
    configure(TrainConfig(seed=6, device="cpu"))
    assert not torch.equal(torch.rand(3), first[0])


def test_rng_state_round_trip():
    state = rng_state(torch.device("cpu"))
    before = (torch.rand(4), random.random(), torch.randperm(10))
    set_rng_state(state, torch.device("cpu"))
    after = (torch.rand(4), random.random(), torch.randperm(10))
    assert torch.equal(before[0], after[0]) and before[1] == after[1] and torch.equal(before[2], after[2])


def test_fp32_means_no_autocast():
    with autocast(torch.device("cpu"), "fp32"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32


def test_bf16_autocasts():
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16


@pytest.mark.parametrize("channels_last", [True, False])
def test_place_puts_the_model_in_the_layout_the_config_asks_for(channels_last):
    model = place(torch.nn.Conv2d(3, 4, 3), torch.device("cpu"), TrainConfig(channels_last=channels_last))
    assert model.weight.is_contiguous(memory_format=torch.channels_last) == channels_last


_MAPPED_BLOCKS = """
import ctypes, sys
import torch
from mnist_drill.training.runtime import keep_freed_memory

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "keep":
    assert keep_freed_memory()
before = libc.mallinfo2().hblks
x = torch.empty(1 << 20)  # 4 MiB: above the threshold glibc has reached by itself after importing torch
print(libc.mallinfo2().hblks - before)
"""


def _glibc_mallinfo2() -> bool:
    import ctypes

    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _glibc_mallinfo2(), reason="counts mmapped blocks with glibc's mallinfo2")
@pytest.mark.parametrize("mode, new_mapped_blocks", [("default", "1"), ("keep", "0")])
def test_keep_freed_memory_serves_megabyte_tensors_from_the_heap(mode, new_mapped_blocks):
    # A fresh process each: glibc raises its mmap threshold by itself once big blocks are freed.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _MAPPED_BLOCKS, mode], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == new_mapped_blocks


@pytest.mark.parametrize("count", [1, 3])
def test_torch_threads_holds_a_count_for_the_block_and_restores_the_one_before(count):
    before = torch.get_num_threads()
    with torch_threads(count):
        assert torch.get_num_threads() == count
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_cuda_numerics_are_deterministic(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        deterministic_cuda()
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.deterministic = False
