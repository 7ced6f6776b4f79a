"""The training and evaluation loops on small synthetic tensors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnist_drill.config.schema import Config, DataConfig, OptimConfig, SchedulerConfig, TrainConfig
from mnist_drill.training import loop as train
from mnist_drill.training.data import Split, normalize
from mnist_drill.training.loop import (
    METRIC_COLUMNS,
    NonFiniteLoss,
    evaluate,
    make_optimizer,
    make_scheduler,
    run_epoch,
    steps_per_epoch,
    train_epoch,
    training_loss,
)

CPU = torch.device("cpu")


def cfg(batch=32, test_batch=16, lr=0.01, momentum=0.9, optim="sgd", scheduler="none", epochs=3, **sched) -> Config:
    return Config(
        data=DataConfig(batch_size=batch, test_batch_size=test_batch),
        optim=OptimConfig(name=optim, lr=lr, momentum=momentum),
        scheduler=SchedulerConfig(name=scheduler, **sched),
        train=TrainConfig(epochs=epochs, device="cpu"),
    )


def split(n=100, seed=0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


class Linear(nn.Module):
    """A softmax regression: no BN, no dropout, so train and eval mode compute the same thing."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return F.log_softmax(self.fc(x.flatten(1)), dim=1)


class Constant(nn.Module):
    """Always the same log-probabilities, favouring class 3."""

    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.eye(10)[3] * 2)

    def forward(self, x):
        return F.log_softmax(self.logits.expand(len(x), 10), dim=1)


class NaNAfter(Linear):
    """Becomes NaN from its `after`-th training call on."""

    def __init__(self, after: int):
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, x):
        self.calls += 1
        out = super().forward(x)
        return out * float("nan") if self.calls >= self.after else out


@pytest.mark.parametrize("n, bs, expected", [(100, 32, 4), (96, 32, 3), (1, 128, 1), (60000, 128, 469)])
def test_steps_per_epoch(n, bs, expected):
    assert steps_per_epoch(n, bs) == expected


def test_make_optimizer():
    model = Linear()
    sgd = make_optimizer(model, cfg(lr=0.05, momentum=0.8))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["lr"] == 0.05 and sgd.param_groups[0]["momentum"] == 0.8
    adam = make_optimizer(model, cfg(optim="adam", lr=0.001))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 0.001


@pytest.mark.parametrize(
    "name, kind",
    [
        ("none", type(None)),
        ("step", torch.optim.lr_scheduler.StepLR),
        ("onecycle", torch.optim.lr_scheduler.OneCycleLR),
        ("plateau", torch.optim.lr_scheduler.ReduceLROnPlateau),
    ],
)
def test_make_scheduler(name, kind):
    c = cfg(scheduler=name, epochs=3)
    scheduler = make_scheduler(make_optimizer(Linear(), c), c, steps_per_epoch=4)
    assert isinstance(scheduler, kind)
    if name == "onecycle":
        assert scheduler.total_steps == 12


def test_run_epoch_row():
    c = cfg()
    model, train, test = Linear(), split(100), split(50, seed=1)
    optimizer = make_optimizer(model, c)
    row, result = run_epoch(model, train, test, optimizer, None, c, 1, CPU)
    assert tuple(row) == METRIC_COLUMNS
    assert row["epoch"] == 1 and row["lr"] == 0.01 and row["seconds"] > 0
    assert 0 <= row["train_acc"] <= 100 and 0 <= row["test_acc"] <= 100
    assert result.acc == row["test_acc"] and result.loss == row["test_loss"] and result.predictions.shape == (50,)


def test_train_loss_is_the_mean_over_samples_with_a_partial_last_batch():
    # with a negligible learning rate the weights do not move, so the loss measured while training
    # (batches of 32, 32, 32 and 4) equals the evaluation loss over the same 100 images
    c = cfg(batch=32, lr=1e-12, momentum=0.0)
    model, data = Linear(), split(100)
    loss, acc = train_epoch(model, data, make_optimizer(model, c), None, c, 1, CPU)
    result = evaluate(model, data, c, CPU)
    assert loss == pytest.approx(result.loss, rel=1e-5)
    assert acc == pytest.approx(result.acc)


@pytest.mark.parametrize("smoothing", [0.0, 0.05, 0.1, 0.5])
def test_training_loss_is_cross_entropy_with_label_smoothing(smoothing):
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(16, 10, generator=g) * 3, torch.randint(0, 10, (16,), generator=g)
    expected = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    assert training_loss(F.log_softmax(logits, dim=1), labels, smoothing).item() == pytest.approx(expected.item())


def test_label_smoothing_changes_the_train_loss_only():
    # with a negligible learning rate the weights do not move: smoothing raises the loss the model is
    # trained on, and the test loss stays plain NLL
    data = split(100)
    losses = {}
    for smoothing in (0.0, 0.1):
        c = dataclasses.replace(cfg(lr=1e-12, momentum=0.0), train=TrainConfig(device="cpu", label_smoothing=smoothing))
        model = Linear()
        losses[smoothing], _ = train_epoch(model, data, make_optimizer(model, c), None, c, 1, CPU)
        assert evaluate(model, data, c, CPU).loss == pytest.approx(losses[0.0], rel=1e-5)
    assert losses[0.1] > losses[0.0]


