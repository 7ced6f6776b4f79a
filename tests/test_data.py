"""MNIST files: the real data, checksum and format checks on corrupted copies, and the download path."""

from __future__ import annotations

import gzip
import shutil
import struct
import urllib.error
from pathlib import Path

import pytest
import torch

from mnist_drill.errors import DataError
from mnist_drill.training import data as data_mod
from mnist_drill.training.data import (
    ENV_VAR,
    FILES,
    MEAN,
    STD,
    load_file,
    load_mnist,
    load_split,
    normalize,
    parse_idx,
    read_bytes,
    resolve_dir,
)

LABELS = "train-labels-idx1-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"


def source(data_dir: Path, name: str) -> Path:
    return data_dir / f"{name}.gz" if (data_dir / f"{name}.gz").is_file() else data_dir / name


@pytest.fixture(scope="module")
def mnist(data_dir):
    return load_mnist(data_dir)


@pytest.fixture
def copy_dir(data_dir, tmp_path) -> Path:
    """A private copy of the four files, to corrupt."""
    root = tmp_path / "mnist"
    root.mkdir()
    for name in FILES:
        shutil.copy(source(data_dir, name), root)
    return root


def content_of(root: Path, name: str) -> bytes:
    return read_bytes(source(root, name))


def replace(root: Path, name: str, content: bytes) -> Path:
    """Replace a file of the copy by gzipped `content`; returns its path."""
    source(root, name).unlink()
    path = root / f"{name}.gz"
    with gzip.open(path, "wb") as f:
        f.write(content)
    return path


# ---------------------------------------------------------------- the real data


def test_real_mnist_sizes_and_ranges(mnist):
    train, test = mnist
    assert len(train) == 60_000 and len(test) == 10_000
    for split in (train, test):
        assert split.images.shape[1:] == (1, 28, 28)
        assert split.images.dtype == torch.float32 and split.labels.dtype == torch.int64
        assert split.images.min() == 0.0 and split.images.max() == 1.0
        assert set(split.labels.unique().tolist()) == set(range(10))


def test_normalisation_constants_are_the_training_set_statistics(mnist):
    train, _ = mnist
    assert train.images.mean().item() == pytest.approx(MEAN, abs=1e-4)
    assert train.images.std().item() == pytest.approx(STD, abs=1e-4)
    normalised = normalize(train.images[:10_000])
    assert abs(normalised.mean().item()) < 0.02 and normalised.std().item() == pytest.approx(1.0, abs=0.02)


def test_subsets_are_the_first_images(data_dir, mnist):
    train, test = load_mnist(data_dir, 100, 50)
    assert (len(train), len(test)) == (100, 50)
    assert torch.equal(train.images, mnist[0].images[:100]) and torch.equal(test.labels, mnist[1].labels[:50])


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_uncompressed_files_and_torchvision_layout_are_accepted(data_dir, tmp_path, layout):
    root = tmp_path / "plain"
    folder = root if layout == "flat" else root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    for name in (TEST_IMAGES, TEST_LABELS):
        (folder / name).write_bytes(read_bytes(source(data_dir, name)))
    test = load_split(root, train=False)
    assert len(test) == 10_000 and test.images.shape == (10_000, 1, 28, 28)


# ---------------------------------------------------------------- resolving the folder


def test_resolve_dir_precedence(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "/from/env")
    assert resolve_dir("/from/cli", "/from/config") == Path("/from/cli")
    assert resolve_dir(None, "/from/config") == Path("/from/env")
    monkeypatch.delenv(ENV_VAR)
    assert resolve_dir(None, "/from/config") == Path("/from/config")
    assert resolve_dir(None, None) == Path("data/mnist")
    assert resolve_dir("~/mnist", None) == Path.home() / "mnist"


# ---------------------------------------------------------------- broken files


def test_a_changed_byte_fails_the_checksum(copy_dir):
    content = bytearray(content_of(copy_dir, LABELS))
    content[100] = (content[100] + 1) % 10  # still a valid label, still a valid IDX file
    path = replace(copy_dir, LABELS, bytes(content))
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_mnist(copy_dir)
    assert str(path) in str(info.value)
    assert len(load_file(copy_dir, LABELS, verify=False)) == 60_000  # the format itself is fine


@pytest.mark.parametrize(
    "damage, fragment",
    [
        ("truncate", "corrupt or truncated"),
        ("garbage", "corrupt or truncated"),
        ("empty", "wrong magic number"),  # an empty .gz decompresses to nothing
    ],
)
def test_a_truncated_or_corrupt_gzip(copy_dir, damage, fragment):
    path = replace(copy_dir, TEST_LABELS, content_of(copy_dir, TEST_LABELS))
    raw = path.read_bytes()
    path.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": b"not gzip at all" * 10, "empty": b""}[damage])
    with pytest.raises(DataError, match=fragment) as info:
        load_mnist(copy_dir)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("verify", [True, False])
