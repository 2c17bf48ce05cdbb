"""The flow head: exact invertibility, log-dets and normalisation (nll), the scale clamp,
the two-mode toy, option validation, and the head contract per option set. The flow-matching
tests here build it as earlier releases spelled it (head "flow", objective "flow_matching"),
which migrates to the flow_matching head (tests/test_head_flow_matching.py: by its own name)."""

import pytest
import torch
import torch.nn as nn
from toy import mode_fractions, train_toy, two_mode_batch

import pjepa.heads.flow  # noqa: F401  (registers "flow")
from pjepa.errors import ConfigError
from pjepa.heads import HEADS, build_head

B, M, DP = 3, 5, 16


def randomised(head, D: int, std: float = 0.3, seed: int = 0):
    """ActNorm initialised by one train-mode loss, then every parameter re-drawn ~ N(0, std^2); eval mode."""
    torch.manual_seed(seed)
    head.loss(torch.randn(B, M, DP), torch.randn(B, M, D))
    with torch.no_grad():
        for p in head.parameters():
            nn.init.normal_(p, std=std)
    return head.eval()


def test_registered():
    assert "flow" in HEADS.names()


@pytest.mark.parametrize("dtype, std, atol", [(torch.float32, 0.15, 1e-4), (torch.float64, 0.3, 1e-8)])
def test_inverse_of_forward_is_identity(dtype, std, atol):
    # std 0.3 stretches z to ~1e3 at hidden 32, beyond what fp32 can invert to 1e-4: check it in fp64.
    D = 8
    head = randomised(build_head("flow", DP, D, hidden=32), D, std=std).to(dtype)
    h, y = torch.randn(B, M, DP, dtype=dtype), torch.randn(B, M, D, dtype=dtype)
    z, _, ld = head.flow(y, h)
    assert (z - y).abs().max() > 1.0 and ld.abs().mean() > 0.3  # the map is far from the identity
    torch.testing.assert_close(head.flow.inverse(z, h), y, atol=atol, rtol=0)


