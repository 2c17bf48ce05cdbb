"""The autoregressive (RNADE / MADE) head: masks, exact density, sampling, fitting, options."""

import math

import pytest
import torch
from torch.distributions import (
    AffineTransform,
    Categorical,
    MixtureSameFamily,
    Normal,
    SigmoidTransform,
    TransformedDistribution,
    Uniform,
)

from pjepa.errors import ConfigError
from pjepa.heads import HEADS, build_head
from pjepa.heads.autoregressive import AutoregressiveHead

DP = 4
FAMILIES = ["gaussian", "logistic"]


def make_head(dim: int, std: float | None = 0.5, **options):
    """A head whose ActNorm was set from non-standard data, then (std) random non-trivial weights; eval mode."""
    torch.manual_seed(0)
    head = AutoregressiveHead(DP, dim, **options)
    loc, scale = torch.tensor([2.0, -1.0]).repeat(dim)[:dim], torch.tensor([0.5, 3.0]).repeat(dim)[:dim]
    head.loss(torch.randn(64, 1, DP), loc + scale * torch.randn(64, 1, dim))  # train mode: initialises ActNorm
    if std is not None:
        with torch.no_grad():
            for name, p in head.named_parameters():
                if not name.startswith("actnorm."):
                    p.normal_(0.0, std)
    return head.eval()


