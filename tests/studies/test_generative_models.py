"""The generative study's models: the embedding VAE, the latent UNet and latent diffusion (pjepa.studies.generative)."""

import pytest
import torch
import torch.nn as nn

import pjepa.models.diffusion as diffusion
from pjepa.errors import ConfigError
from pjepa.heads.layers import sinusoidal_embedding
from pjepa.models.diffusion import DiffusionSchedule
from pjepa.studies.generative.latent_diffusion import LatentDiffusion
from pjepa.studies.generative.unet import UNet
from pjepa.studies.generative.vae import EmbeddingVAE, LatentNorm, kl_to_standard_normal, latent_statistics

D, C = 8, 4


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomised(module: nn.Module, seed: int = 0) -> nn.Module:
    """The module with its zero-initialised parameters (residual / output convs) drawn at random instead."""
    g = gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module


def small_unet(size: int, num_classes: int = 0, **kw) -> UNet:
    kw = {"base_channels": 8, "channel_mults": (1, 2, 2), "num_heads": 2, **kw}
    return UNet(C, size, num_classes=num_classes, **kw)


class Stub(nn.Module):
    """A fixed 'network' whose output says which label and step it saw: label + t / 100, everywhere."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.num_classes, self.seen = num_classes, []

    def forward(self, x, t, labels=None):
        self.seen.append(None if labels is None else labels.clone())
        lab = torch.full_like(t, self.num_classes) if labels is None else labels
        return torch.zeros_like(x) + (lab.float() + t.float() / 100).view(-1, 1, 1, 1)


class TinyDenoiser(nn.Module):
    """An MLP over the flattened latent and sinusoidal(t): small enough to train in a second."""

    num_classes = 0

    def __init__(self, dim: int, width: int = 128) -> None:
        super().__init__()
        self.width = width
        self.net = nn.Sequential(nn.Linear(dim + width, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, dim))

    def forward(self, x, t, labels=None):
        return self.net(torch.cat([x.flatten(1), sinusoidal_embedding(t, self.width)], 1)).view_as(x)


# --- VAE -----------------------------------------------------------------------------------------------------


def test_vae_shapes_and_encoding_modes():
    vae = EmbeddingVAE(D, C, hidden=16)
    x = torch.randn(3, D, 5, 5, generator=gen(0))
    mean, logvar = vae.moments(x)
    assert mean.shape == logvar.shape == (3, C, 5, 5)
    torch.testing.assert_close(vae.encode(x, sample=False), mean)
    z = vae.encode(x, sample=True, generator=gen(1))
    assert z.shape == (3, C, 5, 5) and not torch.equal(z, mean)
    torch.testing.assert_close(vae.encode(x, True, gen(1)), z)  # one generator state, one sample
    assert vae.decode(z).shape == vae(x).shape == x.shape


def test_kl_is_the_closed_form_and_enters_the_loss_with_its_weight(monkeypatch):
    g = gen(0)
    mean, logvar = torch.randn(2, C, 3, 3, generator=g), torch.randn(2, C, 3, 3, generator=g)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(0.0, 1.0)).mean()
    torch.testing.assert_close(kl_to_standard_normal(mean, logvar), ref)
    assert kl_to_standard_normal(torch.zeros(3), torch.zeros(3)).item() == 0  # posterior = prior
    vae = EmbeddingVAE(D, C, hidden=16)
    monkeypatch.setattr(vae, "moments", lambda x: (mean, logvar))
    total, parts = vae.loss(torch.randn(2, D, 3, 3, generator=g), generator=gen(1))
    torch.testing.assert_close(parts["kl"], ref)
    torch.testing.assert_close(total, parts["recon"] + 0.05 * ref)  # the document's weight, per element


def test_vae_overfits_a_tiny_batch():
    torch.manual_seed(0)
    vae, x, g = EmbeddingVAE(D, C, hidden=32), torch.randn(4, D, 3, 3, generator=gen(0)), gen(1)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    first = vae.loss(x, g)[0].item()
    for _ in range(100):
        loss, parts = vae.loss(x, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first and parts["recon"] < 0.5


def test_latent_norm_gives_unit_scale_channels_and_inverts():
    vae = EmbeddingVAE(D, C, hidden=16)
    x = torch.randn(6, D, 4, 4, generator=gen(0)) * 3 + 1
    mean, std = latent_statistics(vae, [x[:2], x[2:]], sample=False)
    z = vae.encode(x, sample=False)
    torch.testing.assert_close(mean, z.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(std, z.std(dim=(0, 2, 3)))
    norm = LatentNorm(mean, std)
    u = norm.normalize(z)
    torch.testing.assert_close(u.mean(dim=(0, 2, 3)), torch.zeros(C), atol=1e-5, rtol=0)
    torch.testing.assert_close(u.std(dim=(0, 2, 3)), torch.ones(C))
    torch.testing.assert_close(norm.denormalize(u), z)
    fitted = LatentNorm.fit(vae, [x], generator=gen(1))  # posterior samples: the default
    assert fitted.mean.shape == (C,) and set(fitted.state_dict()) == {"mean", "std"}


@pytest.mark.parametrize("kw, bad", [({"latent_channels": D}, "latent_channels=8"),
                                     ({"kl_weight": -1.0}, "kl_weight=-1.0")])
def test_vae_rejects_bad_options(kw, bad):
    with pytest.raises(ConfigError, match=bad):
        EmbeddingVAE(D, **kw)


# --- UNet ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 7, 14])
@pytest.mark.parametrize("conditional", [False, True])
def test_unet_keeps_the_shape(size, conditional):
    unet = small_unet(size, num_classes=3 if conditional else 0)
    x, t = torch.randn(2, C, size, size, generator=gen(0)), torch.tensor([0, 999])
    out = unet(x, t, torch.tensor([1, 3]) if conditional else None)
    assert out.shape == x.shape
    assert not out.any()  # the output conv starts at zero: the untrained net predicts 0


def test_unet_is_conditioned_on_time_and_label():
    unet = randomised(small_unet(7, num_classes=3))
    x = torch.randn(1, C, 7, 7, generator=gen(1)).expand(2, -1, -1, -1)
    by_t = unet(x, torch.tensor([10, 500]), torch.tensor([1, 1]))
    assert not torch.allclose(by_t[0], by_t[1], atol=1e-4)
    by_label = unet(x, torch.tensor([10, 10]), torch.tensor([1, unet.null_label]))
    assert not torch.allclose(by_label[0], by_label[1], atol=1e-4)
    # no labels = the null label; batch 1 against batch 2 may take other GEMM kernels (1e-5 apart on some CPUs)
    torch.testing.assert_close(unet(x[:1], torch.tensor([10])), by_label[1:], atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="num_classes=0"):
        small_unet(7)(x, torch.tensor([1, 1]), torch.tensor([0, 0]))


def test_unet_rejects_more_levels_than_the_size_allows():
    with pytest.raises(ConfigError, match=r"channel_mults=\(1, 2, 2, 2\) with latent size K=8.*\(1, 2, 2\)"):
        UNet(C, 8, channel_mults=(1, 2, 2, 2))
    UNet(C, 14, base_channels=8, channel_mults=(1, 2, 2, 2), num_heads=2)  # 14 -> 7 -> 4 -> 2 fits
    with pytest.raises(ConfigError, match="num_heads=3"):
        UNet(C, 8, base_channels=8, num_heads=3)


# --- latent diffusion ----------------------------------------------------------------------------------------


def test_sampling_and_training_noise_go_through_the_shared_diffusion_module(monkeypatch):
    calls = {"sample_ode": 0, "q_sample": 0}
    sample_ode, q_sample = diffusion.sample_ode, DiffusionSchedule.q_sample

    def counted_sample_ode(denoise, schedule, x, *args):
        calls["sample_ode"] += 1
        assert isinstance(schedule, DiffusionSchedule) and x.shape == (3, C * 7 * 7)  # flattened, one t per image
        return sample_ode(denoise, schedule, x, *args)

    def counted_q_sample(self, *args):
        calls["q_sample"] += 1
        return q_sample(self, *args)

    monkeypatch.setattr(diffusion, "sample_ode", counted_sample_ode)
    monkeypatch.setattr(DiffusionSchedule, "q_sample", counted_q_sample)
    schedule = DiffusionSchedule.cosine(50)
    ld = LatentDiffusion(small_unet(7), schedule)
    assert isinstance(ld.noise_schedule(), DiffusionSchedule) and ld.noise_schedule().name == "cosine"
    torch.testing.assert_close(ld.noise_schedule().abar, schedule.abar.float())
    ld.loss(torch.randn(2, C, 7, 7, generator=gen(0)), generator=gen(1)).backward()
    assert calls["q_sample"] == 1
    assert ld.sample(3, (C, 7, 7), steps=4, generator=gen(2)).shape == (3, C, 7, 7)
    assert calls["sample_ode"] == 1


def test_classifier_free_guidance_formula():
    ld = LatentDiffusion(Stub(num_classes=3), DiffusionSchedule.linear(100))
    z, t, labels = torch.zeros(2, C, 2, 2), torch.tensor([5, 40]), torch.tensor([0, 2])
    cond = ld.unet(z, t, labels)
    torch.testing.assert_close(ld.guided(z, t, labels, 0.0), cond)  # w = 0: the conditional prediction
    uncond = ld.unet(z, t, torch.full_like(labels, 3))
    torch.testing.assert_close(ld.guided(z, t, labels, 2.5), uncond + 3.5 * (cond - uncond))
    ld.unet.seen.clear()
    ld.sample(torch.tensor([0, 1]), (C, 2, 2), steps=3, guidance=1.0, generator=gen(0))
    assert len(ld.unet.seen) == 3 and ld.unet.seen[0].tolist() == [0, 1, 3, 3]  # both branches, one batch


def test_training_drops_labels_to_the_null_label():
    ld = LatentDiffusion(Stub(num_classes=3), DiffusionSchedule.linear(100), p_uncond=0.5)
    ld.loss(torch.zeros(400, C, 2, 2), torch.zeros(400, dtype=torch.long), generator=gen(0))
    seen = ld.unet.seen[-1]
    assert set(seen.tolist()) == {0, 3} and 0.4 < (seen == 3).float().mean() < 0.6


def test_a_tiny_model_learns_a_constant_latent():
    torch.manual_seed(0)
    target = torch.linspace(-1, 1, 2 * 3 * 3).view(2, 3, 3)
    ld = LatentDiffusion(TinyDenoiser(18), DiffusionSchedule.linear(100), prediction="v")
    opt, g = torch.optim.Adam(ld.parameters(), lr=5e-3), gen(0)
    for _ in range(300):
        loss = ld.loss(target.expand(64, -1, -1, -1), generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    samples = ld.sample(16, (2, 3, 3), steps=20, generator=gen(1))
    assert (samples - target).abs().mean() < 0.25  # from x_T ~ N(0, I): untrained, about 0.8
    assert (samples.mean(0) - target).abs().max() < 0.5


def test_same_generator_same_samples():
    ld = LatentDiffusion(randomised(small_unet(8, num_classes=2)), DiffusionSchedule.linear(100))
    labels = torch.tensor([0, 1, 2])
    for sampler in ("ddim", "dpmpp_2m"):
        a = ld.sample(labels, (C, 8, 8), steps=3, sampler=sampler, guidance=1.0, generator=gen(7))
        b = ld.sample(labels, (C, 8, 8), steps=3, sampler=sampler, guidance=1.0, generator=gen(7))
        assert torch.equal(a, b) and torch.isfinite(a).all()
    c = ld.sample(labels, (C, 8, 8), steps=3, guidance=1.0, generator=gen(8))
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("make, bad", [
    (lambda: LatentDiffusion(Stub(), DiffusionSchedule.linear(100), prediction="noise"), "prediction='noise'"),
    (lambda: LatentDiffusion(Stub(), DiffusionSchedule.linear(100), p_uncond=1.0), "p_uncond=1.0"),
    (lambda: LatentDiffusion(Stub(), torch.linspace(1, 0, 10)), "DiffusionSchedule"),
    (lambda: LatentDiffusion(Stub(), DiffusionSchedule.linear(100)).sample(2, (C, 2, 2), steps=101), "steps=101"),
    (lambda: LatentDiffusion(Stub(0), DiffusionSchedule.linear(100)).sample(2, (C, 2, 2), steps=2, guidance=1.0),
     "guidance=1.0"),
    (lambda: LatentDiffusion(Stub(), DiffusionSchedule.linear(100)).sample(2, (C, 2, 2), steps=2, sampler="euler"),
     "euler"),
    (lambda: LatentDiffusion(Stub(), DiffusionSchedule.linear(100)).loss(torch.zeros(2, C, 2, 2)), "without labels"),
])
def test_latent_diffusion_rejects_bad_options(make, bad):
    with pytest.raises(ConfigError, match=bad):
        make()
