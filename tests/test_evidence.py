"""Committed evidence is what today's code writes: every committed analysis.md and progression.md is derived
again from its run folders' files (config.yaml, metrics.csv, run.json; no weights, no training) and must match."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from mnist_drill.cli import _overrides, build_parser, parse_seeds
from mnist_drill.runs.steps import reports_from_files
from mnist_drill.runs.sweep import sweep_markdown_from_files
from mnist_drill.storage.files import read_run_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
REWRITE = "PYTHONPATH=src python scripts/rewrite_reports.py"
COMMITTED = sorted({*RESULTS.rglob("analysis.md"), *RESULTS.rglob("progression.md")})


@functools.cache
def derived() -> dict[Path, str]:
    return reports_from_files(RESULTS, REPO / "configs")


def test_the_evidence_is_found():
    assert len(COMMITTED) > 100


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(RESULTS)))
def test_each_committed_report_is_what_todays_code_writes(path):
    name = path.relative_to(REPO)
    assert path in derived(), f"{name}: no run folder under results/ that it is written from"
    assert path.read_text(encoding="utf-8") == derived()[path], (
        f"{name} is not what today's code writes from its run folder; rewrite it with `{REWRITE}`"
    )


SWEEP_MDS = sorted(RESULTS.rglob("sweep.md"))


@pytest.mark.parametrize("path", SWEEP_MDS, ids=lambda p: str(p.relative_to(RESULTS)))
def test_each_committed_sweep_table_is_what_todays_code_writes(path, monkeypatch):
    """sweep.md from its trial folders, for the sweep command that each trial's run.json records."""
    argv = read_run_json(next(path.parent.glob("*/seed_*/run.json")))["argv"]
    args = build_parser().parse_args(argv[argv.index("sweep") :])
    monkeypatch.chdir(REPO)  # the command's config path is relative to the checkout, as sweep.md shows it
    text = sweep_markdown_from_files(
        path.parent, Path(args.config), args.vary, _overrides(args), parse_seeds(args.seeds)
    )
    assert path.read_text(encoding="utf-8") == text, (
        f"{path.relative_to(REPO)} is not what today's code writes from its trial folders; rewrite it with `{REWRITE}`"
    )


def test_a_step_before_without_a_finished_epoch_is_named_not_left_out_of_the_reports(tmp_path):
    """Re-deriving step 3's report needs step 2's run: one that finished no epoch stops the rewrite with its name,
    instead of a report that silently lost its "step before" section."""
    from mnist_drill.errors import UsageError

    for step in ("step2_bn", "step3_dropout"):
        for name in ("config.yaml", "metrics.csv", "run.json"):
            (tmp_path / step).mkdir(exist_ok=True)
            (tmp_path / step / name).write_bytes((RESULTS / "drill" / step / "seed_1" / name).read_bytes())
    report = reports_from_files(tmp_path, REPO / "configs")[tmp_path / "step3_dropout" / "analysis.md"]
    assert "step2_bn" in report
    metrics = tmp_path / "step2_bn" / "metrics.csv"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")  # the header, no epoch
    with pytest.raises(UsageError, match="step2_bn: holds no run with a finished epoch"):
        reports_from_files(tmp_path, REPO / "configs")
