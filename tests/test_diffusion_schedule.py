"""The shared diffusion schedule (pjepa.models.diffusion): correct at every T, and the head on it.

With T < 1000 the head used to keep Ho et al.'s 1000-step beta
range, so its forward process stopped far from noise (abar_T = 0.36 at T = 100)
while sampling started from N(0, I). The linear schedule is now rescaled to T.
"""

import math

import pytest
import torch

from pjepa.errors import ConfigError
from pjepa.heads import build_head
from pjepa.heads.diffusion import DiffusionHead
from pjepa.models.diffusion import DiffusionSchedule, ddim_sample, ddim_timesteps

TS = (50, 100, 250, 1000)
SCHEDULES = [(f"linear-{T}", DiffusionSchedule.linear(T)) for T in TS] + [
    (f"cosine-{T}", DiffusionSchedule.cosine(T)) for T in TS]


def old_abar(T: int) -> torch.Tensor:
    """The head's schedule before the fix: Ho et al.'s 1e-4..0.02 at any T, never rescaled."""
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), dim=0)


@pytest.mark.parametrize("name, sched", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_abar_ends_near_pure_noise_and_decreases_strictly_inside_0_1(name, sched):
    abar = sched.abar
    assert int(name.split("-")[1]) == sched.T and abar.dtype == torch.float64
    # measured: linear 7.7e-6 / 2.0e-5 / 3.3e-5 / 4.0e-5, cosine 9.7e-7 / 2.4e-7 / 3.9e-8 / 2.4e-9 at T = 50..1000
    assert abar[-1] < 5e-5
    assert (abar > 0).all() and (abar < 1).all()
    assert (abar[1:] < abar[:-1]).all()


def test_linear_at_1000_is_the_old_schedule_bit_for_bit_and_the_bug_is_documented():
    assert torch.equal(DiffusionSchedule.linear(1000).abar, old_abar(1000))  # 1000 / T = 1.0 exactly
    assert old_abar(100)[-1].item() == pytest.approx(0.3636, abs=1e-3)  # the bug: T = 100 never reached noise
    assert old_abar(50)[-1].item() == pytest.approx(0.603, abs=1e-3)
    assert DiffusionSchedule.linear(100).abar[-1] < 1e-4


def test_cosine_follows_nichol_dhariwal_eq_17():
    T, s = 100, 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    abar = DiffusionSchedule.cosine(T).abar
    for t in (0, 10, 50, 98):  # abar index t is the end of step t, i.e. time (t + 1) / T
        assert abar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert abar[-1].item() == pytest.approx(abar[-2].item() * (1 - 0.999), rel=1e-9)  # the clipped last beta


def test_q_sample_at_the_last_step_is_nearly_pure_noise_at_t_100():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4000, 8, generator=g) + 2.0, torch.randn(4000, 8, generator=g)
    t = torch.full((4000,), 99)
    for sched in (DiffusionSchedule.linear(100), DiffusionSchedule.cosine(100)):
        x_t = sched.q_sample(x0, t, noise)
        corr = torch.corrcoef(torch.stack([x_t.flatten(), x0.flatten()]))[0, 1]
        assert abs(corr.item()) < 0.02 and (x_t - noise).abs().max() < 0.05
    old = old_abar(100)[-1]  # before the fix: sqrt(0.36) = 0.6 of x0 is left
    x_old = old.sqrt() * x0 + (1 - old).sqrt() * noise
    assert torch.corrcoef(torch.stack([x_old.flatten(), x0.flatten()]))[0, 1] > 0.5


def test_q_sample_broadcasts_one_step_per_row():
    sched = DiffusionSchedule.linear(100)
    x0, noise, t = torch.ones(2, 3, 4), torch.zeros(2, 3, 4), torch.tensor([[0, 50, 99], [1, 2, 3]])
    x_t = sched.q_sample(x0, t, noise)
    torch.testing.assert_close(x_t[0, 1], sched.abar[50].sqrt().expand(4))
    assert x_t.shape == (2, 3, 4)


@pytest.mark.parametrize("T", [100, 1000])
@pytest.mark.parametrize("steps", [1, 2, 10, 50])
def test_ddim_timesteps_strictly_decrease_from_t_minus_1_to_0(T, steps):
    ts = ddim_timesteps(T, steps)
    assert ts[0] == T - 1 and ts[-1] == (T - 1 if steps == 1 else 0) and len(ts) == steps
    assert all(a > b for a, b in zip(ts, ts[1:]))


def oracle(sched: DiffusionSchedule, x0: torch.Tensor):
    """The exact eps for a point mass at x0: eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""
    def eps_fn(x, t):
        ab = sched.abar[t].unsqueeze(-1)
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()
    return eps_fn


@pytest.mark.parametrize("name, sched", SCHEDULES, ids=[s[0] for s in SCHEDULES])
@pytest.mark.parametrize("steps", [1, 5, 25, 50])
def test_ddim_with_the_oracle_recovers_x0_from_pure_noise(name, sched, steps):
    x0 = torch.tensor([1.5, -0.5, 0.25, 3.0], dtype=torch.float64)
    xT = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for clip in (0.0, 5.0):
        out = ddim_sample(oracle(sched, x0), sched, xT, steps, clip_x0=clip)
        torch.testing.assert_close(out, x0.expand(6, 3, 4), atol=1e-6, rtol=1e-6)


class Fn(torch.nn.Module):
    """A plain function as the head's denoiser ``net(x, t, h)`` (the head only accepts modules there)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, t, h):
        return self.fn(x, t, h)


