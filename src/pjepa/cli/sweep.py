"""``pjepa sweep``: train and evaluate a grid of overrides, one run each (``pjepa.sweep``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pjepa.cli.args import add_config, add_overrides

NAME = "sweep"
OVERRIDES = True  # takes key=v1,v2 overrides anywhere on the line


def add_parser(sub: argparse._SubParsersAction) -> None:
    from pjepa.eval.protocols.base import non_negative_int, positive_int

    p = sub.add_parser("sweep", help="train and evaluate a grid of overrides (key=v1,v2 ...), one run each",
                       description="Every override key=v1,v2,... (commas outside [] and {}) is an axis of the grid; "
                                   "key=value applies to every run. Each run: pjepa train --auto-resume, then the "
                                   "evaluations; finished runs and current evaluations are skipped, so the same "
                                   "command continues an interrupted sweep.")
    add_config(p)
    p.add_argument("--out", type=Path, required=True, metavar="SWEEP_DIR", help="one run directory per grid point")
    p.add_argument("--eval", default="", metavar="P1,P2", help="evaluation protocols after training, e.g. knn,linear; knn_val: kNN on the validation split (for choices)")
    p.add_argument("--baselines", action="store_true", help="also rate the untrained encoder and raw pixels (kNN, and linear when --eval has it)")
    p.add_argument("--launcher", choices=["local", "submitit"], default="local",
                   help="local: one run after another here; submitit: one SLURM job per run with work left")
    p.add_argument("--max-runs", type=positive_int, default=1000, metavar="N",
                   help="refuse a grid of more than N runs (default 1000): a typo in a list of values should not "
                        "queue a million runs")
    p.add_argument("--dry-run", action="store_true", help="check every run's config, print the grid, exit")
    s = p.add_argument_group("submitit launcher")
    s.add_argument("--slurm-partition", help="SLURM partition")
    s.add_argument("--slurm-time-min", type=positive_int, default=240, help="time limit per job, minutes")
    s.add_argument("--slurm-gpus", type=non_negative_int, default=1, help="GPUs per job")
    s.add_argument("--slurm-cpus", type=positive_int, default=8, help="CPUs per job")
    s.add_argument("--cluster", choices=["slurm", "local"], default="slurm",
                   help="submitit executor: slurm, or local to run the jobs on this machine (trying it out)")
    s.add_argument("--wait", action="store_true", help="wait for the jobs and report how each ended")
    add_overrides(p, "key=v1,v2", "dotted overrides; commas make an axis")


def run(args: argparse.Namespace) -> int:
    from pjepa.runs.writable import writable_dir
    from pjepa.sweep import SlurmOptions, run_sweep

    if not args.dry_run:
        writable_dir(args.out, "sweep folder (--out)")

    slurm = SlurmOptions(args.slurm_partition, args.slurm_time_min, args.slurm_gpus, args.slurm_cpus, args.cluster,
                         args.wait)
    protocols = [name.strip() for name in args.eval.split(",") if name.strip()]
    return run_sweep(args.config, args.out, args.overrides, protocols, args.baselines, args.launcher, slurm,
                     args.dry_run, argv=["pjepa", *args.argv], echo=lambda line: print(line, flush=True),
                     max_runs=args.max_runs)
