"""Write every committed analysis.md, progression.md and sweep.md under results/ again with today's code, from the
run folders' files alone (config.yaml, metrics.csv, run.json): no training, and no weights needed.

    PYTHONPATH=src python scripts/rewrite_reports.py [results]

tests/test_evidence.py fails until they match what this writes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mnist_drill.cli import _overrides, build_parser, parse_seeds
from mnist_drill.runs.steps import reports_from_files
from mnist_drill.runs.sweep import sweep_markdown_from_files
from mnist_drill.storage.files import read_run_json

REPO = Path(__file__).resolve().parents[1]


def sweep_reports(root: Path) -> dict[Path, str]:
    """Each sweep.md under `root`, for the sweep command that its trials' run.json records (as test_evidence reads
    it), its config path relative to the checkout."""
    texts = {}
    for path in sorted(root.rglob("sweep.md")):
        argv = read_run_json(next(path.parent.glob("*/seed_*/run.json")))["argv"]
        args = build_parser().parse_args(argv[argv.index("sweep") :])
        texts[path] = sweep_markdown_from_files(
            path.parent.resolve(), Path(args.config), args.vary, _overrides(args), parse_seeds(args.seeds)
        )
    return texts


def main(root: Path) -> None:
    root = root.resolve()
    os.chdir(REPO)
    texts = {**reports_from_files(root, REPO / "configs"), **sweep_reports(root)}
    for path, text in texts.items():
        if path.is_file() and path.read_text(encoding="utf-8") != text:  # only what is there: no new files
            path.write_text(text, encoding="utf-8")
            print(f"rewrote {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "results")
