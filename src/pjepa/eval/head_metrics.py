"""Shared metrics of a predictor head on validation targets, the same for every head.

Training losses are not comparable across heads (an NLL, a noise MSE, a
smooth-L1); these are. Over (h, y) pairs of held-out images:

- ``nll``: -log p(y | h) / D, per dimension in nats, only where the head's
  likelihood is exact (``has_log_prob``); absent otherwise.
- ``point_mse`` / ``point_cos``: mean squared error per dimension and cosine of
  ``predict(h)`` against the target.
- ``sample_mse`` / ``sample_cos`` (on the first ``sample_tokens`` tokens): the same
  for one draw of ``sample``; a head
  that only reproduces its mean scores like it, a spread-out one worse.
- ``sample_spread``: std across ``num_samples`` draws per token and dimension,
  averaged (0 for the deterministic head: a point mass).
- ``sample_seconds_per_1000``: wall time of drawing one sample for 1,000
  target tokens (device-synchronised), the head's sampling cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from pjepa.data import Images, resize_normalize
from pjepa.heads import PredictorHead

#: (normalised images (B, 3, S, S), mask generator) -> (h (B, T, Dp), y (B, T, D))
ConditionFn = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def collect_pairs(
    conditions: ConditionFn,
    images: Images,
    image_size: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    seed: int,
    batch_size: int = 256,
    amp_dtype: torch.dtype | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(h, y) pairs of uint8 ``images`` (N, 3, H, W) under seeded masks (fp32, on ``device``)."""
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for start in range(0, images.shape[0], batch_size):
        x = resize_normalize(images[start : start + batch_size].to(device), image_size, mean.to(device), std.to(device))
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            h, y = conditions(x, gen)
        pairs.append((h.float(), y.float()))
    return pairs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def token_rows(pairs: list[tuple[torch.Tensor, torch.Tensor]], count: int) -> torch.Tensor:
    """The conditions of whole images from ``pairs`` until ``count`` tokens, cut to (1, count, Dp) rows.

    Rows keep their image grouping (heads may attend across one image's tokens):
    (b, T, Dp) images are stacked until b*T >= count, then trimmed.
    """
    hs, n = [], 0
    for h, _ in pairs:
        hs.append(h)
        n += h.shape[0] * h.shape[1]
        if n >= count:
            break
    h = torch.cat(hs)  # (b, T, Dp)
    rows = -(-count // h.shape[1])  # ceil
    if rows > h.shape[0]:  # not enough validation tokens: repeat images
        h = h.repeat(-(-rows // h.shape[0]), 1, 1)
    return h[:rows]


@torch.no_grad()
def sampling_seconds(
    head: PredictorHead, h: torch.Tensor, generator: torch.Generator, repeats: int = 2, **sample_kwargs: Any
) -> float:
    """Best of ``repeats`` timings of ``head.sample(h, 1, **sample_kwargs)`` (after one warm-up call).

    ``sample_kwargs`` are a head's own sampling options (the diffusion head's ``steps``).
    """
    head.sample(h[:1], 1, generator, **sample_kwargs)
    best = float("inf")
    for _ in range(repeats):
        _sync(h.device)
        t0 = time.perf_counter()
        head.sample(h, 1, generator, **sample_kwargs)
        _sync(h.device)
        best = min(best, time.perf_counter() - t0)
    return best


def _point_metrics(head: PredictorHead, h: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    point = head.predict(h).float()
    out = {"point_mse": F.mse_loss(point, y).item(), "point_cos": F.cosine_similarity(point, y, dim=-1).mean().item()}
    if head.has_log_prob:
        out["nll"] = (-head.log_prob(h, y).mean() / y.shape[-1]).item()
    return out


def _sample_metrics(head: PredictorHead, h: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator):
    draws = head.sample(h, n, gen).float()  # (n, B, T, D)
    return {
        "sample_mse": F.mse_loss(draws[0], y).item(),
        "sample_cos": F.cosine_similarity(draws[0], y, dim=-1).mean().item(),
        "sample_spread": draws.std(dim=0).mean().item() if n > 1 else 0.0,
    }


@torch.no_grad()
def head_metrics(
    head: PredictorHead,
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor]],
    generator: torch.Generator,
    num_samples: int = 8,
    sample_tokens: int = 4096,
    time_tokens: int = 1000,
) -> dict[str, float]:
    """Average the metrics above over ``pairs`` of (h (B, T, Dp), y (B, T, D)), weighted by tokens.

    Point metrics and NLL use every pair; the sample metrics the first pairs
    holding at least ``sample_tokens`` tokens (iterative samplers cost
    num_samples x steps passes per token). ``generator`` lives on the pairs'
    device and drives every draw, so the numbers are reproducible.
    """
    was_training = head.training
    head.eval()
    pairs = list(pairs)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for h, y in pairs:
        y = y.float()
        n_tok = y.shape[0] * y.shape[1]
        batch = _point_metrics(head, h, y)
        for k, v in batch.items():
            sums[k] = sums.get(k, 0.0) + v * n_tok
            counts[k] = counts.get(k, 0) + n_tok
        left = sample_tokens - counts.get("sample_mse", 0)
        if left > 0:
            rows = min(h.shape[0], -(-left // h.shape[1]))  # whole images, just enough tokens
            for k, v in _sample_metrics(head, h[:rows], y[:rows], num_samples, generator).items():
                sums[k] = sums.get(k, 0.0) + v * rows * h.shape[1]
                counts[k] = counts.get(k, 0) + rows * h.shape[1]
    out = {k: v / counts[k] for k, v in sums.items()}
    if pairs:
        h_time = token_rows(pairs, time_tokens)  # (rows, T, Dp), rows * T >= time_tokens
        seconds = sampling_seconds(head, h_time, generator)
        out["sample_seconds_per_1000"] = seconds * 1000 / (h_time.shape[0] * h_time.shape[1])
    out["tokens"] = float(counts.get("point_mse", 0))
    out["sampled_tokens"] = float(counts.get("sample_mse", 0))
    head.train(was_training)
    return out
