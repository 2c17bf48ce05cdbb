"""The import layering of docs/design.md, held by walking every import of the package (ast, no execution).

    cli -> sweep -> train / eval / viz -> checks -> methods -> runs -> blocks (data, masking, models, heads)
        -> base (config, registry, errors, utils, atomic, presets)

train may import eval (periodic evaluation); nothing imports train but cli. sweep sits beside cli: it runs
pjepa train / eval as child processes, so it never imports train (nor viz or cli).

``pjepa.studies`` (the generative study) is a wing on the public API: it imports only the modules of
``PUBLIC_API``, and nothing but ``cli`` imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pjepa"
BASE = {"config", "registry", "errors", "utils", "atomic", "presets", "schedules", "profiling", "__init__", "__main__"}
BLOCKS = {"data", "masking", "models", "heads", "regularisers"}
ABOVE = {"methods", "runs", "checks", "train", "eval", "viz", "studies", "sweep", "cli", "api"}
FORBIDDEN: dict[str, set[str]] = {
    **{b: ABOVE for b in BASE - {"__main__"}},
    "__init__": ABOVE - {"api"},  # the package's lazy facade over the public API
    "api": {"train", "cli", "viz", "studies", "sweep", "eval"},
    **{b: ABOVE for b in BLOCKS},
    "runs": ABOVE - {"runs"},
    "methods": ABOVE - {"methods", "runs"},
    "checks": ABOVE - {"checks", "methods", "runs"},
    "eval": {"train", "cli", "viz", "studies", "sweep"},
    "viz": {"train", "cli", "studies", "sweep"},
    "studies": {"train", "cli", "viz", "sweep", "eval"},
    "train": {"cli", "viz", "studies", "sweep"},
    "sweep": {"train", "cli", "viz", "studies"},
}
#: The public API a study may build on: the modules (exactly these, not their submodules) that
#: ``pjepa.studies`` may import, and only their public (not underscored) names.
PUBLIC_API = {
    "pjepa.api",  # load_encoder, encoder_architecture (an encoder file's sizes)
    "pjepa.config",  # the schema machinery: build_dataclass, load_yaml (base chains), merge, parse_overrides
    "pjepa.presets",  # PresetFolder: preset look-up by name
    "pjepa.errors",
    "pjepa.utils",  # seeds
    "pjepa.checks",  # check_config
    "pjepa.runs",  # Run (the run directory's reader), checkpoints, atomic writes
    "pjepa.methods",  # the method registry, capabilities, method_label (how tables name a run)
    "pjepa.methods.load",  # a run's method: load_run_method, build_run_method
    "pjepa.models.diffusion",  # the shared diffusion schedule, samplers, timestep embedding
    "pjepa.data",  # the data package's public loaders and transforms
}
#: Layers that may import ``pjepa.studies``.
STUDY_USERS = {"studies", "cli"}


def layer(module: str) -> str:
    """'pjepa.eval.protocols.knn' -> 'eval'; 'pjepa' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _here(path: Path) -> str:
    """The layer a source file is in: its top-level package under pjepa, or its module name."""
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem != "__init__" else "__init__"


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
    rel, here = path.relative_to(SRC), _here(path)
    bad = sorted(m for m in imports_of(path) if layer(m) in FORBIDDEN.get(here, set()))
    assert not bad, f"{rel} ({here}) imports {bad}: see docs/design.md / this file's docstring"


def imported_names(path: Path) -> set[tuple[str, str]]:
    """(module, name) of every absolute ``from pjepa.X import name`` in ``path``."""
    return {(node.module, a.name) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and not node.level and node.module
            and node.module.startswith("pjepa.") for a in node.names}


STUDY_MODULES = sorted((SRC / "studies").rglob("*.py"))


def test_the_studies_are_there():
    assert len(STUDY_MODULES) > 10 and SRC / "studies" / "generative" / "study.py" in STUDY_MODULES


@pytest.mark.parametrize("path", STUDY_MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_a_study_imports_only_the_public_api(path):
    """Every pjepa module a study imports from outside ``pjepa.studies`` is in PUBLIC_API, and only public names."""
    outside = {m for m in imports_of(path) if layer(m) != "studies"}
    bad = sorted(outside - PUBLIC_API)
    assert not bad, f"{path.relative_to(SRC)} imports {bad}: a study uses only the public API ({sorted(PUBLIC_API)})"
    private = sorted(f"{m}.{n}" for m, n in imported_names(path) if layer(m) != "studies" and n.startswith("_"))
    assert not private, f"{path.relative_to(SRC)} imports private names {private}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_only_the_cli_imports_a_study(path):
    """The core never imports a study (the report reads a study's written table, it does not import the study)."""
    if _here(path) in STUDY_USERS:
        return
    bad = sorted(m for m in imports_of(path) if layer(m) == "studies")
    assert not bad, f"{path.relative_to(SRC)} imports {bad}: only pjepa.cli may import pjepa.studies"


def test_a_planted_study_import_of_an_internal_is_caught(tmp_path):
    """The public-API check can fail: a study importing an internal module, or a private name, is reported."""
    fake = tmp_path / "pjepa" / "studies" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from pjepa.eval.table import method_label\nfrom pjepa.runs import _private\n")
    global SRC
    old, SRC = SRC, tmp_path / "pjepa"
    try:
        assert imports_of(fake) - PUBLIC_API == {"pjepa.eval.table"}
        assert ("pjepa.runs", "_private") in imported_names(fake)
    finally:
        SRC = old


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
