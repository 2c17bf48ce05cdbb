"""A sweep's plan: the config, the grid, every run checked before anything trains, and ``sweep.json``.

Every grid point's config goes through the checks of ``pjepa train --dry-run``
(``load_config`` + ``check_config``), so a typo in any value fails with one line before the
first run starts. ``SWEEP_DIR/sweep.json`` records the plan; running a sweep into a folder
that holds another plan is refused (the runs there would be continued with the wrong
overrides), running the same plan again continues it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pjepa.atomic import atomic_write_json
from pjepa.checks import check_config
from pjepa.config import dump_config, load_config, load_yaml
from pjepa.errors import ConfigError
from pjepa.presets import resolve_config_path
from pjepa.sweep.grid import MAX_RUNS, GridPoint, Override, grid_points, parse_grid

PLAN_FILE = "sweep.json"


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep runs: ``points`` (one run directory each under ``out``) from ``config_path``."""

    config: str  # as given to --config (a preset name or a path)
    config_path: Path  # the resolved YAML file (absolute: jobs may start elsewhere)
    config_sha: str  # of the YAML with its base chain: an edited config makes another sweep
    items: tuple[Override, ...]
    points: tuple[GridPoint, ...]
    out: Path

    @property
    def axes(self) -> list[Override]:
        return [o for o in self.items if o.is_axis]

    @property
    def fixed(self) -> list[str]:
        return [f"{o.key}={o.values[0]}" for o in self.items if not o.is_axis]

    def run_dir(self, point: GridPoint) -> Path:
        return self.out / point.name

    def identity(self) -> dict[str, Any]:
        """What must match for a rerun into the same folder to be the same sweep."""
        return {"config_sha": self.config_sha,
                "runs": [{"name": p.name, "overrides": list(p.overrides)} for p in self.points]}

    def to_json(self, argv: list[str]) -> dict[str, Any]:
        return {"command": argv, "config": self.config, "config_path": str(self.config_path),
                **self.identity(), "axes": [[o.key, list(o.values)] for o in self.axes], "fixed": self.fixed,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _config_sha(path: Path) -> str:
    return hashlib.sha256(json.dumps(load_yaml(path), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_point(path: Path, point: GridPoint) -> str:
    """The resolved config of one point (dumped), or a ConfigError that names the point."""
    try:
        return dump_config(check_config(load_config(path, list(point.overrides))))
    except ConfigError as e:
        where = f"run {point.name} ({' '.join(point.varying)})" if point.varying else f"run {point.name}"
        raise ConfigError(f"{where}: {e}") from None


def plan_sweep(config: str, out: str | Path, overrides: list[str], max_runs: int = MAX_RUNS) -> SweepPlan:
    """Parse the grid and check every point's config; ConfigError on the first bad one, when two points
    would train the same config (e.g. ``optim.lr=1e-3,0.001``), or when it has more than ``max_runs`` points."""
    path = resolve_config_path(config).resolve()
    items = parse_grid(overrides)
    points = grid_points(items, path.stem, max_runs)
    seen: dict[str, str] = {}
    for point in points:
        resolved = _check_point(path, point)
        if resolved in seen:
            raise ConfigError(f"runs {seen[resolved]} and {point.name} resolve to the same config; "
                              "drop one of the values that mean the same")
        seen[resolved] = point.name
    return SweepPlan(str(config), path, _config_sha(path), tuple(items), tuple(points), Path(out))


def settle_sweep_dir(plan: SweepPlan, argv: list[str] | None = None) -> None:
    """Write ``out/sweep.json`` for a new sweep, accept the same plan again, refuse another one."""
    plan_file = plan.out / PLAN_FILE
    if plan_file.is_file():
        try:
            old = json.loads(plan_file.read_text())
        except ValueError as e:
            raise ConfigError(f"{plan_file} is not valid JSON ({e}); restore it or pick another --out") from None
        if {k: old.get(k) for k in plan.identity()} != plan.identity():
            raise ConfigError(
                f"{plan.out} holds another sweep ({len(old.get('runs', []))} runs of {old.get('config')} "
                f"over {' '.join(a[0] for a in old.get('axes', [])) or 'no axes'}; its command is in {plan_file}); "
                "rerun that command to continue it, or pick another --out for this grid")
        return
    if (plan.out / "config.yaml").is_file():
        raise ConfigError(f"--out {plan.out} is a run directory; give a new folder for the sweep")
    if plan.out.is_dir() and any(plan.out.iterdir()):
        raise ConfigError(f"--out {plan.out} is not empty and holds no {PLAN_FILE}; give a new folder for the sweep")
    plan.out.mkdir(parents=True, exist_ok=True)
    data = plan.to_json(list(argv if argv is not None else sys.argv))
    atomic_write_json(plan_file, data)
