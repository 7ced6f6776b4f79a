"""The training and evaluation loops over device-resident tensors. No host sync inside an epoch except when the
progress bar is redrawn: losses and correct counts accumulate on the device and are read once per epoch."""

from __future__ import annotations

import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..config.blocks import LayerInfo
from ..config.schema import SCHEDULER_KEYS, Config
from ..errors import ConfigError
from ..nn.model import Net, build_model
from ..training.augment import augment_batch
from ..training.data import Split, load_cached, normalize, to_device
from ..training.runtime import autocast, configure, place

BAR_EVERY = 50  # batches between progress-bar redraws (each one is a host sync)
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds")


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, batch: int):
        super().__init__(f"the loss became NaN or infinite in epoch {epoch}, batch {batch}; lower the learning rate")
        self.epoch, self.batch = epoch, batch


@dataclass
class Evaluation:
    loss: float
    acc: float  # percent
    predictions: torch.Tensor  # (N,) on the device


@dataclass
class Training:
    """Everything a run trains with, made in one order by `setup`."""

    device: torch.device
    model: Net  # on the device, in the config's layout; its state_dict is what a run saves
    net: nn.Module  # what trains and evaluates: the model, or torch.compile(model)
    layers: list[LayerInfo]
    train: Split  # on the device
    test: Split
    optimizer: torch.optim.Optimizer
    scheduler: object  # a torch LR scheduler, or None


def setup(cfg: Config, data_dir: Path) -> Training:
    """configure -> build -> data -> place -> optimizer -> scheduler, for the runner, the bench and the benchmark
    scripts alike. Every mistake a user can make in the config, data or device raises here, before any writing."""
    device = configure(cfg.train)  # seeds torch first, so the initial weights follow train.seed
    model, layers = build_model(cfg.model)
    train_cpu, test_cpu = load_cached(data_dir, cfg.data.train_subset, cfg.data.test_subset)
    model = place(model, device, cfg.train)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch(len(train_cpu), cfg.data.batch_size))
    net = torch.compile(model) if cfg.train.compile else model
    return Training(
        device, model, net, layers, to_device(train_cpu, device), to_device(test_cpu, device), optimizer, scheduler
    )


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
    )


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: Config, steps_per_epoch: int):
    """The scheduler, or None. OneCycle steps every batch, the others once per epoch."""
    s = cfg.scheduler
    if s.name == "onecycle" and s.pct_start * cfg.train.epochs * steps_per_epoch <= 1:
        # torch divides by the warm-up's length minus one
        raise ConfigError(
            f"scheduler.pct_start: {s.pct_start} of {cfg.train.epochs * steps_per_epoch} steps leaves "
            "one-cycle less than 2 warm-up steps; raise pct_start, epochs or the training set"
        )
    if s.name == "none":
        return None
    kwargs = {key: getattr(s, key) for key in SCHEDULER_KEYS[s.name]}
    if s.name == "onecycle":
        kwargs |= {"epochs": cfg.train.epochs, "steps_per_epoch": steps_per_epoch}
    schedulers = torch.optim.lr_scheduler
    kind = {"step": schedulers.StepLR, "onecycle": schedulers.OneCycleLR, "plateau": schedulers.ReduceLROnPlateau}
    return kind[s.name](optimizer, **kwargs)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size


def forward(model: nn.Module, images: torch.Tensor, cfg: Config, device: torch.device) -> torch.Tensor:
    """The model's fp32 log-probabilities of a batch of [0, 1] images, in the config's layout and precision."""
    x = normalize(images)
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, cfg.train.precision):
        return model(x).float()


def _progress(total: int, desc: str):
    # A bar on a terminal; nothing at all in a log file (the per-epoch line says it all there), nor in a worker
    # process of a sweep or of run --seeds, whose bars would share one terminal line with the other workers'.
    quiet = not sys.stderr.isatty() or multiprocessing.parent_process() is not None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=quiet)


def training_loss(log_probs: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean NLL of the model's log-probabilities; with smoothing ε the target is (1 - ε)·one-hot + ε·uniform,
    as CrossEntropyLoss(label_smoothing=ε) on logits. The test loss stays plain NLL, comparable across runs."""
    loss = F.nll_loss(log_probs, labels)
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * log_probs.mean(dim=1).mean()
    return loss


def train_epoch(
    model: nn.Module, data: Split, optimizer, scheduler, cfg: Config, epoch: int, device: torch.device
) -> tuple[float, float]:
    """One pass over the shuffled training set; returns (mean loss, accuracy %) as measured while
    training (dropout on, augmented images), as the drill's notebooks report it."""
    model.train()
    n, bs = len(data), cfg.data.batch_size
    batches = steps_per_epoch(n, bs)
    order = torch.randperm(n, device=device)
    batch_losses = torch.zeros(batches, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    with _progress(batches, f"epoch {epoch}") as bar:
        for i in range(batches):
            idx = order[i * bs : (i + 1) * bs]
            out = forward(model, augment_batch(data.images[idx], cfg.augment), cfg, device)
            y = data.labels[idx]
            loss = training_loss(out, y, cfg.train.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if cfg.scheduler.name == "onecycle":
                scheduler.step()
            batch_losses[i] = loss.detach()
            correct += (out.argmax(1) == y).sum()
            if (i + 1) % BAR_EVERY == 0 or i + 1 == batches:
                bad = ~torch.isfinite(batch_losses[: i + 1])  # the last batch checks them all
                if bad.any():
                    raise NonFiniteLoss(epoch, int(bad.nonzero()[0]) + 1)
                bar.update(i + 1 - bar.n)
                bar.set_postfix(
                    loss=f"{batch_losses[i].item():.4f}", acc=f"{100 * correct.item() / min(n, (i + 1) * bs):.2f}"
                )
    sizes = torch.full((batches,), float(bs), device=device)
    sizes[-1] = n - bs * (batches - 1)
    mean_loss = (batch_losses * sizes).sum() / n
    return mean_loss.item(), 100.0 * correct.item() / n


@torch.inference_mode()
def evaluate(model: nn.Module, data: Split, cfg: Config, device: torch.device) -> Evaluation:
    model.eval()
    total_loss = torch.zeros((), device=device)
    predictions, bs = [], cfg.data.test_batch_size
    for start in range(0, len(data), bs):
        out = forward(model, data.images[start : start + bs], cfg, device)
        total_loss += F.nll_loss(out, data.labels[start : start + bs], reduction="sum")
        predictions.append(out.argmax(1))
    predictions = torch.cat(predictions)
    correct = (predictions == data.labels).sum().item()
    return Evaluation(total_loss.item() / len(data), 100.0 * correct / len(data), predictions)


def run_epoch(
    model, train: Split, test: Split, optimizer, scheduler, cfg: Config, epoch: int, device: torch.device
) -> tuple[dict, Evaluation]:
    """Train then test once; returns the metrics row (METRIC_COLUMNS) and the test evaluation."""
    start = time.perf_counter()
    lr = optimizer.param_groups[0]["lr"]
    train_loss, train_acc = train_epoch(model, train, optimizer, scheduler, cfg, epoch, device)
    result = evaluate(model, test, cfg, device)
    if cfg.scheduler.name == "step":
        scheduler.step()
    elif cfg.scheduler.name == "plateau":
        scheduler.step(result.loss)
    values = (epoch, train_loss, train_acc, result.loss, result.acc, lr, time.perf_counter() - start)
    return dict(zip(METRIC_COLUMNS, values)), result
