"""Using a trained model: `eval` and `predict` through the real command line on the reference run
(results/drill/step7_lr_scheduler/seed_1), the refusal of hostile files, and the preprocessing that makes any
picture of a digit look like an MNIST one."""

from __future__ import annotations

import json
import re
import shutil
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from mnist_drill.cli import main
from mnist_drill.config.loader import load_config
from mnist_drill.errors import UsageError
from mnist_drill.inference import prepare_digit, read_image
from mnist_drill.reporting import plots
from mnist_drill.runs.run import run_step
from mnist_drill.storage.files import read_metrics
from mnist_drill.training.data import load_split

from helpers import REPO_ROOT, error_line, run_cli, tiny_config, write_yaml

REFERENCE = REPO_ROOT / "results" / "drill" / "step7_lr_scheduler" / "seed_1"
PNG = b"\x89PNG\r\n\x1a\n"


class Hostile:
    """Unpickling this creates `marker`: a model.pt holding it runs code if loaded unsafely."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


# ---------------------------------------------------------------- images


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height 8-bit grey pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 100)) + _chunk(b"IEND", b"")


def as_image(digit: torch.Tensor) -> Image.Image:
    """(28, 28) floats in [0, 1] -> an 8-bit grey PIL image."""
    return Image.frombytes("L", (28, 28), bytes((digit * 255).round().byte().flatten().tolist()))


def inverted(image: Image.Image) -> Image.Image:
    return Image.eval(image, lambda v: 255 - v)


def variants(digit: torch.Tensor) -> dict[str, Image.Image]:
    """One MNIST digit as a user might hand it over: file suffix -> image."""
    mnist = as_image(digit)
    paper = inverted(mnist).convert("RGB")
    photo = Image.new("RGB", (100, 80), (255, 255, 255))  # 100x80, the digit upscaled and off-centre
    photo.paste(paper.resize((70, 70), Image.BICUBIC), (8, 6))
    sticker = Image.new("RGBA", (28, 28), (0, 0, 0, 0))  # black ink on a transparent sheet
    sticker.putalpha(mnist)
    return {"mnist.png": mnist, "paper.png": paper, "photo.jpg": photo, "sticker.png": sticker}


@pytest.fixture(scope="module")
def test_set(data_dir):
    return load_split(data_dir, train=False, subset=200)


@pytest.fixture(scope="module")
def firsts(test_set) -> dict[int, torch.Tensor]:
    """The first test image of each digit."""
    return {d: test_set.images[int((test_set.labels == d).nonzero()[0]), 0] for d in range(10)}


BAD_FILES = {  # name -> (contents, what its error line says)
    "text.png": (b"not an image at all\n", "not an image"),
    "truncated.png": (None, "truncated"),
    "bomb.png": (png_claiming(100_000, 100_000), "decompression bomb"),
    "bomb_49mp.png": (png_claiming(7000, 7000), "decompression bomb"),  # over the 40 MP limit, under Pillow's own
    "blank.png": (None, "blank"),
    "absent.png": (None, "no such file"),
}


# ---------------------------------------------------------------- through the command line


@pytest.fixture(scope="module")
def runs(tmp_path_factory, firsts, data_dir):
    tmp = tmp_path_factory.mktemp("inference")
    good = []
    for digit, image in firsts.items():
        for suffix, picture in variants(image).items():
            path = tmp / f"{digit}_{suffix}"
            picture.save(path)
            good.append((path, digit))
    bad = []
    for name, (contents, _) in BAD_FILES.items():
        path = tmp / name
        if name == "truncated.png":
            contents = (tmp / "0_mnist.png").read_bytes()[:150]
        if name == "blank.png":
            Image.new("L", (60, 40), 255).save(path)
        elif contents is not None:
            path.write_bytes(contents)
        bad.append(path)
    mixed = [p for p, _ in good[:10]] + bad[:3] + [p for p, _ in good[10:]] + bad[3:]

    hostile = tmp / "hostile_run"
    hostile.mkdir()
    shutil.copy(REFERENCE / "config.yaml", hostile)
    torch.save(Hostile(tmp / "MARKER"), hostile / "model.pt")
    in_progress = tmp / "in_progress_run"
    in_progress.mkdir()
    shutil.copy(REFERENCE / "config.yaml", in_progress)
    (in_progress / "checkpoint.pt").write_bytes(b"")

    cpu = ["--device", "cpu"]
    calls = {
        "predict": (["predict", REFERENCE, *mixed, *cpu], REPO_ROOT),
        "predict good": (["predict", REFERENCE, *(p for p, _ in good), *cpu], REPO_ROOT),
        "eval": (["eval", REFERENCE, "--data-dir", data_dir, *cpu], tmp),  # default --out: under the cwd
        "eval hostile": (["eval", hostile, "--data-dir", data_dir, *cpu, "--out", tmp / "hostile_eval"], REPO_ROOT),
        "eval in progress": (["eval", in_progress, "--data-dir", data_dir, *cpu], tmp),
        "predict hostile": (["predict", hostile, good[0][0], *cpu], REPO_ROOT),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = dict(zip(calls, pool.map(lambda c: run_cli(c[0], cwd=c[1]), calls.values())))
    return done, tmp, good, bad


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_predict_names_real_mnist_digits_in_either_polarity_any_size_and_format(runs):
    done, _, good, _ = runs
    proc = done["predict good"]
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(good)
    for line, (path, digit) in zip(lines, good):
        answer = rf"{re.escape(str(path))}: digit {digit} \(p=[01]\.\d\d; next \d, p=[01]\.\d\d\)"
        assert re.fullmatch(answer, line), line


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_predict_answers_every_readable_image_when_others_fail(runs):
    done, _, good, _ = runs
    proc = done["predict"]
    assert proc.returncode == 2
    answered = [line.split(": digit ")[0] for line in proc.stdout.splitlines()]
    assert answered == [str(p) for p, _ in good]


@pytest.mark.slow  # starts the real CLI in subprocesses
@pytest.mark.parametrize("name", BAD_FILES)
def test_predict_gives_an_unreadable_image_one_error_line(runs, name):
    done, tmp, _, _ = runs
    proc = done["predict"]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"{tmp / name}: ")]
    assert len(lines) == 1 and lines[0].startswith(f"{tmp / name}: error: ")
    assert BAD_FILES[name][1] in lines[0]
    assert len(proc.stderr.splitlines()) == len(BAD_FILES)


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_eval_matches_the_last_test_acc_the_run_recorded(runs):
    done, tmp, _, _ = runs
    proc = done["eval"]
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp / "runs/eval/step7_lr_scheduler_seed_1/eval.json").read_text())
    last = read_metrics(REFERENCE / "metrics.csv")[-1]
    assert report["images"] == 10_000
    assert round(report["test_acc"], 2) == round(last["test_acc"], 2)
    assert report["test_loss"] == pytest.approx(last["test_loss"], rel=1e-4)
    assert f"test_acc {last['test_acc']:.2f} %" in proc.stdout


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_eval_reports_each_digit_and_the_confusion_matrix(runs):
    done, tmp, _, _ = runs
    folder = tmp / "runs/eval/step7_lr_scheduler_seed_1"
    report = json.loads((folder / "eval.json").read_text())
    confusion = torch.tensor(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10_000
    assert [c["correct"] for c in report["per_class"]] == confusion.diag().tolist()
    assert [c["images"] for c in report["per_class"]] == confusion.sum(1).tolist()
    assert confusion.diag().sum() == round(report["test_acc"] * 100)
    for c in report["per_class"]:
        row = rf"^\s+{c['digit']}\s+{c['images']}\s+{c['correct']}\s+{c['acc']:.2f}$"
        assert re.search(row, done["eval"].stdout, re.MULTILINE)
    assert (folder / "confusion.png").read_bytes()[:8] == PNG
    assert "wrote runs/eval/step7_lr_scheduler_seed_1/eval.json" in done["eval"].stdout


@pytest.mark.slow  # starts the real CLI in subprocesses
@pytest.mark.parametrize("call", ["eval hostile", "predict hostile"])
def test_a_hostile_model_file_is_refused_without_running_it(runs, call):
    done, tmp, _, _ = runs
    proc = done[call]
    assert proc.returncode == 2 and proc.stdout == ""
    assert "refused" in error_line(proc) and "hostile_run/model.pt" in error_line(proc)
    assert not (tmp / "MARKER").exists()
    assert not (tmp / "hostile_eval").exists()


def test_the_hostile_model_file_does_run_code_when_loaded_unsafely(tmp_path):
    """What the refusal above guards against: without weights_only the file creates its marker."""
    torch.save(Hostile(tmp_path / "MARKER"), tmp_path / "model.pt")
    torch.load(tmp_path / "model.pt", weights_only=False)
    assert (tmp_path / "MARKER").exists()


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_eval_of_a_run_without_model_pt_says_it_is_in_progress(runs):
    done, tmp, _, _ = runs
    proc = done["eval in progress"]
    assert proc.returncode == 2
    line = error_line(proc)
    assert "no model.pt yet" in line and "checkpoint.pt" in line and "--resume" in line
    assert not (tmp / "runs/eval/in_progress_run").exists()


# ---------------------------------------------------------------- preprocessing


def ink_box(digit: torch.Tensor) -> tuple[int, int]:
    """(height, width) of the bounding box of the non-zero pixels."""
    rows, cols = (digit > 0).any(1).nonzero().flatten(), (digit > 0).any(0).nonzero().flatten()
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def centre_of_mass(digit: torch.Tensor) -> tuple[float, float]:
    i = torch.arange(digit.shape[0], dtype=torch.float32)
    return float((digit.sum(1) * i).sum() / digit.sum()), float((digit.sum(0) * i).sum() / digit.sum())


def canvas(height: int, width: int, ink: tuple[slice, slice], paper: float = 0.0, pen: float = 1.0) -> torch.Tensor:
    picture = torch.full((height, width), paper)
    picture[ink] = pen
    return picture


@pytest.mark.parametrize(
    "shape, box",
    [
        ((slice(10, 100), slice(40, 70)), (20, 7)),  # 90x30: tall
        ((slice(5, 15), slice(3, 123)), (2, 20)),  # 10x120: wide
        ((slice(60, 63), slice(60, 63)), (20, 20)),  # 3x3: small ones are enlarged
    ],
)
def test_a_digit_is_fitted_into_20x20_keeping_its_aspect_ratio(shape, box):
    assert ink_box(prepare_digit(canvas(150, 200, shape))) == box


@pytest.mark.parametrize("top, left", [(0, 0), (100, 150), (30, 170)])
def test_the_centre_of_mass_lands_at_14_14(top, left):
    picture = canvas(150, 200, (slice(top, top + 40), slice(left, left + 6)), paper=1.0, pen=0.0)
    picture[top + 34 : top + 40, left : left + 30] = 0.0  # an L, drawn dark: its mass is off its box's centre
    digit = prepare_digit(picture)
    y, x = centre_of_mass(digit)
    assert abs(y - 14) <= 0.5 and abs(x - 14) <= 0.5
    assert x < 13.5 + ink_box(digit)[1] / 2 - 1  # not merely the box centred


def test_the_centre_of_mass_of_real_digits_lands_near_14_14(test_set):
    for image in test_set.images[:50, 0]:
        y, x = centre_of_mass(prepare_digit(image))
        assert abs(y - 14) <= 0.5 and abs(x - 14) <= 0.5


def test_an_mnist_digit_comes_back_almost_unchanged(test_set):
    images = test_set.images[:100, 0]
    prepared = torch.stack([prepare_digit(image) for image in images])
    assert (prepared - images).abs().mean() < 0.005


@pytest.mark.parametrize("paper, pen", [(1.0, 0.0), (0.0, 1.0), (0.7, 0.2), (0.3, 0.9)])
def test_dark_on_light_and_light_on_dark_give_the_same_light_digit_on_black(firsts, paper, pen):
    digit = firsts[2]
    picture = paper + (pen - paper) * digit  # the digit's ink drawn with `pen` on `paper`
    assert torch.allclose(prepare_digit(picture), prepare_digit(digit), atol=1e-4)


@pytest.mark.parametrize("level", [0.0, 0.5, 1.0])
def test_a_blank_image_is_no_digit(level):
    with pytest.raises(UsageError, match="blank"):
        prepare_digit(torch.full((30, 40), level))


@pytest.mark.parametrize(
    "convert",
    [
        lambda im: im.convert("RGB"),
        lambda im: im.convert("P"),
        lambda im: im.convert("I;16"),
        lambda im: inverted(im).convert("RGB"),
        lambda im: Image.merge("RGBA", [im.point(lambda v: 255)] * 3 + [im]),  # white ink on a transparent sheet
        lambda im: Image.merge("LA", [im.point(lambda v: 0), im]),  # black ink on a transparent sheet
    ],
    ids=["RGB", "palette", "16-bit", "inverted RGB", "white on transparent", "black on transparent"],
)
def test_any_pillow_mode_reads_as_the_same_digit(tmp_path, firsts, convert):
    grey = as_image(firsts[5])
    grey.save(tmp_path / "grey.png")
    convert(grey).save(tmp_path / "other.png")
    expected = prepare_digit(read_image(tmp_path / "grey.png"))
    assert torch.allclose(prepare_digit(read_image(tmp_path / "other.png")), expected, atol=1e-4)


@pytest.mark.parametrize("mistakes", [0, 7])
def test_the_confusion_plot_is_written_with_or_without_mistakes(tmp_path, mistakes):
    counts = [[100 if i == j else 0 for j in range(10)] for i in range(10)]
    counts[4][9] = mistakes
    plots.confusion_matrix(counts, tmp_path / "confusion.png", "step")
    assert (tmp_path / "confusion.png").read_bytes()[:8] == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["confusion.png"]


# ---------------------------------------------------------------- eval --full, in-process


@pytest.fixture(scope="module")
def subset_run(tmp_path_factory, data_dir) -> Path:
    """A tiny run trained and tested on subsets (data.test_subset: 256)."""
    tmp = tmp_path_factory.mktemp("subset_run")
    cfg = load_config(write_yaml(tmp, "tiny.yaml", tiny_config()))
    assert cfg.data.test_subset == 256
    assert run_step(cfg, tmp / "run", str(data_dir), echo=lambda line: None).status == "completed"
    return tmp / "run"


@pytest.mark.parametrize(
    "flags, images, test_set, which",
    [
        ([], 256, "subset", "256 test images (the first 256, data.test_subset as in training; --full scores them all)"),
        (["--full"], 10_000, "full", "10,000 test images (the full test set)"),
    ],
)
def test_eval_scores_the_test_subset_the_run_was_tested_on_or_with_full_all_of_it(
    subset_run, data_dir, tmp_path, capsys, flags, images, test_set, which
):
    assert main([*map(str, ["eval", subset_run, "--data-dir", data_dir, "--out", tmp_path]), *flags]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert (report["test_set"], report["images"], sum(c["images"] for c in report["per_class"])) == (
        test_set,
        images,
        images,
    )
    assert capsys.readouterr().out.splitlines()[0] == f"tiny: {which} on cpu"
    if test_set == "subset":  # what the run's last epoch recorded
        assert round(report["test_acc"], 2) == round(read_metrics(subset_run / "metrics.csv")[-1]["test_acc"], 2)
