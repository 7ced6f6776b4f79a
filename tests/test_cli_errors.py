"""Every mistake a user can make with a config or the data, through the real command line: one
line on stderr naming the file (and key), exit code 2, no traceback, and no run folder written."""

from __future__ import annotations

import gzip
import shutil

import pytest

from mnist_drill.training.data import FILES

from helpers import error_line, run_cli_many, tiny_config, write_yaml

# name -> (files to write {name: YAML text}, the config to run, fragments the error line must hold)
CONFIG_CASES = {
    "unknown key": (
        {"c.yaml": "model:\n  dropotu: 0.1\n"},
        "c.yaml",
        ["c.yaml", "model.dropotu", "did you mean 'dropout'"],
    ),
    "wrong type": ({"c.yaml": "train:\n  epochs: ten\n"}, "c.yaml", ["c.yaml", "train.epochs", "expected an integer"]),
    "out of range": ({"c.yaml": "model:\n  dropout: 1.5\n"}, "c.yaml", ["c.yaml", "model.dropout", "[0, 1)"]),
    "missing extends": ({"c.yaml": "extends: nowhere.yaml\n"}, "c.yaml", ["c.yaml", "extends", "nowhere.yaml"]),
    "extends cycle": ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "a.yaml", ["extends cycle"]),
    "empty file": ({"c.yaml": ""}, "c.yaml", ["c.yaml", "empty"]),
    "invalid yaml": ({"c.yaml": "model:\n  bn: [true\n"}, "c.yaml", ["c.yaml", "invalid YAML", "line", "column"]),
    "unknown block": (
        {"c.yaml": "model:\n  blocks:\n    - {type: convv, out: 4}\n"},
        "c.yaml",
        ["c.yaml", "model.blocks[0].type", "did you mean 'conv'"],
    ),
    "block does not fit": (
        {
            "c.yaml": "model:\n  blocks:\n    - {type: conv, out: 8, kernel: 7}\n"
            "    - {type: maxpool, kernel: 4}\n    - {type: conv, out: 8, kernel: 7}\n"
            "    - {type: gap}\n    - {type: head}\n"
        },
        "c.yaml",
        ["model.blocks[2] (conv)", "does not fit", "5x5"],
    ),
    "missing file": ({}, "absent.yaml", ["absent.yaml", "no such config file"]),
}


def _damaged_data(src, dst, how: str) -> None:
    dst.mkdir()
    for name in FILES:
        shutil.copy(src / f"{name}.gz", dst / f"{name}.gz")
    target = dst / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(target.read_bytes())
    if how == "missing file":
        target.unlink()
    elif how == "truncated gz":
        target.write_bytes(target.read_bytes()[:100])
    elif how == "wrong magic":
        target.write_bytes(gzip.compress(b"\x00\x00\x09\x99" + raw[4:]))
    elif how == "checksum":
        target.write_bytes(gzip.compress(raw[:-1] + bytes([(raw[-1] + 1) % 10])))


DATA_CASES = {
    "missing directory": ["nowhere", "downloading it failed", "--data-dir"],
    "missing file": ["t10k-labels-idx1-ubyte", "missing"],
    "truncated gz": ["t10k-labels-idx1-ubyte.gz", "corrupt or truncated"],
    "wrong magic": ["t10k-labels-idx1-ubyte.gz", "wrong magic number"],
    "checksum": ["t10k-labels-idx1-ubyte.gz", "checksum mismatch"],
}


@pytest.fixture(scope="module")
def results(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("cli_errors")
    calls = {}
    for name, (files, config, _) in CONFIG_CASES.items():
        folder = tmp / name.replace(" ", "_")
        folder.mkdir()
        for file_name, text in files.items():
            (folder / file_name).write_text(text)
        calls[f"config: {name}"] = ["run", folder / config, "--data-dir", data_dir, "--out", folder / "out", "--exact"]
    tiny = write_yaml(tmp, "tiny.yaml", tiny_config())
    for name in DATA_CASES:
        folder = tmp / ("data_" + name.replace(" ", "_"))
        if name == "missing directory":
            folder = tmp / "nowhere"
        else:
            _damaged_data(data_dir, folder, name)
        # a missing file would be downloaded: send any download to a closed local port
        offline = {k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
        calls[f"data: {name}"] = (
            ["run", tiny, "--data-dir", folder, "--out", tmp / f"out_{name.replace(' ', '_')}", "--exact"],
            offline,
        )
    calls["set: unknown key"] = ["show", tiny, "--set", "model.dropotu=0.1"]
    calls["set: wrong type"] = ["show", tiny, "--set", "train.epochs=many"]
    return run_cli_many(calls), tmp


@pytest.mark.slow  # starts the real CLI in subprocesses
@pytest.mark.parametrize("name", list(CONFIG_CASES))
def test_config_mistakes(results, name):
    procs, tmp = results
    proc = procs[f"config: {name}"]
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    assert line.startswith("mnist-drill: error:")
    for fragment in CONFIG_CASES[name][2]:
        assert fragment in line, line
    assert not (tmp / name.replace(" ", "_") / "out").exists()


@pytest.mark.slow  # starts the real CLI in subprocesses
@pytest.mark.parametrize("name", list(DATA_CASES))
def test_data_mistakes(results, name):
    procs, tmp = results
    proc = procs[f"data: {name}"]
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    for fragment in DATA_CASES[name]:
        assert fragment in line, line
    assert not (tmp / f"out_{name.replace(' ', '_')}").exists()


@pytest.mark.slow  # starts the real CLI in subprocesses
@pytest.mark.parametrize(
    "name, fragments",
    [
        ("set: unknown key", ["--set model.dropotu=0.1", "did you mean 'dropout'"]),
        ("set: wrong type", ["--set train.epochs=many", "expected an integer"]),
    ],
)
def test_set_mistakes(results, name, fragments):
    proc = results[0][name]
    assert proc.returncode == 2
    line = error_line(proc)
    for fragment in fragments:
        assert fragment in line, line
