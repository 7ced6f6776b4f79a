"""Benchmark mnist-drill's pipeline against the course notebooks' loop on the same model: torchvision MNIST,
per-sample PIL transforms, a DataLoader, nn.Dropout and an `.item()` every batch. The two are interleaved
(A B A B ...) after a warm-up, so machine noise hits both alike."""

from __future__ import annotations

import itertools
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
from .training.data import FILES, MEAN, STD, Split, locate, read_bytes
from .training.loop import evaluate, make_optimizer, setup, train_epoch
from .training.runtime import device_name

WARMUP_BATCHES = 20


def classic_loaders(cfg: Config, data_dir: Path, device: torch.device):
    """The notebooks' train and test DataLoaders, on torchvision's MNIST (read at once from a temporary copy)."""
    from torchvision import datasets, transforms

    a = cfg.augment
    augment = []
    if a.translate or a.scale != (1.0, 1.0) or a.shear:
        translate = (a.translate, a.translate) if a.translate else None
        augment.append(
            transforms.RandomAffine(a.rotation, translate=translate, scale=a.scale, shear=a.shear or None, fill=0)
        )
    elif a.rotation:
        augment.append(transforms.RandomRotation(a.rotation, fill=0))
    if a.brightness or a.contrast:
        augment.append(transforms.ColorJitter(brightness=a.brightness, contrast=a.contrast))
    to_tensor = [transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))]
    with tempfile.TemporaryDirectory(prefix="mnist-drill-bench-") as root:
        raw = Path(root, "MNIST", "raw")  # where torchvision wants the decompressed files
        raw.mkdir(parents=True)
        for name in FILES:
            (raw / name).write_bytes(read_bytes(locate(data_dir, name)))
        train = datasets.MNIST(root, train=True, transform=transforms.Compose(augment + to_tensor))
        test = datasets.MNIST(root, train=False, transform=transforms.Compose(to_tensor))
    train = Subset(train, range(cfg.data.train_subset)) if cfg.data.train_subset else train
    test = Subset(test, range(cfg.data.test_subset)) if cfg.data.test_subset else test
    # The course notebooks' loader settings.
    kwargs = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    return tuple(DataLoader(data, batch_size=cfg.data.batch_size, shuffle=True, **kwargs) for data in (train, test))


def with_torch_dropout(model: nn.Module) -> nn.Module:
    """The same network with torch's nn.Dropout in place of ours: the classic loop's model."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, FastDropout):
                setattr(module, name, nn.Dropout(child.p))
    return model


def classic_train(model, loader, optimizer, device, max_batches: int | None = None) -> None:
    model.train()
    pbar = tqdm(loader, disable=True)  # the notebook's bar, minus drawing (a log file here)
    for batch_idx, (data, target) in enumerate(itertools.islice(pbar, max_batches)):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        pbar.set_description(desc=f"loss={loss.item()} batch_id={batch_idx}")


def classic_test(model, loader, device) -> None:
    model.eval()
    test_loss, correct = 0.0, 0  # summed with an .item() per batch, as the notebook does: its syncs are timed too
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            correct += output.argmax(dim=1).eq(target).sum().item()


def _timed(device: torch.device, fn, *args) -> float:
    """Seconds that fn(*args) takes, the GPU's queued work included."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    sync()
    start = time.perf_counter()
    fn(*args)
    sync()
    return time.perf_counter() - start


class NoSchedule:
    """Stands in for the scheduler: timing must not walk a schedule past its end."""

    def step(self):
        pass


def run_bench(cfg: Config, data_dir: Path, repeats: int = 2) -> dict:
    """Time both pipelines on cfg's model and data (data.train_subset / test_subset shrink the sets)."""
    ours = setup(cfg, data_dir)  # verifies (or downloads) the data before any timing
    device, train, test, net, ours_opt = ours.device, ours.train, ours.test, ours.net, ours.optimizer
    train_loader, test_loader = classic_loaders(cfg, data_dir, device)
    classic_model = with_torch_dropout(build_model(cfg.model)[0].to(device))
    classic_opt = make_optimizer(classic_model, cfg)

    # Warm-up: allocator, cuDNN/oneDNN kernel choice, DataLoader worker start.
    n = WARMUP_BATCHES * cfg.data.batch_size
    train_epoch(net, Split(train.images[:n], train.labels[:n]), ours_opt, NoSchedule(), cfg, 0, device)
    classic_train(classic_model, train_loader, classic_opt, device, max_batches=WARMUP_BATCHES)

    times = {"ours_train": [], "classic_train": [], "ours_test": [], "classic_test": []}
    for r in range(repeats):
        times["ours_train"].append(_timed(device, train_epoch, net, train, ours_opt, NoSchedule(), cfg, r + 1, device))
        times["classic_train"].append(_timed(device, classic_train, classic_model, train_loader, classic_opt, device))
        times["ours_test"].append(_timed(device, evaluate, net, test, cfg, device))
        times["classic_test"].append(_timed(device, classic_test, classic_model, test_loader, device))
        print(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))

    macs = macs_per_image(ours.layers)
    images = {"train": len(train), "test": len(test)}
    result = {
        "config": cfg.name,
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "params": count_params(ours.model)[0],
        "macs_per_image": macs,
        **{f"{part}_images": n for part, n in images.items()},
        "repeats": repeats,
        **{k: getattr(cfg.train, k) for k in ("precision", "channels_last", "compile", "fast_batchnorm")},
        **{k: getattr(cfg.data, k) for k in ("batch_size", "test_batch_size")},
        "seconds": times,
        # ours_train_img_s, classic_train_img_s, ours_test_img_s, classic_test_img_s: from the median time
        **{f"{k}_img_s": images[k.split("_")[1]] / statistics.median(v) for k, v in times.items()},
    }
    result["train_ratio"] = result["ours_train_img_s"] / result["classic_train_img_s"]
    result["test_ratio"] = result["ours_test_img_s"] / result["classic_test_img_s"]
    # Training costs about 3x the forward pass (forward, input gradients, weight gradients); 1 MAC = 2 FLOPs.
    result["ours_train_flop_s"] = result["ours_train_img_s"] * macs * 2 * 3
    result["ours_test_flop_s"] = result["ours_test_img_s"] * macs * 2
    result["versions"] = provenance()  # the code and libraries measured, as in every run.json
    return result


def report(r: dict) -> str:
    lines = [
        f"{r['config']} on {r['device']} ({r['device_name']}), torch {r['torch']}; {r['params']:,} params, "
        f"{r['macs_per_image']:,} MACs/image; {r['repeats']} interleaved repeats, medians"
    ]
    for part, what, gap in (("train", "train epoch", " "), ("test", "test pass", "  ")):  # gap: columns align
        ours, classic = r[f"ours_{part}_img_s"], r[f"classic_{part}_img_s"]
        lines.append(
            f"{what} ({r[f'{part}_images']:,} images):{gap}mnist-drill {ours:,.0f} img/s, classic {classic:,.0f} img/s "
            f"-> {r[f'{part}_ratio']:.2f}x (~{r[f'ours_{part}_flop_s'] / 1e9:.1f} GFLOP/s achieved)"
        )
    return "\n".join(lines)
