"""Write every committed analysis.md and progression.md under results/ again with today's code, from the run
folders' files alone (config.yaml, metrics.csv, run.json): no training, and no weights needed.

    PYTHONPATH=src python scripts/rewrite_reports.py [results]

tests/test_evidence.py fails until they match what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mnist_drill.runs.steps import reports_from_files

REPO = Path(__file__).resolve().parents[1]


def main(root: Path) -> None:
    for path, text in reports_from_files(root, REPO / "configs").items():
        if path.is_file() and path.read_text(encoding="utf-8") != text:  # only what is there: no new files
            path.write_text(text, encoding="utf-8")
            print(f"rewrote {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "results")
