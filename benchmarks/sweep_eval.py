"""How the test pass's speed depends on its batch size and memory format, and that its answers don't.

    python benchmarks/sweep_eval.py configs/step7_lr_scheduler.yaml \
        --weights results/drill/step7_lr_scheduler/seed_1/model.pt [--sizes 64,128,1000] [--repeats 5]

For each test batch size, in channels_last and in contiguous (NCHW) layout, times `evaluate` over the
whole test set (median of --repeats passes, after one warm-up) and checks that every size and
layout gives the same predictions as the first one. This is how `data.test_batch_size` got its
default (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from mnist_drill.config.loader import load_config
from mnist_drill.training.checkpoint import load_weights
from mnist_drill.training.data import resolve_dir
from mnist_drill.training.loop import evaluate, setup
from mnist_drill.training.runtime import device_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--weights", default=None, help="a run's model.pt (default: untrained weights)")
    parser.add_argument("--sizes", default="50,64,100,128,200,250,500,1000,2000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    cfg = load_config(args.config, [f"train.device={args.device}"])
    t = setup(cfg, resolve_dir(args.data_dir, cfg.data.dir))
    device, test, model = t.device, t.test, t.model
    if args.weights:
        load_weights(Path(args.weights), model, device)
    print(f"{cfg.name}: {len(test):,} test images on {device_name(device)}, torch {torch.__version__}")
    print(f"{'layout':>14} {'batch':>6} {'s/pass':>8} {'img/s':>8}  test_acc  same predictions")

    reference = None
    for channels_last in (True, False):
        model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        for size in (int(s) for s in args.sizes.split(",")):
            run_cfg = replace(
                cfg, data=replace(cfg.data, test_batch_size=size), train=replace(cfg.train, channels_last=channels_last)
            )
            result = evaluate(model, test, run_cfg, device)
            seconds = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                evaluate(model, test, run_cfg, device)
                seconds.append(time.perf_counter() - start)
            reference = result.predictions if reference is None else reference
            same = bool(torch.equal(result.predictions, reference))
            median = statistics.median(seconds)
            layout = "channels_last" if channels_last else "contiguous"
            print(f"{layout:>14} {size:>6} {median:>8.3f} {len(test) / median:>8,.0f}  {result.acc:8.2f}  {same}")


if __name__ == "__main__":
    main()
