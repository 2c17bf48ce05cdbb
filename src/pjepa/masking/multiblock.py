"""I-JEPA multi-block masking: one large context block, M target blocks.

Per batch (one draw from the generator) the sampler picks one target block size
``(h, w)``, shared by all samples and all M blocks, and one context block size.
Per sample, vectorised over the batch, it places the blocks with top-left
corners uniform over *all* valid positions (row in ``[0, H - h]``, col in
``[0, W - w]``, both inclusive, so the last row and column are reachable), and
the context is the context block minus the union of the sample's targets.

Batches need one context length. Cutting every sample to the batch minimum
wastes most of the context (about 10 of 64 patches on an 8x8 grid with batch
256), so the sampler draws ``num_candidates`` target layouts per sample and
picks, per sample, the first one whose context count reaches a threshold (see
``MultiBlockMaskSampler._choose``); then every sample keeps a random subset of
``Nc = min`` count context patches.

All randomness comes from the generator passed to ``__call__``: the same seed
gives the same ``MaskBatch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from pjepa.errors import ConfigError
from pjepa.masking.registry import MASKS

Size = tuple[int, int]  # (rows, cols)


@dataclass
class MaskBatch:
    """Patch indices of one batch of masks (row-major patch index r * W + c).

    Attributes:
        ctx_idx: (B, Nc) long, sorted ascending per row, in [0, H*W).
        tgt_idx: (B, M, Nt) long: M target blocks of Nt patches each, row-major
            inside each block.
        stats: float statistics of the draw (see ``MultiBlockMaskSampler``).
    """

    ctx_idx: torch.Tensor
    tgt_idx: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def tgt_idx_flat(self) -> torch.Tensor:
        """(B, M*Nt): the target blocks one after another."""
        return self.tgt_idx.reshape(self.tgt_idx.shape[0], -1)

    @property
    def num_blocks(self) -> int:
        """M, the number of target blocks per sample."""
        return int(self.tgt_idx.shape[1])

    def to(self, device: torch.device | str) -> MaskBatch:
        """A copy with both index tensors on ``device`` (stats shared)."""
        return MaskBatch(self.ctx_idx.to(device), self.tgt_idx.to(device), self.stats)


# ---------------------------------------------------------------- block geometry


#: Block-size rules: this project's, and the official I-JEPA sampler's (``_sample_block_size``).
SIZE_RULES = ("pjepa", "official")


def block_size(scale: float, aspect: float, grid: Size, rule: str = "pjepa") -> Size:
    """Block (h, w) of area ``scale * H * W`` and aspect ratio ``h / w = aspect``.

    ``pjepa``: ``h = round(sqrt(area * aspect))``, ``w = round(sqrt(area / aspect))``
    (round half up), clamped to ``[1, H]`` and ``[1, W]``.
    ``official`` (facebookresearch/ijepa, ``src/masks/multiblock.py``): the area
    truncated to an integer first (``int(H * W * scale)``), Python's round (half
    to even), then h and w lowered until ``h < H`` and ``w < W``, so no block
    spans the whole grid (a 1.0-scale context block is 7 x 7 on 8 x 8); floored at 1.
    The official sampler also draws scale and aspect from *one* uniform (so the
    largest blocks are the tallest); ``MultiBlockMaskSampler(size_rule="official")``
    does the same. On a 14 x 14 grid with the default target ranges 2.6 % of
    target blocks then exceed the maximum area (0.2 x 196), against 9.7 % here.
    """
    rows, cols = grid
    if rule == "official":
        area = int(rows * cols * scale)
        h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        return max(min(h, rows - 1), 1), max(min(w, cols - 1), 1)
    exact = scale * rows * cols  # not truncated to whole patches, unlike the official rule above
    h = int(math.floor(math.sqrt(exact * aspect) + 0.5))
    w = int(math.floor(math.sqrt(exact / aspect) + 0.5))
    return min(max(h, 1), rows), min(max(w, 1), cols)


def reachable_block_sizes(
    scale: tuple[float, float], aspect: tuple[float, float], grid: Size, steps: int = 65, rule: str = "pjepa"
) -> set[Size]:
    """The block sizes ``block_size`` gives on a fine grid of scales x aspects."""
    def points(lo: float, hi: float) -> list[float]:
        return [lo + (hi - lo) * i / (steps - 1) for i in range(steps)]

    return {block_size(s, a, grid, rule) for s in points(*scale) for a in points(*aspect)}


def block_masks(top: torch.Tensor, left: torch.Tensor, size: Size, grid: Size) -> torch.Tensor:
    """Boolean masks of blocks of ``size`` at corners ``top``/``left`` (any shape S).

    Returns:
        (*S, H*W) bool, True inside the block.
    """
    rows, cols = grid
    r = torch.arange(rows, device=top.device)  # (H,)
    c = torch.arange(cols, device=top.device)  # (W,)
    in_rows = (r >= top[..., None]) & (r < top[..., None] + size[0])  # (*S, H)
    in_cols = (c >= left[..., None]) & (c < left[..., None] + size[1])  # (*S, W)
    return (in_rows[..., :, None] & in_cols[..., None, :]).flatten(-2)  # (*S, H*W)


def block_indices(top: torch.Tensor, left: torch.Tensor, size: Size, grid: Size) -> torch.Tensor:
    """Row-major patch indices of blocks of ``size`` at corners ``top``/``left``.

    Returns:
        (*S, h*w) long.
    """
    dr = torch.arange(size[0], device=top.device).repeat_interleave(size[1])  # (h*w,)
    dc = torch.arange(size[1], device=top.device).repeat(size[0])  # (h*w,)
    return (top[..., None] + dr) * grid[1] + left[..., None] + dc  # (*S, h*w)


def keep_random_subset(mask: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random subset of ``k`` True positions per row, sorted ascending.

    Args:
        mask: (B, N) bool; every row needs at least ``k`` True entries.

    Returns:
        (B, k) long.
    """
    short = int(mask.sum(1).min()) if mask.shape[0] else k
    if short < k:
        raise ValueError(f"keep_random_subset: a row has {short} True entries, fewer than k={k}")
    noise = torch.rand(mask.shape, generator=generator, device=generator.device)  # (B, N)
    noise = noise.masked_fill(~mask, 2.0)  # excluded positions sort last
    keep = noise.argsort(dim=1, stable=True)[:, :k]  # (B, k)
    return keep.sort(dim=1).values


