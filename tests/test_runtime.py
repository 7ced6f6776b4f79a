"""Device choice, seeding and random-state snapshots."""

from __future__ import annotations

import random

import pytest
import torch

from mnist_drill.config import TrainConfig
from mnist_drill.runtime import (UserError, autocast, choose_device, configure, device_name, place, rng_state,
                                 set_rng_state)


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
    with pytest.raises(UserError, match=r"--device cuda: CUDA is not available"):
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
    state = rng_state()
    before = (torch.rand(4), random.random(), torch.randperm(10))
    set_rng_state(state)
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
