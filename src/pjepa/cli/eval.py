"""``pjepa eval PROTOCOL --run DIR ...``: one subcommand per registered protocol (``pjepa.eval.protocols``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pjepa.cli.args import add_threads

NAME = "eval"
OVERRIDES = False


def add_parser(sub: argparse._SubParsersAction) -> None:
    from pjepa.eval.protocols import PROTOCOLS

    p = sub.add_parser("eval", help="evaluate a run directory (results go to RUN/eval/*.json)")
    esub = p.add_subparsers(dest="protocol", required=True)
    for name in PROTOCOLS.names():
        protocol = PROTOCOLS.get(name)
        sp = esub.add_parser(name, help=protocol.help)
        protocol.add_arguments(sp)
        add_threads(sp)


def run(args: argparse.Namespace) -> int:
    from pjepa.eval.protocols import PROTOCOLS
    from pjepa.runs.writable import writable_dir

    if Path(args.run).is_dir() and (Path(args.run) / "config.yaml").is_file():
        writable_dir(Path(args.run) / "eval", "the run's eval folder")  # before the evaluation, not after it

    for line in PROTOCOLS.get(args.protocol).run(args):
        print(line)
    return 0
