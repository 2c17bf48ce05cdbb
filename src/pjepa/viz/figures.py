"""The figure registry behind ``pjepa plot WHAT RUN...``: a name, whether it spans runs, and its maker.

A figure over several runs (curves, samples, reliability) is one file; a per-run figure
(mask layout, imagination, t-SNE, confusion, MDN statistics) is one file per run. Files go
to ``RUN/figures/WHAT.png`` (the first run's for a figure over runs) unless ``out`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from pjepa.errors import ConfigError
from pjepa.runs import Run
from pjepa.viz import confusion, curves, embedding, imagination, masks, reliability, samples
from pjepa.viz.common import save_figure


@dataclass(frozen=True)
class Figure:
    name: str
    help: str
    over_runs: bool  # one figure for all runs (True) or one per run
    make: Callable[..., Any]  # (runs) or (run) -> matplotlib figure
    applies: Callable[[Run], bool] = lambda run: True
    needs: str = ""  # what ``applies`` checks, for the error when no run has it


def _has_head(run: Run) -> bool:
    return run.config.method.name != "mae"


FIGURES: dict[str, Figure] = {f.name: f for f in [
    Figure("loss", "training loss per run, resumed segments de-duplicated (report Fig. 1)", True, curves.plot_loss),
    Figure("knn", "validation kNN@1 over training, one curve or marker per run (Fig. 3)", True, curves.plot_knn),
    Figure("masks", "the run's mask sampler on a validation image: context, targets, excluded (Fig. 6)", False,
           lambda run: masks.plot_mask_layout(run)[0]),
    Figure("samples", "2-D hexbin / 3-D PCA of many head draws for one target token, one row per run (Figs. 2, 4, 5, 7)",
           True, samples.plot_samples),
    Figure("mdn", "mixture head: weight entropy, weight and sigma histograms", False, samples.plot_mdn_statistics,
           lambda run: run.config.head.name == "mdn" and _has_head(run), "a run with head.name=mdn"),
    Figure("imagination", "predicted target tokens shown as their nearest gallery patches", False,
           imagination.plot_imagination, _has_head, "a predictor head (MAE has none)"),
    Figure("tsne", "t-SNE (UMAP where installed) of target-encoder features by class", False,
           embedding.plot_class_map),
    Figure("confusion", "confusion matrix and per-class accuracy of the linear probe (eval/linear.json)", False,
           confusion.plot_confusion, lambda run: run.eval_result("linear") is not None,
           "eval/linear.json: run pjepa eval linear --run RUN first"),
    Figure("reliability", "calibration: coverage of central intervals vs nominal (eval/calibration.json)", True,
           reliability.plot_reliability),
]}


def figure(name: str) -> Figure:
    if name not in FIGURES:
        raise ConfigError(f"unknown figure {name!r}; choose one of: {', '.join(FIGURES)}")
    return FIGURES[name]


def make_figure(name: str, runs: Sequence[Run], out: str | Path | None = None) -> list[Path]:
    """Make figure ``name`` for ``runs``; returns the files written (skipped runs: none)."""
    f = figure(name)
    if f.over_runs:
        path = Path(out) / f"{name}.png" if out else runs[0].figures_dir / f"{name}.png"
        return [save_figure(f.make(list(runs)), path)]
    written = []
    for run in runs:
        if not f.applies(run):
            continue
        path = Path(out) / f"{run.name}-{name}.png" if out else run.figures_dir / f"{name}.png"
        written.append(save_figure(f.make(run), path))
    if not written:
        raise ConfigError(f"figure {name!r} applies to none of {', '.join(r.name for r in runs)}: it needs {f.needs}")
    return written
