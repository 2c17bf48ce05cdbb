"""kNN classifier (DINO protocol): hand-worked example, numpy reference, chunking, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pjepa.errors import ConfigError
from pjepa.eval import knn
from pjepa.eval.knn import knn_accuracy, knn_evaluate, knn_predict


def _at(degrees: float, scale: float = 1.0) -> list[float]:
    rad = math.radians(degrees)
    return [scale * math.cos(rad), scale * math.sin(rad)]


def _worked_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """6 bank points on the unit circle (scaled: cosine ignores norms), 3 queries.

    bank angle / label:  b0 0°/0, b1 50°/1, b2 -50°/1, b3 180°/2, b4 130°/0, b5 95°/2
    q0 at 0°:   top-3 b0 (cos 0 = 1.0, L0), b1, b2 (cos 50 = .643, L1)
                majority: L1 (2 votes to 1); weighted T=.07: e^(1/.07) > 2 e^(.643/.07) -> L0
    q1 at 180°: top-3 b3 (1.0, L2), b4 (cos 50 = .643, L0), b5 (cos 85 = .087, L2)
                majority L2; weighted L2
    q2 at 90°:  top-3 b5 (cos 5 = .996, L2), b1, b4 (cos 40 = .766, L1 and L0)
                majority: 3-way tie -> lowest class L0; weighted: nearest dominates -> L2
    """
    angles = [0, 50, -50, 180, 130, 95]
    bank = torch.tensor([_at(a, scale=1 + i) for i, a in enumerate(angles)])
    labels = torch.tensor([0, 1, 1, 2, 0, 2])
    queries = torch.tensor([_at(0, 0.5), _at(180, 3.0), _at(90, 1.0)])
    return bank, labels, queries


def test_worked_example_weighted_and_majority_differ() -> None:
    bank, labels, queries = _worked_example()
    weighted = knn_predict(bank, labels, queries, num_classes=3, k=3, vote="weighted")
    majority = knn_predict(bank, labels, queries, num_classes=3, k=3, vote="majority")
    assert weighted.tolist() == [0, 2, 2]
    assert majority.tolist() == [1, 2, 0]
    assert weighted.dtype == torch.long
    accs = knn_evaluate(bank, labels, queries, torch.tensor([0, 2, 2]), num_classes=3, k=3)
    assert accs == pytest.approx({"weighted": 100.0, "majority": 100.0 / 3})


def _numpy_reference(bank, labels, queries, num_classes, k, temperature, vote) -> np.ndarray:
    """Brute force in float64: full similarity matrix, argsort, bincount, argmax (first max)."""
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sim = queries @ bank.T
    preds = []
    for row in sim:
        nearest = np.argsort(-row, kind="stable")[:k]
        weights = np.exp(row[nearest] / temperature) if vote == "weighted" else np.ones(k)
        scores = np.bincount(labels[nearest], weights=weights, minlength=num_classes)
        preds.append(int(np.argmax(scores)))
    return np.array(preds)


@pytest.mark.parametrize("k", [5, 20])
@pytest.mark.parametrize("vote", ["weighted", "majority"])
def test_matches_numpy_reference(k: int, vote: str) -> None:
    rng = np.random.default_rng(k)
    bank, queries = rng.normal(size=(400, 16)), rng.normal(size=(150, 16))
    labels = rng.integers(0, 7, size=400)
    expected = _numpy_reference(bank, labels, queries, 7, k, 0.07, vote)
    got = knn_predict(
        torch.from_numpy(bank), torch.from_numpy(labels), torch.from_numpy(queries),
        num_classes=7, k=k, vote=vote, chunk_size=64,
    )
    np.testing.assert_array_equal(got.numpy(), expected)
    # float32 features agree too (a near-tie could flip one query, none do here)
    got32 = knn_predict(
        torch.from_numpy(bank).float(), torch.from_numpy(labels), torch.from_numpy(queries).float(),
        num_classes=7, k=k, vote=vote,
    )
    assert (got32.numpy() == expected).mean() >= 0.99


def test_chunk_size_does_not_change_predictions() -> None:
    gen = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(300, 8, generator=gen), torch.randn(97, 8, generator=gen)
    labels = torch.randint(0, 5, (300,), generator=gen)
    for vote in ("weighted", "majority"):
        one = knn_predict(bank, labels, queries, 5, k=10, vote=vote, chunk_size=1)
        big = knn_predict(bank, labels, queries, 5, k=10, vote=vote, chunk_size=10_000)
        odd = knn_predict(bank, labels, queries, 5, k=10, vote=vote, chunk_size=13)
        assert torch.equal(one, big) and torch.equal(one, odd)


def test_similarity_is_chunked_and_topk_shared_between_votes(monkeypatch) -> None:
    calls: list[tuple[int, int]] = []
    real = knn.chunk_topk

    def spy(bank, query, k):
        calls.append((query.shape[0], bank.shape[0]))  # the (chunk, N) matrix it builds
        return real(bank, query, k)

    monkeypatch.setattr(knn, "chunk_topk", spy)
    gen = torch.Generator().manual_seed(1)
    bank, queries = torch.randn(200, 4, generator=gen), torch.randn(50, 4, generator=gen)
    labels = torch.randint(0, 3, (200,), generator=gen)
    knn_evaluate(bank, labels, queries, torch.zeros(50, dtype=torch.long), 3, k=5, chunk_size=16)
    assert [rows for rows, _ in calls] == [16, 16, 16, 2]  # one top-k per chunk, both votes
    assert all(n == 200 for _, n in calls)


def test_perfect_separation_gives_100() -> None:
    gen = torch.Generator().manual_seed(2)
    centres = torch.eye(4, 32) * 10
    bank_labels = torch.arange(4).repeat_interleave(25)
    query_labels = torch.arange(4).repeat(10)
    bank = centres[bank_labels] + 0.1 * torch.randn(100, 32, generator=gen)
    queries = centres[query_labels] + 0.1 * torch.randn(40, 32, generator=gen)
    accs = knn_evaluate(bank, bank_labels, queries, query_labels, num_classes=4, k=20)
    assert accs == {"weighted": 100.0, "majority": 100.0}
    assert knn_accuracy(bank, bank_labels, queries, query_labels, 4, k=3, vote="majority") == 100.0


def test_invariant_to_feature_scaling() -> None:
    gen = torch.Generator().manual_seed(3)
    bank, queries = torch.randn(120, 6, generator=gen), torch.randn(30, 6, generator=gen)
    labels = torch.randint(0, 4, (120,), generator=gen)
    row_scales = torch.rand(120, 1, generator=gen) * 100 + 0.01
    base = knn_predict(bank.double(), labels, queries.double(), 4, k=7)
    scaled = knn_predict(bank.double() * row_scales.double(), labels, queries.double() * 1e-3, 4, k=7)
    assert torch.equal(base, scaled)


def test_half_precision_inputs_and_small_temperature() -> None:
    bank, labels, queries = _worked_example()
    # T=0.005: e^(1/T) overflows float32 without the max-shift; bf16 features are upcast
    pred = knn_predict(bank.bfloat16(), labels, queries.bfloat16(), 3, k=3, temperature=0.005)
    assert pred.tolist() == [0, 2, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 7}, "k=7 is larger than the feature bank (N=6"),
        ({"k": 0}, "k must be an int >= 1"),
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"chunk_size": 0}, "chunk_size must be an int >= 1"),
        ({"num_classes": 2}, "train_labels must lie in [0, num_classes=2), got values in [0, 2]"),
        ({"query_features": torch.zeros(3, 5)},
         "feature dims differ: train_features has D=2, query_features has D=5"),
        ({"query_features": torch.zeros(3)}, "query_features must be a floating (rows, dim) tensor"),
        ({"train_features": torch.zeros(6, 2, dtype=torch.long)}, "train_features must be a floating"),
        ({"train_labels": torch.tensor([0, 1, 1, 2, 0])},
         "train_labels has 5 labels but the features have 6 rows"),
        ({"train_labels": torch.tensor([0, 1, -1, 2, 0, 2])}, "got values in [-1, 2]"),
        ({"train_labels": torch.zeros(6)}, "train_labels must be an integer (rows,) tensor"),
        ({"vote": "soft"}, "votes must be a non-empty sequence of"),
    ],
)
def test_errors_name_the_bad_value(kwargs: dict, message: str) -> None:
    bank, labels, queries = _worked_example()
    args = {"train_features": bank, "train_labels": labels, "query_features": queries,
            "num_classes": 3, "k": 3}
    args.update(kwargs)
    with pytest.raises(ConfigError) as info:
        knn_predict(**args)
    assert message in str(info.value)


def test_a_non_tensor_is_a_type_error_not_a_config_error() -> None:
    """A list where a tensor belongs is the calling code's bug, not something a user typed."""
    bank, labels, queries = _worked_example()
    with pytest.raises(TypeError, match="train_features must be a torch.Tensor, got list"):
        knn_predict(bank.tolist(), labels, queries, 3, k=3)
    with pytest.raises(TypeError, match="train_labels must be a torch.Tensor, got list"):
        knn_predict(bank, labels.tolist(), queries, 3, k=3)


