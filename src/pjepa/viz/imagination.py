"""Nearest-neighbour "imagination" (after the I-JEPA-vs-MAE study): what the predictor expects under a mask.

A JEPA predicts embeddings, not pixels. To look at a prediction, each predicted target
token is replaced by the image patch (from a gallery of other validation images) whose
target-encoder embedding, layer-normed like the training targets, is nearest in Euclidean
distance. Panels per image: the original; the context alone (other patches grey); each
target block filled with its nearest gallery patches; all blocks filled together.
``use="point"`` fills from the head's point estimate, ``use="sample"`` from one draw (a
probabilistic head's samples differ from its mean).
"""

from __future__ import annotations

from typing import Any

import torch

from pjepa.errors import ConfigError
from pjepa.runs import Run
from pjepa.utils import stream_seed
from pjepa.viz.common import pyplot, run_label
from pjepa.viz.figures import FIGURES, Figure, Needs
from pjepa.viz.inputs import figure_images, grid_size, mask_generator, normalise
from pjepa.viz.samples import head_of

GREY = 128


def to_patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> (B, N, 3, p, p) row-major patches (N = (S/p)^2)."""
    B, C, S, _ = images.shape
    g = S // patch
    x = images.reshape(B, C, g, patch, g, patch).permute(0, 2, 4, 1, 3, 5)  # (B, g, g, C, p, p)
    return x.reshape(B, g * g, C, patch, patch)


def from_patches(patches: torch.Tensor) -> torch.Tensor:
    """(N, 3, p, p) row-major patches -> (3, S, S) image."""
    N, C, p, _ = patches.shape
    g = int(round(N**0.5))
    return patches.reshape(g, g, C, p, p).permute(2, 0, 3, 1, 4).reshape(C, g * p, g * p)


def nearest_patches(pred: torch.Tensor, gallery_feats: torch.Tensor, gallery_patches: torch.Tensor) -> torch.Tensor:
    """(T, D) predicted embeddings, (G, D) gallery embeddings, (G, 3, p, p) their patches -> (T, 3, p, p):
    each prediction's nearest (Euclidean) gallery patch."""
    nearest = torch.cdist(pred.float(), gallery_feats.float()).argmin(dim=1)  # (T,)
    return gallery_patches[nearest]


@torch.no_grad()
def gallery(run: Run, method: Any, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(every patch's target embedding (B*N, D), its pixels (B*N, 3, p, p)) of uint8 ``images``."""
    N = grid_size(run) ** 2
    idx = torch.arange(N).expand(images.shape[0], N)
    feats = method.targets(normalise(run, images), idx).float()  # (B, N, D)
    return feats.flatten(0, 1), to_patches(images, run.config.model.encoder.patch_size).flatten(0, 1)


@torch.no_grad()
def imagine(run: Run, count: int = 3, gallery_size: int = 256, use: str = "point") -> list[dict[str, Any]]:
    """For ``count`` figure images: their masks and the images of each panel (uint8 (3, S, S))."""
    if use not in ("point", "sample"):
        raise ConfigError(f"use={use!r}: choose point (the head's point estimate) or sample (one draw)")
    method, monitor = head_of(run)
    if not hasattr(method, "head_inputs"):
        raise ConfigError(f"{run.config.method.name} does not expose its masks (head_inputs): no imagination figure")
    images, _ = figure_images(run, count + gallery_size)
    shown, gal = images[:count], images[count:]
    g_feats, g_patches = gallery(run, method, gal)
    h, _, _, ctx_idx, tgt_idx = method.head_inputs(normalise(run, shown), mask_generator(run))
    if use == "point":
        pred = monitor.head.predict(h)
    else:
        gen = torch.Generator().manual_seed(stream_seed(run.config.train.seed, 0, 0, "figure-imagination"))
        pred = monitor.head.sample(h, 1, gen)[0]
    out = []
    for b in range(count):
        patches = to_patches(shown[b : b + 1], run.config.model.encoder.patch_size)[0]  # (N, 3, p, p)
        context = torch.full_like(patches, GREY)
        context[ctx_idx[b]] = patches[ctx_idx[b]]
        filled = nearest_patches(pred[b], g_feats, g_patches).unflatten(0, tgt_idx.shape[1:])  # (M, Nt, 3, p, p)
        blocks, together = [], context.clone()
        for m in range(tgt_idx.shape[1]):
            one = context.clone()
            one[tgt_idx[b, m]] = filled[m]
            together[tgt_idx[b, m]] = filled[m]
            blocks.append(from_patches(one))
        out.append({"original": shown[b], "context": from_patches(context), "blocks": blocks,
                    "all": from_patches(together), "tgt_idx": tgt_idx[b], "ctx_idx": ctx_idx[b]})
    return out


def plot_imagination(run: Run, count: int = 3, gallery_size: int = 256, use: str = "point") -> Any:
    """Rows: ``count`` validation images; columns: original, context, each block imagined, all blocks."""
    rows = imagine(run, count, gallery_size, use)
    M = len(rows[0]["blocks"])
    plt = pyplot()
    fig, axes = plt.subplots(count, M + 3, figsize=(1.8 * (M + 3), 1.9 * count), squeeze=False)
    for r, row in enumerate(rows):
        panels = [("original", row["original"]), ("context", row["context"])]
        panels += [(f"block {m + 1}", img) for m, img in enumerate(row["blocks"])] + [("all blocks", row["all"])]
        for ax, (title, img) in zip(axes[r], panels):
            ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
    fig.suptitle(f"{run_label(run)}: nearest-neighbour imagination ({use}; gallery {gallery_size} images)", fontsize=9)
    fig.tight_layout()
    return fig


FIGURES.register("imagination")(Figure(
    "imagination", "predicted target tokens shown as their nearest gallery patches", False, plot_imagination,
    Needs(head=True),
    caption="What the predictor imagines: each predicted target token shown as the validation patch whose "
            "embedding is nearest, beside the true patch.",
    order=60))
