"""Fix a compute budget as a step count, once per configuration and processor.

For each row (a name, a preset or YAML, overrides) the configuration's real training step is timed
with ``pjepa bench`` (median step time over ``--steps`` steps, at the precision ``auto`` picks, on
``--threads`` threads of a quiet machine) and the steps that fit in ``--minutes`` are written, with
the processor, to a CSV that the run scripts read (``train.max_steps``): runs made later on one
thread in parallel lanes, or beside other work, then train the same budget, and their schedules
(defined over ``train.max_steps``) end when it ends.

    python benchmarks/measure_budget.py --minutes 20 --out benchmarks/budgets/cifar10_heads.csv \\
        deterministic=cifar10/cpu mdn=cifar10/mdn flow_matching=cifar10/flow_matching -- train.time_limit_min=0

Stop every other job on the machine first: a busy machine inflates the step time and shrinks the budget.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

from pjepa.train.bench import bench_config, budget_steps, run_bench
from pjepa.train.precision import cpu_model, resolve_precision

COLUMNS = ["name", "config", "overrides", "processor", "threads", "precision", "ms_per_step", "minutes", "steps",
           "date"]


def measure(name: str, config: str, overrides: list[str], minutes: float, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    _, _, cfg = bench_config(config, overrides, False)
    auto = resolve_precision("auto", torch.device("cpu"), cfg.model.encoder.embed_dim, threads).name  # training's rule
    res = run_bench(config, [*overrides, f"train.num_threads={threads}"], [auto], steps=steps, warmup=3,
                    flop_steps=0, part_steps=0, progress=False)
    ms = res.results[0].ms_per_step
    return {"name": name, "config": config, "overrides": " ".join(overrides), "processor": res.processor,
            "threads": threads, "precision": auto, "ms_per_step": round(ms, 1), "minutes": minutes,
            "steps": budget_steps(ms, minutes), "date": time.strftime("%Y-%m-%d")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", nargs="+", metavar="NAME=CONFIG", help="a row name and its preset or YAML")
    p.add_argument("--minutes", type=float, required=True, help="the budget, minutes of training")
    p.add_argument("--out", type=Path, required=True, help="CSV to write (rows of the same name are replaced)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per row (median)")
    p.add_argument("--threads", type=int, default=2, help="threads the budget is defined on")
    argv = list(sys.argv[1:] if argv is None else argv)
    common = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    rows = {}
    if args.out.is_file():
        rows = {r["name"]: r for r in csv.DictReader(args.out.open())}
    for row in args.rows:
        name, _, config = row.partition("=")
        config, *own = config.split(":")
        r = measure(name, config, own + common, args.minutes, args.steps, args.threads)
        rows[name] = r
        print(f"{name}: {r['ms_per_step']} ms/step ({r['precision']}, {r['threads']} threads, {cpu_model()}) -> "
              f"{r['steps']} steps in {args.minutes:g} min", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows.values())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
