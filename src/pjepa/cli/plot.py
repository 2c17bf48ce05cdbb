"""``pjepa plot WHAT RUN_DIR...``: one figure from run directories (``pjepa.viz.figures``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pjepa.cli.args import add_threads

NAME = "plot"
OVERRIDES = False


def add_parser(sub: argparse._SubParsersAction) -> None:
    from pjepa.eval.protocols.base import positive_int
    from pjepa.viz.figures import FIGURES

    p = sub.add_parser("plot", help="make one figure from run directories (into RUN/figures/)",
                       epilog="figures: " + "; ".join(f"{f.name}: {f.help}" for f in FIGURES.values()))
    p.add_argument("what", choices=list(FIGURES), metavar="WHAT", help=f"one of: {', '.join(FIGURES)}")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, metavar="DIR", help="write here instead of RUN/figures/")
    p.add_argument("--format", choices=["png", "pdf", "svg"], default="png",
                   help="file format (default png; pdf and svg are vector, ready for a paper)")
    p.add_argument("--dpi", type=positive_int, default=200, help="resolution of PNGs and of images inside "
                   "PDF/SVG files (default 200)")
    add_threads(p)


def run(args: argparse.Namespace) -> int:
    from pjepa.runs import Run
    from pjepa.runs.writable import writable_dir
    from pjepa.viz.figures import make_figure

    for folder in [args.out] if args.out else [Path(r) / "figures" for r in args.runs if Path(r).is_dir()]:
        writable_dir(folder, "figure folder")

    for path in make_figure(args.what, [Run(r) for r in args.runs], args.out, args.format, args.dpi):
        print(f"wrote {path}")
    return 0
