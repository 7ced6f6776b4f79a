"""Committed evidence is what today's code writes: every committed analysis.md and progression.md is derived
again from its run folders' files (config.yaml, metrics.csv, run.json; no weights, no training) and must match."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from mnist_drill.runs.steps import reports_from_files

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
