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