def test_wrong_magic_number(copy_dir, verify):
    content = bytearray(content_of(copy_dir, TEST_LABELS))
    content[3] = 0x03  # 0x00000803 is the images magic, not the labels one
    path = replace(copy_dir, TEST_LABELS, bytes(content))
    with pytest.raises(DataError, match="wrong magic number") as info:  # named before the checksum
        load_file(copy_dir, TEST_LABELS, verify=verify)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "data, dims, fragment",
    [
        (struct.pack(">I", 0x801) + struct.pack(">I", 3) + bytes([1, 2, 3]), 1, None),
        (struct.pack(">I", 0x803) + struct.pack(">3I", 1, 2, 2) + bytes(4), 1, "magic"),
        (struct.pack(">I", 0x801) + struct.pack(">I", 3) + bytes([1, 2]), 1, "header says (3,) but holds 2 bytes"),
        (struct.pack(">I", 0x801) + struct.pack(">I", 3) + bytes(5), 1, "header says (3,) but holds 5 bytes"),
        (struct.pack(">I", 0x803) + struct.pack(">3I", 2, 2, 2) + bytes(7), 3, "header says (2, 2, 2) but holds 7"),
        (b"\x00\x00", 1, "magic"),
        (b"", 3, "magic"),
    ],
)
def test_parse_idx(data, dims, fragment):
    path = Path("some/file")
    if fragment is None:
        assert parse_idx(data, path, dims).tolist() == [1, 2, 3]
        return
    with pytest.raises(DataError) as info:
        parse_idx(data, path, dims)
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_parse_idx_shapes_images():
    data = struct.pack(">I", 0x803) + struct.pack(">3I", 2, 3, 4) + bytes(range(24))
    tensor = parse_idx(data, Path("x"), 3)
    assert tensor.shape == (2, 3, 4) and tensor.dtype == torch.uint8 and tensor[1, 2, 3] == 23


def test_header_size_mismatch_in_a_file(copy_dir):
    content = content_of(copy_dir, TEST_LABELS)
    path = replace(copy_dir, TEST_LABELS, content[:-1])  # one label short of what the header says
    with pytest.raises(DataError, match=r"header says \(10000,\) but holds 9999 bytes") as info:
        load_file(copy_dir, TEST_LABELS, verify=False)
    assert str(path) in str(info.value)


def test_image_and_label_counts_must_agree(copy_dir):
    content = content_of(copy_dir, TEST_LABELS)
    replace(copy_dir, TEST_LABELS, struct.pack(">II", 0x801, 9999) + content[8:-1])  # a consistent 9999 labels
    with pytest.raises(DataError, match="10000 images but 9999 labels") as info:
        load_split(copy_dir, train=False, verify=False)
    assert str(copy_dir) in str(info.value)


# ---------------------------------------------------------------- missing data, downloading


def test_a_missing_file_is_downloaded_and_named_when_that_fails(copy_dir, monkeypatch):
    source(copy_dir, LABELS).unlink()
    asked = []

    def offline(root: Path, missing: list) -> None:
        asked.extend(missing)
        raise DataError(f"missing {', '.join(missing)}")

    monkeypatch.setattr(data_mod, "_download", offline)
    with pytest.raises(DataError, match=f"missing {LABELS}"):
        load_mnist(copy_dir)
    assert asked == [LABELS]


def test_a_failed_download_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    def offline(root, train=True, download=False):
        calls.append((root, train, download))
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_mnist(root)
    message = str(info.value)
    assert calls and calls[0][2] is True and calls[0][0] == str(root)
    assert str(root) in message and "downloading it failed" in message and "no network here" in message
    assert "--data-dir" in message and ENV_VAR in message and "\n" not in message


def test_download_is_used_when_files_are_missing(tmp_path, data_dir, monkeypatch):
    """A successful 'download' (here: copying the files the way torchvision lays them out) is loaded."""
    asked = []

    def fake_download(root: Path, missing: list) -> None:
        asked.extend(missing)
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for name in FILES:
            shutil.copy(source(data_dir, name), raw / source(data_dir, name).name)

    monkeypatch.setattr(data_mod, "_download", fake_download)
    train, test = load_mnist(tmp_path / "fresh", 10, 10)
    assert (len(train), len(test)) == (10, 10)
    assert sorted(asked) == sorted(FILES)
