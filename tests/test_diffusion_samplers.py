"""The diffusion samplers and parametrisations (pjepa.models.diffusion).

DDIM with 50 steps undershot the spread of a known distribution (a 1-D Gaussian
with std 0.5 came out at 0.473). The cause is the sampler, not the network:
with the *exact* noise predictor DDIM returns 0.472. DPM-Solver++(2M) over
log-SNR-spaced steps returns 0.501 at the same cost.
"""

import pytest
import torch

from pjepa.errors import ConfigError
from pjepa.heads import build_head
from pjepa.models.diffusion import (
    PREDICTIONS,
    SAMPLERS,
    DiffusionSchedule,
    logsnr,
    logsnr_timesteps,
    prediction_target,
    sample_ode,
    split_prediction,
)

STD = 0.5


def gaussian_denoiser(sched: DiffusionSchedule, std: float):
    """The exact (x0_hat, eps_hat) = E[. | x_t] when x0 ~ N(0, std^2) per coordinate."""

    def denoise(x, t):
        ab = sched.abar[t].unsqueeze(-1)
        eps = (1 - ab).sqrt() * x / (ab * std ** 2 + 1 - ab)
        return split_prediction(eps, x, ab, "eps")

    return denoise


def spread(sched: DiffusionSchedule, steps: int, sampler: str, spacing: str) -> float:
    """The std of the samples, exactly: with this denoiser every step is linear in x, so x_0 = c x_T
    and the samples of x_T ~ N(0, 1) have std c, the output for x_T = 1 (no sampling noise)."""
    one = torch.ones(1, 1, dtype=torch.float64)
    return sample_ode(gaussian_denoiser(sched, STD), sched, one, steps, sampler, spacing).item()


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_every_parametrisation_converts_back_to_x0_and_eps(prediction):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    ab = torch.rand(5, 1, generator=g) * 0.98 + 0.01
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    got_x0, got_eps = split_prediction(prediction_target(x0, eps, ab, prediction), x_t, ab, prediction)
    torch.testing.assert_close(got_x0, x0)
    torch.testing.assert_close(got_eps, eps)


def test_v_is_salimans_and_ho():
    x0, eps, ab = torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([0.64])
    assert prediction_target(x0, eps, ab, "v").item() == pytest.approx(0.8 * 2.0 - 0.6 * 1.0)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T, steps", [(1000, 1), (1000, 2), (1000, 10), (1000, 50), (100, 100), (50, 25)])
def test_logsnr_steps_are_exactly_steps_strictly_decreasing_from_t_minus_1_to_0(name, T, steps):
    abar = DiffusionSchedule.from_options(name, T).abar
    ts = logsnr_timesteps(abar, steps)
    assert len(ts) == steps and ts[0] == T - 1
    assert steps == 1 or ts[-1] == 0
    assert all(a > b for a, b in zip(ts, ts[1:]))


