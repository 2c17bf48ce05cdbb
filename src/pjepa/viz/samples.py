"""What a head's distribution looks like: many draws for one target token.

One row per run (deterministic head included: its draws are one point). Left: the draws
projected on their first two principal components as a hexbin, the teacher's target (red
star), the point estimate (black cross) and, for a mixture head, the component means
(white circles, area by weight). Right: a 3-D principal-component view. The projection is
fitted per run (draws, target and point together): feature spaces of different runs differ.
``plot_mdn_statistics``: histograms of a mixture head's weight entropy, weights and scales.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pjepa.errors import ConfigError
from pjepa.heads.base import mixture_entropy
from pjepa.heads.mdn import MixtureDensityHead
from pjepa.methods import capabilities
from pjepa.runs import Run
from pjepa.utils import stream_seed
from pjepa.viz.common import pyplot, run_label
from pjepa.viz.figures import FIGURES, Figure, Needs
from pjepa.viz.inputs import figure_images, mask_generator, normalise, run_method


@dataclass
class TokenDraws:
    """Draws (n, D), the teacher target (D,), the point estimate (D,), mixture means (K, D) and weights
    (K,) (None unless the head is a mixture) for one target token."""

    draws: torch.Tensor
    target: torch.Tensor
    point: torch.Tensor
    means: torch.Tensor | None = None
    weights: torch.Tensor | None = None


def head_of(run: Run, checkpoint: str = "last"):
    """(method, its predictor head) or a ConfigError for a method without one (MAE)."""
    method, _ = run_method(run, checkpoint)
    heads = method.monitors().heads
    if not heads:
        raise ConfigError(f"{run.path} ({run.config.method.name}) has no predictor head: this figure needs one")
    return method, next(iter(heads.values()))


@torch.no_grad()
def conditions(run: Run, images: torch.Tensor, checkpoint: str = "last") -> tuple[Any, torch.Tensor, torch.Tensor]:
    """(head, h (B, T, Dp), y (B, T, D)) of uint8 ``images`` under the figures' fixed masks."""
    _, monitor = head_of(run, checkpoint)
    h, y = monitor.conditions(normalise(run, images), mask_generator(run))
    return monitor.head, h.float(), y.float()


@torch.no_grad()
def token_draws(run: Run, n: int = 2000, token: int = 0, checkpoint: str = "last") -> TokenDraws:
    """``n`` draws of the head for target token ``token`` of the first figure image."""
    images, _ = figure_images(run, 1)
    head, h, y = conditions(run, images, checkpoint)
    h1 = h[:, token : token + 1]  # (1, 1, Dp)
    g = torch.Generator().manual_seed(stream_seed(run.config.train.seed, 0, 0, "figure-samples"))
    draws = head.sample(h1, n, g).float().reshape(n, -1)  # (n, D)
    out = TokenDraws(draws, y[0, token], head.predict(h1).float().reshape(-1))
    if isinstance(head, MixtureDensityHead):
        log_pi, mu, _ = head.params(h1)
        out.means, out.weights = mu.reshape(mu.shape[-2], -1), log_pi.exp().reshape(-1)
    return out


