"""``pjepa gen study``: the generative study over frozen encoders' patch tokens (``pjepa.studies.generative``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pjepa.cli.args import add_overrides, add_threads

NAME = "gen"
OVERRIDES = True  # takes key=value study overrides anywhere on the line


def add_parser(sub: argparse._SubParsersAction) -> None:
    from pjepa.studies.generative.config import study_presets

    p = sub.add_parser("gen", help="the generative study: latent diffusion over frozen encoders' patch tokens")
    gsub = p.add_subparsers(dest="gen_command", required=True)
    s = gsub.add_parser("study", help="tokens -> VAE -> diffusion -> decoder -> metrics for each run, one table",
                        description="Every stage is resumable: the same command skips what is done. Writes "
                                    "DIR/table.md, DIR/table.json, sample grids and DIR/<run>/timings.json.")
    s.add_argument("--runs", nargs="+", type=Path, required=True, metavar="RUN_DIR",
                   help="run directories (pjepa train), or folders of encoders brought in with pjepa import")
    s.add_argument("--out", type=Path, required=True, metavar="DIR")
    s.add_argument("--preset", default="cifar10_cpu", help=f"study preset ({', '.join(study_presets())}) or a YAML")
    s.add_argument("--inception-weights", type=Path, metavar="FILE",
                   help="local FID InceptionV3 weights (pt_inception-2015-12-05-6726825d.pth): InceptionV3 columns too")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads(s)
    add_overrides(s, "key=value", "dotted study overrides, e.g. sample.n=500")


def run(args: argparse.Namespace) -> int:
    from pjepa.studies.generative.study import load_study_config, run_study
    from pjepa.utils import seed_everything

    # `--runs A B key=value`: argparse gives the override to --runs; it is not a folder, so it is an override
    moved = [str(r) for r in args.runs if "=" in str(r) and not r.exists()]
    runs = [r for r in args.runs if str(r) not in moved]
    cfg = load_study_config(args.preset, moved + list(args.overrides))
    from pjepa.runs.writable import writable_dir

    writable_dir(args.out, "study folder (--out)")
    seed_everything(cfg.seed)
    from pjepa.viz.report import write_study_report

    table = run_study(runs, args.out, cfg, args.inception_weights, progress=not args.no_progress,
                      device=args.device, echo=lambda line: print(line, flush=True))
    page = write_study_report(args.out)
    print(f"[pjepa] study table: {table} (and {table.with_suffix('.json')}); grids and timings in {args.out}/<run>/; "
          f"page: {page}")
    return 0
