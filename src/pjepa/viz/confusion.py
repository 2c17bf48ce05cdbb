"""Confusion matrix and per-class accuracy from a protocol's saved predictions (``eval/linear.json``,
``eval/knn.json``, ...: every classification protocol stores the confusion matrix it measured)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pjepa.errors import ConfigError, PJepaError
from pjepa.runs import Run
from pjepa.viz.common import pyplot, run_label
from pjepa.viz.figures import FIGURES, Figure, Needs


def saved_confusion(run: Run, result: str = "linear") -> tuple[np.ndarray, dict[str, Any]]:
    """((C, C) counts [true, predicted], the result) of ``eval/RESULT.json`` (its last-layer probe for the
    linear protocol)."""
    r = run.eval_result(result)
    if r is None:
        raise ConfigError(f"{run.eval_dir}/{result}.json is missing: run `pjepa eval {result.split('_')[0]} "
                          f"--run {run.path}` first")
    probe = r.get("probes", {}).get("last", r) if "confusion" not in r else r
    if "confusion" not in probe:
        raise ConfigError(f"{run.eval_dir}/{result}.json holds no confusion matrix (written by an older pjepa?): "
                          "evaluate the run again")
    return np.asarray(probe["confusion"], dtype=np.int64), r


def class_names(run: Run, n: int) -> list[str]:
    from pjepa.viz.inputs import run_splits

    try:
        names = run_splits(run).eval.class_names
    except (PJepaError, OSError):  # the figure only needs labels: a dataset missing here must not stop it
        names = []
    return names if len(names) == n else [str(i) for i in range(n)]


def plot_confusion(run: Run, result: str = "linear") -> Any:
    """Row-normalised confusion matrix (true class per row) beside per-class accuracy bars."""
    cm, r = saved_confusion(run, result)
    C = cm.shape[0]
    names = class_names(run, C)
    rates = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11.0, 4.8), gridspec_kw={"width_ratios": [1.2, 1]})
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046)
    if C <= 20:
        ax.set_xticks(range(C), names, rotation=90, fontsize=7)
        ax.set_yticks(range(C), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = 100 * np.diag(cm) / np.clip(cm.sum(1), 1, None)
    order = np.argsort(acc)
    bx.barh(range(C), acc[order])
    if C <= 40:
        bx.set_yticks(range(C), [names[i] for i in order], fontsize=7)
    bx.set_xlabel("accuracy (%)")
    bx.axvline(100 * np.trace(cm) / max(cm.sum(), 1), color="k", ls="--", lw=1, label="overall")
    bx.legend(fontsize=7)
    fig.suptitle(f"{run_label(run)}: {result} on {r.get('dataset', '?')} {r.get('split', '?')} "
                 f"(top-1 {r.get('top1', float('nan')):.2f}%)", fontsize=9)
    fig.tight_layout()
    return fig


FIGURES.register("confusion")(Figure(
    "confusion", "confusion matrix and per-class accuracy of the linear probe (eval/linear.json)", False,
    plot_confusion, Needs(results=("linear",)),
    caption="The linear probe on the reported split: confusion matrix (rows: true class) and accuracy per "
            "class.",
    order=80))
