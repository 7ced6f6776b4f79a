"""Benchmark mnist-drill's pipeline against the classic notebook loop on the same model.

The classic loop is the course's: torchvision `datasets.MNIST` + per-sample PIL transforms +
`DataLoader` + a tqdm bar with `loss.item()` every batch; test with `.item()` per batch. Ours keeps
the data on the device and augments whole batches; its model draws dropout masks the cheap way
(fast_dropout.FastDropout), where the classic model has torch's nn.Dropout as the notebooks do. Both train a
fresh copy of the same model with
the same optimizer, interleaved (A B A B ...) after a warm-up, so machine noise hits both alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from .config.blocks import macs_per_image
from .config.schema import Config
from .nn.fast_dropout import FastDropout
from .nn.model import build_model, count_params
from .storage.files import provenance
from .training.data import FILES, MEAN, STD, Split, load_cached, locate, read_bytes
from .training.loop import evaluate, make_optimizer, setup, train_epoch
from .training.runtime import device_name

WARMUP_BATCHES = 20


def _classic_root(data_dir: Path, root: Path) -> Path:
    """torchvision's MNIST wants the decompressed files in <root>/MNIST/raw: put them there."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES:
        (raw / name).write_bytes(read_bytes(locate(data_dir, name)))
    return root


def classic_loaders(root: Path, cfg: Config, device: torch.device):
    from torchvision import datasets, transforms

    a = cfg.augment
    augment = []
    if a.rotation and not (a.translate or a.scale != (1.0, 1.0) or a.shear):
        augment.append(transforms.RandomRotation(a.rotation, fill=0))
    elif a.rotation or a.translate or a.scale != (1.0, 1.0) or a.shear:
        augment.append(
            transforms.RandomAffine(
                a.rotation,
                translate=(a.translate, a.translate) if a.translate else None,
                scale=a.scale,
                shear=a.shear or None,
                fill=0,
            )
        )
    if a.brightness or a.contrast:
        augment.append(transforms.ColorJitter(brightness=a.brightness, contrast=a.contrast))
    to_tensor = [transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))]
    train = datasets.MNIST(str(root), train=True, transform=transforms.Compose(augment + to_tensor))
    test = datasets.MNIST(str(root), train=False, transform=transforms.Compose(to_tensor))
    if cfg.data.train_subset:
        train = Subset(train, range(cfg.data.train_subset))
    if cfg.data.test_subset:
        test = Subset(test, range(cfg.data.test_subset))
    # The course notebooks' loader settings.
    kwargs = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    bs = cfg.data.batch_size
    return (
        DataLoader(train, batch_size=bs, shuffle=True, **kwargs),
        DataLoader(test, batch_size=bs, shuffle=True, **kwargs),
    )


def with_torch_dropout(model: nn.Module) -> nn.Module:
    """The same network with torch's nn.Dropout in place of ours: the classic loop's model."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, FastDropout):
                setattr(module, name, nn.Dropout(child.p))
    return model


def classic_train(model, loader, optimizer, device, max_batches: int | None = None) -> int:
    model.train()
    pbar = tqdm(loader, disable=True)  # the notebook's bar, minus drawing (a log file here)
    seen = 0
    for batch_idx, (data, target) in enumerate(pbar):
        if max_batches is not None and batch_idx >= max_batches:
            break
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        pbar.set_description(desc=f"loss={loss.item()} batch_id={batch_idx}")
        seen += len(target)
    return seen


def classic_test(model, loader, device) -> int:
    model.eval()
    test_loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            correct += output.argmax(dim=1).eq(target).sum().item()
    return len(loader.dataset)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def run_bench(cfg: Config, data_dir: Path, repeats: int = 2, echo=print) -> dict:
    """Time both pipelines on cfg's model and data (data.train_subset / test_subset shrink the sets)."""
    load_cached(data_dir, cfg.data.train_subset, cfg.data.test_subset)  # verify (or download) before any timing
    with tempfile.TemporaryDirectory(prefix="mnist-drill-bench-") as tmp:
        return _bench(cfg, data_dir, repeats, echo, _classic_root(data_dir, Path(tmp)))


