"""Sample-quality metrics on feature tensors: Frechet distance, Inception-style score, k-NN precision / recall,
class-histogram distance and memorisation.

Every function takes ``(N, F)`` features (or ``(N, C)`` logits, or ``(N,)`` labels) of some feature network
and returns plain numbers or tensors; which network made the features is the caller's to record (GUIDE
section 4: without the standard Inception weights the numbers are "FD on <network> features", not FID).
Statistics and distances are computed in float64: a covariance of 2048-d features summed in float32 loses
the small eigenvalues that the matrix square root of the Frechet distance depends on.

Pairwise distances are chunked over queries, so at most ``chunk x M`` float64 distances exist at a time
(``chunk=1024``, ``M=10,000``: 82 MB), plus the float64 copies of the two inputs.

References:
    Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium"
        (NeurIPS 2017): the Frechet Inception Distance.
    Salimans et al., "Improved Techniques for Training GANs" (NeurIPS 2016): the Inception Score.
    Kynkaanniemi et al., "Improved Precision and Recall Metric for Assessing Generative Models"
        (NeurIPS 2019): k-NN manifolds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pjepa.errors import ConfigError

DEFAULT_CHUNK = 1024


def _features(name: str, x: torch.Tensor, min_rows: int = 1) -> torch.Tensor:
    """``x`` as a finite float64 ``(N, F)`` tensor, or a ConfigError naming ``name``."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(f"{name} has shape {shape}; pass a 2-D (N, F) tensor of features")
    if x.shape[0] < min_rows or x.shape[1] == 0:
        raise ConfigError(f"{name} has shape {tuple(x.shape)}; need at least {min_rows} rows and 1 column")
    x = x.detach().to(torch.float64)
    if not torch.isfinite(x).all():
        raise ConfigError(f"{name} contains NaN or inf; check the feature network's outputs")
    return x


def _same_width(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ConfigError(
            f"{name_a} has {a.shape[1]} features but {name_b} has {b.shape[1]}; "
            "compute both with the same feature network and layer"
        )


# ---------------------------------------------------------------------------------------------------------
# Frechet distance


def gaussian_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``mu`` (F,) and unbiased covariance ``sigma`` (F, F) of ``feats`` (N, F), in float64.

    ``sigma = (X - mu)^T (X - mu) / (N - 1)`` as ``numpy.cov(rowvar=False)`` in pytorch-fid; N >= 2.
    """
    x = _features("feats", feats, min_rows=2)
    mu = x.mean(dim=0)
    xc = x - mu
    sigma = xc.T @ xc / (x.shape[0] - 1)
    return mu, sigma


def _check_stats(name: str, mu: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ConfigError(
            f"{name}: mean of shape {tuple(mu.shape)} and covariance of shape {tuple(sigma.shape)} do not fit; "
            "pass mu (F,) and sigma (F, F) as returned by gaussian_stats"
        )
    return mu.to(torch.float64), sigma.to(torch.float64)


def _sqrtm_psd(s: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix via ``eigh``, tiny negative eigenvalues set to 0."""
    s = 0.5 * (s + s.T)  # exact symmetry, so eigh's real spectrum is the right one
    evals, evecs = torch.linalg.eigh(s)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def frechet_distance_from_stats(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor,
                                sigma2: torch.Tensor) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6)::

        FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2})

    Numerical care: the reference implementations take ``scipy.linalg.sqrtm(S1 @ S2)`` of a non-symmetric
    product, which can turn complex or fail on singular covariances (they then add ``eps * I``). Here
    ``S1^{1/2} S2 S1^{1/2}`` is symmetric PSD and similar to ``S1 S2`` (same eigenvalues, so the same trace
    of the square root), so both square roots come from ``torch.linalg.eigh`` in float64; eigenvalues that
    rounding pushed below zero (of order ``1e-16 * ||S||``) are clamped to 0, which also makes rank-deficient
    covariances (N <= F) safe. The result is clamped at 0 for the same reason (FD of identical sets ~ 1e-12
    relative to tr(S)).
    """
    mu1, s1 = _check_stats("first", mu1, sigma1)
    mu2, s2 = _check_stats("second", mu2, sigma2)
    if mu1.shape != mu2.shape:
        raise ConfigError(
            f"the two feature sets have {mu1.shape[0]} and {mu2.shape[0]} dimensions; "
            "compute both with the same feature network and layer"
        )
    root1 = _sqrtm_psd(s1)
    middle = root1 @ s2 @ root1
    middle = 0.5 * (middle + middle.T)
    tr_covmean = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    fd = diff @ diff + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_covmean
    return max(float(fd), 0.0)


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to ``feats_a`` (N, F) and ``feats_b`` (M, F); see
    ``frechet_distance_from_stats``. Called FID only when the features are the standard FID Inception's pool."""
    a = _features("feats_a", feats_a, min_rows=2)
    b = _features("feats_b", feats_b, min_rows=2)
    _same_width("feats_a", a, "feats_b", b)
    return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b))