def flat_params(head: AutoregressiveHead, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(D,), (Dp,) -> (D, 3K): all per-coordinate outputs for one row."""
    return torch.cat(head._params(z[None], c[None]), dim=-1)[0]


@pytest.mark.parametrize("dim, options", [
    (5, dict(hidden=7, depth=1, components=2)),
    (6, dict(hidden=3, depth=2, components=1)),  # hidden < D: some degrees have no units
    (12, dict(hidden=64, depth=6, components=3)),  # deep and wide
])
def test_outputs_of_coordinate_d_depend_only_on_earlier_coordinates(dim, options):
    head = make_head(dim, **options)
    z, c = torch.randn(dim), torch.randn(DP)
    jac = torch.autograd.functional.jacobian(lambda v: flat_params(head, v, c), z)  # (D, 3K, D)
    upper = torch.ones(dim, dim, dtype=torch.bool).triu()  # [d, j]: j >= d
    assert jac.permute(0, 2, 1)[upper].abs().max() == 0  # nothing from y_d, y_{d+1}, ...
    for d in range(1, dim):
        assert jac[d, :, :d].abs().sum() > 0  # ... but the earlier ones are used


def test_first_coordinate_depends_on_h_at_initialisation():
    torch.manual_seed(0)
    head = AutoregressiveHead(DP, 6)  # default init, no re-initialisation
    jac = torch.autograd.functional.jacobian(lambda c: flat_params(head, torch.randn(6), c), torch.randn(DP))
    assert jac[0].abs().sum() > 0  # coordinate 1 has no y inputs, yet is a function of h


def y_space_params(head: AutoregressiveHead, c: torch.Tensor):
    """D = 1: the head's mixture mapped through the inverse ActNorm -> logits, loc, scale (T, K)."""
    logits, loc, scale = (p[:, 0] for p in head._params(torch.zeros(c.shape[0], 1), c))
    a, b = head.actnorm.log_scale.exp(), head.actnorm.bias
    return logits, loc * a + b, scale * a


@pytest.mark.parametrize("family", FAMILIES)
def test_one_dimensional_head_is_a_conditional_mixture(family):
    head = make_head(1, family=family, components=3)
    assert head.actnorm.bias.abs().item() > 1  # the log-det term is exercised
    h, y = torch.randn(7, 1, DP), 2.0 + 2.0 * torch.randn(7, 1, 1)
    with torch.no_grad():
        logits, loc, scale = y_space_params(head, h.reshape(-1, DP))
        if family == "gaussian":
            comp = Normal(loc, scale)
        else:
            uniform = Uniform(torch.zeros_like(loc), torch.ones_like(loc), validate_args=False)
            comp = TransformedDistribution(uniform, [SigmoidTransform().inv, AffineTransform(loc, scale)])
        expected = MixtureSameFamily(Categorical(logits=logits), comp).log_prob(y.reshape(-1))
        torch.testing.assert_close(head.log_prob(h, y).reshape(-1), expected, rtol=1e-5, atol=1e-5)


def grid_density(head: AutoregressiveHead, h: torch.Tensor, half_width: float = 25.0, n: int = 1001):
    """D = 2 midpoint grid in y-space covering +-half_width ActNorm std -> points (G, 2), p (G,), cell area."""
    z = torch.linspace(-half_width, half_width, n)
    a, b = head.actnorm.log_scale.detach().exp(), head.actnorm.bias.detach()
    y0, y1 = z * a[0] + b[0], z * a[1] + b[1]
    pts = torch.cartesian_prod(y0, y1)  # (G, 2)
    with torch.no_grad():
        lp = head.log_prob(h.expand(1, pts.shape[0], DP), pts[None])[0]
    return pts, lp.exp(), float((y0[1] - y0[0]) * (y1[1] - y1[0]))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.slow
def test_density_integrates_to_one(family, one_thread):
    head = make_head(2, std=0.3, family=family, hidden=16, depth=2, components=3, min_scale=0.05)
    for seed in range(2):
        h = torch.randn(1, 1, DP, generator=torch.Generator().manual_seed(seed))
        _, p, area = grid_density(head, h)
        assert (p * area).sum().item() == pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_moments_match_the_density(family, one_thread):
    head = make_head(2, std=0.3, family=family, hidden=16, depth=2, components=3, min_scale=0.05)
    h = torch.randn(1, 1, DP, generator=torch.Generator().manual_seed(1))
    pts, p, area = grid_density(head, h)
    w = p * area / (p * area).sum()
    mean = (w[:, None] * pts).sum(0)
    cov = (w[:, None, None] * (pts - mean)[:, :, None] * (pts - mean)[:, None, :]).sum(0)
    draws = head.sample(h, 20000, torch.Generator().manual_seed(0))[:, 0, 0]  # (n, 2)
    std = cov.diagonal().sqrt()
    assert ((draws.mean(0) - mean).abs() / std).max() < 0.05
    rel = (torch.cov(draws.T) - cov) / (std[:, None] * std[None, :])  # correlation-scale errors
    assert rel.abs().max() < 0.08


def naive_chain(head: AutoregressiveHead, c: torch.Tensor, pick) -> torch.Tensor:
    """Reference: one full MADE pass per coordinate (no caching)."""
    z = torch.zeros(c.shape[0], head.embed_dim)
    for d in range(head.embed_dim):
        logits, loc, scale = head._params(z, c)
        z[:, d] = pick(logits[:, d], loc[:, d], scale[:, d])
    return head.actnorm.inverse(z)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("hidden, depth", [(3, 2), (40, 3)])
def test_cached_sequential_passes_equal_full_passes(family, hidden, depth):
    head = make_head(6, std=0.2, family=family, hidden=hidden, depth=depth, components=2)
    h = torch.randn(2, 3, DP)
    c = h.reshape(-1, DP).repeat(2, 1)  # n = 2 copies, in the order sample() uses
    with torch.no_grad():
        mean_chain = naive_chain(head, c[:6], lambda lg, mu, s: (lg.softmax(-1) * mu).sum(-1))
        gen = torch.Generator().manual_seed(3)
        drawn = naive_chain(head, c, lambda lg, mu, s: head._draw(lg, mu, s, gen))
    torch.testing.assert_close(head.predict(h), mean_chain.view(2, 3, 6), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(head.sample(h, 2, torch.Generator().manual_seed(3)), drawn.view(2, 2, 3, 6),
                               rtol=1e-4, atol=1e-5)


def test_loss_is_per_dimension_nll_with_diagnostics():
    head = make_head(3, std=None, components=4)
    h, y = torch.randn(2, 5, DP), torch.randn(2, 5, 3)
    loss, diag = head.loss(h, y)
    assert loss.item() == pytest.approx(-head.log_prob(h, y).mean().item() / 3, rel=1e-5)
    assert set(diag) == {"nll", "effective_components", "log_scale"}
    assert 1.0 <= diag["effective_components"].item() <= 4.0 + 1e-4
    assert diag["log_scale"].item() == pytest.approx(0.0, abs=0.05)  # scales start near 1


def test_fits_a_two_mode_target(one_thread):
    torch.manual_seed(0)
    head = AutoregressiveHead(DP, 2, hidden=32, depth=2, components=3)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)

    def batch(n: int = 256):
        sign = torch.randint(0, 2, (n, 1, 1)).float() * 2 - 1
        return torch.randn(n, 1, DP), 2.0 * sign + 0.1 * torch.randn(n, 1, 2)  # both coordinates share the mode

    nlls = []
    for _ in range(300):
        h, y = batch()
        loss, diag = head.loss(h, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        nlls.append(diag["nll"].item())
    assert sum(nlls[-20:]) / 20 < min(0.0, sum(nlls[:5]) / 5 - 1.0)  # true per-dim entropy is about -0.54
    head.eval()
    h = torch.randn(500, 1, DP)
    draws = head.sample(h, 1, torch.Generator().manual_seed(0))[0, :, 0]  # (500, 2)
    for mode in (2.0, -2.0):
        assert ((draws[:, 0] - mode).abs() < 0.5).float().mean() > 0.25
    assert ((draws[:, 1] - draws[:, 0]).abs() < 0.5).float().mean() > 0.9  # coordinate 2 follows coordinate 1
    assert torch.isfinite(head.predict(h)).all()


def test_is_registered():
    assert "autoregressive" in HEADS
    head = build_head("autoregressive", DP, 3, hidden=8, family="logistic")
    assert isinstance(head, AutoregressiveHead) and head.has_log_prob


@pytest.mark.parametrize("option, value", [
    ("family", "cauchy"),
    ("components", 0),
    ("hidden", 0),
    ("hidden", 2.5),
    ("depth", 0),
    ("min_scale", 0.0),
    ("min_scale", -1e-3),
    ("actnorm", "yes"),
])
def test_bad_options_raise_config_error(option, value):
    with pytest.raises(ConfigError, match=f"head.options.{option}="):
        AutoregressiveHead(DP, 3, **{option: value})


def test_reference_variant_is_reachable():
    head = AutoregressiveHead(DP, 10, hidden=600, depth=6)
    assert len(head.layers) == 6 and head.layers[0].out_features == 600
    assert math.isfinite(head.loss(torch.randn(2, 3, DP), torch.randn(2, 3, 10))[0].item())
