"""What an evaluation protocol declares, and the registry ``pjepa eval`` reads."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pjepa.registry import Registry


# Argparse ``type=`` helpers for counts and rates: a bad value is an argparse error naming the flag
# ("argument --eval-limit: must be >= 0, got -1", exit status 2) before any run is loaded, instead of a
# traceback or a silently empty evaluation deep inside the protocol.


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (a count of epochs, samples, tokens, seeds, layers)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a subset size where 0 means all)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = all), got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a learning rate)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a weight decay, a minimum learning rate)."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
    return value


def float_in(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """A ``type=`` for a number in [low, high]; ``low_open`` / ``high_open`` exclude the ends."""
    span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        value = _number(text)
        if value < low or value > high or (low_open and value == low) or (high_open and value == high):
            raise argparse.ArgumentTypeError(f"must be in {span}, got {value:g}")
        return value

    parse.__name__ = f"number in {span}"  # argparse names the type in some messages
    return parse


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