def test_sample_and_predict_are_inverse_images():
    D = 4
    head = randomised(build_head("flow", DP, D, hidden=32), D, std=0.15)
    h = torch.randn(B, M, DP)
    ys = head.sample(h, 2, torch.Generator().manual_seed(3))
    z = torch.randn((2, B, M, D), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(head.flow(ys, h.expand(2, B, M, DP))[0], z, atol=1e-4, rtol=0)
    torch.testing.assert_close(head.flow(head.predict(h), h)[0], torch.zeros(B, M, D), atol=1e-4, rtol=0)


def test_log_det_equals_jacobian_determinant():
    D = 3
    head = randomised(build_head("flow", DP, D, hidden=32), D).double()
    h, y = torch.randn(6, DP, dtype=torch.float64), torch.randn(6, D, dtype=torch.float64)
    _, ld_act, ld_coup = head.flow(y, h)
    total = ld_act + ld_coup  # (6,)
    for r in range(6):
        J = torch.autograd.functional.jacobian(lambda v, r=r: head.flow(v[None], h[r : r + 1])[0][0], y[r])  # (D, D)
        assert total[r].item() == pytest.approx(torch.linalg.slogdet(J).logabsdet.item(), abs=1e-8)
    assert ld_coup.abs().min() > 1e-2  # the couplings contribute: a dropped term would fail above


@pytest.mark.parametrize("seed", [0, 1])
def test_density_integrates_to_one(seed, one_thread):
    D = 2
    head = randomised(build_head("flow", DP, D, layers=4, hidden=16), D, seed=seed)
    h = torch.randn(1, DP)
    ys = head.sample(h[None], 20000, torch.Generator().manual_seed(0)).reshape(-1, D)
    lo, hi = ys.min(0).values, ys.max(0).values
    lo, hi = lo - 0.5 * (hi - lo), hi + 0.5 * (hi - lo)  # generous box around the mass
    n = 700
    g0, g1 = torch.linspace(lo[0], hi[0], n), torch.linspace(lo[1], hi[1], n)
    grid = torch.stack(torch.meshgrid(g0, g1, indexing="ij"), -1).reshape(1, -1, D)  # (1, n*n, 2)
    lp = head.log_prob(h.expand(1, grid.shape[1], DP), grid)  # (1, n*n)
    cell = (g0[1] - g0[0]) * (g1[1] - g1[0])
    mass = (lp.double().exp().sum() * cell).item()
    assert mass == pytest.approx(1.0, abs=1e-2)
    _, ld_act, ld_coup = head.flow(grid, h.expand(1, grid.shape[1], DP))
    assert (ld_act + ld_coup).abs().mean() > 0.1  # a wrong log-det would move the mass


def test_scale_clamp_bounds_every_log_scale():
    D, clamp = 6, 1.5
    head = build_head("flow", DP, D, hidden=32, scale_clamp=clamp)
    with torch.no_grad():
        for coupling in head.flow.couplings:
            for p in coupling.net.parameters():
                nn.init.normal_(p, std=100.0)
    seen = []
    for coupling in head.flow.couplings:
        original = coupling.scale_shift

        def record(xa, h, original=original):
            s, t = original(xa, h)
            seen.append(s.detach())
            return s, t

        coupling.scale_shift = record
    h, y = torch.randn(B, M, DP), torch.randn(B, M, D)
    lp = head.log_prob(h, y)
    s = torch.cat([v.reshape(-1) for v in seen])
    assert len(seen) == len(head.flow.couplings)
    assert s.abs().max() <= clamp and s.abs().max() > 0.99 * clamp  # saturated, never beyond
    assert torch.isfinite(lp).all()


@pytest.mark.parametrize("D", [1, 2])
def test_flow_matching_covers_both_modes_while_predict_falls_between(D, one_thread):
    cond = 4
    torch.manual_seed(0)
    head = build_head("flow", cond, D, objective="flow_matching", hidden=64, fm_blocks=2, ode_steps=10)
    train_toy(head, D, cond, steps=300, noise=0.0, lr=3e-3)
    h, _ = two_mode_batch(2000, D, cond, 0.0)
    plus, minus, middle = mode_fractions(head.sample(h, 1, torch.Generator().manual_seed(0)))
    assert plus > 0.25 and minus > 0.25 and middle < 0.15, (plus, minus, middle)
    assert plus + minus > 0.9  # point-mass targets: the ODE transports (almost) all the noise onto them
    assert head.predict(h).mean(-1).abs().mean() < 0.5  # E[y | h] = 0: between the modes


def test_flow_matching_loss_worked_example():
    D = 3
    head = build_head("flow", DP, D, objective="flow_matching", hidden=32)
    h, y = torch.randn(B, M, DP), torch.randn(B, M, D)
    torch.manual_seed(5)
    loss, diag = head.loss(h, y)
    torch.manual_seed(5)  # the same draws, in the head's order: x0 then t
    x0, t = torch.randn(B, M, D), torch.rand(B, M)
    xt = (1 - t[..., None]) * x0 + t[..., None] * y
    expected = ((head.field(xt, t, h) - (y - x0)) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and diag["fm_mse"] == loss.detach()
    torch.testing.assert_close(head.predict(h), head.field(torch.zeros(B, M, D), torch.zeros(B, M), h))


@pytest.mark.slow
def test_nll_covers_both_modes(one_thread):
    D, cond = 2, 4
    torch.manual_seed(0)
    head = build_head("flow", cond, D, layers=6, hidden=64)
    train_toy(head, D, cond, steps=400, noise=0.2, lr=3e-3)
    h, y = two_mode_batch(2000, D, cond, 0.2)
    plus, minus, middle = mode_fractions(head.sample(h, 1, torch.Generator().manual_seed(0)))
    assert plus > 0.25 and minus > 0.25 and middle < 0.15, (plus, minus, middle)
    assert head.loss(h, y)[0] < 0.5  # per-dim NLL: true mixture ~0.16, best single Gaussian ~1.14


def test_nll_loss_is_per_dim_negative_log_prob():
    D = 5
    head = build_head("flow", DP, D, hidden=32)
    h, y = torch.randn(B, M, DP), torch.randn(B, M, D)
    loss, diag = head.loss(h, y)
    assert {"nll", "logdet", "logdet_actnorm", "logdet_coupling"} <= set(diag)
    assert loss.item() == pytest.approx((-head.log_prob(h, y).mean() / D).item(), rel=1e-5)


def test_flow_matching_has_no_log_prob():
    head = build_head("flow", DP, 4, objective="flow_matching")
    assert head.has_log_prob is False and build_head("flow", DP, 4).has_log_prob is True
    with pytest.raises(ConfigError, match="no exact log-likelihood"):
        head.log_prob(torch.randn(B, M, DP), torch.randn(B, M, 4))
    assert set(head.loss(torch.randn(B, M, DP), torch.randn(B, M, 4))[1]) == {"fm_mse"}


@pytest.mark.parametrize(
    "options, name",
    [
        ({"objective": "mle"}, "objective"),
        ({"solver": "rk4"}, "solver"),
        ({"layers": 0}, "layers"),
        ({"hidden": 2.5}, "hidden"),
        ({"ode_steps": 0}, "ode_steps"),
        ({"fm_blocks": 0}, "fm_blocks"),
        ({"scale_clamp": 0.0}, "scale_clamp"),
    ],
)
def test_bad_options_name_the_option(options, name):
    with pytest.raises(ConfigError, match=f"head.options.{name}="):
        build_head("flow", DP, 4, **options)