def test_evaluate_checks_query_labels() -> None:
    bank, labels, queries = _worked_example()
    with pytest.raises(ConfigError, match="query_labels has 2 labels but the features have 3 rows"):
        knn_evaluate(bank, labels, queries, torch.tensor([0, 1]), num_classes=3, k=3)
    with pytest.raises(ConfigError, match="no rows"):
        knn_evaluate(bank, labels, queries[:0], torch.tensor([], dtype=torch.long), num_classes=3, k=3)
    with pytest.raises(ConfigError, match="votes must be"):
        knn_evaluate(bank, labels, queries, torch.tensor([0, 1, 2]), 3, k=3, votes="weighted")


def test_whitening_makes_the_bank_covariance_the_identity_and_uses_bank_statistics_only() -> None:
    g = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    mix = torch.diag(torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0, 3.5])) @ rotation  # variances 1 .. 12.25, rotated
    bank = torch.randn(4000, 6, generator=g) @ mix + 5.0  # correlated, off-centre
    queries = torch.cat([bank.mean(0, keepdim=True), torch.randn(3, 6, generator=g) * 100])
    wb, wq = knn.whiten(bank, queries)
    cov = (wb - wb.mean(0)).T @ (wb - wb.mean(0)) / len(wb)
    # each variance e / (e + 1e-3 x 12.25): between 0.988 and 1
    torch.testing.assert_close(cov, torch.eye(6), atol=0.02, rtol=0)
    torch.testing.assert_close(wq[0], torch.zeros(6), atol=1e-5, rtol=0)  # the bank's mean maps to 0
    wb2, wq2 = knn.whiten(bank, queries * 2)  # other queries: the same map (fitted on the bank alone)
    torch.testing.assert_close(wb2, wb)
    assert wq.dtype == wb.dtype == torch.float32