def test_logsnr_steps_are_evenly_spaced_in_lambda_where_the_grid_allows():
    abar = DiffusionSchedule.linear(1000).abar
    lam = logsnr(abar)
    gaps = torch.diff(lam[logsnr_timesteps(abar, 50)])
    ideal = (lam[0] - lam[-1]) / 49
    # the last ~10 steps sit on t = 10..0, where one step of t spans more than one ideal gap
    assert (gaps[:35] / ideal - 1).abs().max() < 0.1


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpmpp_2m_keeps_the_spread_of_a_gaussian_and_ddim_undershoots(name):
    sched = DiffusionSchedule.from_options(name, 1000)
    # exact: linear 0.5011 / 0.5046, cosine 0.5028 / 0.5104 at 50 / 25 steps; 0.5000 at 200
    assert spread(sched, 50, "dpmpp_2m", "logsnr") == pytest.approx(STD, rel=0.01)
    assert spread(sched, 25, "dpmpp_2m", "logsnr") == pytest.approx(STD, rel=0.025)
    assert spread(sched, 200, "dpmpp_2m", "logsnr") == pytest.approx(STD, rel=0.002)
    # the first-order sampler's known bias, the cause of the 0.473: 0.4719 (linear), 0.4845 (cosine) at 50
    assert spread(sched, 50, "ddim", "uniform") < 0.975 * STD


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("steps", [50, 25, 7])
def test_every_sampler_and_parametrisation_recovers_a_point_mass_in_steps_passes(prediction, sampler, steps):
    head = build_head("diffusion", 8, 4, width=16, prediction=prediction, sampler=sampler, sample_steps=steps)
    y0 = torch.tensor([1.5, -0.5, 0.25, 3.0])
    calls = []

    class Oracle(torch.nn.Module):  # outputs the exact eps / x0 / v for p(y | h) = delta(y0)
        def forward(self, x, t, h):
            calls.append(t)
            ab = head.abar[t].unsqueeze(-1)
            return prediction_target(y0.expand_as(x), (x - ab.sqrt() * y0) / (1 - ab).sqrt(), ab, prediction)

    head.net = Oracle()
    h = torch.randn(2, 3, 8)
    s = head.sample(h, 5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(s, y0.expand(5, 2, 3, 4), atol=1e-4, rtol=1e-4)
    assert len(calls) == steps  # one network pass per step, whatever the spacing
    torch.testing.assert_close(head.predict(h), y0.expand(2, 3, 4), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_the_loss_is_zero_for_the_oracle_of_each_parametrisation(prediction):
    torch.manual_seed(0)
    head = build_head("diffusion", 8, 4, width=16, prediction=prediction)
    y0 = torch.randn(4)

    class Oracle(torch.nn.Module):
        def forward(self, x, t, h):
            ab = head.abar[t].unsqueeze(-1)
            return prediction_target(y0.expand_as(x), (x - ab.sqrt() * y0) / (1 - ab).sqrt(), ab, prediction)

    head.net = Oracle()
    loss, diag = head.loss(torch.randn(3, 5, 8), y0.expand(3, 5, 4).clone())
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    assert diag["x0_mse"].item() == pytest.approx(0.0, abs=1e-5)


def test_the_spacing_defaults_to_the_samplers_own():
    assert build_head("diffusion", 8, 4, sampler="ddim").spacing == "uniform"
    assert build_head("diffusion", 8, 4, sampler="dpmpp_2m").spacing == "logsnr"
    assert build_head("diffusion", 8, 4, sampler="ddim", spacing="logsnr").spacing == "logsnr"


@pytest.mark.parametrize("option", [{"prediction": "noise"}, {"sampler": "heun"}, {"spacing": "karras"}])
def test_bad_sampler_options_name_the_option_and_the_choices(option):
    (key, value), = option.items()
    with pytest.raises(ConfigError, match=f"head.options.{key}='{value}': choose one of"):
        build_head("diffusion", 8, 4, **option)


def test_an_unknown_sampler_in_the_shared_module_is_named():
    sched = DiffusionSchedule.linear(100)
    with pytest.raises(ConfigError, match="sampler 'euler'"):
        sample_ode(gaussian_denoiser(sched, STD), sched, torch.zeros(2, 1), 5, "euler")


@pytest.mark.slow
def test_a_trained_default_head_samples_the_spread_of_a_gaussian(one_thread):
    """The acceptance case end to end: y ~ N(0, 0.5^2) per coordinate, independent of h; the default
    head (v prediction, DPM-Solver++(2M), 50 steps) trained 800 steps. Measured: 1.000x (seed 0);
    benchmarks/diffusion_fidelity.py gives 1.005x / 0.999x after 1500 steps (seeds 0 / 1)."""
    torch.manual_seed(0)
    head = build_head("diffusion", 8, 4, width=64, blocks=2)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 800)
    g = torch.Generator().manual_seed(0)
    for _ in range(800):
        h, y = torch.randn(1, 256, 8, generator=g), STD * torch.randn(1, 256, 4, generator=g)
        loss, _ = head.loss(h, y, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    h = torch.randn(1, 256, 8, generator=torch.Generator().manual_seed(5))
    s = head.eval().sample(h, 16, torch.Generator().manual_seed(2))
    assert s.std().item() == pytest.approx(STD, rel=0.025)
