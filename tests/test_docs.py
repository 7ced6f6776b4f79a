"""The documentation holds together: every relative link in the README, docs/ and results/README.md points at a
file (and heading) that exists, every Python example runs, and CI runs exactly the README's ```bash ci blocks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "results" / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# The README's Quickstart commands as CI must run them (the Quickstart states them once; CI runs them verbatim).
QUICKSTART = [
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/mnist-drill run step7",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest -q",
]


def _relative_links() -> list[tuple[Path, str]]:
    return [
        (page, target)
        for page in PAGES
        for target in LINK.findall(page.read_text(encoding="utf-8"))
        if not re.match(r"[a-z]+:", target) and not target.startswith("#")
    ]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize(
    "page, target", _relative_links(), ids=lambda v: str(v.relative_to(REPO)) if isinstance(v, Path) else v
)
def test_every_relative_link_points_at_an_existing_file_and_heading(page, target):
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve()
    assert resolved.exists(), f"{page.relative_to(REPO)}: {target} does not exist"
    if anchor:
        headings = re.findall(r"^#+ (.+)$", resolved.read_text(encoding="utf-8"), re.M)
        assert anchor in {_slug(h) for h in headings}, f"{page.relative_to(REPO)}: {target}: no such heading"


def test_the_pages_have_links_to_check():
    # A guard on the regex above: an empty list would make the link test pass vacuously.
    assert {page for page, _ in _relative_links()} == set(PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_python_example_runs(page, monkeypatch):
    monkeypatch.chdir(REPO)  # examples name committed files relative to the repository root
    for block in re.findall(r"^```python\n(.*?)^```$", page.read_text(encoding="utf-8"), re.S | re.M):
        exec(compile(block, f"{page.name} example", "exec"), {})


def _ci_extraction() -> str:
    """The Python program .ci/run feeds on stdin to pick the Quickstart commands out of README.md."""
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    return re.search(r"<<'EOF'\n(.*?)^EOF$", script, re.S | re.M).group(1)


def _extract(folder: Path, readme: str, monkeypatch, capsys) -> list[str]:
    (folder / "README.md").write_text(readme, encoding="utf-8")
    monkeypatch.chdir(folder)
    exec(compile(_ci_extraction(), ".ci/run extraction", "exec"), {})
    return capsys.readouterr().out.splitlines()


def test_ci_runs_exactly_the_readmes_quickstart_commands(tmp_path, monkeypatch, capsys):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.count("\n```bash ci\n") == len(QUICKSTART)
    assert _extract(tmp_path, readme, monkeypatch, capsys) == QUICKSTART


def test_ci_takes_only_marked_blocks_wherever_they_are(tmp_path, monkeypatch, capsys):
    readme = (
        "# x\n\n```\nplain-block\n```\n\n```bash\nbash-block\n```\n\n```text\ntext-block\n```\n\n"
        "## Anywhere\n\n```bash ci\n# a comment\nfirst\n\nsecond\n```\n\n```bash ci\nthird\n```\n"
    )
    assert _extract(tmp_path, readme, monkeypatch, capsys) == ["first", "second", "third"]


def test_ci_fails_when_the_readme_marks_no_block(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as stop:
        _extract(tmp_path, "# x\n\n```bash\nmnist-drill run step7\n```\n", monkeypatch, capsys)
    assert "no ```bash ci block" in str(stop.value.code)