def pca_basis(points: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre (D,), basis (D, k)) of the top-k principal directions of ``points`` (N, D); zero columns
    where the points span fewer than k directions (a point mass)."""
    centre = points.mean(0)
    _, s, vh = torch.linalg.svd(points - centre, full_matrices=False)
    basis = torch.zeros(points.shape[1], k)
    r = min(k, vh.shape[0])
    basis[:, :r] = vh[:r].T * (s[:r] > 1e-4 * s.max().clamp_min(1e-12)).float()  # drop round-off directions
    return centre, basis


def plot_samples(runs: Sequence[Run], n: int = 2000, token: int = 0) -> Any:
    """One row per run with a head: 2-D hexbin + 3-D scatter of ``n`` draws for one target token."""
    runs = [r for r in runs if capabilities(r.config).has_head]
    if not runs:
        raise ConfigError("the samples figure needs runs with a predictor head (MAE and fine-tune runs have none)")
    plt = pyplot()
    fig = plt.figure(figsize=(9.0, 3.4 * len(runs)))
    for row, run in enumerate(runs):
        t = token_draws(run, n, token)
        centre, basis = pca_basis(torch.cat([t.draws, t.target[None], t.point[None]]), 3)
        d, tg, pt = (((x - centre) @ basis).numpy() for x in (t.draws, t.target[None], t.point[None]))  # (N, 3)
        ax = fig.add_subplot(len(runs), 2, 2 * row + 1)
        cells = ax.hexbin(d[:, 0], d[:, 1], gridsize=30, mincnt=1, cmap="viridis")
        fig.colorbar(cells, ax=ax, label="draws per cell", fraction=0.046, pad=0.02)
        ax.plot(tg[:, 0], tg[:, 1], "r*", ms=14, mec="white", label="target", zorder=5)
        ax.plot(pt[:, 0], pt[:, 1], "kx", ms=10, mew=2, label="point estimate", zorder=5)
        if t.means is not None and t.weights is not None:  # both, for a mixture head
            m = ((t.means - centre) @ basis).numpy()
            ax.scatter(m[:, 0], m[:, 1], s=40 + 400 * t.weights.numpy(), facecolors="none", edgecolors="white",
                       linewidths=1.5, label="component means")
        spread = t.draws.std(0).mean().item()
        ax.set_title(f"{run_label(run)}: {n} draws, spread {spread:.3f}", fontsize=9)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        # below the axes, so it never hides the target or the draws
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
        ax3 = fig.add_subplot(len(runs), 2, 2 * row + 2, projection="3d")
        sub = d[: min(n, 600)]
        ax3.scatter(sub[:, 0], sub[:, 1], sub[:, 2], s=3, alpha=0.4, label="draws")
        ax3.scatter(tg[:, 0], tg[:, 1], tg[:, 2], c="r", marker="*", s=120, label="target")
        ax3.scatter(pt[:, 0], pt[:, 1], pt[:, 2], c="k", marker="x", s=60, label="point estimate")
        ax3.set_xlabel("PC 1", fontsize=8)
        ax3.set_ylabel("PC 2", fontsize=8)
        ax3.set_zlabel("PC 3", fontsize=8)
        ax3.set_title(f"3-D view ({len(sub)} draws)", fontsize=9)
    fig.tight_layout()
    return fig


@torch.no_grad()
def plot_mdn_statistics(run: Run, images: int = 64) -> Any:
    """Histograms over the target tokens of ``images`` validation images: the entropy of the mixture
    weights (nats; log K = uniform), every weight, every scale sigma (log axis)."""
    batch, _ = figure_images(run, images)
    head, h, _ = conditions(run, batch)
    if not isinstance(head, MixtureDensityHead):
        raise ConfigError(f"{run.path} uses head {run.config.head.name!r}: the MDN statistics need head.name=mdn")
    log_pi, _, sigma = head.params(h)
    entropy = mixture_entropy(log_pi).flatten()
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.0))
    axes[0].hist(entropy.numpy(), bins=40)
    axes[0].axvline(float(torch.log(torch.tensor(float(head.K)))), color="k", ls="--", label="uniform (log K)")
    axes[0].set_title("weight entropy per token (nats)", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[1].hist(log_pi.exp().flatten().numpy(), bins=40, range=(0, 1))
    axes[1].set_title(f"mixture weights (K = {head.K})", fontsize=9)
    axes[2].hist(sigma.flatten().log10().numpy(), bins=60)
    axes[2].set_title("log10 sigma", fontsize=9)
    fig.suptitle(f"{run_label(run)}: {h.shape[0] * h.shape[1]} target tokens of {h.shape[0]} images", fontsize=9)
    fig.tight_layout()
    return fig


FIGURES.register("samples")(Figure(
    "samples", "2-D hexbin / 3-D PCA of many head draws for one target token, one row per run", True, plot_samples,
    Needs(head=True, text="a predictor head"),
    caption="2,000 draws of each head for one validation target token, projected on their top principal "
            "directions: density (left, colour = draws per cell) and a 3-D view (right), with the true "
            "target (red star) and the head's point estimate (black cross). A point mass is a deterministic "
            "head; spread along few directions is what a probabilistic head adds.",
    order=40))

FIGURES.register("mdn")(Figure(
    "mdn", "mixture head: weight entropy, weight and sigma histograms", False, plot_mdn_statistics,
    Needs(head_name="mdn"),
    caption="The mixture head over validation target tokens: entropy of its weights (log K = uniform), "
            "every weight, and every component scale: collapsed components show as weights near 0.",
    order=50))
