"""A 2-D map of the target encoder's features coloured by class: t-SNE (UMAP where installed).

Features: the mean-pooled last layer (what kNN rates) of a seeded subsample of the
validation split (about 2,000 images); the map's own randomness is seeded too, so the
figure repeats. A map shows neighbourhoods, not distances between far clusters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pjepa.errors import ConfigError
from pjepa.eval.features import extract_features
from pjepa.eval.sources import Source, load_encoder_for
from pjepa.runs import Run
from pjepa.viz.common import COLORS, pyplot, run_label
from pjepa.viz.figures import FIGURES, Figure
from pjepa.viz.inputs import figure_images, run_splits


def embed_2d(x: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """(N, D) -> ((N, 2), the method used): UMAP if installed and ``method`` is auto or umap, else t-SNE."""
    if method in ("auto", "umap"):
        try:
            import umap  # type: ignore[import-not-found]

            return umap.UMAP(n_components=2, random_state=seed).fit_transform(x), "UMAP"
        except ImportError:
            if method == "umap":
                raise ConfigError("--method umap needs umap-learn: pip install umap-learn") from None
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise ConfigError("t-SNE needs scikit-learn: pip install 'pjepa[viz]'") from None
    perplexity = float(min(30, max(2, (x.shape[0] - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x), "t-SNE"


@torch.no_grad()
def class_map(run: Run, points: int = 2000, method: str = "auto", checkpoint: str = "last"):
    """(2-D coordinates (N, 2), labels (N,), method name, class names) of ``points`` validation images."""
    images, labels = figure_images(run, points, stream="figure-tsne")
    encoder, _, _ = load_encoder_for(run, Source(checkpoint=checkpoint))
    mean, std = run.stats()
    feats = extract_features(encoder, images, run.config.data.image_size, mean, std, torch.device("cpu"))
    xy, used = embed_2d(feats.numpy().astype(np.float32), method, seed=run.config.train.seed)
    return xy, labels.numpy(), used, run_splits(run).val.class_names


def plot_class_map(run: Run, points: int = 2000, method: str = "auto") -> Any:
    """Scatter of the map, one colour per class (a legend up to 20 classes)."""
    xy, labels, used, names = class_map(run, points, method)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 5.4))
    classes = sorted(set(labels.tolist()))
    cmap = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    for i, c in enumerate(classes):
        sel = labels == c
        col = COLORS[i] if len(classes) <= 10 else cmap(i % 20)
        ax.scatter(xy[sel, 0], xy[sel, 1], s=4, color=col, label=names[c] if c < len(names) else str(c))
    if len(classes) <= 20:
        ax.legend(fontsize=7, markerscale=3, loc="best", ncol=2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{run_label(run)}: {used} of target-encoder features, {len(labels)} validation images",
                 fontsize=9)
    return fig


FIGURES.register("tsne")(Figure(
    "tsne", "t-SNE (UMAP where installed) of target-encoder features by class", False, plot_class_map,
    caption="A 2-D map (t-SNE, or UMAP where installed) of the encoder's pooled features of validation "
            "images, coloured by class: classes that form islands are what kNN can separate.",
    order=70))
