"""Forward + backward time of one BatchNorm2d layer in channels_last, with a copy to
channels-first and back around it, and as train.fast_batchnorm's FastBatchNorm2d, for the layer
shapes of the drill's models.

    python benchmarks/bn_layout.py

On the 2-core Xeon torch's channels_last BatchNorm was several times slower below 16 channels
(benchmarks/README.md); this shows whether a machine has the same trait.
"""

from __future__ import annotations

import time

import torch

from mnist_drill.nn.fast_batchnorm import FastBatchNorm2d

SHAPES = [(64, 8, 26), (64, 10, 12), (64, 12, 24), (64, 16, 24), (64, 16, 10), (64, 32, 24)]  # N, C, H=W


def _microseconds(fn, calls: int = 100) -> float:
    for _ in range(10):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; forward + backward, µs")
    print(f"{'N x C x H x W':>16} {'channels_last':>14} {'via channels-first':>19} {'fast_batchnorm':>15}")
    for n, c, h in SHAPES:
        x = torch.randn(n, c, h, h).contiguous(memory_format=torch.channels_last).requires_grad_()
        grad = torch.randn_like(x)
        bn, row = torch.nn.BatchNorm2d(c), FastBatchNorm2d(c)
        direct = _microseconds(lambda: torch.autograd.grad(bn(x), x, grad))
        via = _microseconds(
            lambda: torch.autograd.grad(bn(x.contiguous()).contiguous(memory_format=torch.channels_last), x, grad)
        )
        rows = _microseconds(lambda: torch.autograd.grad(row(x), x, grad))
        print(f"{f'{n}x{c}x{h}x{h}':>16} {direct:>14.0f} {via:>19.0f} {rows:>15.0f}")


if __name__ == "__main__":
    main()
