"""``pjepa export``: a run's encoder as timm-layout safetensors (``pjepa.methods.weights``)."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "export"
OVERRIDES = False


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run's encoder as timm-layout safetensors (+ FILE.json architecture)")
    p.add_argument("--run", type=Path, required=True, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="e.g. encoder.safetensors")
    p.add_argument("--encoder", choices=["target", "context"], default="target")
    p.add_argument("--checkpoint", choices=["last", "best"], default="last")


def print_written(path: Path) -> None:
    """The line ``pjepa export`` and ``pjepa import`` end with: the file, its tensors, its architecture."""
    from pjepa.models.timm_format import describe, read_architecture, read_timm_file

    print(f"wrote {path} ({len(read_timm_file(path))} tensors, timm keys) and {path.with_suffix('.json')}: "
          f"{describe(read_architecture(path))}")


def run(args: argparse.Namespace) -> int:
    from pjepa.eval.sources import online_target
    from pjepa.methods.weights import export_run_encoder
    from pjepa.runs import Run
    from pjepa.runs.writable import writable_file

    writable_file(args.out, "--out")

    print_written(export_run_encoder(args.run, args.out, encoder=args.encoder, checkpoint=args.checkpoint))
    if args.encoder == "target" and online_target(Run(args.run)):
        print("[pjepa] this run trained without an EMA teacher (online target): the exported encoder is its "
              "context encoder")
    return 0