# ---------------------------------------------------------------------------------------------------------
# Inception-style score


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception-style score of ``logits`` (N, C): mean and standard deviation over ``splits`` of

        IS = exp( E_x KL( p(y|x) || p(y) ) ),   p(y) = mean over the split of p(y|x)

    (Salimans et al. 2016, section 4). "Inception-style" because any classifier's logits can be scored; the
    number depends on that classifier and is comparable only across runs that use the same one. The N rows
    are cut into ``splits`` contiguous parts of near-equal size (``numpy.array_split``, as the original code),
    the std is the population std (ddof=0), as the original. Computed from ``log_softmax`` in float64, so
    zero probabilities contribute 0, never NaN. IS lies in [1, C].
    """
    x = _features("logits", logits)
    n = x.shape[0]
    if not 1 <= splits <= n:
        raise ConfigError(f"splits={splits} with {n} samples; choose 1 <= splits <= N (10 is the convention)")
    log_p = torch.log_softmax(x, dim=1)  # (N, C)
    scores = []
    for part in torch.tensor_split(log_p, splits, dim=0):
        log_py = torch.logsumexp(part, dim=0) - math.log(part.shape[0])  # (C,) log of the marginal
        kl = (part.exp() * (part - log_py)).sum(dim=1)  # (n_split,)
        scores.append(kl.mean().exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False))


# ---------------------------------------------------------------------------------------------------------
# Distances, k-NN precision / recall, memorisation


def _sq_dists(q: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor) -> torch.Tensor:
    """Squared L2 distances (Q, M) by |q|^2 + |b|^2 - 2 q.b, clamped at 0 (float64 rounding)."""
    d = (q * q).sum(dim=1, keepdim=True) + bank_sq[None, :] - 2.0 * (q @ bank.T)
    return d.clamp_(min=0)


def _check_chunk(chunk: int) -> None:
    if chunk < 1:
        raise ConfigError(f"chunk={chunk}; choose a positive number of query rows per distance block")


def _kth_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance (N,) of every row of ``x`` to its k-th nearest other row (self, at distance 0, is the 0-th)."""
    x_sq = (x * x).sum(dim=1)
    out = []
    for start in range(0, x.shape[0], chunk):
        d = _sq_dists(x[start:start + chunk], x, x_sq)
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out).sqrt()


