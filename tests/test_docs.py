"""The documentation stays true to the code: generated references are current, every code block
marked ``<!-- runnable -->`` runs, the README stays a first page, and the project speaks to its
users (no issue numbers, no documents they do not have)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pjepa.cli.reference import PAGES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUNNABLE = re.compile(r"<!-- runnable -->\s*```python\n(.*?)```", re.S)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_generated_reference_is_current(name):
    committed = (DOCS / "reference" / name).read_text()
    assert committed == PAGES[name](), (f"docs/reference/{name} is stale: run "
                                        "`python -m pjepa.cli.reference docs/reference` and commit it")


def test_a_stale_reference_is_caught(monkeypatch):
    """The staleness check can fail: a changed section docstring changes the generated page."""
    from pjepa import config

    monkeypatch.setattr(config.TrainConfig, "__doc__", "A docstring the committed page does not have.")
    assert PAGES["config.md"]() != (DOCS / "reference" / "config.md").read_text()


def runnable_pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if RUNNABLE.search(p.read_text()))


def test_the_docs_have_runnable_examples():
    assert {p.name for p in runnable_pages()} >= {"getting-started.md", "weights.md"}


@pytest.mark.parametrize("page", runnable_pages(), ids=lambda p: p.name)
def test_runnable_examples_run(page, tiny_run, tmp_path, monkeypatch):
    """Each page's runnable blocks, in order, in one namespace, in a folder holding runs/example."""
    shutil.copytree(tiny_run, tmp_path / "runs" / "example")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for block in RUNNABLE.findall(page.read_text()):
        exec(compile(block, f"{page.name} (runnable block)", "exec"), namespace)


def test_readme_is_a_first_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_the_project_cites_no_issue_numbers_or_documents_users_do_not_have():
    if not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to list the project's files")
    files = subprocess.run(["git", "ls-files", "src", "configs", "docs", "README.md", "tests", "benchmarks",
                            "scripts"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"(?i:\bissues? #?\d+)|GUIDE\.md|GUIDE section|\.\./shared/|BENCHMARKS\.md|RELIABILITY\.md")
    here = Path(__file__).name
    hits = [f"{f}: {line.strip()[:100]}" for f in files if not f.endswith((".png", ".csv", ".json")) and
            Path(f).name != here and (ROOT / f).is_file()
            for line in (ROOT / f).read_text(errors="ignore").splitlines() if pattern.search(line)]
    assert not hits, "\n".join(hits[:20])