def _bench(cfg: Config, data_dir: Path, repeats: int, echo, root: Path) -> dict:
    ours = setup(cfg, data_dir)
    device, train, test, net, ours_opt = ours.device, ours.train, ours.test, ours.net, ours.optimizer
    classic_train_loader, classic_test_loader = classic_loaders(root, cfg, device)
    classic_model = with_torch_dropout(build_model(cfg.model)[0].to(device))
    classic_opt = make_optimizer(classic_model, cfg)

    # Warm-up: allocator, cuDNN/oneDNN kernel choice, DataLoader worker start.
    warm = Split(
        train.images[: WARMUP_BATCHES * cfg.data.batch_size], train.labels[: WARMUP_BATCHES * cfg.data.batch_size]
    )
    train_epoch(net, warm, ours_opt, NoSchedule(), cfg, 0, device)
    classic_train(classic_model, classic_train_loader, classic_opt, device, max_batches=WARMUP_BATCHES)

    times = {"ours_train": [], "classic_train": [], "ours_test": [], "classic_test": []}
    for r in range(repeats):
        times["ours_train"].append(
            _timed(lambda: train_epoch(net, train, ours_opt, NoSchedule(), cfg, r + 1, device), device)  # noqa: B023
        )
        times["classic_train"].append(
            _timed(lambda: classic_train(classic_model, classic_train_loader, classic_opt, device), device)
        )
        times["ours_test"].append(_timed(lambda: evaluate(net, test, cfg, device), device))
        times["classic_test"].append(_timed(lambda: classic_test(classic_model, classic_test_loader, device), device))
        echo(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))

    layers = build_model(cfg.model)[1]
    macs = macs_per_image(layers)
    n_train, n_test = len(train), len(test)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "config": cfg.name,
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "params": count_params(ours.model)[0],
        "macs_per_image": macs,
        "train_images": n_train,
        "test_images": n_test,
        "repeats": repeats,
        "precision": cfg.train.precision,
        "channels_last": cfg.train.channels_last,
        "compile": cfg.train.compile,
        "fast_batchnorm": cfg.train.fast_batchnorm,
        "batch_size": cfg.data.batch_size,
        "test_batch_size": cfg.data.test_batch_size,
        "seconds": times,
        "ours_train_img_s": n_train / med["ours_train"],
        "classic_train_img_s": n_train / med["classic_train"],
        "ours_test_img_s": n_test / med["ours_test"],
        "classic_test_img_s": n_test / med["classic_test"],
    }
    result["train_ratio"] = result["ours_train_img_s"] / result["classic_train_img_s"]
    result["test_ratio"] = result["ours_test_img_s"] / result["classic_test_img_s"]
    # Training costs about 3x the forward pass (forward, input gradients, weight gradients); 1 MAC = 2 FLOPs.
    result["ours_train_flop_s"] = result["ours_train_img_s"] * macs * 2 * 3
    result["ours_test_flop_s"] = result["ours_test_img_s"] * macs * 2
    result["versions"] = provenance()  # the code and libraries measured, as in every run.json
    return result


class NoSchedule:
    """Stands in for the scheduler: timing must not walk a schedule past its end."""

    def step(self):
        pass


def report(result: dict) -> str:
    r = result
    return "\n".join(
        [
            f"{r['config']} on {r['device']} ({r['device_name']}), torch {r['torch']}; "
            f"{r['params']:,} params, {r['macs_per_image']:,} MACs/image; "
            f"{r['repeats']} interleaved repeats, medians",
            f"train epoch ({r['train_images']:,} images): mnist-drill {r['ours_train_img_s']:,.0f} img/s, "
            f"classic {r['classic_train_img_s']:,.0f} img/s -> {r['train_ratio']:.2f}x "
            f"(~{r['ours_train_flop_s'] / 1e9:.1f} GFLOP/s achieved)",
            f"test pass ({r['test_images']:,} images):  mnist-drill {r['ours_test_img_s']:,.0f} img/s, "
            f"classic {r['classic_test_img_s']:,.0f} img/s -> {r['test_ratio']:.2f}x "
            f"(~{r['ours_test_flop_s'] / 1e9:.1f} GFLOP/s achieved)",
        ]
    )
