"""``pjepa train``: pretrain a model, or continue one (``--resume``, ``--auto-resume``).

What happens to the run directory (new, resume, auto-resume, force, the lock, previous/N) is
``pjepa.runs.RunDirectory``'s to decide; this command reads the flags and hands them over.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pjepa.cli.args import add_overrides

NAME = "train"
OVERRIDES = True  # takes key=value overrides anywhere on the line


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pretrain a model (or continue one with --resume)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="experiment YAML, or a preset name (e.g. smoke, cifar10/cpu; see `pjepa presets`)")
    src.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--out", type=Path, help="run directory (default: runs/NNNNN-<config name>)")
    p.add_argument("--dry-run", action="store_true", help="check and print the resolved config, then exit")
    p.add_argument("--auto-resume", action="store_true",
                   help="with --config and --out: continue the run in --out from its newest complete checkpoint "
                        "if it has one, else start it (what preemptible clusters need)")
    p.add_argument("--force", action="store_true",
                   help="with --config: delete the run already in --out (its checkpoints, log, evaluations) first")
    add_overrides(p, "key=value", "dotted config overrides, e.g. optim.lr=1e-3")


def run(args: argparse.Namespace) -> int:
    from pjepa.checks import check_config
    from pjepa.config import dump_config, load_config
    from pjepa.presets import resolve_config_path
    from pjepa.runs import RunDirectory
    from pjepa.train.loop import train
    from pjepa.train.precision import check_requested

    resume = args.resume is not None
    if resume:
        directory = RunDirectory(args.resume)
        cfg = directory.resume_config(args.overrides)
    else:
        path = resolve_config_path(args.config)
        cfg = load_config(path, args.overrides)
        directory = RunDirectory.for_new_run(args.out, path.stem, args.auto_resume)
    cfg = check_config(cfg)
    check_requested(cfg.train.precision, cfg.train.device)  # fp16 on a CPU
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    directory.check_writable()
    start = directory.open(cfg, check_config, resume=resume, auto_resume=args.auto_resume, force=args.force,
                           overrides=args.overrides)
    result = train(start.config, directory.path, resume=start.resume)
    if result.get("exit_code"):  # stopped by SIGTERM / SIGINT after saving checkpoints/last
        return int(result["exit_code"])
    if directory.main:
        print(f"[pjepa] finished at step {result['step']}; run directory: {directory.path}")
    return 0