@pytest.mark.parametrize(
    "terminal, in_worker, drawn", [(True, False, True), (False, False, False), (True, True, False)]
)
def test_the_progress_bar_is_drawn_only_on_a_terminal_of_the_main_process(monkeypatch, terminal, in_worker, drawn):
    monkeypatch.setattr(train.sys.stderr, "isatty", lambda: terminal)
    monkeypatch.setattr(train.multiprocessing, "parent_process", lambda: object() if in_worker else None)
    with train._progress(3, "epoch 1") as bar:
        assert bar.disable is not drawn


def test_evaluate_counts_over_several_batches():
    labels = torch.tensor([3, 3, 1, 3, 0] * 10)  # 30 of 50 are class 3
    data = Split(torch.zeros(50, 1, 28, 28), labels)
    model = Constant()
    result = evaluate(model, data, cfg(test_batch=16), CPU)  # batches of 16, 16, 16, 2
    logp = F.log_softmax(model.logits.detach(), 0)
    assert result.acc == pytest.approx(60.0)
    assert result.loss == pytest.approx(-logp[labels].mean().item(), rel=1e-6)
    assert torch.equal(result.predictions, torch.full((50,), 3))


def test_training_improves_a_linear_model():
    c = cfg(lr=0.01, momentum=0.0)
    data = Split(torch.zeros(64, 1, 28, 28), torch.arange(64) % 10)
    for i in range(64):  # a learnable pattern: the label is where the bright pixel is
        data.images[i, 0, 0, data.labels[i]] = 1.0
    model = Linear()
    before = evaluate(model, data, c, CPU).loss
    optimizer = make_optimizer(model, c)
    for epoch in range(1, 4):
        train_epoch(model, data, optimizer, None, c, epoch, CPU)
    assert evaluate(model, data, c, CPU).loss < before


@pytest.mark.parametrize("after, batch", [(1, 1), (3, 3)])
def test_a_non_finite_loss_names_epoch_and_batch(after, batch):
    c = cfg(batch=10)
    model = NaNAfter(after)
    with pytest.raises(NonFiniteLoss) as info:
        train_epoch(model, split(100), make_optimizer(model, c), None, c, 7, CPU)
    assert (info.value.epoch, info.value.batch) == (7, batch)
    assert f"epoch 7, batch {batch}" in str(info.value) and "lower the learning rate" in str(info.value)


def test_step_scheduler_steps_once_per_epoch():
    c = cfg(scheduler="step", step_size=1, gamma=0.5, lr=0.1)
    model = Linear()
    optimizer = make_optimizer(model, c)
    scheduler = make_scheduler(optimizer, c, steps_per_epoch(100, 32))
    lrs = [run_epoch(model, split(100), split(20), optimizer, scheduler, c, e, CPU)[0]["lr"] for e in (1, 2, 3)]
    assert lrs == pytest.approx([0.1, 0.05, 0.025])


def test_onecycle_steps_every_batch():
    c = cfg(batch=20, scheduler="onecycle", epochs=1, max_lr=0.1, div_factor=10.0, final_div_factor=100.0)
    model = Linear()
    optimizer = make_optimizer(model, c)
    scheduler = make_scheduler(optimizer, c, steps_per_epoch(100, 20))  # 5 steps
    row, _ = run_epoch(model, split(100), split(20), optimizer, scheduler, c, 1, CPU)
    assert row["lr"] == pytest.approx(0.01)  # max_lr / div_factor at the start
    assert scheduler.last_epoch == 5  # one scheduler step per batch


def test_training_sees_normalised_images():
    seen = []

    class Spy(Linear):
        def forward(self, x):
            seen.append(x.detach().clone())
            return super().forward(x)

    data = split(32)
    c = cfg(batch=32)
    model = Spy()
    train_epoch(model, data, make_optimizer(model, c), None, c, 1, CPU)
    assert len(seen) == 1
    # the same images, shuffled, normalised with the MNIST mean and std
    assert not torch.equal(seen[0], normalize(data.images))
    torch.testing.assert_close(seen[0].flatten().sort().values, normalize(data.images).flatten().sort().values)


@pytest.mark.parametrize("n, batch, epochs", [(100, 32, 1), (64, 32, 2), (512, 128, 1)])
def test_onecycle_with_very_few_steps_does_not_crash(n, batch, epochs):
    # 4 steps in all with pct_start 0.25 (e.g. step 7 with --epochs 1 on a 512-image subset) makes
    # torch's OneCycleLR divide by zero in its first step; the run must either work or stop with a
    # one-line config error, never a ZeroDivisionError traceback.
    from mnist_drill.errors import ConfigError, UsageError

    c = cfg(batch=batch, scheduler="onecycle", epochs=epochs, max_lr=0.1, pct_start=0.25)
    model = Linear()
    optimizer = make_optimizer(model, c)
    try:
        scheduler = make_scheduler(optimizer, c, steps_per_epoch(n, batch))
        for epoch in range(1, epochs + 1):
            run_epoch(model, split(n), split(20), optimizer, scheduler, c, epoch, CPU)
    except (ConfigError, UsageError):
        pass
