"""The mask layout on a real image of the run's dataset, drawn from the run's own sampler.

Panels: the image; the context (every other patch dimmed); each target block (highlighted in
its colour); all of them on one map where grey patches are excluded (neither context nor
target: the multi-block sampler drops them to equalise context sizes, or they lie outside
every block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pjepa.runs import Run
from pjepa.viz.common import color, pyplot
from pjepa.viz.figures import FIGURES, Figure
from pjepa.viz.inputs import draw_masks, figure_images, grid_size


@dataclass
class MaskLayout:
    """One image's masks as patch grids: context (G, G) bool, targets (M, G, G) bool."""

    image: torch.Tensor  # (3, S, S) uint8
    context: torch.Tensor
    targets: torch.Tensor

    @property
    def excluded(self) -> torch.Tensor:
        return ~(self.context | self.targets.any(0))


def layout_of(ctx_idx: torch.Tensor, tgt_idx: torch.Tensor, grid: int, image: torch.Tensor) -> MaskLayout:
    """(Nc,), (M, Nt) row-major patch indices of one image -> its ``MaskLayout``."""
    context = torch.zeros(grid * grid, dtype=torch.bool)
    context[ctx_idx] = True
    targets = torch.zeros(tgt_idx.shape[0], grid * grid, dtype=torch.bool)
    for m, idx in enumerate(tgt_idx):
        targets[m, idx] = True
    return MaskLayout(image, context.view(grid, grid), targets.view(-1, grid, grid))


def _rgba(mask: torch.Tensor, hex_color: str, alpha: float, patch: int) -> torch.Tensor:
    """(G, G) bool -> (S, S, 4) float overlay: ``hex_color`` at ``alpha`` where ``mask``, clear elsewhere."""
    rgb = torch.tensor([int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    up = mask.repeat_interleave(patch, 0).repeat_interleave(patch, 1).float()  # (S, S)
    out = torch.zeros(*up.shape, 4)
    out[..., :3] = rgb
    out[..., 3] = up * alpha
    return out


def plot_mask_layout(run: Run, index: int = 0) -> tuple[Any, MaskLayout]:
    """(figure, the layout drawn) for validation image ``index`` of the figure subset, masked as item
    ``index`` of a training-sized batch."""
    images, _ = figure_images(run, index + 1)
    # A batch of the run's own size: the sampler cuts every context to the batch minimum, and the patches
    # that cut drops are part of what training saw ("excluded").
    masks = draw_masks(run, max(index + 1, run.config.optim.batch_size))
    grid = grid_size(run)
    patch = run.config.model.encoder.patch_size
    layout = layout_of(masks.ctx_idx[index], masks.tgt_idx[index], grid, images[index])
    M = layout.targets.shape[0]
    plt = pyplot()
    fig, axes = plt.subplots(1, M + 3, figsize=(2.2 * (M + 3), 2.6))
    img = layout.image.permute(1, 2, 0).numpy()
    panels = [("image", None), ("context", None)] + [(f"target {m + 1}", m) for m in range(M)]
    panels.append(("all (blue context, grey excluded)", None))
    for ax, (title, m) in zip(axes, panels):
        ax.imshow(img, interpolation="nearest")
        if title == "context":
            ax.imshow(_rgba(~layout.context, "#000000", 0.75, patch).numpy(), interpolation="nearest")
        elif m is not None:
            ax.imshow(_rgba(layout.targets[m], color(m + 1), 0.65, patch).numpy(), interpolation="nearest")
        elif title.startswith("all"):
            ax.imshow(_rgba(layout.context, color(0), 0.45, patch).numpy(), interpolation="nearest")
            for k in range(M):
                ax.imshow(_rgba(layout.targets[k], color(k + 1), 0.55, patch).numpy(), interpolation="nearest")
            ax.imshow(_rgba(layout.excluded, "#7f7f7f", 0.85, patch).numpy(), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    n_ctx, n_tgt = int(layout.context.sum()), int(layout.targets.any(0).sum())
    fig.suptitle(f"{run.name}: {run.config.mask.name} masks on a {grid}x{grid} grid: {n_ctx} context, "
                 f"{n_tgt} target, {int(layout.excluded.sum())} excluded patches", fontsize=9)
    return fig, layout


FIGURES.register("masks")(Figure(
    "masks", "the run's mask sampler on a validation image: context, targets, excluded", False,
    lambda run: plot_mask_layout(run)[0],
    caption="One draw of the run's mask sampler on a validation image: the context patches the encoder "
            "sees, the target blocks it predicts, and the patches neither uses.",
    order=30))
