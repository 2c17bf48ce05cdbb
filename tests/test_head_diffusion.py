"""The diffusion head: schedule, DDIM with an oracle denoiser, the training objective."""

import pytest
import torch

from pjepa.errors import ConfigError
from pjepa.heads import build_head
from pjepa.heads.diffusion import ddim_timesteps, linear_beta_schedule

DP, D = 8, 4


def test_linear_schedule_matches_ho_et_al():
    abar = linear_beta_schedule(1000)
    assert abar[0].item() == pytest.approx(1 - 1e-4)
    assert abar[1].item() == pytest.approx((1 - 1e-4) * (1 - (1e-4 + (0.02 - 1e-4) / 999)))
    assert abar[-1].item() == pytest.approx(4.04e-5, rel=0.02)  # DDPM's abar_T: nearly pure noise
    assert (abar[1:] < abar[:-1]).all()


@pytest.mark.parametrize("steps", [2, 25, 50, 1000])
def test_ddim_timesteps_are_strictly_decreasing_to_zero(steps):
    ts = ddim_timesteps(1000, steps)
    assert ts[0] == 999 and ts[-1] == 0 and len(ts) == steps
    assert ddim_timesteps(1000, 1) == [999]  # one step: straight from x_T to x0_hat
    assert all(a > b for a, b in zip(ts, ts[1:]))


class Oracle(torch.nn.Module):
    """The exact noise predictor when p(y | h) is a point mass at y0: eps = (x - sqrt(abar) y0) / sqrt(1 - abar)."""

    def __init__(self, abar, y0):
        super().__init__()
        self.abar, self.y0, self.calls = abar, y0, 0

    def forward(self, x, t, h):
        self.calls += 1
        ab = self.abar[t].unsqueeze(-1)
        return (x - ab.sqrt() * self.y0) / (1 - ab).sqrt()


@pytest.mark.parametrize("steps", [50, 25])
def test_ddim_with_the_oracle_recovers_the_target_and_costs_one_pass_per_step(steps):
    head = build_head("diffusion", DP, D, sample_steps=steps, prediction="eps", sampler="ddim")
    y0 = torch.tensor([1.5, -0.5, 0.25, 3.0])
    head.net = Oracle(head.abar, y0)
    h = torch.randn(2, 3, DP)
    s = head.sample(h, 5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(s, y0.expand(5, 2, 3, D), atol=1e-4, rtol=1e-4)
    assert head.net.calls == steps
    torch.testing.assert_close(head.predict(h), y0.expand(2, 3, D), atol=1e-4, rtol=1e-4)


def test_loss_is_the_noise_mse_and_zero_for_the_oracle():
    torch.manual_seed(0)
    head = build_head("diffusion", DP, D, prediction="eps")
    y0 = torch.randn(D)
    head.net = Oracle(head.abar, y0)
    loss, diag = head.loss(torch.randn(4, 6, DP), y0.expand(4, 6, D))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert diag["x0_mse"].item() == pytest.approx(0.0, abs=1e-6) and diag["x0_cos"].item() == pytest.approx(1.0)


def test_attention_denoiser_mixes_tokens_of_one_image_only():
    torch.manual_seed(0)
    head = build_head("diffusion", DP, D, attention=True, width=16, num_heads=2)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x, h, t = torch.randn(2, 3, D), torch.randn(2, 3, DP), torch.full((2, 3), 500)
    out = head.net(x, t, h)
    x2 = x.clone()
    x2[1, 0] += 1.0  # perturb a token of image 1
    out2 = head.net(x2, t, h)
    assert torch.equal(out[0], out2[0])  # image 0 unaffected
    assert not torch.allclose(out[1, 1], out2[1, 1])  # other tokens of image 1 see it


@pytest.mark.parametrize("option", [{"timesteps": 1}, {"sample_steps": 0}, {"sample_steps": 2000},
                                    {"beta_start": 0.03}, {"clip_x0": -1.0}])
def test_bad_options_name_the_option(option):
    with pytest.raises(ConfigError, match=f"head.options.{next(iter(option))}"):
        build_head("diffusion", DP, D, **option)
