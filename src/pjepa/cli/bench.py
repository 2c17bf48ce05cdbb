"""``pjepa bench``: time a configuration's training step (``pjepa.train.bench``)."""

from __future__ import annotations

import argparse

from pjepa.cli.args import add_config, add_overrides

NAME = "bench"
OVERRIDES = True  # takes key=value overrides anywhere on the line


def add_parser(sub: argparse._SubParsersAction) -> None:
    from pjepa.eval.protocols.base import non_negative_int, positive_int

    p = sub.add_parser("bench", help="time a configuration's training step: img/s, GFLOP/s against the matmul "
                                     "peak, peak memory, the time of each part",
                       description="Runs the configuration's real training step on synthetic images of its "
                                   "resolution (--real-data: its dataset) in each precision and prints img/s, "
                                   "GFLOP per image, achieved GFLOP/s and fraction_of_peak against the matmul peak "
                                   "measured in the same run, fraction_of_shape_limit against the step's own matrix "
                                   "products and attention calls timed alone at their shapes, peak memory and ms "
                                   "per part of the step.")
    add_config(p)
    p.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16, auto (what train.precision=auto picks here, timed "
                        "under that name) (default fp32,bf16)")
    p.add_argument("--steps", type=positive_int, default=20, help="timed steps per precision (default 20)")
    p.add_argument("--warmup", type=non_negative_int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--flop-steps", type=non_negative_int, default=2, help="steps under the FLOP counter (default 2)")
    p.add_argument("--part-steps", type=non_negative_int, default=5, help="steps timed part by part (default 5)")
    p.add_argument("--no-shape-limit", action="store_true",
                   help="skip the shape-aware limit (one step recorded, its products then timed alone)")
    p.add_argument("--real-data", action="store_true", help="train on the configuration's dataset, not synthetic images")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--budget-min", type=float, default=0.0, metavar="M",
                   help="also print how many steps fit in M minutes of training at each precision's median step "
                        "time: the step count (train.max_steps) of an M-minute compute budget on this machine")
    add_overrides(p, "key=value", "dotted config overrides, e.g. optim.batch_size=64")


def run(args: argparse.Namespace) -> int:
    import json

    from pjepa.train.bench import format_bench, run_bench

    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    result = run_bench(args.config, args.overrides, precisions, steps=args.steps, warmup=args.warmup,
                       flop_steps=args.flop_steps, part_steps=args.part_steps, real_data=args.real_data,
                       budget_min=args.budget_min, shape_limit=not args.no_shape_limit)
    print(json.dumps(result.to_dict(), indent=1) if args.json else format_bench(result))
    return 0
