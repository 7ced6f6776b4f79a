"""Checkpoints: read onto the CPU whatever the training device, with the random state of that device only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnist_drill.training.checkpoint import load_checkpoint, read_tensors, save_checkpoint


def trained_pair(device: str = "cpu"):
    model = nn.Linear(3, 2).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if device != "meta":
        model(torch.randn(4, 3)).sum().backward()
        optimizer.step()  # a momentum buffer to restore
    return model, optimizer


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter:UserWarning")
def test_a_checkpoint_resumes_a_model_on_another_device_with_the_same_random_stream(tmp_path):
    # A CUDA run's checkpoint used to be read with map_location=cuda, which put the RNG byte tensors on the
    # GPU, where torch.set_rng_state refuses them. The meta device stands in for the GPU here.
    model, optimizer = trained_pair()
    save_checkpoint(tmp_path, 3, model, optimizer, None, torch.device("cpu"))
    expected = torch.rand(5)  # the draws that follow the saved state
    elsewhere, its_optimizer = trained_pair("meta")
    assert load_checkpoint(tmp_path, elsewhere, its_optimizer, None, torch.device("meta")) == 3
    assert torch.equal(torch.rand(5), expected)
    buffers = [s["momentum_buffer"] for s in its_optimizer.state.values()]
    assert [b.device.type for b in buffers] == ["meta", "meta"]  # the optimizer's state follows its parameters


def test_every_tensor_of_a_checkpoint_is_read_onto_the_cpu(tmp_path):
    model, optimizer = trained_pair()
    save_checkpoint(tmp_path, 1, model, optimizer, None, torch.device("cpu"))
    ckpt = read_tensors(tmp_path / "checkpoint.pt", torch.device("cpu"))
    assert ckpt["rng"]["torch"].device.type == "cpu" and ckpt["rng"]["torch"].dtype == torch.uint8


def test_a_cpu_checkpoint_on_a_gpu_machine_holds_no_cuda_state(tmp_path, cuda_that_must_not_be_touched):
    model, optimizer = trained_pair()
    save_checkpoint(tmp_path, 1, model, optimizer, None, torch.device("cpu"))
    ckpt = read_tensors(tmp_path / "checkpoint.pt", torch.device("cpu"))
    assert set(ckpt["rng"]) == {"python", "torch"}
    assert load_checkpoint(tmp_path, *trained_pair(), None, torch.device("cpu")) == 1
