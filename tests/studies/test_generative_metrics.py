"""Sample-quality metrics against closed forms and constructed cases (pjepa.studies.generative.metrics)."""

from __future__ import annotations

import math

import pytest
import torch

from pjepa.errors import ConfigError
from pjepa.studies.generative.metrics import (
    class_histogram_tv,
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
    inception_score,
    memorisation,
    nearest_neighbours,
    precision_recall,
)


def exact_moments(n: int, mu: torch.Tensor, sigma: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(n, F) float64 samples whose sample mean is exactly ``mu`` and unbiased sample covariance exactly
    ``sigma`` (up to rounding): whitened noise, coloured by the Cholesky factor. Lets FD be checked against
    the population formula without sampling error."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, mu.shape[0], generator=g, dtype=torch.float64)
    z = z - z.mean(0)
    white = torch.linalg.cholesky(z.T @ z / (n - 1))
    z = torch.linalg.solve_triangular(white, z.T, upper=False).T  # sample covariance now I
    return z @ torch.linalg.cholesky(sigma).T + mu


def rotation(theta: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- Frechet


def test_gaussian_stats_match_numpy_cov_convention():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    mu, sigma = gaussian_stats(x)
    assert mu.dtype == sigma.dtype == torch.float64
    torch.testing.assert_close(sigma, torch.cov(x.double().T))  # unbiased, like numpy.cov(rowvar=False)
    torch.testing.assert_close(mu, x.double().mean(0))


def test_fd_of_identical_sets_is_zero():
    x = torch.randn(400, 16, generator=torch.Generator().manual_seed(1)) * 3.0
    scale = float(torch.trace(gaussian_stats(x)[1]))
    assert frechet_distance(x, x) < 1e-6 * scale


def test_fd_of_rank_deficient_identical_sets_is_zero():
    """N <= F makes the covariance singular; eigh + clamping stays finite and ~0 (scipy's sqrtm needs eps*I)."""
    x = torch.randn(10, 32, generator=torch.Generator().manual_seed(2))
    assert 0.0 <= frechet_distance(x, x) < 1e-6 * float(torch.trace(gaussian_stats(x)[1]))


def test_fd_of_diagonal_gaussians_is_analytic():
    """Commuting covariances: FD = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2. Exact sample moments,
    so the only error is rounding: tolerance 1e-9 relative."""
    a, b = torch.tensor([1.0, 4.0, 9.0, 0.25], dtype=torch.float64), torch.tensor([4.0, 1.0, 1.0, 1.0],
                                                                                   dtype=torch.float64)
    mu1, mu2 = torch.zeros(4, dtype=torch.float64), torch.tensor([1.0, -2.0, 0.0, 0.5], dtype=torch.float64)
    x, y = exact_moments(300, mu1, torch.diag(a), 0), exact_moments(200, mu2, torch.diag(b), 1)
    expected = float((mu1 - mu2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())  # 5.25 + 1 + 1 + 4 + 0.25
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)


def test_fd_of_rotated_gaussian_is_analytic():
    """Non-commuting 2 x 2 covariances: for a 2 x 2 PSD matrix M, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)),
    and M = S1^{1/2} S2 S1^{1/2} has tr M = tr(S1 S2), det M = det S1 det S2. Tolerance 1e-9 relative."""
    s1 = rotation(0.6) @ torch.diag(torch.tensor([5.0, 0.5], dtype=torch.float64)) @ rotation(0.6).T
    s2 = torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64))
    mu = torch.tensor([0.3, -0.4], dtype=torch.float64)
    tr_sqrt = math.sqrt(float(torch.trace(s1 @ s2)) + 2 * math.sqrt(float(torch.det(s1) * torch.det(s2))))
    expected = 0.25 + float(torch.trace(s1) + torch.trace(s2)) - 2 * tr_sqrt
    x, y = exact_moments(500, mu, s1, 3), exact_moments(400, torch.zeros(2, dtype=torch.float64), s2, 4)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance_from_stats(mu, s1, torch.zeros(2, dtype=torch.float64), s2) == pytest.approx(
        expected, rel=1e-12)


