"""``pjepa import``: an official I-JEPA / MAE checkpoint as timm-layout safetensors (``pjepa.methods.weights``).

(The module is ``import_``: ``import`` is a Python keyword.)"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "import"
OVERRIDES = False


def add_parser(sub: argparse._SubParsersAction) -> None:
    from pjepa.eval.protocols.base import positive_int

    p = sub.add_parser("import", help="convert an official I-JEPA / MAE checkpoint to timm-layout safetensors")
    p.add_argument("--from", dest="src", type=Path, required=True, metavar="FILE", help="official .pth / .pth.tar")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="e.g. encoder.safetensors")
    p.add_argument("--kind", choices=["auto", "ijepa", "mae"], default="auto")
    p.add_argument("--encoder", choices=["target", "context"], default="target", help="I-JEPA only")
    p.add_argument("--num-heads", type=positive_int, help="attention heads; required unless the checkpoint records them (the official I-JEPA and "
                        "MAE checkpoints do not: ViT-H 16, ViT-L 16, ViT-B 12, ViT-S 6)")


def run(args: argparse.Namespace) -> int:
    from pjepa.cli.export import print_written
    from pjepa.methods.weights import import_official
    from pjepa.runs.writable import writable_file

    writable_file(args.out, "--out")

    print_written(import_official(args.src, args.out, kind=args.kind, which=args.encoder, num_heads=args.num_heads))
    return 0
