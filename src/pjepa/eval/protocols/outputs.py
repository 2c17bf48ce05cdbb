"""What a protocol declares it produces: its result files, its table columns, its report details.

``pjepa table``, ``pjepa sweep --eval``, TensorBoard's hparams view and ``pjepa report`` read
these declarations from the protocol registry; none keeps a list of its own, so a new
protocol's numbers appear everywhere once its file declares them.

A result file is ``RUN/eval/<protocol><baseline><variant>.json``: the protocol's name, a
baseline's suffix where one is rated (``_random_init``, ``_pixels``) and the variant the
protocol's flags select (``knn`` + ``_val_white`` for ``pjepa eval knn --split val --whiten``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The sweep's baseline policies of a result file (``ResultFile.sweep_baselines``).
SWEEP_BASELINES = ("never", "asked", "always")


@dataclass(frozen=True)
class Baseline:
    """A reference the protocols rate beside a run's encoder, on the same data and preprocessing."""

    name: str  # the result file's suffix after the protocol's name: knn_<name>...
    flag: str  # the ``pjepa eval`` flag that rates it
    label: str  # how a table row names it


#: The baselines, in the order tables and sweeps list them.
BASELINES = (Baseline("random_init", "--random-init", "untrained encoder"),
             Baseline("pixels", "--pixels", "raw pixels"))


@dataclass(frozen=True)
class ResultFile:
    """One result file a protocol writes, ``eval/<protocol>[<baseline>]<variant>.json``.

    Attributes:
        variant: what follows the protocol's name (and a baseline's suffix): ``""`` for its
            plain result, ``"_val"`` for ``knn_val.json``.
        args: the ``pjepa eval PROTOCOL`` flags that write it (``("--split", "val")``);
            ``pjepa sweep --eval <stem>`` runs the protocol with them.
        help: what it is, in a few words, for the sweep's list of evaluations ("" = not listed).
        sweep_baselines: whether ``pjepa sweep --baselines`` also rates the baselines for it:
            ``never``, ``asked`` (when this file is asked for) or ``always``.
    """

    variant: str = ""
    args: tuple[str, ...] = ()
    help: str = ""
    sweep_baselines: str = "never"

    def __post_init__(self) -> None:
        if self.sweep_baselines not in SWEEP_BASELINES:
            raise ValueError(f"sweep_baselines={self.sweep_baselines!r}: choose one of {', '.join(SWEEP_BASELINES)}")
        if self.variant and not self.variant.startswith("_"):
            raise ValueError(f"variant {self.variant!r} must start with '_' (it follows the protocol's name)")


@dataclass(frozen=True)
class Column:
    """One number a protocol contributes to the comparison table (and to TensorBoard's hparams view).

    Attributes:
        name: the table's column (``knn_val``); unique over every protocol.
        header: (group, label) under which the report shows it (``("kNN@1 (%), validation", "raw")``).
        read: the number from the result's JSON (a dict); None where the result lacks it.
        result: the variant of the protocol's result file it reads (``""``: its plain result).
        higher_is_better: the direction of the number (accuracies: True; a calibration error: False;
            None for a diagnostic with no better direction, such as a head's sample spread).
        rated: None, or the column's tier for ``vs_best`` (the seed-noise test picks the first
            column every row has, lower tiers first, table order inside a tier): 0 for a headline
            accuracy of the run's own encoder, 1 for a variant read for choices (validation split,
            whitened features), 2 for another encoder. Only higher-is-better columns are rated.
        table: shown in the table; False for a number only TensorBoard shows.
        tensorboard: the tag TensorBoard's hparams view shows it under (``eval/<tag>``); None: not shown.
    """

    name: str
    header: tuple[str, str]
    read: Callable[[dict[str, Any]], Any]
    result: str = ""
    higher_is_better: bool | None = True
    rated: int | None = None
    table: bool = True
    tensorboard: str | None = None

    def __post_init__(self) -> None:
        if self.rated is not None and self.higher_is_better is not True:
            raise ValueError(f"column {self.name!r}: only a higher-is-better column can be rated (vs_best takes "
                             "the highest mean as the best)")


@dataclass(frozen=True)
class Details:
    """A table of one result file's numbers, one row per run, that ``pjepa report`` shows in a section of
    its own (the calibration protocol's coverage, CRPS, energy score, ...).

    Attributes:
        title: the section's heading; ``anchor`` its link target (``#s-<anchor>``).
        fields: (header, read) per column: ``read`` takes the result's JSON, returns a number, a string or None.
        result: the variant of the protocol's result file it reads.
    """

    title: str
    anchor: str
    fields: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...]
    result: str = ""


def number(key: str) -> Callable[[dict[str, Any]], Any]:
    """A ``Column.read`` taking ``key`` of the result (None where it is absent)."""

    def read(result: dict[str, Any]) -> Any:
        return result.get(key)

    read.__name__ = f"read_{key}"
    return read
