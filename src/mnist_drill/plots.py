"""Figures: a step's loss/accuracy curves, its misclassified test images, the progression, and a
trained model's confusion matrix (`mnist-drill eval`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on these machines or in CI
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .outputs import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def curves(rows: list[dict], path: Path, title: str, target_acc: float) -> None:
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split, style in (("train", "-o"), ("test", "-s")):
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in rows], style, ms=3, label=f"{split}_loss")
        ax_acc.plot(epochs, [r[f"{split}_acc"] for r in rows], style, ms=3, label=f"{split}_acc")
    ax_acc.axhline(target_acc, color="grey", ls="--", lw=1, label=f"target {target_acc}%")
    ax_loss.set(xlabel="epoch", ylabel="NLL loss", yscale="log", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy",
               ylim=(max(90.0, min(min(r["train_acc"], r["test_acc"]) for r in rows) - 0.5), 100))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    _save(fig, path)


def misclassified(images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor, path: Path,
                  title: str, limit: int = 40) -> int:
    """Grid of up to `limit` misclassified test images (true -> predicted); returns how many were wrong."""
    wrong = (predictions != labels).nonzero().flatten()
    shown = wrong[:limit].cpu()
    cols = 10
    rows = max(1, (len(shown) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown.tolist()):
        ax.imshow(images[i, 0].cpu().numpy(), cmap="gray_r")
        ax.set_title(f"{labels[i].item()}→{predictions[i].item()}", fontsize=9)
    fig.suptitle(f"{title}: {len(wrong)} misclassified (true→predicted), first {len(shown)} shown")
    _save(fig, path)
    return len(wrong)


def progression(names: list[str], params: list[int], best_test: list[float], path: Path, target_acc: float) -> None:
    fig, (ax_acc, ax_params) = plt.subplots(1, 2, figsize=(12, 4))
    x = range(len(names))
    ax_acc.plot(x, best_test, "-o")
    ax_acc.axhline(target_acc, color="grey", ls="--", lw=1, label=f"target {target_acc}%")
    ax_acc.set(ylabel="best test_acc (%)", title="test accuracy per step")
    ax_params.bar(x, params)
    ax_params.set(yscale="log", ylabel="parameters", title="parameters per step")
    for ax in (ax_acc, ax_params):
        ax.set_xticks(list(x), names, rotation=30, ha="right")
        ax.grid(alpha=0.3)
    ax_acc.legend()
    _save(fig, path)


def confusion_matrix(counts: list[list[int]], path: Path, title: str) -> None:
    """Test images by true digit (rows) and predicted digit (columns), each cell's count written in it.
    Only the mistakes are coloured: the diagonal's hundreds would wash out the few wrong ones."""
    n = len(counts)
    mistakes = [[0 if i == j else c for j, c in enumerate(row)] for i, row in enumerate(counts)]
    top = max(1, max(max(row) for row in mistakes))
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    image = ax.imshow(mistakes, cmap="Reds", vmin=0, vmax=top)
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        fontweight="bold" if i == j else "normal", color="white" if mistakes[i][j] > top / 2 else "k")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted digit", ylabel="true digit",
           title=f"{title}: {sum(map(sum, mistakes))} of {sum(map(sum, counts))} misclassified")
    fig.colorbar(image, ax=ax, label="misclassified images", ticks=matplotlib.ticker.MaxNLocator(integer=True))
    _save(fig, path)
