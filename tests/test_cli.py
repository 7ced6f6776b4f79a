"""The real command line in subprocesses: help, the inspection commands, one-line errors, and
end-to-end runs on small subsets.

Each CLI process spends ~5 s importing torch, so the independent calls of this module are started
together by two module fixtures (`quick` and `runs`) and the tests read their results.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from mnist_drill import __version__
from mnist_drill.cli import COMMANDS
from mnist_drill.config.loader import load_config
from mnist_drill.nn.model import build_model, count_params

from helpers import error_line, run_cli, run_cli_many, tiny_config, write_yaml

REPO = Path(__file__).resolve().parents[1]
HEADER = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"]
STEP7 = "configs/step7_lr_scheduler.yaml"
E2E_SETS = ["--set", "data.train_subset=2000", "--set", "data.test_subset=500"]
# Any download attempt goes to a closed local port, so it fails at once whatever the network.
OFFLINE = {k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
OFFLINE.update(no_proxy="", NO_PROXY="")


@pytest.fixture(scope="module")
def quick(data_dir, tmp_path_factory):
    """Calls that parse, inspect or fail before training; returns (results, tmp folder)."""
    tmp = tmp_path_factory.mktemp("cli_quick")
    tiny = write_yaml(tmp, "tiny.yaml", tiny_config())
    bad = tiny_config()
    bad["model"]["dropotu"] = 0.1
    bad = write_yaml(tmp, "bad.yaml", bad)
    (tmp / "afile").write_text("not a folder")
    (tmp / "empty").mkdir()
    data = ["--data-dir", data_dir]
    calls = {
        "version": ["--version"],
        "help": ["--help"],
        **{f"help {c}": [c, "--help"] for c in COMMANDS},
        "summary": ["summary", "configs/seeds/seed002_12k.yaml"],
        "show": ["show", "configs/step3_dropout.yaml", "--set", "train.epochs=4"],
        "diff": ["diff", "configs/step2_bn.yaml", "configs/step3_dropout.yaml"],
        "misspelt": ["run", bad, "--out", tmp / "out_bad", "--exact", *data],
        "unknown command": ["frobnicate", STEP7],
        "unknown option": ["summary", STEP7, "--frobnicate"],
        "cuda": ["run", tiny, "--device", "cuda", "--out", tmp / "out_cuda", "--exact", *data],
        "out under a file": ["run", tiny, "--out", tmp / "afile" / "out", "--exact", *data],
        "no data": (["run", tiny, "--data-dir", tmp / "empty", "--out", tmp / "out_nodata", "--exact"], OFFLINE),
    }
    return run_cli_many(calls), tmp


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """The training runs: step 7 end to end, a two-seed run and a run-all; returns (results, tmp)."""
    tmp = tmp_path_factory.mktemp("cli_runs")
    tiny = write_yaml(tmp, "tiny.yaml", tiny_config())
    steps = {  # two good steps around two broken ones
        "step1_a": {},
        "step2_bad": {"train": {"epohcs": 2}},  # a misspelt key: a config error
        "step3_b": {"model": {"dropout": 0.1}},
        "step4_nofit": {
            "model": {
                "blocks": [
                    {"type": "conv", "out": 8},
                    {"type": "maxpool"},
                    {"type": "conv", "out": 16, "kernel": 15},  # 15x15 on 13x13
                    {"type": "gap"},
                    {"type": "head"},
                ]
            }
        },
    }
    for name, change in steps.items():
        cfg = tiny_config()
        cfg["name"] = name
        for section, values in change.items():
            cfg[section].update(values)
        write_yaml(tmp / "steps", f"{name}.yaml", cfg)
    data = ["--data-dir", data_dir]
    calls = {
        "e2e": ["run", STEP7, "--epochs", "1", "--device", "cpu", *data, "--out", tmp / "e2e", "--exact", *E2E_SETS],
        "seeds": ["run", tiny, "--seeds", "1,2", "--out", tmp / "seeds", "--exact", *data],
        "run-all": [
            "run-all",
            "--configs",
            tmp / "steps",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--out",
            tmp / "all",
            "--exact",
            *data,
        ],
    }
    return run_cli_many(calls), tmp


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


# ---------------------------------------------------------------- help and inspection


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_version(quick):
    assert ok(quick[0]["version"]).stdout.strip() == f"mnist-drill {__version__}"


@pytest.mark.slow  # starts the real CLI in subprocesses
@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help(quick, command):
    proc = ok(quick[0][f"help {command}".strip()])
    assert proc.stdout.startswith(f"usage: mnist-drill {command}".rstrip())
    assert proc.stderr == ""
    expected = {
        "": list(COMMANDS),
        "run": [
            "--seeds",
            "--set",
            "--epochs",
            "--device",
            "--seed",
            "--data-dir",
            "--out",
            "--overwrite",
            "--resume",
            "--exact",
        ],
        "run-all": ["--configs", "--set", "--epochs", "--out", "--overwrite", "--resume", "--exact"],
        "summary": ["config", "--set"],
        "show": ["config", "--set"],
        "diff": ["old", "new", "--set"],
    }.get(command, ["--help"])
    for word in expected:
        assert word in proc.stdout, word


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_summary_of_the_reference_model(quick):
    out = ok(quick[0]["summary"]).stdout
    assert "Total params:      12,514" in out and "12,514" in out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("#"))
    assert header.split() == ["#", "block", "output", "params", "RF", "jump", "MACs"]
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s+\d+\s+\w", line)]
    assert [r[1] for r in rows] == ["conv", "conv", "conv", "transition", "conv", "conv", "gap", "head"]
    rf_column = header.split().index("RF") - len(header.split())  # counted from the right
    assert [int(r[rf_column]) for r in rows] == [3, 5, 7, 8, 12, 16, 28, 28]
    assert "Receptive field:   28 px" in out
    assert "torchsummary:" in out  # the cross-check table follows


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_show_prints_the_resolved_config(quick):
    shown = yaml.safe_load(ok(quick[0]["show"]).stdout)
    step3 = yaml.safe_load((REPO / "configs" / "step3_dropout.yaml").read_text())
    assert shown["name"] == "step3_dropout"
    assert shown["model"]["dropout"] == step3["model"]["dropout"] > 0  # set by step3
    assert shown["model"]["bn"] is True  # inherited from step2
    assert shown["train"]["epochs"] == 4  # from --set
    assert shown["data"]["test_batch_size"] == 128  # a default
    # Inherited block values are shown as what they resolve to, not as null.
    assert shown["model"]["blocks"][0] == {
        "type": "conv",
        "out": 8,
        "kernel": 3,
        "padding": 0,
        "stride": 1,
        "dilation": 1,
        "bias": False,
        "bn": True,
        "dropout": step3["model"]["dropout"],
        "relu": True,
    }
    cfg = load_config(REPO / "configs" / "step3_dropout.yaml", ["train.epochs=4"])
    assert shown["optim"] == {
        "name": cfg.optim.name,
        "lr": cfg.optim.lr,
        "momentum": cfg.optim.momentum,
        "nesterov": cfg.optim.nesterov,
        "weight_decay": cfg.optim.weight_decay,
    }


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_diff_shows_exactly_the_dropout_change(quick):
    lines = ok(quick[0]["diff"]).stdout.splitlines()
    old = load_config(REPO / "configs" / "step2_bn.yaml")
    new = load_config(REPO / "configs" / "step3_dropout.yaml")
    assert old.model.dropout != new.model.dropout
    assert lines[0] == "--- configs/step2_bn.yaml (step2_bn)"
    assert lines[1] == f"+++ configs/step3_dropout.yaml (step3_dropout): {new.change}"
    assert lines[2:] == [f"model.dropout: {old.model.dropout!r} -> {new.model.dropout!r}"]


# ---------------------------------------------------------------- one-line errors


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_a_misspelt_key_is_one_line_exit_2(quick):
    results, tmp = quick
    proc = results["misspelt"]
    assert proc.returncode == 2
    line = error_line(proc)
    assert line.startswith("mnist-drill: error:")
    assert "bad.yaml" in line and "model.dropotu" in line and "did you mean 'dropout'" in line
    assert not (tmp / "out_bad").exists()


@pytest.mark.slow  # starts the real CLI in subprocesses
@pytest.mark.parametrize(
    "name, fragment",
    [
        ("unknown command", "invalid choice: 'frobnicate'"),
        ("unknown option", "unrecognized arguments: --frobnicate"),
    ],
)
def test_usage_errors_are_one_line_exit_2(quick, name, fragment):
    proc = quick[0][name]
    assert proc.returncode == 2
    line = error_line(proc)
    assert line.startswith("mnist-drill") and "error:" in line and fragment in line
    assert proc.stdout == ""


@pytest.mark.slow  # starts the real CLI in subprocesses
@pytest.mark.parametrize(
    "name, out, fragments",
    [
        ("cuda", "out_cuda", ["--device cuda", "CUDA is not available"]),
        ("out under a file", None, ["afile", "cannot write here"]),
        (
            "no data",
            "out_nodata",
            ["empty", "downloading it failed: <urlopen error", "Connection refused", "--data-dir", "MNIST_DRILL_DATA"],
        ),
    ],
)
def test_user_errors_are_one_line_exit_2(quick, name, out, fragments):
    results, tmp = quick
    proc = results[name]
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    assert line.startswith("mnist-drill: error:")
    for fragment in fragments:
        assert fragment in line, line
    if out:  # nothing was written for a run that could not start
        assert not (tmp / out).exists()
    if name == "no data":  # a failed download leaves no empty MNIST/raw behind
        assert list((tmp / "empty").iterdir()) == []


# ---------------------------------------------------------------- end to end

E2E_FILES = [
    "config.yaml",
    "metrics.csv",
    "summary.txt",
    "analysis.md",
    "curves.png",
    "misclassified.png",
    "model.pt",
    "run.json",
    "train.log",
    "events.out.tfevents",  # TensorBoard's; its name goes on with the time it was started
]


def run_files(run: Path) -> list[str]:
    return sorted(re.sub(r"^(events\.out\.tfevents)\..+", r"\1", p.name) for p in run.iterdir())


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_run_writes_every_output(runs):
    results, tmp = runs
    proc = ok(results["e2e"])
    run = tmp / "e2e" / "step7_lr_scheduler"
    assert f"wrote {run}/" in proc.stdout and "epoch  1/1" in proc.stdout
    assert run_files(run) == sorted(E2E_FILES)  # no checkpoint, no temp files

    with open(run / "metrics.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == HEADER and len(table) == 2
    row = dict(zip(HEADER, table[1]))
    assert row["epoch"] == "1" and 0 <= float(row["test_acc"]) <= 100 and float(row["train_loss"]) > 0
    expected = load_config(
        REPO / STEP7, ["train.epochs=1", "train.device=cpu", "data.train_subset=2000", "data.test_subset=500"]
    )
    assert expected.scheduler.name == "onecycle"  # which starts at max_lr / div_factor
    assert float(row["lr"]) == pytest.approx(expected.scheduler.max_lr / expected.scheduler.div_factor)

    analysis = (run / "analysis.md").read_text()
    for heading in ("## Target", "## Results", "## Analysis"):
        assert heading in analysis
    assert "Run " not in analysis  # completed

    info = json.loads((run / "run.json").read_text())
    assert info["torch"] == torch.__version__ and info["torchvision"] and info["python"]
    assert info["device"] == "cpu" and info["seed"] == 1 and info["status"] == "completed"
    assert info["epochs_finished"] == 1 and info["config"] == "step7_lr_scheduler"

    assert load_config(run / "config.yaml") == expected
    net, _ = build_model(expected.model)
    assert info["params"] == count_params(net)[0]
    net.load_state_dict(torch.load(run / "model.pt"))  # the weights fit the model of the config
    assert f"Total params:      {info['params']:,}" in (run / "summary.txt").read_text()
    for png in ("curves.png", "misclassified.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "epoch  1/1" in (run / "train.log").read_text()


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_a_second_run_needs_overwrite(runs, data_dir):
    results, tmp = runs
    ok(results["e2e"])
    run = tmp / "e2e" / "step7_lr_scheduler"
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()}
    args = [
        "run",
        STEP7,
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--data-dir",
        data_dir,
        "--out",
        tmp / "e2e",
        "--exact",
        *E2E_SETS,
    ]
    again = run_cli(args)
    assert again.returncode == 2
    line = error_line(again)
    assert line.startswith("mnist-drill: error:") and str(run) in line and "--overwrite" in line
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()} == before

    ok(run_cli([*args, "--overwrite"]))
    after = json.loads((run / "run.json").read_text())
    assert run_files(run) == sorted(E2E_FILES)
    assert (run / "run.json").stat().st_mtime_ns != before["run.json"][1] and after["status"] == "completed"


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_run_with_seeds(runs):
    results, tmp = runs
    ok(results["seeds"])
    step = tmp / "seeds" / "tiny"
    for seed in (1, 2):
        assert (step / f"seed_{seed}" / "model.pt").is_file()
        assert json.loads((step / f"seed_{seed}" / "run.json").read_text())["seed"] == seed
        assert len((step / f"seed_{seed}" / "metrics.csv").read_text().splitlines()) == 2
    analysis = (step / "analysis.md").read_text()
    assert re.search(r"^\| 1 \| ", analysis, re.M) and re.search(r"^\| 2 \| ", analysis, re.M)
    assert re.search(r"^\| mean ± sd \| \| \d+\.\d\d ± \d+\.\d\d \|", analysis, re.M)


def progression_rows(path: Path) -> dict[str, list[str]]:
    rows = [line.split("|")[1:-1] for line in path.read_text().splitlines() if line.startswith("| step")]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows[1:]}


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_run_all_writes_the_progression_and_goes_on_after_broken_steps(runs):
    results, tmp = runs
    proc = results["run-all"]
    out = tmp / "all"
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    order = [proc.stdout.index(f"{name}.yaml") for name in ("step1_a", "step2_bad", "step3_b", "step4_nofit")]
    assert order == sorted(order)
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 2 and all(line.startswith("mnist-drill: error:") for line in errors)
    assert "step2_bad.yaml" in errors[0] and "train.epohcs" in errors[0]
    assert "model.blocks[2]" in errors[1] and "does not fit" in errors[1]

    progression = (out / "progression.md").read_text()
    rows = progression_rows(out / "progression.md")
    # A step whose config loaded keeps its row, empty, when it could not train; one whose config did not load has
    # no name to show and is listed under the table. No step is compared across a missing one.
    assert list(rows) == ["step1_a", "step3_b", "step4_nofit"]
    for good in ("step1_a", "step3_b"):
        assert rows[good][2] == "1,432"  # params of the tiny model
        assert (out / good / "model.pt").is_file() and (out / good / "analysis.md").is_file()
    assert rows["step4_nofit"][2:5] == ["", "", ""] and rows["step4_nofit"][6] == "failed"
    missing = next(line for line in progression.splitlines() if line.startswith("Did not train"))
    assert "step2_bad.yaml" in missing and "train.epohcs" in missing
    assert "step4_nofit.yaml" in missing and "does not fit" in missing
    assert not (out / "step2_bad").exists()
    assert (out / "progression.png").read_bytes()[:4] == b"\x89PNG"