def _inside_manifold(queries: torch.Tensor, bank: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """Bool (Q,): query lies in some ball ``|q - bank_i| <= radii_i``."""
    bank_sq = (bank * bank).sum(dim=1)
    r_sq = radii * radii
    out = []
    for start in range(0, queries.shape[0], chunk):
        d = _sq_dists(queries[start:start + chunk], bank, bank_sq)
        out.append((d <= r_sq[None, :]).any(dim=1))
    return torch.cat(out)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3,
                     chunk: int = DEFAULT_CHUNK) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, eq. 1-3) of ``fake`` (M, F) against
    ``real`` (N, F).

    The manifold of a set is the union of balls around its points, each of radius the distance to that
    point's k-th nearest neighbour in the same set (k=3 in the paper)::

        precision = (1/M) sum_j [ fake_j in manifold(real) ]   (fidelity: fakes look real)
        recall    = (1/N) sum_i [ real_i in manifold(fake) ]   (coverage: reals are produced)

    A point on a ball's boundary counts as inside. Distances are exact L2 in float64, chunked over
    ``chunk`` query rows, so 10k x 10k fits in memory. Needs 1 <= k < min(N, M).
    """
    r = _features("real", real)
    f = _features("fake", fake)
    _same_width("real", r, "fake", f)
    _check_chunk(chunk)
    n_min = min(r.shape[0], f.shape[0])
    if not 1 <= k < n_min:
        raise ConfigError(
            f"k={k} with {r.shape[0]} real and {f.shape[0]} fake samples; choose 1 <= k < {n_min} "
            "(k=3 in Kynkaanniemi et al.)"
        )
    precision = _inside_manifold(f, r, _kth_radii(r, k, chunk), chunk).double().mean()
    recall = _inside_manifold(r, f, _kth_radii(f, k, chunk), chunk).double().mean()
    return float(precision), float(recall)


def nearest_neighbours(queries: torch.Tensor, bank: torch.Tensor,
                       chunk: int = DEFAULT_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 distance (Q,) float64 and index (Q,) int64 of each query's nearest row of ``bank`` (M, F).

    The search uses the chunked |q|^2 + |b|^2 - 2 q.b expansion; the returned distance is then recomputed
    directly as |q - bank[index]|, so an exact copy reports exactly 0. Ties go to the lowest index.
    """
    q = _features("queries", queries)
    b = _features("bank", bank)
    _same_width("queries", q, "bank", b)
    _check_chunk(chunk)
    b_sq = (b * b).sum(dim=1)
    idx = torch.cat([_sq_dists(q[s:s + chunk], b, b_sq).argmin(dim=1) for s in range(0, q.shape[0], chunk)])
    dist = (q - b[idx]).norm(dim=1)
    return dist, idx


@dataclass(frozen=True)
class Memorisation:
    """Nearest training feature of every generated sample, and a summary.

    indices, distances: (N,) nearest training row and its L2 distance, per generated sample.
    median_distance: median of ``distances``.
    test_median_distance: median nearest-training distance of held-out real samples (None without them).
    ratio: median_distance / test_median_distance (None without them). Held-out reals show how far a
        genuinely new image of this distribution lies from the training set; a ratio well below 1 means the
        samples sit closer to training images than new images do, a hint of copying.
    """

    indices: torch.Tensor
    distances: torch.Tensor
    median_distance: float
    test_median_distance: float | None = None
    ratio: float | None = None


def memorisation(fake: torch.Tensor, train: torch.Tensor, real_test: torch.Tensor | None = None,
                 chunk: int = DEFAULT_CHUNK) -> Memorisation:
    """Nearest training feature for each generated feature in ``fake`` (N, F) against ``train`` (M, F), with
    the median nearest distance; with ``real_test`` (T, F), also the ratio of the fake-to-train and
    test-to-train medians (<< 1 hints at copying). Medians are torch's lower median for even counts."""
    dist, idx = nearest_neighbours(fake, train, chunk)
    median = float(dist.median())
    if real_test is None:
        return Memorisation(indices=idx, distances=dist, median_distance=median)
    test_median = float(nearest_neighbours(real_test, train, chunk)[0].median())
    ratio = median / test_median if test_median > 0 else math.inf
    return Memorisation(indices=idx, distances=dist, median_distance=median,
                        test_median_distance=test_median, ratio=ratio)


# ---------------------------------------------------------------------------------------------------------
# Class histograms


def _labels(name: str, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.numel() == 0 or y.is_floating_point():
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ConfigError(f"{name} has shape {shape}; pass a non-empty 1-D integer tensor of class indices")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise ConfigError(f"{name} holds classes {lo}..{hi}, outside 0..{num_classes - 1}; check num_classes")
    return torch.bincount(y.long().cpu(), minlength=num_classes).to(torch.float64) / y.numel()


def class_histogram_tv(fake_labels: torch.Tensor, real_labels: torch.Tensor, num_classes: int) -> float:
    """Total-variation distance ``0.5 * sum_c |p_c - q_c|`` between the class histograms ``p`` of
    ``fake_labels`` (N,) and ``q`` of ``real_labels`` (M,) (e.g. a classifier's predicted classes); in [0, 1],
    0 for equal histograms and 1 for disjoint supports."""
    if num_classes < 1:
        raise ConfigError(f"num_classes={num_classes}; pass the classifier's number of classes (>= 1)")
    p = _labels("fake_labels", fake_labels, num_classes)
    q = _labels("real_labels", real_labels, num_classes)
    return float(0.5 * (p - q).abs().sum())
