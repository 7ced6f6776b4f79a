"""FastBatchNorm2d trains like nn.BatchNorm2d (to float rounding) where it applies, and is
nn.BatchNorm2d bit for bit everywhere else."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from mnist_drill.config.loader import load_config
from mnist_drill.config.schema import TrainConfig
from mnist_drill.nn import fast_batchnorm
from mnist_drill.nn.fast_batchnorm import FEW_CHANNELS, FastBatchNorm2d, use_fast_batchnorm
from mnist_drill.nn.fast_dropout import FastDropout
from mnist_drill.nn.model import build_model
from mnist_drill.training.runtime import place

REPO = Path(__file__).resolve().parents[1]
CL = torch.channels_last


def _pair(c: int, momentum=0.1):
    torch.manual_seed(0)
    native = nn.BatchNorm2d(c, momentum=momentum)
    with torch.no_grad():
        native.weight.uniform_(0.5, 1.5)
        native.bias.uniform_(-0.5, 0.5)
    row = FastBatchNorm2d(c, momentum=momentum)
    row.load_state_dict(native.state_dict())
    return native, row


def _batch(shape, memory_format=CL):
    torch.manual_seed(1)
    return (torch.randn(shape) * 3 + 1).contiguous(memory_format=memory_format)


@pytest.mark.parametrize("shape", [(64, 8, 26, 26), (64, 10, 12, 12), (5, 3, 7, 4), (2, 15, 1, 9), (3, 2, 2, 2)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_trains_like_torch_batchnorm(shape, momentum):
    native, row = _pair(shape[1], momentum)
    x = _batch(shape)
    grad = torch.randn(shape).contiguous(memory_format=CL)
    for _ in range(3):  # running statistics over several batches
        x_native, x_row = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_native, out_row = native(x_native), row(x_row)
        out_native.backward(grad)
        out_row.backward(grad)
        torch.testing.assert_close(out_row, out_native, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x_row.grad, x_native.grad, rtol=1e-4, atol=1e-5)
    assert out_row.is_contiguous(memory_format=CL)
    for name in ("weight", "bias"):
        # sums over 3 x 43,264 products in fp32: the two summation orders differ by ~1e-4 relative
        torch.testing.assert_close(getattr(row, name).grad, getattr(native, name).grad, rtol=1e-3, atol=1e-3)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(row, name), getattr(native, name), rtol=1e-5, atol=1e-6)
    assert row.num_batches_tracked == native.num_batches_tracked == 3


def test_its_output_can_be_relu_d_in_place():
    _, row = _pair(8)
    x = _batch((4, 8, 6, 6)).requires_grad_()
    torch.relu_(row(x)).sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("case", ["eval", "16 channels", "channels first", "bf16"])
def test_is_torch_batchnorm_where_it_does_not_apply(case):
    channels = FEW_CHANNELS if case == "16 channels" else 8
    native, row = _pair(channels)
    x = _batch((4, channels, 6, 6), torch.contiguous_format if case == "channels first" else CL)
    if case == "bf16":
        native, row, x = native.bfloat16(), row.bfloat16(), x.bfloat16()
    if case == "eval":
        native.eval(), row.eval()
    assert torch.equal(row(x), native(x))
    assert torch.equal(row.running_var, native.running_var)


def test_use_fast_batchnorm_keeps_the_model_and_its_state():
    model = build_model(load_config(REPO / "configs" / "step7_lr_scheduler.yaml").model)[0]
    before = copy.deepcopy(model.state_dict())
    use_fast_batchnorm(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(type(m) is FastBatchNorm2d for m in bns)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)


def test_a_step7_model_learns_the_same_with_it():
    cfg = load_config(REPO / "configs" / "step7_lr_scheduler.yaml")
    torch.manual_seed(0)
    model = build_model(cfg.model)[0]
    for m in model.modules():
        if isinstance(m, FastDropout):
            m.p = 0.0  # the same forward pass in both
    native = place(copy.deepcopy(model), torch.device("cpu"), TrainConfig())
    row = place(model, torch.device("cpu"), TrainConfig(fast_batchnorm=True))
    assert any(type(m) is FastBatchNorm2d for m in row.modules())
    assert not any(type(m) is FastBatchNorm2d for m in native.modules())
    x = _batch((32, 1, 28, 28))
    y = torch.randint(0, 10, (32,))
    for net in (native, row):
        nn.functional.nll_loss(net.train()(x), y).backward()
    for (name, p_native), p_row in zip(native.named_parameters(), row.parameters()):
        torch.testing.assert_close(p_row.grad, p_native.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_is_torch_batchnorm_off_the_cpu(monkeypatch):
    # "meta" stands in for CUDA: a device that is not the CPU, available without a GPU.
    def no_rows(*args):
        raise AssertionError("the CPU row kernel ran off the CPU")

    monkeypatch.setattr(fast_batchnorm._FastBatchNormFunction, "apply", no_rows)
    _, row = _pair(8)
    row = row.to("meta").train()
    x = torch.empty(4, 8, 6, 6, device="meta").contiguous(memory_format=CL)
    out = row(x)
    assert out.device.type == "meta" and out.shape == x.shape
