"""The ``pjepa`` command: thin subcommands, each parses and calls one library function.

    pjepa train --config FILE [--out DIR] [--dry-run] [key=value ...]
    pjepa train --resume DIR [key=value ...]
    pjepa eval knn --run DIR [--encoder target|context] [--random-init | --pixels]
    pjepa eval head --run DIR [--checkpoint last|best] [--eval-limit N] [--samples S]
    pjepa table RUN_DIR... [--format md|csv|both] [--csv FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pjepa.errors import PJepaError


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pretrain a model (or continue one with --resume)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, help="experiment YAML (e.g. configs/smoke.yaml)")
    src.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--out", type=Path, help="run directory (default: runs/NNNNN-<config name>)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. optim.lr=1e-3")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run directory")
    esub = p.add_subparsers(dest="protocol", required=True)
    k = esub.add_parser("knn", help="kNN@1 (k=20, cosine; weighted and majority votes)")
    k.add_argument("--run", type=Path, required=True, metavar="DIR")
    k.add_argument("--encoder", choices=["target", "context"], default="target")
    base = k.add_mutually_exclusive_group()
    base.add_argument("--random-init", action="store_true", help="baseline: the same architecture, untrained")
    base.add_argument("--pixels", action="store_true", help="baseline: raw normalised pixels")
    k.add_argument("--checkpoint", choices=["last", "best"], default="last")
    k.add_argument("--train-limit", type=int, default=0, help="random subset of the bank (0 = all)")
    k.add_argument("--eval-limit", type=int, default=0, help="random subset of the queries (0 = all)")
    k.add_argument("--device", default="auto")
    hd = esub.add_parser("head", help="shared head metrics: NLL (exact heads), point error, sample spread and cost")
    hd.add_argument("--run", type=Path, required=True, metavar="DIR")
    hd.add_argument("--checkpoint", choices=["last", "best"], default="last")
    hd.add_argument("--eval-limit", type=int, default=1000, help="validation images (0 = all)")
    hd.add_argument("--samples", type=int, default=8, help="draws per target token for the sample spread")
    hd.add_argument("--device", default="auto")


def _add_table(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help="kNN@1 table of run directories (both votes, budgets, head metrics)")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--format", choices=["md", "csv", "both"], default="both")
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write the CSV to FILE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pjepa", description="Joint-Embedding Predictive Architectures")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_eval(sub)
    _add_table(sub)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from pjepa.config import dump_config, load_config
    from pjepa.errors import ConfigError
    from pjepa.train.loop import train
    from pjepa.utils import next_run_dir

    if args.resume is not None:
        from pjepa.eval.run_knn import load_run_config
        from pjepa.config import build_config, config_to_dict

        run_dir = args.resume
        cfg = build_config(config_to_dict(load_run_config(run_dir)), args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
        if args.out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("under torchrun pass --out DIR so that every process writes to the same run")
        run_dir = args.out or next_run_dir(Path("runs"), args.config.stem)
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    if args.resume is None and (run_dir / "checkpoints").exists():
        raise ConfigError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --out")
    result = train(cfg, run_dir, resume=args.resume is not None)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[pjepa] finished at step {result['step']}; run directory: {run_dir}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from pjepa.eval.table import table_rows, to_csv, to_markdown

    rows = table_rows(args.runs)
    if args.format in ("md", "both"):
        print(to_markdown(rows))
    if args.format in ("csv", "both"):
        print(to_csv(rows), end="")
    if args.csv is not None:
        args.csv.write_text(to_csv(rows))
        print(f"wrote {args.csv}")
    return 0


def cmd_eval_head(args: argparse.Namespace) -> int:
    from pjepa.eval.run_head import evaluate_head

    r = evaluate_head(args.run, checkpoint=args.checkpoint, eval_limit=args.eval_limit, num_samples=args.samples,
                      device=args.device)
    nll = f"nll/dim {r['nll']:.4f}  " if "nll" in r else "nll - (no exact likelihood)  "
    print(f"head {r['head']} ({r['dataset']} {r['split']}: {r['n_images']} images, {int(r['tokens'])} target tokens, "
          f"step {r['step']}): {nll}point mse {r['point_mse']:.4f} cos {r['point_cos']:.4f}  "
          f"sample spread {r['sample_spread']:.4f}  sampling {r['sample_seconds_per_1000']:.4f} s/1000 tokens")
    print(f"wrote {r['path']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pjepa.eval.run_knn import evaluate_knn

    if args.protocol == "head":
        return cmd_eval_head(args)

    baseline = "random-init" if args.random_init else "pixels" if args.pixels else None
    r = evaluate_knn(args.run, encoder=args.encoder, baseline=baseline, checkpoint=args.checkpoint,
                     train_limit=args.train_limit, eval_limit=args.eval_limit, device=args.device)
    print(f"kNN@1 ({r['encoder']}{', ' + baseline if baseline else ''}, k={r['k']}, {r['dataset']} "
          f"{r['split']}: {r['n_train']} bank / {r['n_eval']} queries, step {r['step']}): "
          f"weighted {r['top1_weighted']:.2f}%  majority {r['top1_majority']:.2f}%")
    print(f"wrote {r['path']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come before or after options (`--out DIR key=value`): argparse
    # leaves trailing positionals unparsed, so collect every `key=value` left over.
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or "=" not in e or args.command != "train"]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "train":
        args.overrides = list(args.overrides) + extra
    try:
        commands = {"train": cmd_train, "eval": cmd_eval, "table": cmd_table}
        return commands[args.command](args)
    except PJepaError as e:
        print(f"pjepa: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
