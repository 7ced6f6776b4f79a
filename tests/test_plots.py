"""Figures are written as PNG files, atomically, and report what they show."""

from __future__ import annotations

import torch

from mnist_drill.plots import curves, misclassified, progression

PNG = b"\x89PNG\r\n\x1a\n"


def rows(n=3):
    return [{"epoch": i, "train_loss": 0.5 / i, "train_acc": 95 + i, "test_loss": 0.4 / i, "test_acc": 96 + i,
             "lr": 0.01, "seconds": 1.0} for i in range(1, n + 1)]


def test_curves(tmp_path):
    curves(rows(), tmp_path / "curves.png", "step", 99.4)
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_misclassified_counts_the_wrong_predictions(tmp_path):
    images = torch.rand(60, 1, 28, 28)
    labels = torch.arange(60) % 10
    predictions = labels.clone()
    predictions[::4] = (predictions[::4] + 1) % 10  # 15 wrong
    assert misclassified(images, labels, predictions, tmp_path / "m.png", "step") == 15
    assert (tmp_path / "m.png").read_bytes()[:8] == PNG


def test_misclassified_with_nothing_wrong(tmp_path):
    labels = torch.arange(10)
    assert misclassified(torch.rand(10, 1, 28, 28), labels, labels, tmp_path / "m.png", "step") == 0
    assert (tmp_path / "m.png").read_bytes()[:8] == PNG


def test_progression(tmp_path):
    progression(["step0", "step1"], [2_000_000, 7000], [99.0, 99.4], tmp_path / "p.png", 99.4)
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG
