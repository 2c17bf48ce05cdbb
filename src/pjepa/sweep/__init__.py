"""``pjepa sweep``: train and evaluate every point of a grid of overrides, one run directory each.

    pjepa sweep --config smoke --out runs/heads --eval knn,linear --baselines \\
        head.name=deterministic,mdn train.seed=0,1,2

    grid.py    which overrides vary (top-level commas), the Cartesian product, the runs' names
    plan.py    every point's config checked up front; SWEEP_DIR/sweep.json
    state.py   where a run stands (finished? evaluations current?) and the commands that move it on
    runner.py  the per-run function (train --auto-resume, then evaluations) and the local launcher
    slurm.py   the submitit launcher: one SLURM job per point with work left

This sits at the top, beside ``cli``: it runs ``pjepa train`` / ``pjepa eval`` as child processes
and never imports ``train``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pjepa.errors import ConfigError
from pjepa.sweep.grid import MAX_RUNS, GridPoint, Override, grid_points, parse_grid, split_top_level
from pjepa.sweep.plan import SweepPlan, plan_sweep, settle_sweep_dir
from pjepa.sweep.runner import Outcome, PointJob, run_local, run_point
from pjepa.sweep.slurm import SlurmOptions, submit_jobs
from pjepa.sweep.state import baseline_evals, eval_explanations, eval_names

__all__ = ["GridPoint", "Outcome", "Override", "PointJob", "SlurmOptions", "SweepPlan", "grid_points", "parse_grid",
           "plan_sweep", "point_jobs", "run_local", "run_point", "run_sweep", "settle_sweep_dir", "split_top_level",
           "submit_jobs"]


def check_protocols(names: list[str]) -> tuple[str, ...]:
    """The evaluations asked for, checked against the protocol registry (a typo fails before training): a
    protocol's name, or a result file a protocol declares (``knn_val``)."""
    known = eval_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], known, n=1, cutoff=0.6)
        explained = eval_explanations()
        raise ConfigError(f"--eval {','.join(names)}: unknown protocol {unknown[0]!r}"
                          + (f", did you mean {close[0]!r}?" if close else "")
                          + f" (protocols: {', '.join(known)}" + (f"; {', '.join(explained)}" if explained else "") + ")")
    return tuple(dict.fromkeys(names))


def point_jobs(plan: SweepPlan, protocols: tuple[str, ...] = (), baselines: bool = False) -> list[PointJob]:
    """One ``PointJob`` per grid point, with absolute paths (a job may start in another directory)."""
    out = plan.out.resolve()
    return [PointJob(p.name, out / p.name, plan.config_path, p.overrides, protocols, baselines) for p in plan.points]


def run_sweep(config: str, out: str | Path, overrides: list[str], protocols: list[str] | None = None,
              baselines: bool = False, launcher: str = "local", slurm: SlurmOptions | None = None,
              dry_run: bool = False, argv: list[str] | None = None, echo: Callable[[str], None] = print,
              max_runs: int = MAX_RUNS) -> int:
    """Plan (every config checked), then run the sweep locally or submit it; returns the exit status."""
    if launcher not in ("local", "submitit"):
        raise ConfigError(f"--launcher {launcher!r}: choose local or submitit")
    names = check_protocols(list(protocols or []))
    plan = plan_sweep(config, out, overrides, max_runs)
    jobs = point_jobs(plan, names, baselines)
    axes = ", ".join(f"{o.key} ({len(o.values)})" for o in plan.axes) or "none"
    echo(f"[sweep] {len(jobs)} runs of {plan.config_path.name} into {plan.out}; axes: {axes}; "
         f"evaluations: {', '.join(names + (tuple(stem for stem, _ in baseline_evals(names)) if baselines else ())) or 'none'}")
    if dry_run:
        for p in plan.points:
            echo(f"  {p.name}: {' '.join(p.overrides)}")
        return 0
    settle_sweep_dir(plan, argv)
    if launcher == "submitit":
        return submit_jobs(jobs, plan.out, slurm or SlurmOptions(), echo)
    return run_local(jobs, echo)
