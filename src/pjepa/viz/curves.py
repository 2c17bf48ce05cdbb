"""Curves over training from ``metrics.jsonl``: the loss and periodic kNN@1.

A resumed run's log may step backwards where a later segment re-trained steps an
earlier one had logged (a crash after logging, before the next checkpoint), or repeat
a step. ``series`` keeps, for every step, the row of the latest segment, so a curve
never doubles back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pjepa.errors import ConfigError
from pjepa.runs import Run
from pjepa.viz.common import color, pyplot, run_label
from pjepa.viz.figures import FIGURES, Figure, Needs

LOSS = "train/loss"
KNN = "knn/top1_weighted"


def series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` in log order, a later segment replacing every earlier row at or after
    its first step: strictly increasing steps."""
    points: list[tuple[int, float]] = []
    for row in rows:
        if key not in row or row[key] is None:
            continue
        step = int(row["step"])
        while points and points[-1][0] >= step:  # a resumed segment supersedes what it re-trains
            points.pop()
        points.append((step, float(row[key])))
    return [s for s, _ in points], [v for _, v in points]


def _require_series(runs: Sequence[Run], key: str, what: str) -> None:
    """A ConfigError when no run has any ``key`` row: a figure of empty axes says nothing."""
    if not any(series(run.metrics(), key)[0] for run in runs):
        raise ConfigError(f"no run among {', '.join(r.name for r in runs)} has {what}: nothing to plot")


def plot_loss(runs: Sequence[Run], key: str = LOSS) -> Any:
    """One curve per run of its training loss. Losses of different heads are not comparable
    (an NLL, a noise MSE, a smooth-L1): the legend names each run's head, and a log axis is used
    only where every value is positive."""
    _require_series(runs, key, "training losses (metrics.jsonl: did training start?)")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    positive = True
    for i, run in enumerate(runs):
        steps, values = series(run.metrics(), key)
        if not steps:
            continue
        ax.plot(steps, values, color=color(i), label=run_label(run), lw=1.4)
        positive &= min(values) > 0
    if positive and ax.lines:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title("training loss (not comparable across heads)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    return fig


def plot_knn(runs: Sequence[Run], key: str = KNN) -> Any:
    """kNN@1 on the validation split over training, one curve per run; a run with a single periodic
    value is a marker (a line through one point would not show)."""
    _require_series(runs, key, "periodic kNN values (train.eval_every > 0 logs them to metrics.jsonl)")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, run in enumerate(runs):
        steps, values = series(run.metrics(), key)
        if len(steps) == 1:
            ax.plot(steps, values, ls="none", marker="D", ms=8, color=color(i), label=run_label(run))
        elif steps:
            ax.plot(steps, values, marker="o", ms=3, color=color(i), label=run_label(run), lw=1.4)
    ax.set_xlabel("step")
    ax.set_ylabel("kNN@1 (%), validation split")
    ax.set_title("kNN@1 over training")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    return fig


FIGURES.register("loss")(Figure(
    "loss", "training loss per run, resumed segments de-duplicated", True, plot_loss,
    Needs(metrics=(LOSS,), text="training losses (metrics.jsonl: did training start?)"),
    caption="Training loss against step, one curve per run (a resumed run's repeated steps shown once). "
            "Losses of different heads are not comparable with each other: compare kNN or the probes.",
    order=10))

FIGURES.register("knn")(Figure(
    "knn", "validation kNN@1 over training, one curve or marker per run", True, plot_knn,
    Needs(metrics=(KNN,), text="periodic kNN values (train.eval_every > 0 logs them to metrics.jsonl)"),
    caption="kNN@1 (%, weighted vote) on the validation split at each periodic evaluation: whether a run was "
            "still improving when it stopped.",
    order=20))
