"""The import layering of docs/design.md, held by walking every import of the package (ast, no execution).

    cli -> sweep -> train / eval / viz / generative -> checks -> methods -> runs -> blocks (data, masking, models,
        heads) -> base (config, registry, errors, utils, atomic, presets)

train may import eval (periodic evaluation); nothing imports train but cli. sweep sits beside cli: it runs
pjepa train / eval as child processes, so it never imports train (nor viz, generative or cli).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pjepa"
BASE = {"config", "registry", "errors", "utils", "atomic", "presets", "schedules", "profiling", "__init__", "__main__"}
BLOCKS = {"data", "masking", "models", "heads", "regularisers"}
ABOVE = {"methods", "runs", "checks", "train", "eval", "viz", "generative", "sweep", "cli", "api"}
FORBIDDEN: dict[str, set[str]] = {
    **{b: ABOVE for b in BASE - {"__main__"}},
    "__init__": ABOVE - {"api"},  # the package's lazy facade over the public API
    "api": {"train", "cli", "viz", "generative", "sweep", "eval"},
    **{b: ABOVE for b in BLOCKS},
    "runs": ABOVE - {"runs"},
    "methods": ABOVE - {"methods", "runs"},
    "checks": ABOVE - {"checks", "methods", "runs"},
    "eval": {"train", "cli", "viz", "generative", "sweep"},
    "viz": {"train", "cli", "generative", "sweep"},
    "generative": {"train", "cli", "viz", "sweep"},
    "train": {"cli", "viz", "generative", "sweep"},
    "sweep": {"train", "cli", "viz", "generative"},
}


def layer(module: str) -> str:
    """'pjepa.eval.protocols.knn' -> 'eval'; 'pjepa' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> set[str]:
    """Every pjepa module imported anywhere in ``path`` (function-level imports included)."""
    rel = path.relative_to(SRC.parent).with_suffix("")
    package = ".".join(rel.parts[:-1]) if rel.name != "__init__" else ".".join(rel.parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {m for m in found if m == "pjepa" or m.startswith("pjepa.")}


MODULES = sorted(SRC.rglob("*.py"))


def test_the_walk_sees_the_package():
    assert len(MODULES) > 40
    assert "pjepa.train.loop" in imports_of(SRC / "cli" / "train.py")  # a function-level import


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_import_crosses_a_layer(path):
    rel = path.relative_to(SRC)
    here = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem != "__init__" else "__init__"
    bad = sorted(m for m in imports_of(path) if layer(m) in FORBIDDEN.get(here, set()))
    assert not bad, f"{rel} ({here}) imports {bad}: see docs/design.md / this file's docstring"


def test_a_planted_crossing_is_caught(tmp_path):
    """The walk itself can fail: a block importing train is reported."""
    fake = tmp_path / "pjepa" / "heads" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from pjepa.train.loop import train\n")
    global SRC
    old, SRC = SRC, tmp_path / "pjepa"
    try:
        assert layer(next(iter(imports_of(fake)))) in FORBIDDEN["heads"]
    finally:
        SRC = old


def test_no_source_file_is_ignored_by_git():
    """A fresh clone (CI, pip install from git) must hold every module: an ignore rule once hid src/pjepa/runs/."""
    import shutil
    import subprocess

    root = SRC.parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "--others", "--ignored", "--exclude-standard", "src"], cwd=root,
                         capture_output=True, text=True, check=True).stdout.split()
    hidden = [p for p in out if p.endswith((".py", ".yaml")) and "__pycache__" not in p]
    assert not hidden, f"git ignores source files: {hidden}"