def test_fd_is_symmetric_and_a_mean_shift_adds_its_squared_norm():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 6, generator=g, dtype=torch.float64)
    y = torch.randn(200, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-9)
    v = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 0.25], dtype=torch.float64)
    assert frechet_distance(x, x + v) == pytest.approx(float(v @ v), rel=1e-9)  # |v|^2 = 14.3125


def test_fd_bad_inputs_name_the_value():
    with pytest.raises(ConfigError, match="3 features but feats_b has 4"):
        frechet_distance(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(ConfigError, match=r"feats_a has shape \(1, 3\)"):
        frechet_distance(torch.randn(1, 3), torch.randn(5, 3))
    with pytest.raises(ConfigError, match="NaN"):
        frechet_distance(torch.full((4, 2), float("nan")), torch.randn(5, 2))
    with pytest.raises(ConfigError, match="do not fit"):
        frechet_distance_from_stats(torch.zeros(3), torch.eye(2), torch.zeros(3), torch.eye(3))


# ---------------------------------------------------------------------------------------------- IS


def test_is_of_identical_predictions_is_one():
    logits = torch.tensor([[2.0, -1.0, 0.5]]).repeat(30, 1)
    mean, std = inception_score(logits, splits=3)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_is_of_even_one_hot_predictions_is_num_classes():
    """N confident one-hot predictions spread evenly over C classes: KL = log C for every x, IS = C. With 10
    splits of 4 consecutive rows each split also holds every class once, so the std is 0."""
    num_classes, n = 4, 40
    logits = 60.0 * torch.nn.functional.one_hot(torch.arange(n) % num_classes, num_classes).float()
    for splits in (1, 10):
        mean, std = inception_score(logits, splits=splits)
        assert mean == pytest.approx(num_classes, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_is_with_underflowing_probabilities_stays_finite():
    logits = torch.tensor([[1e4, 0.0], [0.0, 1e4]])  # softmax underflows to exact zeros
    mean, _ = inception_score(logits, splits=1)
    assert mean == pytest.approx(2.0, rel=1e-12)


def test_is_bad_splits_name_the_value():
    with pytest.raises(ConfigError, match="splits=11 with 10 samples"):
        inception_score(torch.randn(10, 3), splits=11)
    with pytest.raises(ConfigError, match="splits=0"):
        inception_score(torch.randn(10, 3), splits=0)


# ---------------------------------------------------------------------------------------------- precision / recall


def test_identical_sets_have_full_precision_and_recall():
    x = torch.randn(60, 5, generator=torch.Generator().manual_seed(6))
    assert precision_recall(x, x.clone(), k=3) == (1.0, 1.0)


def test_disjoint_clusters_have_zero_precision_and_recall():
    g = torch.Generator().manual_seed(7)
    real, fake = torch.randn(40, 5, generator=g), torch.randn(30, 5, generator=g) + 100.0
    assert precision_recall(real, fake, k=3) == (0.0, 0.0)


def test_half_overlapping_clusters_give_one_half():
    """real = A + B, fake = copies of A + C, with A, B, C unit clusters 100 apart: the A copies are real-looking
    (precision 1/2) and only A's reals are covered (recall 1/2)."""
    g = torch.Generator().manual_seed(8)
    offset = torch.tensor([100.0, 0.0, 0.0])
    a = torch.randn(15, 3, generator=g)
    b, c = torch.randn(15, 3, generator=g) + offset, torch.randn(15, 3, generator=g) - offset
    real, fake = torch.cat([a, b]), torch.cat([a.clone(), c])
    assert precision_recall(real, fake, k=3) == (0.5, 0.5)


def test_precision_recall_worked_example_on_a_line():
    """k=1. real = 0..9 (every radius 1); fake = 0.5, 4.5, 20, 30 (radii 4, 4, 10, 10).
    precision: 0.5 and 4.5 lie within 1 of a real point, 20 and 30 do not -> 2/4.
    recall: balls [-3.5, 4.5] and [0.5, 8.5] cover reals 0..8; [10, 30] and [20, 40] cover none -> 9/10.
    The chunk size does not change the answer."""
    real = torch.arange(10, dtype=torch.float64)[:, None]
    fake = torch.tensor([[0.5], [4.5], [20.0], [30.0]], dtype=torch.float64)
    assert precision_recall(real, fake, k=1) == (0.5, 0.9)
    assert precision_recall(real, fake, k=1, chunk=3) == (0.5, 0.9)


def test_precision_recall_bad_inputs_name_the_value():
    with pytest.raises(ConfigError, match="k=5 with 5 real"):
        precision_recall(torch.randn(5, 2), torch.randn(8, 2), k=5)
    with pytest.raises(ConfigError, match="k=0"):
        precision_recall(torch.randn(5, 2), torch.randn(8, 2), k=0)
    with pytest.raises(ConfigError, match="real has 2 features but fake has 3"):
        precision_recall(torch.randn(5, 2), torch.randn(8, 3))
    with pytest.raises(ConfigError, match=r"real has shape \(10,\)"):
        precision_recall(torch.randn(10), torch.randn(8, 3))


# ---------------------------------------------------------------------------------------------- class histograms


def test_class_histogram_tv_closed_cases():
    assert class_histogram_tv(torch.tensor([0, 1, 2, 3]), torch.tensor([3, 2, 1, 0, 0, 1, 2, 3]), 4) == 0.0
    assert class_histogram_tv(torch.tensor([0, 0, 1]), torch.tensor([2, 3]), 4) == 1.0
    assert class_histogram_tv(torch.tensor([0, 0]), torch.tensor([0, 1]), 2) == pytest.approx(0.5)


def test_class_histogram_tv_bad_labels_name_the_value():
    with pytest.raises(ConfigError, match="classes 0..4, outside 0..3"):
        class_histogram_tv(torch.tensor([0, 4]), torch.tensor([0, 1]), 4)
    with pytest.raises(ConfigError, match="real_labels"):
        class_histogram_tv(torch.tensor([0, 1]), torch.tensor([0.0, 1.0]), 4)
    with pytest.raises(ConfigError, match="num_classes=0"):
        class_histogram_tv(torch.tensor([0]), torch.tensor([0]), 0)


# ---------------------------------------------------------------------------------------------- memorisation


def test_nearest_neighbours_match_brute_force():
    g = torch.Generator().manual_seed(9)
    q, bank = torch.randn(37, 6, generator=g), torch.randn(50, 6, generator=g)
    dist, idx = nearest_neighbours(q, bank, chunk=8)
    full = torch.cdist(q.double(), bank.double(), compute_mode="donot_use_mm_for_euclid_dist")
    torch.testing.assert_close(idx, full.argmin(1))
    torch.testing.assert_close(dist, full.min(1).values)


def test_memorisation_finds_planted_copies():
    g = torch.Generator().manual_seed(10)
    train = torch.randn(100, 8, generator=g)
    planted = [5, 17, 42]
    fake = torch.cat([train[planted], torch.randn(1, 8, generator=g) + 50.0])
    result = memorisation(fake, train)
    assert result.indices[:3].tolist() == planted
    assert result.distances[:3].tolist() == [0.0, 0.0, 0.0]
    assert result.distances[3] > 40.0
    assert result.ratio is None and result.test_median_distance is None


def test_memorisation_ratio_is_zero_for_copies_and_near_one_for_new_samples():
    g = torch.Generator().manual_seed(11)
    train, test, new = (torch.randn(200, 4, generator=g) for _ in range(3))
    copied = memorisation(train[:50], train, real_test=test)
    assert copied.median_distance == 0.0 and copied.ratio == 0.0 and copied.test_median_distance > 0
    fresh = memorisation(new, train, real_test=test)
    assert 0.7 < fresh.ratio < 1.4  # same distribution as the held-out reals


def test_memorisation_bad_inputs_name_the_value():
    with pytest.raises(ConfigError, match="queries has 3 features but bank has 4"):
        memorisation(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(ConfigError, match="chunk=0"):
        nearest_neighbours(torch.randn(5, 3), torch.randn(5, 3), chunk=0)
