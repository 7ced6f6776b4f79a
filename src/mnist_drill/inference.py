"""Using a trained model: `eval` scores a run's model.pt on the MNIST test set, `predict` reads the digit in
image files. model.pt is read weights-only (checkpoint.py), so a model.pt from someone else cannot run code here."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .config.loader import load_config
from .config.schema import Config
from .errors import DataError, UsageError, first_line
from .nn.model import build_model
from .training.checkpoint import CHECKPOINT, WEIGHTS, load_weights
from .training.data import load_mnist, load_split, resolve_dir, to_device
from .training.loop import evaluate, forward
from .training.runtime import configure, place

MAX_PIXELS = 40_000_000  # larger images are refused: a digit needs far fewer, a decompression bomb claims more
SIZE, BOX = 28, 20  # px: MNIST fitted each digit into a 20x20 box, then centred it by mass in 28x28
INK = 0.2  # after stretching the ink to [0, 1]: fainter pixels (noise, JPEG artefacts) do not widen the crop
BLANK = 0.1  # ink that stands out from the background by less than this (of full scale) is no digit


def load_run(run_dir: Path, device: str | None = None) -> tuple[Config, torch.nn.Module, torch.device]:
    """The run's config, its model with model.pt's weights (eval mode, on the device), and the device."""
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run folder")
    if not (run_dir / "config.yaml").is_file():
        raise UsageError(
            f"{run_dir}: no config.yaml here; pass a run folder such as results/drill/step7_lr_scheduler/seed_1"
        )
    if not (run_dir / WEIGHTS).is_file():
        still = ": the run did not finish"
        if (run_dir / CHECKPOINT).is_file():
            still = f" yet, only {CHECKPOINT}: the run is in progress or was interrupted (finish it with --resume)"
        raise UsageError(f"{run_dir}: no {WEIGHTS}{still}")
    cfg = load_config(run_dir / "config.yaml", [f"train.device={device}"] if device else [])
    device = configure(cfg.train)  # picks the device and the run's numerics (no TF32)
    model = load_weights(run_dir / WEIGHTS, build_model(cfg.model)[0], device)
    return cfg, place(model, device, cfg.train).eval(), device


def evaluate_run(run_dir: Path, data_dir: str | None = None, device: str | None = None, full: bool = False) -> dict:
    """Test loss and accuracy, per digit too, and the confusion matrix, on the test images the run was tested on
    (data.test_subset) or with `full` on all 10,000; `test_set` says which: "full" or "subset"."""
    cfg, model, device = load_run(run_dir, device)
    subset, root = (None if full else cfg.data.test_subset), resolve_dir(data_dir, cfg.data.dir)
    try:
        test = load_split(root, train=False, subset=subset)  # the test files alone: 0.1 s instead of 0.6 s
    except DataError:
        test = load_mnist(root, 1, subset)[1]  # downloads missing files as `run` does; other errors recur
    test = to_device(test, device)
    result = evaluate(model, test, cfg, device)
    n = cfg.model.num_classes
    confusion = torch.bincount(test.labels * n + result.predictions, minlength=n * n).reshape(n, n).cpu()
    return {
        "run": str(run_dir),
        "config": cfg.name,
        "device": str(device),
        "test_set": "full" if subset is None else "subset",
        "images": len(test),
        "test_loss": result.loss,
        "test_acc": result.acc,
        "per_class": [
            {"digit": d, "images": images, "correct": correct, "acc": 100.0 * correct / max(1, images)}
            for d, (images, correct) in enumerate(zip(confusion.sum(1).tolist(), confusion.diag().tolist()))
        ],
        "confusion": confusion.tolist(),
    }  # rows: true digit, columns: predicted digit


def read_image(path: Path) -> torch.Tensor:
    """The picture in `path` as grayscale (H, W) in [0, 1]; UsageError saying why it cannot be read."""
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow warns above this and refuses above twice this
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse, don't just warn
            with Image.open(path) as image:
                image.load()
                return _grayscale(ImageOps.exif_transpose(image))
    except FileNotFoundError:
        raise UsageError("no such file") from None
    except IsADirectoryError:
        raise UsageError("a folder, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        claimed = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(claimed.group(1)):,} pixels" if claimed else "its size"
        raise UsageError(f"refused: {size} is over the {MAX_PIXELS:,}-pixel limit (a decompression bomb?)") from None
    except Image.UnidentifiedImageError:
        raise UsageError("not an image (Pillow cannot tell its format)") from None
    except Exception as err:  # noqa: BLE001 -- Pillow's decoders raise many types on damaged files
        raise UsageError(f"damaged or truncated image ({first_line(err)[:100]})") from None


def _grayscale(image: Image.Image) -> torch.Tensor:
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        gray, alpha = _tensor(rgba.convert("L")), _tensor(rgba.getchannel("A"))
        # Ink drawn on a transparent sheet: lay it on a background of the opposite brightness.
        ink = (gray * alpha).sum() / alpha.sum().clamp(min=1e-6)
        return gray * alpha + (1.0 if ink < 0.5 else 0.0) * (1 - alpha)
    if image.mode.startswith(("I", "F")):  # 16/32-bit or float pixels: stretch their range to [0, 1]
        values = _tensor(image.convert("F"))
        return (values - values.min()) / (values.max() - values.min()).clamp(min=1e-6)
    return _tensor(image.convert("L"))


def _tensor(image: Image.Image) -> torch.Tensor:
    values = torch.from_numpy(np.array(image)).float()  # (H, W): uint8 for mode L, float32 for mode F
    return values if image.mode == "F" else values / 255


def prepare_digit(gray: torch.Tensor) -> torch.Tensor:
    """A grayscale picture of one digit, (H, W) in [0, 1], made the way MNIST's digits were: light ink on black,
    cropped to the ink, fitted into 20x20 keeping its aspect ratio, centred by mass in 28x28. Returns (28, 28)."""
    # The border's median is the background (a digit's picture is mostly background); ink darker than it
    # pulls the mean below it: dark ink on light paper, so invert (equal: a bright background decides).
    background = torch.cat([gray[0], gray[-1], gray[:, 0], gray[:, -1]]).median()
    if gray.mean() < background or (gray.mean() == background and background > 0.5):
        gray, background = 1 - gray, 1 - background
    ink = (gray - background).clamp(min=0)
    if ink.max() < BLANK:
        raise UsageError("no digit: the image is blank (nothing stands out from the background)")
    ink = ink / ink.max()
    rows, cols = (ink > INK).any(1).nonzero().flatten(), (ink > INK).any(0).nonzero().flatten()
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = BOX / max(ink.shape)
    h, w = max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale))
    fitted = F.interpolate(ink[None, None], size=(h, w), mode="bilinear", antialias=True)[0, 0].clamp(0, 1)
    mass = fitted.sum()
    centre_y = (fitted.sum(1) * torch.arange(h)).sum() / mass
    centre_x = (fitted.sum(0) * torch.arange(w)).sum() / mass
    top = min(max(round(SIZE / 2 - centre_y.item()), 0), SIZE - h)  # the whole digit stays inside the 28x28
    left = min(max(round(SIZE / 2 - centre_x.item()), 0), SIZE - w)
    digit = torch.zeros(SIZE, SIZE)
    digit[top : top + h, left : left + w] = fitted
    return digit


@torch.inference_mode()
def classify(model: torch.nn.Module, cfg: Config, device: torch.device, digits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, classes) for prepared digits (N, 28, 28) in [0, 1], fed as in training."""
    return forward(model, digits[:, None].to(device), cfg, device).exp().cpu()
