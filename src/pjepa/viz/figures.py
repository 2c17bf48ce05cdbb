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
from pjepa.viz.common import DEFAULT_DPI, FORMATS, save_figure


@dataclass(frozen=True)
class Figure:
    name: str
    help: str  # one line, for --help
    over_runs: bool  # one figure for all runs (True) or one per run
    make: Callable[..., Any]  # (runs) or (run) -> matplotlib figure
    applies: Callable[[Run], bool] = lambda run: True
    needs: str = ""  # what ``applies`` checks, for the error (and the report's note) when a run lacks it
    caption: str = ""  # what the figure shows and how to read it (the report prints it under the figure)


def _has_head(run: Run) -> bool:
    """Whether the run's method trains a predictor head (its registered class says so)."""
    from pjepa.methods import METHODS

    return bool(getattr(METHODS.get(run.config.method.name), "uses_head", True))


FIGURES: dict[str, Figure] = {f.name: f for f in [
    Figure("loss", "training loss per run, resumed segments de-duplicated", True, curves.plot_loss,
           caption="Training loss against step, one curve per run (a resumed run's repeated steps shown once). "
                   "Losses of different heads are not comparable with each other: compare kNN or the probes."),
    Figure("knn", "validation kNN@1 over training, one curve or marker per run", True, curves.plot_knn,
           caption="kNN@1 (%, weighted vote) on the validation split at each periodic evaluation: whether a run was "
                   "still improving when it stopped."),
    Figure("masks", "the run's mask sampler on a validation image: context, targets, excluded", False,
           lambda run: masks.plot_mask_layout(run)[0],
           caption="One draw of the run's mask sampler on a validation image: the context patches the encoder "
                   "sees, the target blocks it predicts, and the patches neither uses."),
    Figure("samples", "2-D hexbin / 3-D PCA of many head draws for one target token, one row per run",
           True, samples.plot_samples,
           caption="2,000 draws of each head for one validation target token, projected on their top principal "
                   "directions: density (left, colour = draws per cell) and a 3-D view (right), with the true "
                   "target (red star) and the head's point estimate (black cross). A point mass is a deterministic "
                   "head; spread along few directions is what a probabilistic head adds."),
    Figure("mdn", "mixture head: weight entropy, weight and sigma histograms", False, samples.plot_mdn_statistics,
           lambda run: run.config.head.name == "mdn" and _has_head(run), "a run with head.name=mdn",
           caption="The mixture head over validation target tokens: entropy of its weights (log K = uniform), "
                   "every weight, and every component scale: collapsed components show as weights near 0."),
    Figure("imagination", "predicted target tokens shown as their nearest gallery patches", False,
           imagination.plot_imagination, _has_head, "a predictor head (this method has none)",
           caption="What the predictor imagines: each predicted target token shown as the validation patch whose "
                   "embedding is nearest, beside the true patch."),
    Figure("tsne", "t-SNE (UMAP where installed) of target-encoder features by class", False,
           embedding.plot_class_map,
           caption="A 2-D map (t-SNE, or UMAP where installed) of the encoder's pooled features of validation "
                   "images, coloured by class: classes that form islands are what kNN can separate."),
    Figure("confusion", "confusion matrix and per-class accuracy of the linear probe (eval/linear.json)", False,
           confusion.plot_confusion, lambda run: run.eval_result("linear") is not None,
           "eval/linear.json: run pjepa eval linear --run RUN first",
           caption="The linear probe on the reported split: confusion matrix (rows: true class) and accuracy per "
                   "class."),
    Figure("reliability", "calibration: coverage of central intervals vs nominal (eval/calibration.json)", True,
           reliability.plot_reliability,
           caption="Calibration of each head: the fraction of validation targets inside the head's central "
                   "intervals against the nominal level; a calibrated head lies on the diagonal, an "
                   "overconfident one below it."),
]}


def figure(name: str) -> Figure:
    if name not in FIGURES:
        raise ConfigError(f"unknown figure {name!r}; choose one of: {', '.join(FIGURES)}")
    return FIGURES[name]


def make_figure(name: str, runs: Sequence[Run], out: str | Path | None = None, fmt: str = "png",
                dpi: int = DEFAULT_DPI) -> list[Path]:
    """Make figure ``name`` for ``runs`` as ``fmt`` (png, pdf, svg) at ``dpi``; returns the files written
    (skipped runs: none)."""
    f = figure(name)
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if f.over_runs:
        path = Path(out) / f"{name}.{fmt}" if out else runs[0].figures_dir / f"{name}.{fmt}"
        return [save_figure(f.make(list(runs)), path, dpi)]
    written = []
    for run in runs:
        if not f.applies(run):
            continue
        path = Path(out) / f"{run.name}-{name}.{fmt}" if out else run.figures_dir / f"{name}.{fmt}"
        written.append(save_figure(f.make(run), path, dpi))
    if not written:
        raise ConfigError(f"figure {name!r} applies to none of {', '.join(r.name for r in runs)}: it needs {f.needs}")
    return written