def old_ddim(net, abar: torch.Tensor, h, x, steps: int, clip_x0: float) -> torch.Tensor:
    """DiffusionHead.ddim before the shared module, verbatim (abar: the float32 buffer)."""
    ts = sorted(set(torch.linspace(len(abar) - 1, 0, steps).round().long().tolist()), reverse=True)
    for i, t in enumerate(ts):
        ab = abar[t]
        ab_prev = abar[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(ab)
        eps_hat = net(x, torch.full(x.shape[:-1], t), h)
        x0_hat = (x - (1 - ab).sqrt() * eps_hat) / ab.sqrt()
        if clip_x0 > 0:
            x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
            eps_hat = (x - ab.sqrt() * x0_hat) / (1 - ab).sqrt()
        x = ab_prev.sqrt() * x0_hat + (1 - ab_prev).sqrt() * eps_hat
    return x


@pytest.mark.parametrize("clip_x0", [5.0, 0.5, 0.0])
def test_the_ddim_heads_samples_are_unchanged_bit_for_bit(clip_x0, one_thread):
    torch.manual_seed(0)
    head = build_head("diffusion", 8, 4, width=16, clip_x0=clip_x0, sampler="ddim", prediction="eps")
    torch.testing.assert_close(head.abar, old_abar(1000).float(), atol=0, rtol=0)
    fixed = Fn(lambda x, t, h: torch.tanh(x + 0.001 * t.unsqueeze(-1) + h[..., :4]))  # a fixed eps_fn
    head.net = fixed
    h, x = torch.randn(2, 3, 8), torch.randn(2, 3, 4)
    with torch.no_grad():
        for steps in (50, 25, 7):
            assert torch.equal(head.ddim(h, x, steps), old_ddim(fixed, old_abar(1000).float(), h, x, steps, clip_x0))
    assert head.sample(h, 2, torch.Generator().manual_seed(3)).shape == (2, 2, 3, 4)


def test_the_head_at_t_100_learns_a_constant_target(one_thread):
    """y = y0 whatever h: 150 Adam steps (0.4 s), then DDIM samples from N(0, I) land near y0."""
    torch.manual_seed(0)
    head = build_head("diffusion", 4, 2, timesteps=100, sample_steps=20, width=32, blocks=2)
    y0 = torch.tensor([1.0, -0.5])
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        loss, _ = head.loss(torch.randn(16, 4, 4, generator=g), y0.expand(16, 4, 2), generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dist = (head.sample(torch.randn(4, 2, 4, generator=g), 8, g) - y0).norm(dim=-1)  # (8, 4, 2)
    # measured: median 0.05, 97 % within 0.3 (a young denoiser still sends a few draws astray)
    assert dist.median() < 0.15 and (dist < 0.3).float().mean() > 0.9
    assert (head.predict(torch.randn(4, 2, 4)) - y0).norm(dim=-1).mean() < 0.15  # measured 0.06


def test_the_cosine_option_builds_trains_and_samples(one_thread):
    torch.manual_seed(0)
    head = build_head("diffusion", 8, 4, schedule="cosine", timesteps=100, sample_steps=10, width=16,
                      prediction="eps")  # the oracle below predicts the noise
    assert head.schedule == "cosine" and head.abar[-1] < 1e-6
    loss, _ = head.loss(torch.randn(2, 3, 8), torch.randn(2, 3, 4))
    loss.backward()
    s = head.sample(torch.randn(2, 3, 8), 3, torch.Generator().manual_seed(0))
    assert s.shape == (3, 2, 3, 4) and torch.isfinite(s).all()
    eps_fn = oracle(head.noise_schedule(), torch.ones(4))
    head.net = Fn(lambda x, t, h: eps_fn(x, t))
    torch.testing.assert_close(head.predict(torch.randn(2, 3, 8)), torch.ones(2, 3, 4), atol=1e-4, rtol=1e-4)


def test_unknown_schedule_and_too_few_linear_steps_are_named():
    with pytest.raises(ConfigError, match=r"head.options.schedule='nope': choose one of linear, cosine"):
        build_head("diffusion", 8, 4, schedule="nope")
    with pytest.raises(ConfigError, match=r"head.options.schedule='nope'"):
        DiffusionSchedule.from_options("nope", 100)
    with pytest.raises(ConfigError, match=r"head.options.timesteps=20: .* use timesteps > 20 or schedule: cosine"):
        build_head("diffusion", 8, 4, timesteps=20, sample_steps=10)
    assert build_head("diffusion", 8, 4, timesteps=20, sample_steps=10, schedule="cosine").T == 20
    assert isinstance(build_head("diffusion", 8, 4, timesteps=21, sample_steps=10), DiffusionHead)
    with pytest.raises(ConfigError, match="T=1"):
        DiffusionSchedule.cosine(1)


def test_the_config_check_names_a_bad_schedule():
    from pjepa.checks import check_config
    from pjepa.config import load_config
    from pjepa.presets import PRESET_DIR

    with pytest.raises(ConfigError, match=r"head.options.schedule='nope'"):
        check_config(load_config(PRESET_DIR / "smoke.yaml", ["head.name=diffusion", "head.options.schedule=nope"]))