def test_whitening_floors_directions_without_variance() -> None:
    """A constant feature would divide by zero: the floor keeps it finite, and a query's offset along it
    weighs 1 / sqrt(floor x the largest variance)."""
    g = torch.Generator().manual_seed(1)
    bank = torch.cat([torch.randn(500, 2, generator=g), torch.ones(500, 1)], dim=1)
    wb, wq = knn.whiten(bank, torch.tensor([[0.0, 0.0, 2.0]]))
    assert torch.isfinite(wb).all() and torch.isfinite(wq).all()
    assert wq.abs().max() < 1.0 / math.sqrt(knn.WHITEN_FLOOR * 0.5) * 1.2


def test_whitening_helps_knn_where_a_loud_nuisance_dimension_hides_the_class() -> None:
    """Class in a quiet dimension, noise 100x louder in 8 others: raw cosine kNN sits at chance (50 %);
    whitened, the class direction weighs as much as each noise direction and kNN reads it (about 74 %)."""
    g = torch.Generator().manual_seed(2)
    def make(n):
        y = torch.randint(0, 2, (n,), generator=g)
        signal = (y.float() * 2 - 1 + 0.3 * torch.randn(n, generator=g)).unsqueeze(1)  # (n, 1)
        return torch.cat([signal, 100 * torch.randn(n, 8, generator=g)], dim=1), y  # 8 loud nuisance dims
    (xb, yb), (xq, yq) = make(2000), make(500)
    raw = knn_evaluate(xb, yb, xq, yq, 2, k=20)["weighted"]
    wb, wq = knn.whiten(xb, xq)
    white = knn_evaluate(wb, yb, wq, yq, 2, k=20)["weighted"]
    assert raw < 58 and white > 68


def _cosine_gram(x: torch.Tensor) -> torch.Tensor:
    x = torch.nn.functional.normalize(x, dim=1)
    return x @ x.T


def test_low_rank_whitening_matches_the_exact_one_when_the_tail_is_below_the_floor() -> None:
    """64 features, 8 loud directions and 56 at 1e-6 of the largest variance (below the 1e-3 floor): with
    max_rank 12 the 8 loud ones are whitened exactly and the tail is scaled as the floor scales it, so the
    cosine similarities that kNN reads equal the exact whitening's, and the recorded error bound is small."""
    g = torch.Generator().manual_seed(3)
    rotation, _ = torch.linalg.qr(torch.randn(64, 64, generator=g))
    std = torch.cat([torch.linspace(1.0, 3.0, 8), torch.full((56,), 3e-3)])
    bank = torch.randn(3000, 64, generator=g) * std @ rotation + 2.0
    queries = torch.randn(50, 64, generator=g) * std @ rotation + 2.0
    exact = knn.fit_whitening(bank)
    low = knn.fit_whitening(bank, max_rank=12)
    assert exact.exact and exact.describe() == "exact"
    assert not low.exact and low.tail_error < 0.01 and "top 12 of 64" in low.describe()
    assert low(queries).shape == (50, 12 + 64) and exact(queries).shape == (50, 64)
    torch.testing.assert_close(_cosine_gram(low(queries)), _cosine_gram(exact(queries)), atol=2e-3, rtol=0)
    # the wrapper: the same map on bank and queries, fitted on the bank alone
    wb, wq = knn.whiten(bank, queries, max_rank=12)
    torch.testing.assert_close(wq, low(queries))


def test_low_rank_whitening_bounds_its_error_when_the_tail_is_not_negligible() -> None:
    """A flat spectrum (every variance 1): the directions past max_rank are at the largest eigenvalue, so
    the tail weight 1 / sqrt(floor e_max) is far too large, and tail_error says so (about 97 %)."""
    bank = torch.randn(2000, 32, generator=torch.Generator().manual_seed(4))
    low = knn.fit_whitening(bank, max_rank=8)
    assert low.tail_error > 0.9
