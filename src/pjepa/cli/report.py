"""``pjepa report RUN_DIR... --out DIR``: one self-contained HTML page (``pjepa.viz.report``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pjepa.cli.args import add_threads

NAME = "report"
OVERRIDES = False


def add_parser(sub: argparse._SubParsersAction) -> None:
    from pjepa.eval.protocols.base import positive_int

    p = sub.add_parser("report", help="one self-contained HTML page: tables, every figure, each run's config")
    p.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="writes DIR/index.html and DIR/figures/")
    p.add_argument("--study", type=Path, action="append", default=[], metavar="DIR",
                   help="a pjepa gen study folder: its table, sample grids and reconstructions (repeatable)")
    p.add_argument("--title", default="pjepa report")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write RUN/tb/{hparams,figures}")
    p.add_argument("--format", choices=["png", "pdf", "svg"], action="append", default=[], metavar="FMT",
                   help="also write every figure as FMT beside the page (pdf, svg; repeatable); the page itself "
                        "inlines PNGs")
    p.add_argument("--dpi", type=positive_int, default=200, help="resolution of the PNGs (default 200)")
    add_threads(p)


def run(args: argparse.Namespace) -> int:
    from pjepa.runs.writable import writable_dir
    from pjepa.viz.report import write_report

    writable_dir(args.out, "report folder (--out)")

    path, _ = write_report(args.runs, args.out, args.title, tensorboard=not args.no_tensorboard,
                           echo=lambda line: print(f"  {line}", flush=True), studies=args.study,
                           formats=[f for f in args.format if f != "png"], dpi=args.dpi)
    print(f"wrote {path}")
    return 0
