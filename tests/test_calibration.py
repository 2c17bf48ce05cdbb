"""Calibration of predictor heads: scores against closed forms, a head with a known Gaussian, the protocol."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import ROOT, TINY, run_cli

from pjepa.config import load_config
from pjepa.data import splits_for
from pjepa.errors import ConfigError
from pjepa.eval.calibration import (
    LEVELS,
    calibration_metrics,
    central_coverage,
    correlations,
    crps_samples,
    empirical_quantiles,
    energy_score,
    finite_sample_coverage,
    gaussian_crps,
    reliability,
    sample_diversity,
    sampling_times,
    sort_draws,
    spread_error_correlation,
)
from pjepa.eval.protocols.calibration import evaluate_calibration
from pjepa.heads import PredictorHead, build_head
from pjepa.runs import Run


class GaussianHead(PredictorHead):
    """p(y | h) = N(h[..., :D], (scale * sigma)^2 I): the truth is sigma, ``scale`` mis-calibrates the draws."""

    has_log_prob = True

    def __init__(self, cond_dim: int, embed_dim: int, sigma: float, scale: float = 1.0) -> None:
        super().__init__(cond_dim, embed_dim)
        self.sigma, self.scale = sigma, scale
        self.sampled_in_training_mode: list[bool] = []

    def loss(self, h, y, generator=None):
        return -self.log_prob(h, y).mean() / self.embed_dim, {}

    def sample(self, h, n, generator=None):
        self.sampled_in_training_mode.append(self.training)
        mu = self.predict(h)
        return mu + self.scale * self.sigma * torch.randn((n, *mu.shape), generator=generator)

    def predict(self, h):
        return h[..., : self.embed_dim]

    def log_prob(self, h, y):
        return torch.distributions.Normal(self.predict(h), self.scale * self.sigma).log_prob(y).sum(-1)


SIGMA = 0.7


def gaussian_pairs(B: int = 8, T: int = 64, D: int = 16, seed: int = 0):
    """(h (B, T, D+2), y (B, T, D)) with y ~ N(h[..., :D], SIGMA^2 I), as two pairs of B/2 images."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, T, D + 2, generator=g)
    y = h[..., :D] + SIGMA * torch.randn(B, T, D, generator=g)
    return [(h[: B // 2], y[: B // 2]), (h[B // 2 :], y[B // 2 :])]


def gaussian_draws(n: int, scale: float = 1.0, B: int = 8, T: int = 64, D: int = 16, seed: int = 0):
    """(n, B, T, D) draws of N(0, (scale SIGMA)^2) and targets (B, T, D) of N(0, SIGMA^2)."""
    g = torch.Generator().manual_seed(seed)
    y = SIGMA * torch.randn(B, T, D, generator=g)
    return scale * SIGMA * torch.randn(n, B, T, D, generator=g), y


# ---- closed forms and estimators --------------------------------------------------------------

@pytest.mark.parametrize("mu, sigma, y", [(0.0, 1.0, 0.0), (0.5, 2.0, -1.3), (-1.0, 0.3, 0.2)])
def test_gaussian_crps_is_the_integral_of_the_squared_cdf_difference(mu, sigma, y):
    """CRPS(F, y) = int (F(x) - 1{x >= y})^2 dx, by the trapezoid rule on either side of the jump at y."""
    normal = torch.distributions.Normal(torch.tensor(mu, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64))
    lo, hi = min(mu - 12 * sigma, y - 1), max(mu + 12 * sigma, y + 1)
    left, right = torch.linspace(lo, y, 200_001, dtype=torch.float64), torch.linspace(y, hi, 200_001, dtype=torch.float64)
    integral = torch.trapezoid(normal.cdf(left) ** 2, left) + torch.trapezoid((normal.cdf(right) - 1) ** 2, right)
    closed = gaussian_crps(torch.tensor(mu, dtype=torch.float64), sigma, torch.tensor(y, dtype=torch.float64))
    assert closed.item() == pytest.approx(integral.item(), rel=1e-6, abs=1e-9)


def test_crps_of_draws_matches_the_brute_force_double_sum():
    g = torch.Generator().manual_seed(1)
    for n in (1, 2, 7):
        x, y = torch.randn(n, 2, 3, 4, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
        pairs = (x.unsqueeze(0) - x.unsqueeze(1)).abs().sum((0, 1))  # sum_{i,j} |X_i - X_j|
        brute = (x - y).abs().mean(0) - (pairs / (2 * n * (n - 1)) if n > 1 else 0)
        assert torch.allclose(crps_samples(x, y), brute, atol=1e-12)


def test_crps_of_a_point_mass_is_the_absolute_error():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    assert torch.allclose(crps_samples(x.expand(16, -1, -1, -1), y), (x - y).abs(), atol=1e-5)


def test_fair_crps_of_few_draws_is_unbiased_for_the_gaussian_crps():
    """With n = 8 the unfair 1/(2 n^2) estimator would sit sigma / (n sqrt(pi)) ~ 0.05 above: ~20 SE here."""
    draws, y = gaussian_draws(8)
    diff = crps_samples(draws, y) - gaussian_crps(torch.zeros_like(y), SIGMA, y)
    se = diff.std() / math.sqrt(diff.numel())
    assert abs(diff.mean().item()) < 5 * se.item()


def test_empirical_quantiles_interpolate_like_torch_quantile():
    x = torch.randn(13, 4, 5, generator=torch.Generator().manual_seed(3))
    q = torch.tensor([0.0, 0.025, 0.3, 0.5, 0.95, 1.0])
    assert torch.allclose(empirical_quantiles(sort_draws(x), q), torch.quantile(x, q, dim=0), atol=1e-6)


def test_calibrated_draws_cover_their_nominal_levels_up_to_the_finite_n_bias():
    """Coverage of each level is binomial over the B*T*D = 8192 independent coordinates; the
    reference is p (n-1)/(n+1), what a calibrated head's n-draw intervals cover."""
    n = 64
    draws, y = gaussian_draws(n)
    cov = central_coverage(draws, y)
    for c, p, ideal in zip(cov.tolist(), LEVELS, finite_sample_coverage(LEVELS, n)):
        se = math.sqrt(ideal * (1 - ideal) / y.numel())
        assert abs(c - ideal) < 4 * se + 0.002, (p, c, ideal)
    # too narrow a distribution covers far less than nominal
    narrow = central_coverage(gaussian_draws(n, scale=0.3)[0], y)
    assert all(c < p - 0.1 for c, p in zip(narrow.tolist(), LEVELS) if p >= 0.3)
    assert reliability(draws, y)["coverage"] == pytest.approx(cov.tolist())


def test_a_point_mass_covers_nothing_and_has_no_diversity():
    x, y = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    draws = x.expand(10, -1, -1, -1)
    assert central_coverage(draws, y).max().item() == 0.0
    assert sample_diversity(draws) == 0.0
    corr = spread_error_correlation(draws, x, y)  # constant (zero) spread: no correlation
    assert math.isnan(corr["pearson"]) and math.isnan(corr["spearman"])


def test_energy_score_prefers_the_true_spread():
    _, y = gaussian_draws(1)
    score = {scale: energy_score(gaussian_draws(32, scale, seed=5)[0], y).mean().item() for scale in (1.0, 2.0, 0.3)}
    assert score[1.0] < score[2.0] and score[1.0] < score[0.3]
    point = energy_score(torch.zeros(1, *y.shape), y)  # one draw: ||X - y||
    assert torch.allclose(point, y.norm(dim=-1))


def test_diversity_of_gaussian_draws_is_sqrt2_sigma():
    """E||Z - Z'|| / sqrt(D) = sqrt(2) sigma E[chi_D] / sqrt(D) ~ sqrt(2) sigma (1 - 1/(4D))."""
    draws, _ = gaussian_draws(16, D=64)
    assert sample_diversity(draws) == pytest.approx(math.sqrt(2) * SIGMA * (1 - 1 / 256), rel=0.01)


def test_spread_tracks_error_when_the_uncertainty_varies_by_token():
    g = torch.Generator().manual_seed(4)
    B, T, D = 4, 128, 16
    sigma = torch.exp(torch.empty(B, T, 1).uniform_(math.log(0.1), math.log(3.0), generator=g))
    mu = torch.randn(B, T, D, generator=g)
    y = mu + sigma * torch.randn(B, T, D, generator=g)
    draws = mu + sigma * torch.randn(32, B, T, D, generator=g)
    corr = spread_error_correlation(draws, mu, y)
    assert corr["pearson"] > 0.8 and corr["spearman"] > 0.8
    # a spread unrelated to the error: no correlation
    shuffled = draws[:, :, torch.randperm(T, generator=g)]
    assert abs(spread_error_correlation(shuffled, mu, y)["spearman"]) < 0.3


def test_spearman_uses_average_ranks_of_ties():
    a = torch.linspace(0, 1, 50)
    both = correlations(a, torch.exp(8 * a))  # monotone: rank correlation 1, linear less
    assert both["spearman"] == pytest.approx(1.0) and both["pearson"] < 0.9
    # ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9), as scipy.stats.spearmanr
    ties = correlations(torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert ties["spearman"] == pytest.approx(math.sqrt(0.9))


# ---- a head with a known distribution ---------------------------------------------------------

def test_metrics_of_a_calibrated_gaussian_head():
    head = GaussianHead(18, 16, SIGMA)
    head.train()
    pairs = gaussian_pairs()
    m = calibration_metrics(head, pairs, torch.Generator().manual_seed(0), num_samples=64, sample_tokens=512)
    assert head.sampled_in_training_mode == [False, False] and head.training  # eval mode, then restored
    assert m["sampled_tokens"] == 512 and m["num_samples"] == 64
    ideal = finite_sample_coverage(LEVELS, 64)
    se = [math.sqrt(c * (1 - c) / (512 * 16)) for c in ideal]
    assert all(abs(c - i) < 4 * s + 0.002 for c, i, s in zip(m["coverage"], ideal, se))
    assert m["calibration_error"] == pytest.approx(sum(abs(c - p) for c, p in zip(m["coverage"], LEVELS)) / 10)
    expected_nll = 0.5 * math.log(2 * math.pi * SIGMA**2) + 0.5  # entropy per dim of N(mu, SIGMA^2)
    assert m["nll"] == pytest.approx(expected_nll, abs=0.03)
    y = torch.cat([y for _, y in pairs])
    exact_crps = gaussian_crps(torch.zeros_like(y), SIGMA, y - torch.cat([h[..., :16] for h, _ in pairs]))
    assert m["crps"] == pytest.approx(exact_crps.mean().item(), abs=0.01)
    assert m["crps"] < m["point_crps"] and m["energy_score"] < m["point_energy_score"]  # the spread helps
    assert m["diversity"] == pytest.approx(math.sqrt(2) * SIGMA, rel=0.05)
    # constant sigma: the spread does not predict the error (but exists)
    assert abs(m["spread_error_spearman"]) < 0.2


def test_sampled_tokens_are_whole_images_from_the_first_pairs():
    head = GaussianHead(18, 16, SIGMA, scale=0.3)
    m = calibration_metrics(head, gaussian_pairs(), torch.Generator().manual_seed(0), num_samples=16,
                            sample_tokens=65)
    assert m["sampled_tokens"] == 128  # two images of 64 tokens
    assert m["coverage"][LEVELS.index(0.9)] < 0.5  # over-confident


def test_deterministic_head_is_a_point_mass():
    torch.manual_seed(0)
    head = build_head("deterministic", 4, 3)
    h, y = torch.randn(2, 5, 4), torch.randn(2, 5, 3)
    m = calibration_metrics(head, [(h, y)], torch.Generator().manual_seed(0), num_samples=4)
    assert "nll" not in m and max(m["coverage"]) == 0.0 and m["diversity"] == 0.0
    assert m["crps"] == pytest.approx(m["point_crps"], rel=1e-5)
    assert m["energy_score"] == pytest.approx(m["point_energy_score"], rel=1e-5)
    assert math.isnan(m["spread_error_pearson"])
    with pytest.raises(ConfigError, match="num_samples=0"):
        calibration_metrics(head, [(h, y)], torch.Generator(), num_samples=0)


# ---- sampling cost per sampler setting --------------------------------------------------------

@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_sampling_times_of_diffusion_at_50_and_25_steps(sampler, monkeypatch, one_thread):
    head = build_head("diffusion", 4, 3, width=16, blocks=1, sampler=sampler)
    steps = []
    ddim = head.ddim
    monkeypatch.setattr(head, "ddim", lambda h, x, k: steps.append(k) or ddim(h, x, k))
    times = sampling_times(head, torch.randn(1, 4, 4), torch.Generator().manual_seed(0))
    assert set(times) == {f"{sampler}50", f"{sampler}25"} and all(t > 0 for t in times.values())
    assert set(steps) == {50, 25} and head.sample_steps == 50


def test_sampling_times_of_flow_matching_at_its_and_half_its_ode_steps(monkeypatch, one_thread):
    head = build_head("flow", 4, 3, objective="flow_matching", hidden=16, fm_blocks=1, ode_steps=6)
    seen = []
    integrate = head._integrate
    monkeypatch.setattr(head, "_integrate", lambda x, h: seen.append(head.ode_steps) or integrate(x, h))
    times = sampling_times(head, torch.randn(1, 4, 4), torch.Generator().manual_seed(0))
    assert set(times) == {"ode6", "ode3"} and set(seen) == {6, 3} and head.ode_steps == 6  # restored
    realnvp = build_head("flow", 4, 3, objective="nll", hidden=16, layers=2)
    assert set(sampling_times(realnvp, torch.randn(1, 4, 4), torch.Generator())) == {"default"}


def test_sampling_times_of_the_flow_matching_head_by_its_own_name(one_thread):
    head = build_head("flow_matching", 4, 3, hidden=16, fm_blocks=1, ode_steps=6)
    assert set(sampling_times(head, torch.randn(1, 4, 4), torch.Generator().manual_seed(0))) == {"ode6", "ode3"}
    realnvp = build_head("flow", 4, 3, hidden=16, layers=2)
    assert set(sampling_times(realnvp, torch.randn(1, 4, 4), torch.Generator())) == {"default"}


# ---- the protocol -----------------------------------------------------------------------------

def strict_json(path):
    """Parse ``path`` refusing NaN / Infinity, which json.dumps writes but JSON does not allow."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_eval_calibration_writes_its_report(tiny_run, one_thread):
    r = evaluate_calibration(tiny_run, eval_limit=16, num_samples=8, tokens=64)
    saved = strict_json(tiny_run / "eval" / "calibration.json")
    assert r["path"] == str(tiny_run / "eval" / "calibration.json")
    for key in ("levels", "coverage", "coverage_finite_n", "calibration_error", "crps", "point_crps",
                "energy_score", "point_energy_score", "spread_error_pearson", "spread_error_spearman",
                "diversity", "sampled_tokens", "num_samples", "sample_seconds_per_1000", "head", "head_options",
                "has_log_prob", "dataset", "split", "n_images", "checkpoint", "step", "device", "seconds"):
        assert key in saved, key
    val = splits_for(Run(tiny_run).config).val  # the validation split, never the reported one
    assert saved["split"] == val.split and saved["n_images"] == min(16, len(val)) and saved["num_samples"] == 8
    assert saved["head"] == "deterministic" and not saved["has_log_prob"] and "nll" not in saved
    assert saved["spread_error_pearson"] is None  # nan (a point mass has no spread) is written as null
    assert max(saved["coverage"]) == 0.0 and set(saved["sample_seconds_per_1000"]) == {"default"}
    assert saved["sampled_tokens"] >= 64


def test_eval_calibration_from_the_command_line(tiny_run):
    out = run_cli("eval", "calibration", "--run", str(tiny_run), "--eval-limit", "16", "--samples", "8")
    assert out.returncode == 0, out.stderr
    assert "coverage 50% 0.000 90% 0.000" in out.stdout and "CRPS" in out.stdout and "wrote " in out.stdout


def test_a_method_without_a_head_cannot_be_calibrated(tmp_path, one_thread):
    from pjepa.train.loop import train

    run = tmp_path / "mae"
    train(load_config(ROOT / "configs" / "smoke" / "mae.yaml",
                      TINY + ["train.max_steps=1", "train.eval_every=0",
                              "method.options={decoder_dim: 16, decoder_depth: 1, decoder_heads: 2}"]), run)
    with pytest.raises(ConfigError, match=f"run {run} .*mae.*has no predictor head"):
        evaluate_calibration(run, eval_limit=8, num_samples=2, tokens=8)
