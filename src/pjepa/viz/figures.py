"""The figure registry behind ``pjepa plot WHAT RUN...`` and ``pjepa report``.

A figure is declared in its own module (``curves``, ``masks``, ``samples``, ...) with
``FIGURES.register("name")(Figure("name", ...))``: its name, whether it spans runs, what it
needs from a run (``Needs``: a predictor head, metrics, evaluation results), how to make it
and its caption. ``pjepa.viz`` imports every module of the package, so a new figure is one
new file: ``pjepa plot`` offers it and ``pjepa report`` shows it.

A figure over several runs (curves, samples, reliability) is one file; a per-run figure
(mask layout, imagination, t-SNE, confusion, MDN statistics) is one file per run. Files go
to ``RUN/figures/WHAT.png`` (the first run's for a figure over runs) unless ``out`` is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pjepa.errors import ConfigError
from pjepa.methods import capabilities
from pjepa.registry import Registry
from pjepa.runs import Run
from pjepa.viz.common import DEFAULT_DPI, FORMATS, save_figure


@dataclass(frozen=True)
class Needs:
    """What a figure needs from a run: a per-run figure skips a run that lacks it, a figure over runs is
    made when at least one run has it (each run shows what it has).

    Attributes:
        head: a predictor head (the run's method declares it: ``Method.capabilities``).
        head_name: this registered head (``head.name``), e.g. "mdn"; implies ``head``.
        results: evaluation result files, by stem (``eval/linear.json``: "linear").
        metrics: keys of ``metrics.jsonl`` some row must hold (``train/loss``).
        text: what the figure needs, in words, where the generated description would not say it well.
    """

    head: bool = False
    head_name: str | None = None
    results: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    text: str = ""

    def met(self, run: Run) -> bool:
        """Whether ``run`` has everything this figure needs."""
        if self.head or self.head_name is not None:
            if not capabilities(run.config).has_head:
                return False
            if self.head_name is not None and run.config.head.name != self.head_name:
                return False
        if any(run.eval_result(name) is None for name in self.results):
            return False
        if self.metrics:
            rows = run.metrics()
            return all(any(row.get(key) is not None for row in rows) for key in self.metrics)
        return True

    def describe(self) -> str:
        """What a run needs, in words (the report's note on a run that cannot have the figure)."""
        if self.text:
            return self.text
        parts = []
        if self.head_name is not None:
            parts.append(f"a run with head.name={self.head_name}")
        elif self.head:
            parts.append("a predictor head (this method has none)")
        parts += [f"eval/{name}.json: run pjepa eval {name.split('_')[0]} --run RUN first" for name in self.results]
        parts += [f"{key} in metrics.jsonl" for key in self.metrics]
        return " and ".join(parts) or "nothing"

    def __bool__(self) -> bool:
        return bool(self.head or self.head_name or self.results or self.metrics)


@dataclass(frozen=True)
class Figure:
    """One figure: ``make(runs)`` (over runs) or ``make(run)`` (per run) returns a matplotlib figure."""

    name: str
    help: str  # one line, for --help
    over_runs: bool  # one figure for all runs (True) or one per run
    make: Callable[..., Any]  # (runs) or (run) -> matplotlib figure
    needs: Needs = field(default_factory=Needs)
    caption: str = ""  # what the figure shows and how to read it (the report prints it under the figure)
    order: int = 100  # where it goes in `pjepa plot`'s list and on the report's page (lower first)

    def applies(self, run: Run) -> bool:
        """Whether ``run`` has what this figure needs."""
        return self.needs.met(run)

    def render(self, runs: Sequence[Run]) -> Any:
        """The figure over ``runs`` (a figure over runs); a ConfigError when no run has what it needs."""
        if self.needs and not any(self.applies(r) for r in runs):
            raise ConfigError(f"no run among {', '.join(r.name for r in runs)} has {self.needs.describe()}: "
                              "nothing to plot")
        return self.make(list(runs))


#: Every figure, in ``order``: ``pjepa plot`` lists them so, ``pjepa report`` shows them so.
FIGURES: Registry[Figure] = Registry("figure", sort_key=lambda f: f.order)


def figure(name: str) -> Figure:
    """The registered figure ``name``; a ConfigError naming the choices otherwise."""
    return FIGURES.get(name)


def make_figure(name: str, runs: Sequence[Run], out: str | Path | None = None, fmt: str = "png",
                dpi: int = DEFAULT_DPI) -> list[Path]:
    """Make figure ``name`` for ``runs`` as ``fmt`` (png, pdf, svg) at ``dpi``; returns the files written
    (skipped runs: none)."""
    f = figure(name)
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if f.over_runs:
        path = Path(out) / f"{name}.{fmt}" if out else runs[0].figures_dir / f"{name}.{fmt}"
        return [save_figure(f.render(runs), path, dpi)]
    written = []
    for run in runs:
        if not f.applies(run):
            continue
        path = Path(out) / f"{run.name}-{name}.{fmt}" if out else run.figures_dir / f"{name}.{fmt}"
        written.append(save_figure(f.make(run), path, dpi))
    if not written:
        raise ConfigError(f"figure {name!r} applies to none of {', '.join(r.name for r in runs)}: it needs "
                          f"{f.needs.describe()}")
    return written
