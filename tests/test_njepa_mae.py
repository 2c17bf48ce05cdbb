"""N-JEPA's noise and losses, MAE's pixel targets: worked examples and properties."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import SMOKE, TINY

from pjepa.checks import check_config
from pjepa.config import load_config
from pjepa.errors import ConfigError
from pjepa.masking.ops import patchify
from pjepa.methods import Batch, build_method
from pjepa.methods.mae import pixel_targets
from pjepa.methods.njepa import edm_sigma, noisy_positions


def batch(step: int = 0) -> Batch:
    g = torch.Generator().manual_seed(step)
    return Batch(torch.randn(4, 3, 24, 24, generator=g), torch.zeros(4, dtype=torch.long), step,
                 torch.Generator().manual_seed(7), torch.Generator().manual_seed(8))


def method(*overrides: str):
    torch.manual_seed(0)
    return build_method(check_config(load_config(SMOKE, TINY + list(overrides))))


def test_noisy_positions_follow_the_edm_preconditioning():
    pos = torch.randn(2, 3, 5, 8)
    sigma = torch.tensor([0.5, 2.0]).view(2, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(pos.shape, generator=torch.Generator().manual_seed(0))
    out = noisy_positions(pos, sigma, 0.5, g)
    c_in = 1 / torch.sqrt(sigma**2 + 0.25)
    assert torch.allclose(out, c_in * (pos + sigma * eps))
    # sigma -> 0: the clean positions scaled by 1 / sigma_data
    tiny = noisy_positions(pos, torch.full_like(sigma, 1e-8), 0.5, g)
    assert torch.allclose(tiny, pos / 0.5, atol=1e-6)


def test_edm_sigma_is_log_normal_with_the_given_moments():
    s = edm_sigma((200_000,), -1.2, 1.2, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert abs(s.log().mean().item() + 1.2) < 0.02 and abs(s.log().std().item() - 1.2) < 0.02


@pytest.mark.parametrize("noise,levels", [("multi", "blocks"), ("single", 1)])
def test_one_noise_level_per_block_or_per_image(noise, levels):
    m = method("method.name=njepa", f"method.options={{noise: {noise}}}")
    b = batch()
    _, _, z, ctx_idx, tgt_idx = m.head_inputs(b.images, b.mask_generator)
    _, sigma = m.noisy_conditions(z, ctx_idx, tgt_idx, torch.Generator().manual_seed(0))
    assert sigma.shape == (4, tgt_idx.shape[1] if levels == "blocks" else 1)


def test_njepa_without_its_noisy_terms_is_ijepa():
    """weight_nt = weight_nc = 0: the same loss as I-JEPA from the same weights and batch."""
    ij = method("method.name=ijepa")
    nj = method("method.name=njepa", "method.options={weight_nt: 0.0, weight_nc: 0.0}")
    nj.load_state_dict(ij.state_dict(), strict=False)
    assert torch.equal(ij.training_step(batch()).loss, nj.training_step(batch()).loss)


def test_njepa_loss_is_the_weighted_sum_of_its_terms():
    m = method("method.name=njepa", "method.options={weight_ct: 1.0, weight_nt: 0.3, weight_nc: 0.7}")
    out = m.training_step(batch())
    ct, nt, nc = (out.metrics[f"loss/{k}"] for k in ("ct", "nt", "nc"))
    assert torch.allclose(out.loss, ct + 0.3 * nt + 0.7 * nc)
    assert nt > 0 and nc > 0


def test_nc_term_trains_only_the_noisy_side():
    m = method("method.name=njepa", "method.options={weight_ct: 0.0, weight_nt: 0.0, weight_nc: 1.0}")
    m.training_step(batch()).loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.predictor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.noisy_predictor.parameters())


def test_shared_options_share_modules_and_save_each_tensor_once():
    shared = method("method.name=njepa", "method.options={share_predictor: true}")
    assert shared.noisy_predictor is None and shared.noisy_mask_token is not None
    token = method("method.name=njepa", "method.options={share_mask_token: true}")
    assert token.noisy_predictor.mask_token is None
    assert not any("noisy_predictor.mask_token" in k for k in token.state_dict())


@pytest.mark.parametrize("bad", ["noise: multilevel", "weight_nt: -1.0", "sigma_data: 0.0"])
def test_njepa_rejects_bad_options(bad):
    with pytest.raises(ConfigError, match="method.options"):
        method("method.name=njepa", f"method.options={{{bad}}}")


def test_patchify_orders_patches_like_the_encoder():
    """Patch k of patchify is what the encoder's patch embedding (a stride-p convolution) sees as token k."""
    images = torch.randn(2, 3, 8, 12)
    patches = patchify(images, 4)  # (2, 6, 48)
    assert patches.shape == (2, 6, 48)
    conv = torch.nn.Conv2d(3, 5, 4, 4, bias=False)
    tokens = conv(images).flatten(2).transpose(1, 2)  # (2, 6, 5)
    weight = conv.weight.permute(0, 2, 3, 1).reshape(5, 48)  # (p, p, C) flattening
    assert torch.allclose(patches @ weight.T, tokens, atol=1e-5)


def test_pixel_targets_are_the_masked_patches_normalised_per_patch():
    images = torch.randn(2, 3, 8, 8)
    idx = torch.tensor([[0, 3], [1, 2]])
    raw = pixel_targets(images, 4, idx, norm_pix=False)
    assert torch.equal(raw[1, 0], patchify(images, 4)[1, 1])
    norm = pixel_targets(images, 4, idx, norm_pix=True)
    assert torch.allclose(norm.mean(-1), torch.zeros(2, 2), atol=1e-5)
    assert torch.allclose(norm.var(-1), torch.ones(2, 2), atol=1e-3)


def test_mae_regresses_the_masked_patches():
    """75 % of 36 patches are targets, 48 pixel values each, and the step gives a finite loss."""
    m = method("method.name=mae", "mask.name=random",
               "method.options={decoder_dim: 16, decoder_depth: 1, decoder_heads: 2, norm_pix: false}")
    b = batch()
    masks = m.mask_sampler(4, torch.Generator().manual_seed(7))
    t = pixel_targets(b.images, 4, masks.tgt_idx.flatten(1), False)
    assert t.shape == (4, round(0.75 * 36), 48)
    out = m.training_step(b)
    assert math.isfinite(out.loss.item()) and out.metrics["mask/num_target"] == 27.0


def test_mae_options_are_checked():
    with pytest.raises(ConfigError, match="method.options.loss"):
        method("method.name=mae", "method.options={loss: huber}")
    with pytest.raises(ConfigError, match="decoder_dim"):
        method("method.name=mae", "method.options={decoder_dim: 30, decoder_heads: 4}")
