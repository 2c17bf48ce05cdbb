"""The ``pjepa`` command: thin subcommands, each parses and calls one library function.

    pjepa train --config FILE|PRESET [--out DIR] [--dry-run] [key=value ...]
    pjepa train --resume DIR [key=value ...]
    pjepa eval PROTOCOL --run DIR ...       (protocols: pjepa.eval.protocols, one file each)
    pjepa sweep --config FILE|PRESET --out SWEEP_DIR [--eval knn,linear] [--baselines] [key=v1,v2 ...]
    pjepa table RUN_DIR|SWEEP_DIR... [--format md|csv|both] [--csv FILE] [--pairs]
    pjepa presets
    pjepa export --run DIR --out FILE [--encoder target|context] [--checkpoint last|best]
    pjepa import --from FILE --out FILE [--kind auto|ijepa|mae] [--encoder target|context] [--num-heads N]
    pjepa plot WHAT RUN_DIR... [--out DIR]   (figures: pjepa.viz.figures; into RUN/figures/ by default)
    pjepa report RUN_DIR... --out DIR [--study STUDY_DIR] [--title T] [--no-tensorboard]
    pjepa bench --config FILE|PRESET [--precision fp32,bf16] [--steps N] [--json] [key=value ...]
    pjepa gen study --runs RUN_DIR... --out DIR [--preset cifar10_cpu] [--inception-weights FILE] [key=value ...]

One module per command (``pjepa/cli/<command>.py``: ``NAME``, ``OVERRIDES``, ``add_parser(sub)``,
``run(args)``); this one builds the parser from them, names mistyped options and subcommands
(``cli/parser.py``), and turns errors and interrupts into one line and an exit code.
"""

from __future__ import annotations

import os
import sys

from pjepa.cli import bench, export, gen, import_, plot, presets, report, sweep, table, train
from pjepa.cli import eval as eval_
from pjepa.cli.args import apply_threads
from pjepa.cli.parser import Parser, check_typed, unrecognized
from pjepa.errors import PJepaError

#: Every command by name, in the order ``pjepa --help`` lists them.
COMMANDS = {m.NAME: m for m in (train, eval_, sweep, table, export, import_, plot, report, gen, bench, presets)}


def build_parser() -> Parser:
    parser = Parser(prog="pjepa", description="Joint-Embedding Predictive Architectures")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while the parsers and the command's modules are still being built
        print("pjepa: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come before or after options (`--out DIR key=value`): argparse
    # leaves trailing positionals unparsed, so collect every `key=value` left over.
    typed = list(argv if argv is not None else sys.argv[1:])  # as typed: pjepa sweep records it
    check_typed(parser, typed)
    args, extra = parser.parse_known_args(typed)
    command = COMMANDS[args.command]
    unknown = [e for e in extra if e.startswith("-") or "=" not in e or not command.OVERRIDES]
    if unknown:
        unrecognized(parser, typed, unknown)
    if command.OVERRIDES:
        args.overrides = list(args.overrides) + extra
    args.argv = typed
    try:
        apply_threads(args)
        from pjepa.cli import interrupted

        if interrupted():  # Ctrl-C while the parsers were built, swallowed by an import: stop before any work
            raise KeyboardInterrupt
        return command.run(args)
    except PJepaError as e:
        print(f"pjepa: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pjepa: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pjepa ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
