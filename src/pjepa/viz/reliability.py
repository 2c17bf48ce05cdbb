"""The calibration protocol's results (``eval/calibration.json``) as a reliability diagram.

A head whose central p-intervals hold the target a fraction p of the time lies on the
diagonal; below it the head is over-confident (intervals too narrow), above it
under-confident. The deterministic head (a point mass) covers nothing at any level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pjepa.errors import ConfigError
from pjepa.runs import Run
from pjepa.viz.common import color, pyplot, run_label
from pjepa.viz.figures import FIGURES, Figure, Needs


def calibrated_runs(runs: Sequence[Run]) -> list[tuple[Run, dict[str, Any]]]:
    return [(r, c) for r in runs if (c := r.eval_result("calibration")) is not None]


def plot_reliability(runs: Sequence[Run]) -> Any:
    """Empirical coverage against nominal level, one curve per run with ``eval/calibration.json``."""
    found = calibrated_runs(runs)
    if not found:
        raise ConfigError("no run has eval/calibration.json: run `pjepa eval calibration --run DIR` first")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    ax.plot([0, 1], [0, 1], color="k", ls="--", lw=1, label="calibrated")
    for i, (run, c) in enumerate(found):
        ax.plot(c["levels"], c["coverage"], marker="o", ms=3, color=color(i), label=run_label(run))
    finite = {(tuple(c["levels"]), tuple(c["coverage_finite_n"]), c.get("num_samples")) for _, c in found
              if c.get("coverage_finite_n")}
    if len(finite) == 1:  # one draw count for every run: its finite-n reference (slightly below the diagonal)
        levels, expected, n = finite.pop()
        ax.plot(levels, expected, color="grey", ls=":", lw=1, label=f"calibrated, {n} draws")
    ax.set_xlabel("nominal central-interval level")
    ax.set_ylabel("empirical coverage (validation targets)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("reliability of per-coordinate intervals", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


FIGURES.register("reliability")(Figure(
    "reliability", "calibration: coverage of central intervals vs nominal (eval/calibration.json)", True,
    plot_reliability, Needs(results=("calibration",)),
    caption="Calibration of each head: the fraction of validation targets inside the head's central "
            "intervals against the nominal level; a calibrated head lies on the diagonal, an "
            "overconfident one below it.",
    order=90))
