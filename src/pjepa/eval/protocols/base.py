"""What an evaluation protocol declares, and the registry ``pjepa eval``, ``pjepa table``, ``pjepa sweep``
and the report read.

A protocol declares its flags and run function (``pjepa eval NAME``) and what it produces
(``pjepa.eval.protocols.outputs``): the result files it writes, the table columns it
contributes and, optionally, a per-run table for the report. The functions at the end of this
module answer from the registry what the table, the sweep and TensorBoard need.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pjepa.eval.protocols.outputs import Baseline, Column, Details, ResultFile
from pjepa.registry import Registry

if TYPE_CHECKING:
    from pjepa.config import DataConfig


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


# Where a choice was made. With data.val_fraction=0 no validation split is carved and the splits' "val" *is*
# the reported split (pjepa.data.load_splits): a probe's lr, a fine-tune's epoch or a number read for
# choices then comes from the split the result is scored on. Every result that records where it chose says
# so, and the protocol prints a warning, so such a number is never mistaken for an unbiased one.


def held_out_validation(data: DataConfig) -> bool:
    """Whether the run carved a validation split out of its bank split (``data.val_fraction`` > 0)."""
    return data.val_fraction > 0


def choice_split(data: DataConfig, detail: str = "") -> str:
    """Where a choice on the splits' "val" was made, as a result records it: "validation split (detail)", or
    with ``data.val_fraction=0`` "reported split (<data.eval_split>, detail): no validation split held out
    (data.val_fraction=0)"."""
    if held_out_validation(data):
        return "validation split" + (f" ({detail})" if detail else "")
    return (f"reported split ({data.eval_split}{', ' + detail if detail else ''}): no validation split held out "
            "(data.val_fraction=0)")


def choice_split_short(data: DataConfig) -> str:
    """The same for a printed line: "val", or "the reported split <data.eval_split>"."""
    return "val" if held_out_validation(data) else f"the reported split {data.eval_split}"


def choice_warning(data: DataConfig, choice: str) -> str | None:
    """The warning to print and record when ``choice`` (e.g. "the choice of the probe's lr") was made on the
    reported split because no validation split was held out; None when one was."""
    if held_out_validation(data):
        return None
    return (f"warning: data.val_fraction=0: no validation split was held out, so {choice} was made on the "
            f"reported split ({data.eval_split}), the split results are scored on: a number chosen this way is "
            "optimistic, not a held-out estimate (train with data.val_fraction > 0 to hold one out)")


@dataclass(frozen=True)
class Protocol:
    """``pjepa eval NAME``: ``add_arguments(parser)`` declares its flags; ``run(args)`` evaluates and
    returns the lines to print (the result itself goes to ``RUN/eval/*.json``).

    What it produces:
        results: the result files it writes (default: ``eval/NAME.json`` alone). Files named by a
            free parameter (``--layers N``, ``--weights FILE``) are not listed.
        columns: the numbers it contributes to ``pjepa table`` (and TensorBoard).
        baselines: it rates the baselines too (``--random-init``, ``--pixels``): the table reads
            their result files into the baseline rows.
        details: a per-run table the report shows in a section of its own.
        order: where its columns and files go among every protocol's (lower first).
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], list[str]]
    results: tuple[ResultFile, ...] = (ResultFile(),)
    columns: tuple[Column, ...] = ()
    baselines: bool = False
    details: Details | None = None
    order: int = 100

    def __post_init__(self) -> None:
        variants = [f.variant for f in self.results]
        if len(set(variants)) != len(variants):
            raise ValueError(f"protocol {self.name!r} declares a result file twice: {variants}")
        reads = [c.result for c in self.columns] + ([self.details.result] if self.details else [])
        unknown = sorted({v for v in reads if v not in variants})
        if unknown:
            raise ValueError(f"protocol {self.name!r} reads result file(s) it does not declare: "
                             f"{', '.join(self.stem(v) for v in unknown)}")

    def stem(self, variant: str = "", baseline: Baseline | None = None) -> str:
        """The result file's stem (``Run.eval_result`` takes it): ``knn``, ``knn_val``, ``knn_pixels_white``."""
        return self.name + (f"_{baseline.name}" if baseline is not None else "") + variant


PROTOCOLS: Registry[Protocol] = Registry("evaluation protocol")


def register(protocol: Protocol) -> Protocol:
    """``PROTOCOLS.register(protocol.name)(protocol)``."""
    return PROTOCOLS.register(protocol.name)(protocol)


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


# --------------------------------------------------------------------------- what the protocols produce, in order


def protocols_in_order() -> list[Protocol]:
    """Every registered protocol in declared ``order`` (then by name): the order of table columns."""
    return sorted(PROTOCOLS.values(), key=lambda p: (p.order, p.name))


def result_files() -> list[tuple[str, Protocol, ResultFile]]:
    """(stem, protocol, file) of every declared result file of a run's own encoder, in protocol order."""
    return [(p.stem(f.variant), p, f) for p in protocols_in_order() for f in p.results]


def find_result(stem: str) -> tuple[Protocol, ResultFile] | None:
    """The protocol and declared file that write ``eval/<stem>.json`` (a run's own encoder); None if none does."""
    return next(((p, f) for s, p, f in result_files() if s == stem), None)


def table_columns() -> list[tuple[Protocol, Column]]:
    """(protocol, column) of every table column, in table order; a ValueError when two share a name."""
    out = [(p, c) for p in protocols_in_order() for c in p.columns if c.table]
    seen: dict[str, str] = {}
    for p, c in out:
        if c.name in seen:
            raise ValueError(f"table column {c.name!r} is declared by protocols {seen[c.name]!r} and {p.name!r}")
        seen[c.name] = p.name
    return out


def rated_columns() -> list[str]:
    """The columns ``vs_best`` may compare on, in order of preference (``Column.rated``)."""
    cols = table_columns()
    rated = [(c.rated, i, c.name) for i, (_, c) in enumerate(cols) if c.rated is not None]
    return [name for _, _, name in sorted(rated)]


def tensorboard_columns() -> list[tuple[Protocol, Column]]:
    """(protocol, column) of every number TensorBoard's hparams view shows, in protocol order."""
    return [(p, c) for p in protocols_in_order() for c in p.columns if c.tensorboard]

