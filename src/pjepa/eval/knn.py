"""k-nearest-neighbour classification of frozen features (DINO protocol).

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers"
(DINO, 2021), section on k-NN evaluation: features are L2-normalised, each
query takes the ``k`` bank points of highest cosine similarity, and every
neighbour votes for its label with weight ``exp(sim / temperature)``
("weighted"). A plain count of the ``k`` labels ("majority") is also offered.

Memory: the work is chunked over queries, so only one ``(chunk_size, N)``
similarity matrix exists at a time. Peak extra memory, with ``B`` bytes per
element of the compute dtype (4 for float32) and ``N`` bank points of
dimension ``D``::

    N * D * B                      normalised copy of the bank (none with in_place=True)
    + chunk_size * D * B           normalised copy of one query chunk
    + chunk_size * N * B           similarity matrix of one chunk
    + chunk_size * k * (B + 8)     top-k similarities and indices
    + chunk_size * num_classes * B vote table (one per vote rule)
    + Q * 8                        predictions (int64)

For N=50,000, D=384, chunk_size=1024, float32: 76.8 MB + 204.8 MB + small,
about 0.29 GB, independent of the number of queries Q (plus whatever
``torch.topk`` needs internally for one chunk). Measured (2 CPU threads,
N=50,000, Q=10,000, D=192, k=20, both votes): chunk_size=1024 -> 5.1 s and
246 MiB peak RSS growth; 256 -> 6.4 s, 98 MiB; 4096 -> 5.2 s, 836 MiB.

Ties: a vote table row with several maximal classes predicts the LOWEST
class index among them, on every device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

from pjepa.errors import ConfigError

if TYPE_CHECKING:
    from pjepa.data import ImageDataset

Vote = Literal["weighted", "majority"]
VOTES: tuple[str, ...] = ("weighted", "majority")


def _check_features(name: str, features: object) -> torch.Tensor:
    """A 2-D floating tensor, or ConfigError naming ``name`` (TypeError for a non-tensor: the caller's bug)."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() != 2 or not features.is_floating_point():
        raise ConfigError(
            f"{name} must be a floating (rows, dim) tensor, got dtype {features.dtype} "
            f"and shape {tuple(features.shape)}"
        )
    return features


def _check_labels(name: str, labels: object, length: int, num_classes: int) -> torch.Tensor:
    """A 1-D integer tensor of ``length`` labels in [0, num_classes), as int64 (TypeError for a non-tensor)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    is_integer = not (labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool)
    if labels.dim() != 1 or not is_integer:
        raise ConfigError(
            f"{name} must be an integer (rows,) tensor, got dtype {labels.dtype} "
            f"and shape {tuple(labels.shape)}"
        )
    if labels.shape[0] != length:
        raise ConfigError(f"{name} has {labels.shape[0]} labels but the features have {length} rows")
    if length > 0:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ConfigError(
                f"{name} must lie in [0, num_classes={num_classes}), got values in [{low}, {high}]; "
                "unlabelled (-1) points cannot be used"
            )
    return labels.long()


def _check_options(
    n_bank: int, num_classes: int, k: int, temperature: float, chunk_size: int, votes: Sequence[str]
) -> None:
    """ConfigError for out-of-range scalar options."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be an int >= 1, got {k!r}")
    if k > n_bank:
        raise ConfigError(f"k={k} is larger than the feature bank (N={n_bank} points); use k <= {n_bank}")
    is_number = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if not (is_number and 0.0 < float(temperature) < float("inf")):
        raise ConfigError(f"temperature must be a finite number > 0, got {temperature!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    if isinstance(votes, str) or len(votes) == 0 or any(v not in VOTES for v in votes):
        raise ConfigError(f"votes must be a non-empty sequence of {VOTES}, got {votes!r}")


def _validate(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    chunk_size: int,
    votes: Sequence[str],
) -> torch.Tensor:
    """Check every input; returns the bank labels as int64 (N,)."""
    _check_features("train_features", train_features)
    _check_features("query_features", query_features)
    if train_features.shape[1] != query_features.shape[1]:
        raise ConfigError(
            f"feature dims differ: train_features has D={train_features.shape[1]}, "
            f"query_features has D={query_features.shape[1]}"
        )
    _check_options(train_features.shape[0], num_classes, k, temperature, chunk_size, votes)
    bank_labels = _check_labels("train_labels", train_labels, train_features.shape[0], num_classes)
    devices = {train_features.device, query_features.device, bank_labels.device}
    if len(devices) != 1:
        raise ConfigError(f"features and labels must be on one device, got {sorted(map(str, devices))}")
    return bank_labels


def _compute_dtype(features: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else (fp16, bf16, fp32) computes in float32."""
    return torch.float64 if features.dtype == torch.float64 else torch.float32


def chunk_topk(
    bank_normed: torch.Tensor, query_normed: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and bank indices of the ``k`` nearest bank points.

    The only place a similarity matrix is built: (chunk, N), freed on return.
    Inputs are already L2-normalised. Returns (chunk, k) sims and (chunk, k) int64
    indices, sorted by decreasing similarity.
    """
    sim = query_normed @ bank_normed.T  # (chunk, N)
    top_sim, top_idx = torch.topk(sim, k, dim=1, largest=True, sorted=True)  # (chunk, k)
    return top_sim, top_idx


def _argmax_lowest(scores: torch.Tensor) -> torch.Tensor:
    """Row-wise argmax of (chunk, C) scores; ties go to the lowest class index."""
    num_classes = scores.shape[1]
    classes = torch.arange(num_classes, device=scores.device).expand_as(scores)  # (chunk, C)
    is_max = scores == scores.max(dim=1, keepdim=True).values
    return torch.where(is_max, classes, num_classes).min(dim=1).values


def vote_predictions(
    top_sim: torch.Tensor, top_labels: torch.Tensor, num_classes: int, temperature: float, vote: str
) -> torch.Tensor:
    """Class predictions (chunk,) from the (chunk, k) neighbour sims and labels.

    weighted: class score = sum over neighbours of exp(sim / T) (DINO). The
    weights are computed as exp((sim - max sim) / T), which scales each row by a
    positive constant: same argmax, but no overflow for small T.
    majority: class score = number of neighbours with that label.
    """
    if vote == "weighted":
        weights = torch.exp((top_sim - top_sim[:, :1]) / temperature)  # (chunk, k), row max is column 0
    else:
        weights = torch.ones_like(top_sim)
    scores = torch.zeros(top_sim.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
    scores.scatter_add_(1, top_labels, weights)  # (chunk, C)
    return _argmax_lowest(scores)


def _predict_all(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    votes: Sequence[str],
    chunk_size: int,
    in_place: bool = False,
) -> dict[str, torch.Tensor]:
    """Validated predictions (Q,) int64 per vote rule; one top-k per query chunk."""
    bank_labels = _validate(
        train_features, train_labels, query_features, num_classes, k, temperature, chunk_size, votes
    )
    dtype = _compute_dtype(train_features)
    if in_place and train_features.dtype == dtype:  # the same rows as the copy below, written over the input
        bank = F.normalize(train_features, dim=1, out=train_features)  # (N, D)
    else:
        bank = F.normalize(train_features.to(dtype), dim=1)  # (N, D)
    n_query = query_features.shape[0]
    preds = {v: torch.empty(n_query, dtype=torch.long, device=bank.device) for v in votes}
    for start in range(0, n_query, chunk_size):
        query = F.normalize(query_features[start : start + chunk_size].to(dtype), dim=1)  # (chunk, D)
        top_sim, top_idx = chunk_topk(bank, query, k)  # (chunk, k) each
        top_labels = bank_labels[top_idx]  # (chunk, k)
        for v in votes:
            preds[v][start : start + query.shape[0]] = vote_predictions(
                top_sim, top_labels, num_classes, float(temperature), v
            )
    return preds


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    vote: Vote = "weighted",
    chunk_size: int = 1024,
    in_place: bool = False,
) -> torch.Tensor:
    """Predict a class for each query from its ``k`` nearest bank features.

    Args:
        train_features: (N, D) floating, the feature bank (any scale: L2-normalised here).
        train_labels: (N,) integer, in [0, num_classes).
        query_features: (Q, D) floating, same device as the bank.
        num_classes: number of classes C.
        k: neighbours per query, 1 <= k <= N.
        temperature: T of the weighted vote exp(sim / T).
        vote: "weighted" (DINO) or "majority" (plain count).
        chunk_size: queries per similarity matrix; peak memory ~ chunk_size * N.
        in_place: L2-normalise ``train_features`` in place (when it is float32 or float64) instead of in a
            copy: no second (N, D) matrix, but the caller's tensor is changed.

    Returns:
        (Q,) int64 predictions on the features' device; ties -> lowest class.
    """
    return _predict_all(
        train_features, train_labels, query_features, num_classes, k, temperature, (vote,), chunk_size, in_place
    )[vote]


def knn_evaluate(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    votes: Sequence[Vote] = ("weighted", "majority"),
    chunk_size: int = 1024,
    in_place: bool = False,
) -> dict[str, float]:
    """Top-1 accuracy in percent per vote rule, e.g. {"weighted": 71.2, "majority": 69.8}.

    The similarity top-k is computed once per query chunk and shared by all
    vote rules. Arguments as in :func:`knn_predict`; ``query_labels`` is (Q,)
    integer in [0, num_classes) and Q must be >= 1.
    """
    _validate(train_features, train_labels, query_features, num_classes, k, temperature, chunk_size, votes)
    n_query = query_features.shape[0]
    if n_query == 0:
        raise ConfigError("query_features has no rows: accuracy over 0 queries is undefined")
    truth = _check_labels("query_labels", query_labels, n_query, num_classes)  # fail before the work
    preds = _predict_all(
        train_features, train_labels, query_features, num_classes, k, temperature, votes, chunk_size, in_place
    )
    truth = truth.to(query_features.device)
    return {v: 100.0 * float((p == truth).sum()) / n_query for v, p in preds.items()}


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    vote: Vote = "weighted",
    chunk_size: int = 1024,
) -> float:
    """Top-1 accuracy in percent of one vote rule; see :func:`knn_evaluate`."""
    return knn_evaluate(
        train_features, train_labels, query_features, query_labels, num_classes,
        k=k, temperature=temperature, votes=(vote,), chunk_size=chunk_size,
    )[vote]


WHITEN_FLOOR = 1e-3
#: Up to this many feature dimensions whitening is exact: the bank's F x F covariance is accumulated in float32
#: and factorised in place (1 GB at 16,384 dimensions; 12,288 for 64 px pixels, 3,072 for 32 px, a few hundred
#: for encoders). Above it (e.g. 27,648 for 96 px pixels) the top WHITEN_LOW_RANK principal directions come from
#: a randomized SVD and the rest are scaled as directions below the floor (see :class:`Whitening`).
WHITEN_EXACT_MAX = 16384
WHITEN_LOW_RANK = 4096
#: Feature rows whitened (and added to the covariance) at a time: the temporaries are a few such
#: (rows, F) float32 blocks, 100 MB each at F = 12,288, whatever the size of the bank.
WHITEN_CHUNK = 2048
#: Column width of the covariance's blocks: only the blocks on and below the diagonal are multiplied (the
#: matrix is symmetric), which for F = 12,288 is 21 of 36 blocks, 58 % of the full product's work.
WHITEN_BLOCK = 2048


@dataclass(frozen=True)
class Whitening:
    """PCA whitening fitted on a bank: x -> (x - mean) V diag(1 / sqrt(max(e, 0) + floor * e_max)).

    After it the bank's covariance is nearly the identity, so cosine kNN weighs every direction of variation
    alike instead of the few largest (the floor keeps directions without variance from being blown up).

    Exact (``factor`` set): x -> (x - mean) L^-T, where L L^T = C + floor * e_max * I is the Cholesky factor
    of the floored covariance. Since V diag(1 / (e + floor * e_max)) V^T = (C + floor * e_max * I)^-1, this
    map is the PCA whitening above followed by a rotation: every inner product, hence every cosine similarity
    kNN reads and the whitened covariance's spectrum, is the PCA whitening's, at the cost of a Cholesky
    factorisation (F^3 / 3) instead of an eigendecomposition of the covariance.

    Low rank (``basis`` of r < F columns): the r leading directions are whitened exactly and the residual
    ``c - c V V^T`` (every direction whose eigenvalue is at most e_r) is kept, scaled by
    ``1 / sqrt(floor * e_max)``: right for eigenvalues far below the floor, and at most ``tail_error``
    (relative) too large for one at e_r. Its output has r + F columns (the residual in the original
    coordinates: inner products, hence cosine kNN, are those of the rotated map).
    """

    mean: torch.Tensor  # (F,) float64
    factor: torch.Tensor | None  # (F, F) float32, lower triangular L, column-major (exact); None when low rank
    basis: torch.Tensor | None  # (F, r) float32, orthonormal columns (low rank); None when exact
    scale: torch.Tensor | None  # (r,) 1 / sqrt(e + floor * e_max) (low rank)
    tail_scale: float | None  # None when exact
    tail_error: float  # 0 when exact

    @property
    def exact(self) -> bool:
        return self.factor is not None

    @property
    def out_features(self) -> int:
        """Columns of the whitened features: F exact, r + F low rank."""
        if self.factor is not None:
            return self.factor.shape[0]
        assert self.basis is not None
        return self.basis.shape[1] + self.basis.shape[0]

    def describe(self) -> str:
        if self.exact:
            return "exact"
        assert self.basis is not None
        return (f"top {self.basis.shape[1]} of {self.basis.shape[0]} directions exact (randomized SVD), the rest "
                f"scaled as below the floor (weight error <= {100 * self.tail_error:.1f} %)")

    def __call__(self, x: torch.Tensor, chunk_size: int = WHITEN_CHUNK, out: torch.Tensor | None = None) -> torch.Tensor:
        """(N, F) -> (N, F) exact or (N, r + F) low rank, float32, ``chunk_size`` rows at a time.

        ``out``: a float32 (N, out_features) tensor to write into instead of a new one; for the exact map it
        may be ``x`` itself (float32), which whitens in place without a second copy of the features. Extra
        memory: about two (chunk_size, out_features) float32 blocks.
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
        n = x.shape[0]
        if out is None:
            out = torch.empty(n, self.out_features, dtype=torch.float32, device=x.device)
        elif out.shape != (n, self.out_features) or out.dtype != torch.float32:
            raise ValueError(f"out must be a float32 ({n}, {self.out_features}) tensor, got {out.dtype} "
                             f"{tuple(out.shape)}")
        mean = self.mean.to(x.device, torch.float32)
        factor = self.factor.to(x.device) if self.factor is not None else None
        basis = self.basis.to(x.device) if self.basis is not None else None
        for start in range(0, n, chunk_size):
            c = x[start : start + chunk_size].to(torch.float32) - mean  # (n, F): a new tensor, never a view of x
            rows = slice(start, start + c.shape[0])
            if factor is not None:
                # c L^-T: a triangular solve, in place in the centred chunk
                torch.linalg.solve_triangular(factor.T, c, upper=True, left=False, out=c)
                out[rows] = c
            else:
                assert basis is not None and self.scale is not None and self.tail_scale is not None
                z = c @ basis  # (n, r)
                r = z.shape[1]
                out[rows, r:] = (c - z @ basis.T) * self.tail_scale
                out[rows, :r] = z * self.scale.to(z.device, z.dtype)
        return out


def _covariance(bank: torch.Tensor, mean: torch.Tensor, chunk_size: int = WHITEN_CHUNK,
                block: int = WHITEN_BLOCK) -> torch.Tensor:
    """(F, F) float32 covariance (divided by N) of the bank's rows about ``mean``, ``chunk_size`` rows at a time.

    Only the column blocks on and below the diagonal are multiplied, accumulated in place (``addmm_`` into
    views of the result), then mirrored. Extra memory: the result and one centred chunk.
    """
    n, f = bank.shape
    cov = torch.zeros(f, f, dtype=torch.float32, device=bank.device)
    edges = [(a, min(a + block, f)) for a in range(0, f, block)]
    m = mean.to(bank.device, torch.float32)
    for rows in bank.split(chunk_size):
        c = rows.to(torch.float32) - m  # (chunk, F)
        for i, (a, b) in enumerate(edges):
            for p, q in edges[: i + 1]:
                cov[a:b, p:q].addmm_(c[:, a:b].T, c[:, p:q])
    for i, (a, b) in enumerate(edges):  # mirror the lower triangle: exactly symmetric
        for p, q in edges[:i]:
            cov[p:q, a:b] = cov[a:b, p:q].T
        d = cov[a:b, a:b]
        d.copy_(d.tril() + d.tril(-1).T)
    return cov.div_(n)


def _largest_eigenvalue(cov: torch.Tensor, seed: int = 0, tol: float = 1e-7, max_steps: int = 300) -> float:
    """The largest eigenvalue of a symmetric positive semi-definite ``cov``.

    Up to 1,024 dimensions directly (float64 ``eigvalsh``). Above, the Lanczos iteration (Lanczos, "An
    iteration method for the solution of the eigenvalue problem of linear differential and integral
    operators", 1950) from a seeded random vector, with full reorthogonalisation: the top Ritz value of the
    tridiagonal matrix rises towards e_max and the iteration stops when it moves by less than ``tol``
    (relative), typically after 5-10 products (F, F) x (F,), for fast-decaying and nearly flat spectra alike.
    """
    f = cov.shape[0]
    if f <= 1024:
        return float(torch.linalg.eigvalsh(cov.double())[-1])
    g = torch.Generator(device=cov.device).manual_seed(seed)
    q = torch.randn(f, generator=g, device=cov.device, dtype=cov.dtype)
    q /= q.norm()
    basis = torch.empty(f, min(max_steps, f), device=cov.device, dtype=cov.dtype)  # the Krylov basis, (F, steps)
    alpha: list[float] = []
    beta: list[float] = []
    ritz = prev = 0.0
    for j in range(basis.shape[1]):
        basis[:, j] = q
        w = cov @ q
        alpha.append(float(q @ w))
        done = basis[:, : j + 1]
        for _ in range(2):  # "twice is enough" (Parlett, "The Symmetric Eigenvalue Problem", 1980)
            w -= done @ (done.T @ w)
        t = torch.diag(torch.tensor(alpha, dtype=torch.float64))
        if beta:
            off = torch.tensor(beta, dtype=torch.float64)
            t += torch.diag(off, 1) + torch.diag(off, -1)
        ritz = float(torch.linalg.eigvalsh(t)[-1])
        b = float(w.norm())
        if abs(ritz - prev) <= tol * abs(ritz) or b <= 1e-6 * abs(ritz):  # converged, or an invariant subspace
            break
        prev = ritz
        beta.append(b)
        q = w / b
    return ritz


def fit_whitening(bank: torch.Tensor, floor: float = WHITEN_FLOOR, max_rank: int = WHITEN_EXACT_MAX,
                  seed: int = 0, chunk_size: int = WHITEN_CHUNK) -> Whitening:
    """Fit :class:`Whitening` on (N, F) bank features: exact (Cholesky) when F <= ``max_rank``, else low rank
    with the top min(max_rank, WHITEN_LOW_RANK) directions.

    Exact: the mean (float64) and the float32 covariance are accumulated ``chunk_size`` rows at a time (never a
    copy of the bank), e_max comes from :func:`_largest_eigenvalue`, and the floored covariance is factorised
    in place. Peak extra memory: F x F float32 plus a few (chunk_size, F) blocks (0.6 GB + 0.2 GB at F = 12,288).
    """
    n, f = bank.shape
    mean = torch.zeros(f, dtype=torch.float64, device=bank.device)
    for rows in bank.split(chunk_size):  # float64 one chunk at a time: no float64 copy of the whole bank
        mean += rows.sum(dim=0, dtype=torch.float64)
    mean /= n
    if f <= max_rank:
        cov = _covariance(bank, mean, chunk_size)
        # a nan or inf feature reaches its own variance: the diagonal tells (isfinite on the whole matrix
        # would allocate two more F x F temporaries)
        if not bool(torch.isfinite(cov.diagonal()).all()):
            raise ConfigError("the bank's features hold non-finite values (inf or nan): they cannot be whitened; "
                              "rate a checkpoint whose training loss was finite")
        e_max = _largest_eigenvalue(cov, seed)
        if not e_max > 0:
            raise ConfigError("every bank feature vector is the same (a collapsed encoder?): whitening needs some "
                              "variance; rate these features without --whiten")
        cov.diagonal().add_(floor * e_max)  # C + floor * e_max * I: positive definite, so Cholesky cannot fail
        # Factorised in place through the column-major view of the symmetric matrix (the layout LAPACK works
        # in: a row-major one would be copied first, a second F x F matrix): ``factor`` is that view, L.
        factor = cov.T
        torch.linalg.cholesky(factor, out=factor)
        return Whitening(mean, factor, None, None, None, 0.0)
    rank = min(max_rank, WHITEN_LOW_RANK)
    # Randomized SVD of the centred bank (Halko et al. 2011), 64 extra columns for accuracy of the last ones.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # centred here, not through svd_lowrank's M= (a stride-0 mean that its products materialise each pass)
        _, s, v = torch.svd_lowrank(bank.float() - mean.float(), q=min(rank + 64, f), niter=4)
    e = (s[:rank].double() ** 2 / n)  # (r,) descending
    e_max, e_r = float(e[0]), float(e[-1])
    tail = 1 / math.sqrt(floor * e_max)
    return Whitening(mean, None, v[:, :rank].contiguous(), 1 / (e + floor * e_max).sqrt(), tail,
                     1 - math.sqrt(floor * e_max / (e_r + floor * e_max)))


def whiten(bank: torch.Tensor, queries: torch.Tensor, floor: float = WHITEN_FLOOR,
           max_rank: int = WHITEN_EXACT_MAX) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA-whiten (N, F) bank and (M, F) query features with statistics of the bank only (float32 out)."""
    w = fit_whitening(bank, floor, max_rank)
    return w(bank), w(queries)


def require_labels(ds: ImageDataset, key: str) -> None:
    """A kNN bank or query split must be labelled (STL-10 'unlabeled' is not); ``key`` names the option."""
    if len(ds) == 0 or bool((ds.labels < 0).any()):
        raise ConfigError(
            f"the {ds.split!r} split of {ds.name} has unlabelled images, so it cannot serve kNN; "
            f"set {key} to a labelled split (e.g. data.bank_split=train for STL-10) or train.eval_every=0"
        )
