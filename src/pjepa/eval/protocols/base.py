"""What an evaluation protocol declares, and the registry ``pjepa eval`` reads."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pjepa.registry import Registry


@dataclass(frozen=True)
class Protocol:
    """``pjepa eval NAME``: ``add_arguments(parser)`` declares its flags; ``run(args)`` evaluates and
    returns the lines to print (the result itself goes to ``RUN/eval/*.json``)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], list[str]]


PROTOCOLS: Registry[Protocol] = Registry("evaluation protocol")


def register(protocol: Protocol) -> Protocol:
    PROTOCOLS.register(protocol.name)(protocol)
    return protocol


def add_run_arguments(p: argparse.ArgumentParser, checkpoint: bool = True) -> None:
    """The flags every protocol shares: the run directory, its checkpoint and the device."""
    p.add_argument("--run", type=Path, required=True, metavar="DIR", help="a run directory written by pjepa train")
    if checkpoint:
        p.add_argument("--checkpoint", choices=["last", "best"], default="last")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def add_source_arguments(p: argparse.ArgumentParser, pixels: bool = True) -> None:
    """Which features: the run's encoder (--encoder), an encoder file (--weights) or a baseline."""
    p.add_argument("--encoder", choices=["target", "context"], default="target")
    p.add_argument("--weights", type=Path, metavar="FILE",
                   help="rate this encoder file (pjepa export / import) on the run's data instead")
    base = p.add_mutually_exclusive_group()
    base.add_argument("--random-init", action="store_true", help="baseline: the same architecture, untrained")
    if pixels:
        base.add_argument("--pixels", action="store_true", help="baseline: raw normalised pixels")


def source_of(args: argparse.Namespace):
    """The ``Source`` the shared flags name."""
    from pjepa.eval.sources import Source

    baseline = "random-init" if args.random_init else "pixels" if getattr(args, "pixels", False) else None
    return Source(args.encoder, args.checkpoint, baseline, args.weights)
