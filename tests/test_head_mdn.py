"""The mixture density head against torch.distributions, and its loss, point estimate and sampler."""

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from pjepa.errors import ConfigError
from pjepa.heads import build_head

B, M, DP, D, K = 2, 3, 8, 4, 3


def reference(head, h):
    log_pi, mu, sigma = head.params(h)
    return MixtureSameFamily(Categorical(logits=log_pi), Independent(Normal(mu, sigma), 1))


@pytest.mark.parametrize("hidden", [0, 16])
def test_log_prob_equals_torch_distributions(hidden):
    torch.manual_seed(0)
    head = build_head("mdn", DP, D, components=K, hidden=hidden)
    for p in head.parameters():  # non-trivial weights, logits included
        torch.nn.init.normal_(p, std=0.5)
    h, y = torch.randn(B, M, DP), 2 * torch.randn(B, M, D)
    torch.testing.assert_close(head.log_prob(h, y), reference(head, h).log_prob(y), rtol=1e-5, atol=1e-5)


def test_loss_is_per_dim_nll_plus_logvar_regulariser():
    torch.manual_seed(1)
    head = build_head("mdn", DP, D, components=K, logvar_weight=0.5)
    h, y = torch.randn(B, M, DP), torch.randn(B, M, D)
    loss, diag = head.loss(h, y)
    nll = -head.log_prob(h, y).mean() / D
    reg = (2 * head.params(h)[2].log()).pow(2).mean()
    assert loss.item() == pytest.approx((nll + 0.5 * reg).item(), rel=1e-5)
    assert diag["nll"].item() == pytest.approx(nll.item(), rel=1e-5)
    # zero-initialised logits: uniform weights, entropy log K, K effective components
    assert diag["entropy"].item() == pytest.approx(math.log(K), rel=1e-5)
    assert diag["effective_components"].item() == pytest.approx(K, rel=1e-5)
    assert diag["sigma_p10"] <= diag["sigma_p50"] <= diag["sigma_p90"]


def test_scale_floor_bounds_the_nll():
    head = build_head("mdn", DP, D, components=1, min_scale=0.1)
    torch.nn.init.constant_(head.raw_sigma.bias, -50.0)  # softplus -> 0: only the floor is left
    torch.nn.init.zeros_(head.raw_sigma.weight)
    sigma = head.params(torch.randn(B, M, DP))[2]
    torch.testing.assert_close(sigma, torch.full_like(sigma, 0.1))


def test_predict_is_the_mixture_mean_and_samples_pick_components_by_weight():
    torch.manual_seed(2)
    head = build_head("mdn", DP, 1, components=2, min_scale=1e-3)
    with torch.no_grad():  # two far modes at -5 / +5 with weights 0.2 / 0.8 and tiny scales
        for p in head.parameters():
            p.zero_()
        head.logits.bias.copy_(torch.tensor([math.log(0.2), math.log(0.8)]))
        head.mu.bias.copy_(torch.tensor([-5.0, 5.0]))
        head.raw_sigma.bias.fill_(-20.0)
    h = torch.randn(1, 1, DP)
    assert head.predict(h).item() == pytest.approx(0.2 * -5 + 0.8 * 5, abs=1e-4)
    s = head.sample(h, 4000, torch.Generator().manual_seed(0)).flatten()
    assert ((s - 5).abs() < 0.1).float().mean().item() == pytest.approx(0.8, abs=0.03)
    assert (((s + 5).abs() < 0.1) | ((s - 5).abs() < 0.1)).all()


@pytest.mark.parametrize("option", [{"components": 0}, {"min_scale": 0.0}, {"hidden": -1}])
def test_bad_options_name_the_option(option):
    with pytest.raises(ConfigError, match=f"head.options.{next(iter(option))}"):
        build_head("mdn", DP, D, **option)
