"""Where a training step's time goes: torch.profiler over a few batches of a step config.

    python benchmarks/profile_step.py configs/step7_lr_scheduler.yaml [--batches 30] [--device cpu] [--set key=value]

A developer's companion to `mnist-drill bench`: the bench says how fast an epoch is, this says which
operators pay for it (self time, summed over the profiled batches), so speed work starts from data.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from mnist_drill.bench import NoSchedule
from mnist_drill.config.loader import load_config
from mnist_drill.training.data import Split, resolve_dir
from mnist_drill.training.loop import setup, train_epoch
from mnist_drill.training.runtime import device_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--batches", type=int, default=30, help="training batches to profile (after 10 of warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    args = parser.parse_args()

    cfg = load_config(args.config, [f"train.device={args.device}", *args.set])
    t = setup(cfg, resolve_dir(args.data_dir, cfg.data.dir))
    device, train, model, optimizer = t.device, t.train, t.net, t.optimizer

    def batches(k: int) -> Split:
        n = k * cfg.data.batch_size
        return Split(train.images[:n], train.labels[:n])

    train_epoch(model, batches(10), optimizer, NoSchedule(), cfg, 0, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        train_epoch(model, batches(args.batches), optimizer, NoSchedule(), cfg, 1, device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(
        f"{cfg.name}: {args.batches} training batches of {cfg.data.batch_size} on {device_name(device)}, "
        f"torch {torch.__version__}"
    )
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))


if __name__ == "__main__":
    main()
