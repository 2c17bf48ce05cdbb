"""Calibration of a predictor head: is p(y | h) as spread out as its errors?

A head's distribution is rated by proper scores and coverage on held-out
(h, y) pairs, from ``n`` draws ``samples`` (n, B, T, D), targets ``y``
(B, T, D) and the head's point estimate (B, T, D):

- central coverage: the fraction of target coordinates inside the empirical
  central p-interval [q_{(1-p)/2}, q_{(1+p)/2}] of the draws, for nominal
  levels p. A calibrated head covers p; an over-confident one less.
  With n draws the empirical interval is narrow: under linear interpolation
  its endpoints sit at the 0-based order-statistic positions q (n - 1), and
  E[F(X_(k))] = k / (n + 1) (1-based k), so a perfectly calibrated head
  covers about p (n - 1) / (n + 1) (0.969 p for n = 64; see
  ``finite_sample_coverage``).
- CRPS (Gneiting & Raftery 2007, eq. 21): E|X - y| - 1/2 E|X - X'| per
  coordinate, estimated without bias from the draws (``crps_samples``). The
  CRPS of the point estimate alone is |point - y|; a useful distribution
  scores below it.
- energy score (Gneiting & Raftery 2007, eq. 22 with beta = 1): the same with
  Euclidean norms over the D coordinates of a token.
- spread-error correlation: per token, does the predicted spread track the
  actual error of the point estimate? Pearson and Spearman over tokens.
- diversity: mean pairwise distance between draws of a token / sqrt(D)
  (0 for a point mass: the deterministic head).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from pjepa.errors import ConfigError
from pjepa.eval.head_metrics import sampling_seconds
from pjepa.heads import PredictorHead
from pjepa.heads.flow_matching import FlowMatchingHead

#: Nominal central-interval levels of the reliability curve.
LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
#: Elements of one chunk of per-token (n, n) distance matrices (64 MiB in fp32).
_PAIR_BUDGET = 1 << 24


def empirical_quantiles(sorted_samples: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(n, ...) draws sorted along dim 0, (Q,) probabilities -> (Q, ...) quantiles.

    Linear interpolation between order statistics at the 0-based position
    q (n - 1), as ``torch.quantile(..., interpolation="linear")``, which refuses
    inputs over 2^24 elements; one sort also serves every level.
    """
    n, device = sorted_samples.shape[0], sorted_samples.device
    pos = q.to(torch.float64).cpu() * (n - 1)
    lo = pos.floor().long().clamp(0, n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    frac = (pos - lo).to(device, sorted_samples.dtype).view(-1, *[1] * (sorted_samples.dim() - 1))
    low, high = sorted_samples[lo.to(device)], sorted_samples[hi.to(device)]  # (Q, ...)
    return low + frac * (high - low)


def finite_sample_coverage(levels: Sequence[float], n: int) -> list[float]:
    """Expected coverage p (n - 1) / (n + 1) of a calibrated head's central p-intervals from n draws.

    The target's rank among itself and the n draws is uniform, and the
    interpolated interval spans (n - 1) p of the n + 1 gaps on average; exact at
    integer positions, a close approximation between them.
    """
    return [p * (n - 1) / (n + 1) for p in levels]


def sort_draws(samples: torch.Tensor) -> torch.Tensor:
    """(n, ...) -> (n, ...) sorted along dim 0 (a view of a tensor sorted along its last, contiguous dim:
    about twice as fast on the CPU as sorting along the strided dim 0)."""
    return samples.movedim(0, -1).contiguous().sort(dim=-1).values.movedim(-1, 0)


def central_coverage(samples: torch.Tensor, y: torch.Tensor, levels: Sequence[float] = LEVELS,
                     presorted: bool = False) -> torch.Tensor:
    """(n, B, T, D) draws, (B, T, D) targets -> (L,) fraction of coordinates inside each central interval.

    For level p the interval is [q_{(1-p)/2}, q_{(1+p)/2}] of the n draws, per
    coordinate (``empirical_quantiles``). A point mass (all draws equal) covers
    only exact ties, i.e. about 0. ``presorted``: ``samples`` already went through ``sort_draws``.
    """
    sorted_samples = samples if presorted else sort_draws(samples)
    p = torch.tensor(list(levels), dtype=torch.float64)
    lower = empirical_quantiles(sorted_samples, (1 - p) / 2)  # (L, B, T, D)
    upper = empirical_quantiles(sorted_samples, (1 + p) / 2)
    inside = (y >= lower) & (y <= upper)
    return inside.flatten(1).float().mean(1)


def reliability(samples: torch.Tensor, y: torch.Tensor, levels: Sequence[float] = LEVELS) -> dict[str, list[float]]:
    """The reliability curve as lists: {"levels": nominal p, "coverage": empirical coverage}."""
    return {"levels": list(levels), "coverage": central_coverage(samples, y, levels).tolist()}


def crps_samples(samples: torch.Tensor, y: torch.Tensor, presorted: bool = False) -> torch.Tensor:
    """(n, B, T, D) draws, (B, T, D) targets -> (B, T, D) fair CRPS estimate per coordinate.

        CRPS_fair = 1/n sum_i |X_i - y| - 1 / (2 n (n-1)) sum_{i,j} |X_i - X_j|

    unbiased for E|X - y| - 1/2 E|X - X'| (Ferro 2014). The double sum is
    2 sum_{i<j} |x_(j) - x_(i)| = 2 sum_i x_(i) (2i - n - 1) over the sorted draws
    (1-based i): O(n log n) instead of O(n^2). For n = 1 it is |X - y|.
    ``presorted``: ``samples`` already went through ``sort_draws``.
    """
    n = samples.shape[0]
    abs_err = (samples - y).abs().mean(0)
    if n == 1:
        return abs_err
    sorted_samples = samples if presorted else sort_draws(samples)
    weights = (2 * torch.arange(1, n + 1, device=samples.device, dtype=samples.dtype) - n - 1)
    spread = (sorted_samples * weights.view(n, *[1] * (samples.dim() - 1))).sum(0) / (n * (n - 1))
    return abs_err - spread


def gaussian_crps(mu: torch.Tensor, sigma: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
    """Closed-form CRPS of N(mu, sigma^2) at y (Gneiting & Raftery 2007, eq. 5), elementwise:

        CRPS = sigma [ z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi) ],   z = (y - mu) / sigma.

    The reference the sample estimator is tested against.
    """
    sigma = torch.as_tensor(sigma, dtype=mu.dtype, device=mu.device)
    z = (y - mu) / sigma
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return sigma * (z * (2 * torch.special.ndtr(z) - 1) + 2 * pdf - 1 / math.sqrt(math.pi))


def _token_rows(samples: torch.Tensor) -> torch.Tensor:
    """(n, B, T, D) -> (B*T, n, D): the draws of each token as one row block."""
    n, B, T, D = samples.shape
    return samples.permute(1, 2, 0, 3).reshape(B * T, n, D)


def pairwise_mean_distance(samples: torch.Tensor) -> torch.Tensor:
    """(n, B, T, D) -> (B, T) mean Euclidean distance over ordered pairs i != j of a token's draws.

    Exact differences (no ||a||^2 + ||b||^2 - 2ab shortcut, whose rounding puts
    ~1e-2 on the zero diagonal); tokens in chunks of ``_PAIR_BUDGET`` distances.
    """
    n, B, T, _ = samples.shape
    if n < 2:
        return samples.new_zeros(B, T)
    rows = _token_rows(samples)
    chunk = max(1, _PAIR_BUDGET // (n * n))
    sums = [torch.cdist(part, part, compute_mode="donot_use_mm_for_euclid_dist").sum((1, 2))
            for part in rows.split(chunk)]
    return (torch.cat(sums) / (n * (n - 1))).view(B, T)


def energy_score(samples: torch.Tensor, y: torch.Tensor, pair_distance: torch.Tensor | None = None) -> torch.Tensor:
    """(n, B, T, D) draws, (B, T, D) targets -> (B, T) fair energy score per token:

        ES = 1/n sum_i ||X_i - y|| - 1 / (2 n (n-1)) sum_{i != j} ||X_i - X_j||.

    For n = 1 it is ||X - y||. ``pair_distance``: ``pairwise_mean_distance(samples)``
    where already computed (the O(n^2) part).
    """
    if pair_distance is None:
        pair_distance = pairwise_mean_distance(samples)
    return (samples - y).norm(dim=-1).mean(0) - 0.5 * pair_distance


def sample_diversity(samples: torch.Tensor) -> float:
    """Mean distance between distinct draws of a token / sqrt(D), averaged over tokens (0 for a point mass).

    For draws of N(mu, s^2 I) it tends to s sqrt(2) as D grows.
    """
    return (pairwise_mean_distance(samples) / math.sqrt(samples.shape[-1])).mean().item()


def spread_and_error(samples: torch.Tensor, point: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, B, T, D), (B, T, D), (B, T, D) -> predicted spread and actual error, each (B, T):

        spread = sqrt(mean_D Var_i X_i)   (unbiased variance over the draws; 0 for n = 1),
        error  = sqrt(mean_D (point - y)^2).
    """
    var = samples.var(dim=0) if samples.shape[0] > 1 else torch.zeros_like(y)
    return var.mean(-1).sqrt(), (point - y).pow(2).mean(-1).sqrt()


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two flat tensors, nan where either is constant."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denom = (a.pow(2).sum() * b.pow(2).sum()).sqrt()
    return (a * b).sum().item() / denom.item() if denom > 0 else float("nan")


def _ranks(a: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N of a flat tensor, ties sharing their average rank (as Spearman's rho needs)."""
    _, inverse, counts = torch.unique(a, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()  # the highest rank of each distinct value
    return (last - (counts.double() - 1) / 2)[inverse]


def correlations(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """{"pearson", "spearman"} between two equal-size tensors (flattened); nan where undefined."""
    a, b = a.flatten(), b.flatten()
    return {"pearson": _pearson(a, b), "spearman": _pearson(_ranks(a), _ranks(b))}


def spread_error_correlation(samples: torch.Tensor, point: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Pearson and Spearman correlation over tokens of ``spread_and_error``'s spread and error.

    nan when the spreads are constant (a point mass): JSON writers must turn it into null.
    """
    return correlations(*spread_and_error(samples, point, y))


def draw(head: PredictorHead, h: torch.Tensor, n: int, generator: torch.Generator,
         max_rows: int = 1 << 16) -> torch.Tensor:
    """(B, T, Dp) -> (n, B, T, D) fp32 draws, in groups of at most ``max_rows`` token rows per call."""
    per_call = max(1, max_rows // (h.shape[0] * h.shape[1]))
    parts = [head.sample(h, min(per_call, n - start), generator).float() for start in range(0, n, per_call)]
    return torch.cat(parts)


def _batch_sums(samples: torch.Tensor, point: torch.Tensor, y: torch.Tensor,
                levels: Sequence[float]) -> dict[str, torch.Tensor]:
    """One batch's totals (fp64, CPU): coverage and CRPS summed over coordinates, the rest over tokens."""
    pair = pairwise_mean_distance(samples)  # (B, T), shared by the energy score and the diversity
    ordered = sort_draws(samples)  # one sort for the quantiles and the CRPS
    sums = {
        "coverage": central_coverage(ordered, y, levels, presorted=True) * y.numel(),  # (L,)
        "crps": crps_samples(ordered, y, presorted=True).sum(),
        "point_crps": (point - y).abs().sum(),  # the CRPS of a point mass at the estimate
        "energy_score": energy_score(samples, y, pair).sum(),
        "point_energy_score": (point - y).norm(dim=-1).sum(),
        "diversity": pair.sum() / math.sqrt(y.shape[-1]),
    }
    return {k: v.double().cpu() for k, v in sums.items()}


def _nll(head: PredictorHead, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """-log p(y | h) / D in nats, averaged over every target token of ``pairs``."""
    total = sum(-head.log_prob(h, y.float()).double().sum().item() for h, y in pairs)
    count = sum(y.shape[0] * y.shape[1] * y.shape[2] for _, y in pairs)
    return total / count


def _summary(sums: dict[str, torch.Tensor], spreads: list[torch.Tensor], errors: list[torch.Tensor],
             coords: int, levels: Sequence[float], num_samples: int) -> dict[str, Any]:
    """Means of the batch totals, the calibration error and the pooled spread-error correlations."""
    tokens = sum(s.numel() for s in spreads)
    coverage = (sums["coverage"] / coords).tolist()
    corr = correlations(torch.cat(spreads), torch.cat(errors))
    return {
        "levels": list(levels), "coverage": coverage,
        "coverage_finite_n": finite_sample_coverage(levels, num_samples),
        "calibration_error": sum(abs(c - p) for c, p in zip(coverage, levels)) / len(levels),
        "crps": sums["crps"].item() / coords, "point_crps": sums["point_crps"].item() / coords,
        "energy_score": sums["energy_score"].item() / tokens,
        "point_energy_score": sums["point_energy_score"].item() / tokens,
        "spread_error_pearson": corr["pearson"], "spread_error_spearman": corr["spearman"],
        "diversity": sums["diversity"].item() / tokens,
        "sampled_tokens": tokens, "num_samples": num_samples,
    }


def _sampled_metrics(head: PredictorHead, pairs: list[tuple[torch.Tensor, torch.Tensor]],
                     generator: torch.Generator, num_samples: int, sample_tokens: int,
                     levels: Sequence[float]) -> dict[str, Any]:
    """The draw-based metrics over the first whole images of ``pairs`` holding ``sample_tokens`` tokens."""
    sums: dict[str, torch.Tensor] = {}
    spreads, errors, coords, tokens = [], [], 0, 0
    for h, y in pairs:
        if tokens >= sample_tokens:
            break
        rows = min(h.shape[0], -(-(sample_tokens - tokens) // h.shape[1]))  # whole images, just enough tokens
        h, y = h[:rows], y[:rows].float()
        samples, point = draw(head, h, num_samples, generator), head.predict(h).float()
        for k, v in _batch_sums(samples, point, y, levels).items():
            sums[k] = sums[k] + v if k in sums else v
        spread, error = spread_and_error(samples, point, y)
        spreads.append(spread.flatten().cpu())
        errors.append(error.flatten().cpu())
        coords, tokens = coords + y.numel(), tokens + spread.numel()
    if not tokens:
        raise ConfigError("calibration_metrics got no target tokens: pass (h, y) pairs of at least one image")
    return _summary(sums, spreads, errors, coords, levels, num_samples)


def calibration_metrics(
    head: PredictorHead,
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor]],
    generator: torch.Generator,
    num_samples: int = 64,
    sample_tokens: int = 2048,
    levels: Sequence[float] = LEVELS,
) -> dict[str, Any]:
    """Calibration of ``head`` on (h (B, T, Dp), y (B, T, D)) ``pairs``; see the module docstring.

    ``nll`` (-log p(y | h) / D, exact heads only) uses every pair; the sampled
    metrics the first whole images holding at least ``sample_tokens`` tokens,
    with ``num_samples`` fp32 draws per token from ``generator`` (on the pairs'
    device). Values may be nan (correlations of a point mass). The head's
    train/eval mode is restored.
    """
    if num_samples < 1 or sample_tokens < 1:
        raise ConfigError(f"num_samples={num_samples}, sample_tokens={sample_tokens}: both must be >= 1")
    was_training = head.training
    head.eval()
    try:
        with torch.no_grad():
            pairs = list(pairs)
            out: dict[str, Any] = {"nll": _nll(head, pairs)} if head.has_log_prob else {}
            out.update(_sampled_metrics(head, pairs, generator, num_samples, sample_tokens, levels))
    finally:
        head.train(was_training)
    return out


@contextmanager
def _attribute(obj: object, name: str, value: Any) -> Iterator[None]:
    """Set ``obj.name = value`` for the block, then restore it (even on error)."""
    before = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, before)


@torch.no_grad()
def sampling_times(head: PredictorHead, h: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
    """Seconds per 1,000 target tokens of one draw for (rows, T, Dp) conditions ``h``, by sampler setting.

    Diffusion heads (``sample_steps``): ``ddim50`` and ``ddim25`` (or
    ``dpmpp_2m50`` ..., after the head's ``sampler``) through sample's
    ``steps``; ODE heads: ``ode{k}`` at the configured ``ode_steps`` and half of
    it; any other head: ``default``.
    """
    per_1000 = 1000 / (h.shape[0] * h.shape[1])
    was_training = head.training
    head.eval()
    try:
        if hasattr(head, "sample_steps"):
            steps = [k for k in (50, 25) if k <= getattr(head, "T", k)]  # a schedule may have fewer steps
            name = getattr(head, "sampler", "ddim")
            return {f"{name}{k}": sampling_seconds(head, h, generator, steps=k) * per_1000 for k in steps}
        if isinstance(head, FlowMatchingHead):  # an ODE of head.ode_steps steps
            out = {}
            for k in dict.fromkeys((head.ode_steps, max(1, head.ode_steps // 2))):
                with _attribute(head, "ode_steps", k):
                    out[f"ode{k}"] = sampling_seconds(head, h, generator) * per_1000
            return out
        return {"default": sampling_seconds(head, h, generator) * per_1000}
    finally:
        head.train(was_training)