# ---------------------------------------------------------------- validation


def _grid(grid_size: int | tuple[int, int]) -> Size:
    """``grid_size`` as (H, W), both positive ints."""
    pair = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                 for v in pair):
        raise ConfigError(f"grid_size must be a positive int or (rows, cols), got {grid_size!r}")
    return int(pair[0]), int(pair[1])


def _range(name: str, value: tuple[float, float], low: float, high: float) -> tuple[float, float]:
    """``value`` as a (min, max) pair with ``low < min <= max <= high``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a (min, max) pair of numbers, got {value!r}") from None
    if not (low < lo <= hi <= high):
        raise ConfigError(
            f"{name} must satisfy {low} < min <= max <= {high}, got {value!r}"
        )
    return lo, hi


def _int(name: str, value: int, low: int) -> int:
    """``value`` as an int >= ``low``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
    return value


# ---------------------------------------------------------------- the sampler


@MASKS.register("multiblock")
class MultiBlockMaskSampler:
    """I-JEPA multi-block mask sampler over an ``H x W`` patch grid.

    Args:
        grid_size: patches per side, or (rows, cols).
        num_targets: M, target blocks per sample.
        target_scale: (min, max) target block area as a fraction of H*W.
        target_aspect: (min, max) target aspect ratio h / w.
        context_scale: (min, max) context block area as a fraction of H*W.
        context_aspect: (min, max) context aspect ratio h / w.
        min_context: fewest context patches a sample may have.
        num_candidates: target layouts drawn per sample to equalise context counts.
        equalise_quantile: quantile of all candidates' context counts used as the
            threshold a sample's first acceptable candidate must reach.
        max_redraws: batch-wide redraws for samples with no candidate reaching
            ``min_context`` before giving up with an error.
        size_rule: how block sizes are drawn: ``pjepa`` (default; scale and aspect
            independent) or ``official`` (the official sampler's; see ``block_size``).
            Corners stay uniform over all valid positions under both rules.
        sets_per_image: K, independent mask sets drawn per image. ``__call__(B)``
            returns B*K rows, image-major (rows i*K .. i*K+K-1 belong to image i), so a
            method can run its target encoder once per image and share it across the
            image's K sets: more prediction signal per target pass.

    ``__call__`` returns a ``MaskBatch`` whose ``stats`` hold: ``num_context``
    (Nc), ``num_target`` (M*Nt), ``target_block_h``/``_w``,
    ``context_block_h``/``_w``, ``context_before_equalise_min``/``_mean``/``_max``
    (chosen candidates' context counts), ``context_naive_min`` (batch minimum
    of first candidates' counts: what the naive cut would keep),
    ``equalise_threshold``, ``resampled_fraction`` (samples that did not take
    their first candidate) and ``redrawn_fraction`` (samples redrawn because no
    candidate reached ``min_context``).
    """

    def __init__(
        self,
        grid_size: int | tuple[int, int],
        num_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        context_aspect: tuple[float, float] = (1.0, 1.0),
        min_context: int = 8,
        num_candidates: int = 4,
        equalise_quantile: float = 0.25,
        max_redraws: int = 20,
        size_rule: str = "pjepa",
        sets_per_image: int = 1,
    ) -> None:
        self.grid = _grid(grid_size)
        if size_rule not in SIZE_RULES:
            raise ConfigError(f"size_rule must be one of {', '.join(SIZE_RULES)}, got {size_rule!r}")
        self.size_rule = size_rule
        self.num_targets = _int("num_targets", num_targets, 1)
        self.target_scale = _range("target_scale", target_scale, 0.0, 1.0)
        self.target_aspect = _range("target_aspect", target_aspect, 0.0, math.inf)
        self.context_scale = _range("context_scale", context_scale, 0.0, 1.0)
        self.context_aspect = _range("context_aspect", context_aspect, 0.0, math.inf)
        self.min_context = _int("min_context", min_context, 1)
        self.num_candidates = _int("num_candidates", num_candidates, 1)
        self.max_redraws = _int("max_redraws", max_redraws, 0)
        self.sets_per_image = _int("sets_per_image", sets_per_image, 1)
        if isinstance(equalise_quantile, bool) or not isinstance(equalise_quantile, (int, float)) \
                or not 0.0 <= equalise_quantile <= 1.0:
            raise ConfigError(f"equalise_quantile must be in [0, 1], got {equalise_quantile!r}")
        self.equalise_quantile = float(equalise_quantile)
        self._check_feasible()

    @property
    def num_patches(self) -> int:
        """H * W."""
        return self.grid[0] * self.grid[1]

    def _check_feasible(self) -> None:
        """ConfigError if some reachable block sizes can never leave ``min_context``.

        Best case for a pair of sizes: all targets stacked on one spot, in the
        grid corner opposite the context block.
        """
        rows, cols = self.grid
        ctx_sizes = reachable_block_sizes(self.context_scale, self.context_aspect, self.grid, rule=self.size_rule)
        tgt_sizes = reachable_block_sizes(self.target_scale, self.target_aspect, self.grid, rule=self.size_rule)
        for ch, cw in sorted(ctx_sizes):
            for th, tw in sorted(tgt_sizes):
                overlap = max(0, th + ch - rows) * max(0, tw + cw - cols)
                if ch * cw - overlap < self.min_context:
                    raise ConfigError(
                        f"min_context={self.min_context} does not fit a {rows}x{cols} grid: a "
                        f"{ch}x{cw} context block (context_scale={self.context_scale}) minus "
                        f"{th}x{tw} target blocks (target_scale={self.target_scale}) leaves at "
                        f"most {ch * cw - overlap} patches; lower min_context or target_scale, "
                        f"or raise context_scale"
                    )

    def _sample_sizes(self, generator: torch.Generator) -> tuple[Size, Size]:
        """One (target size, context size) pair for the whole batch."""
        u = torch.rand(4, generator=generator, device=generator.device).tolist()
        if self.size_rule == "official":  # one uniform per block for scale *and* aspect, as the official code
            u[1], u[3] = u[0], u[2]
        (ts0, ts1), (ta0, ta1) = self.target_scale, self.target_aspect
        (cs0, cs1), (ca0, ca1) = self.context_scale, self.context_aspect
        tgt = block_size(ts0 + u[0] * (ts1 - ts0), ta0 + u[1] * (ta1 - ta0), self.grid, self.size_rule)
        ctx = block_size(cs0 + u[2] * (cs1 - cs0), ca0 + u[3] * (ca1 - ca0), self.grid, self.size_rule)
        return tgt, ctx

    def _corners(self, shape: tuple[int, ...], size: Size, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-left corners uniform over all valid positions: (top, left), each ``shape``."""
        dev = generator.device
        top = torch.randint(0, self.grid[0] - size[0] + 1, shape, generator=generator, device=dev)
        left = torch.randint(0, self.grid[1] - size[1] + 1, shape, generator=generator, device=dev)
        return top, left

    def _draw(self, batch_size: int, tgt: Size, ctx: Size, generator: torch.Generator
              ) -> dict[str, torch.Tensor]:
        """One context block and ``num_candidates`` target layouts per sample.

        Returns tensors: ``ctx_block`` (B, N) bool, ``top``/``left`` (B, C, M)
        target corners, ``counts`` (B, C) context counts per candidate.
        """
        c_top, c_left = self._corners((batch_size,), ctx, generator)  # (B,)
        ctx_block = block_masks(c_top, c_left, ctx, self.grid)  # (B, N)
        shape = (batch_size, self.num_candidates, self.num_targets)
        top, left = self._corners(shape, tgt, generator)  # (B, C, M)
        union = block_masks(top, left, tgt, self.grid).any(dim=2)  # (B, C, N)
        counts = (ctx_block[:, None, :] & ~union).sum(dim=-1)  # (B, C)
        return {"ctx_block": ctx_block, "top": top, "left": left, "counts": counts}

    def _redraw_short(self, draw: dict[str, torch.Tensor], tgt: Size, ctx: Size,
                      generator: torch.Generator) -> float:
        """Redraw, in place, samples whose best candidate is below ``min_context``.

        Returns the fraction of samples redrawn at least once.
        """
        batch_size = draw["counts"].shape[0]
        redrawn = torch.zeros(batch_size, dtype=torch.bool, device=draw["counts"].device)
        for _ in range(self.max_redraws + 1):
            short = draw["counts"].max(dim=1).values < self.min_context  # (B,)
            if not bool(short.any()):
                return float(redrawn.float().mean())
            redrawn |= short
            fresh = self._draw(batch_size, tgt, ctx, generator)
            for key, value in fresh.items():
                pick = short.view(-1, *([1] * (value.dim() - 1)))
                draw[key] = torch.where(pick, value, draw[key])
        raise ConfigError(
            f"MultiBlockMaskSampler: after {self.max_redraws} redraws some samples still have "
            f"fewer than min_context={self.min_context} context patches ({tgt[0]}x{tgt[1]} "
            f"targets x {self.num_targets}, {ctx[0]}x{ctx[1]} context block on a "
            f"{self.grid[0]}x{self.grid[1]} grid); lower min_context or target_scale, or "
            f"raise max_redraws"
        )

    def _choose(self, counts: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Pick one candidate per sample. Returns (chosen (B,) long, threshold).

        Threshold: the ``equalise_quantile`` of all candidates' counts, clipped
        below by ``min_context`` and above by ``min_b max_c counts`` (every
        sample can reach that, and the batch can never keep more, so a higher
        threshold would only bias more samples away from their first candidate).
        A sample takes its first candidate reaching the threshold; one exists.
        """
        q = torch.quantile(counts.flatten().double(), self.equalise_quantile,
                           interpolation="lower")
        reachable = int(counts.max(dim=1).values.min())
        threshold = min(max(int(q), self.min_context), reachable)
        ok = counts >= threshold  # (B, C); each row has a True
        return ok.int().argmax(dim=1), threshold  # argmax: first maximum

    def sample_layouts(self, batch_size: int, generator: torch.Generator
                       ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Everything but the context equalisation.

        Returns:
            ctx_mask: (B, H*W) bool, each sample's full context (before equalising).
            tgt_idx: (B, M, Nt) long target blocks.
            stats: as ``MaskBatch.stats`` except ``num_context``.
        """
        _int("batch_size", batch_size, 1)
        tgt, ctx = self._sample_sizes(generator)
        draw = self._draw(batch_size, tgt, ctx, generator)
        redrawn_fraction = self._redraw_short(draw, tgt, ctx, generator)
        chosen, threshold = self._choose(draw["counts"])  # (B,)
        rows = torch.arange(batch_size, device=chosen.device)
        top, left = draw["top"][rows, chosen], draw["left"][rows, chosen]  # (B, M)
        union = block_masks(top, left, tgt, self.grid).any(dim=1)  # (B, N)
        ctx_mask = draw["ctx_block"] & ~union  # (B, N)
        counts = draw["counts"][rows, chosen].double()  # (B,)
        stats = {
            "num_target": float(self.num_targets * tgt[0] * tgt[1]),
            "target_block_h": float(tgt[0]), "target_block_w": float(tgt[1]),
            "context_block_h": float(ctx[0]), "context_block_w": float(ctx[1]),
            "context_before_equalise_min": float(counts.min()),
            "context_before_equalise_mean": float(counts.mean()),
            "context_before_equalise_max": float(counts.max()),
            "context_naive_min": float(draw["counts"][:, 0].min()),
            "equalise_threshold": float(threshold),
            "resampled_fraction": float((chosen != 0).double().mean()),
            "redrawn_fraction": redrawn_fraction,
        }
        return ctx_mask, block_indices(top, left, tgt, self.grid), stats

    def __call__(self, batch_size: int, generator: torch.Generator) -> MaskBatch:
        """Sample masks for ``batch_size`` images from ``generator`` (on its device): batch_size *
        sets_per_image rows, image-major."""
        ctx_mask, tgt_idx, stats = self.sample_layouts(batch_size * self.sets_per_image, generator)
        num_context = int(ctx_mask.sum(dim=1).min())
        ctx_idx = keep_random_subset(ctx_mask, num_context, generator)  # (B, Nc)
        stats["num_context"] = float(num_context)
        return MaskBatch(ctx_idx=ctx_idx, tgt_idx=tgt_idx, stats=stats)

    def __repr__(self) -> str:
        return (f"MultiBlockMaskSampler(grid={self.grid}, num_targets={self.num_targets}, "
                f"target_scale={self.target_scale}, target_aspect={self.target_aspect}, "
                f"context_scale={self.context_scale}, context_aspect={self.context_aspect}, "
                f"min_context={self.min_context}, num_candidates={self.num_candidates}, "
                f"equalise_quantile={self.equalise_quantile}, size_rule={self.size_rule!r}, "
                f"sets_per_image={self.sets_per_image})")
