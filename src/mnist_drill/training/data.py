"""MNIST as tensors: find or download the four IDX files, verify them, and keep them on the device.

No per-sample PIL/DataLoader pipeline: the whole set (47 MB as float) lives on the training device,
is shuffled by index each epoch, and is augmented a batch at a time."""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataError

MEAN, STD = 0.1307, 0.3081  # of the MNIST training pixels in [0, 1]

# MD5 of the decompressed contents: these identify the data whatever gzip produced the files.
FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
DEFAULT_DIR = Path("data/mnist")
ENV_VAR = "MNIST_DRILL_DATA"
LOOKUP_ORDER = f"--data-dir, then ${ENV_VAR}, then the config's data.dir, then ./{DEFAULT_DIR}"


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # (N, 1, 28, 28) float in [0, 1], not yet normalised
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)


def resolve_dir(cli_dir: str | None, cfg_dir: str | None) -> Path:
    """The MNIST folder: LOOKUP_ORDER, the first one given."""
    return Path(cli_dir or os.environ.get(ENV_VAR) or cfg_dir or DEFAULT_DIR).expanduser()


def locate(root: Path, name: str) -> Path | None:
    # torchvision's downloader puts the files under MNIST/raw; plain copies sit in the folder itself.
    candidates = (folder / f"{name}{ext}" for folder in (root, root / "MNIST" / "raw") for ext in ("", ".gz"))
    return next((path for path in candidates if path.is_file()), None)


def _download(root: Path, missing: list[str]) -> None:
    """torchvision's downloader (its mirrors and checksums) into root/MNIST/raw. On failure, the
    folders it made are removed again, and the error says why in the words of the last mirror."""
    import contextlib
    import io

    from torchvision.datasets import MNIST

    raw = (root / "MNIST" / "raw").absolute()
    made = [p for p in (raw, *raw.parents) if not p.exists()]  # deepest first
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its per-mirror chatter; the error below says it once
            for train in (True, False):
                MNIST(str(root), train=train, download=True)
    except Exception as err:  # offline, DNS, HTTP, disk: all end the same way for the user
        for folder in made:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        reasons = [line for line in str(err).splitlines() if line.strip() and not line.startswith(("Tried", "Error"))]
        reason = (reasons[-1] if reasons else str(err).strip() or type(err).__name__)[:120]
        raise DataError(
            f"MNIST is not in {root} (missing {', '.join(missing)}) and downloading it failed: {reason}; "
            f"check the network (or a proxy), or put the four IDX files there, or pass --data-dir / "
            f"set {ENV_VAR}"
        ) from None


def read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: cannot be read: corrupt or truncated ({err})") from None


def parse_idx(data: bytes, path: Path, expect_dims: int) -> torch.Tensor:
    """An IDX file of unsigned bytes: magic 0x00000801 (labels) or 0x00000803 (images)."""
    magic = 0x800 + expect_dims
    if len(data) < 4 + 4 * expect_dims or struct.unpack(">I", data[:4])[0] != magic:
        raise DataError(f"{path}: wrong magic number (not an IDX file of {expect_dims}-D unsigned bytes)")
    dims = struct.unpack(f">{expect_dims}I", data[4 : 4 + 4 * expect_dims])
    body = data[4 + 4 * expect_dims :]
    if len(body) != torch.Size(dims).numel():
        raise DataError(f"{path}: header says {dims} but holds {len(body)} bytes")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def load_file(root: Path, name: str, verify: bool = True) -> torch.Tensor:
    path = locate(root, name)
    if path is None:
        raise DataError(f"{root}: missing {name}[.gz]")
    data = read_bytes(path)
    # The format first, so a wrong or swapped file is named as such; then the exact contents.
    tensor = parse_idx(data, path, 3 if "images" in name else 1)
    if verify and hashlib.md5(data).hexdigest() != FILES[name]:
        raise DataError(f"{path}: checksum mismatch: the contents are not the official MNIST file")
    return tensor


def load_split(root: Path, train: bool, subset: int | None = None, verify: bool = True) -> Split:
    prefix = "train" if train else "t10k"
    images = load_file(root, f"{prefix}-images-idx3-ubyte", verify)
    labels = load_file(root, f"{prefix}-labels-idx1-ubyte", verify)
    if len(images) != len(labels):
        raise DataError(f"{root}: {prefix} has {len(images)} images but {len(labels)} labels")
    if subset is not None:
        images, labels = images[:subset], labels[:subset]
    return Split(images.unsqueeze(1).float().div_(255), labels.long())


def load_mnist(root: Path, train_subset: int | None = None, test_subset: int | None = None) -> tuple[Split, Split]:
    """(train, test) on the CPU; downloads into `root` when files are missing."""
    missing = [name for name in FILES if locate(root, name) is None]
    if missing:
        _download(root, missing)
    return load_split(root, True, train_subset), load_split(root, False, test_subset)


# load_mnist, read and verified once per process: run-all and seeds train many runs on it.
load_cached = functools.lru_cache(maxsize=2)(load_mnist)


def to_device(split: Split, device: torch.device) -> Split:
    return Split(split.images.to(device), split.labels.to(device))


def normalize(images: torch.Tensor) -> torch.Tensor:
    return (images - MEAN) / STD
