"""The regularisers (``reg: {name, options}``): a contract over every registered one, then worked
properties of SIGReg (LeJEPA's sliced Epps-Pulley test) and of VICReg's two levels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SMOKE, TINY

from pjepa.checks import check_config
from pjepa.config import build_config, load_config, migrate_legacy
from pjepa.errors import ConfigError
from pjepa.methods import build_method
from pjepa.presets import PRESET_DIR
from pjepa.regularisers import REGULARISERS, build_regulariser
from pjepa.regularisers.sigreg import SIGReg, random_directions, trapezoid_knots
from pjepa.regularisers.vicreg import covariance_loss, variance_loss


def tokens(b: int = 16, n: int = 5, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", REGULARISERS.names())
def test_every_regulariser_gives_a_finite_scalar_and_gradients(name):
    reg = build_regulariser(name, {})
    z = tokens().requires_grad_(True)
    loss, metrics = reg(z, step=3)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(k.startswith("reg/") and not v.requires_grad for k, v in metrics.items())
    if reg.active:
        loss.backward()
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    else:
        assert loss == 0 and metrics == {}
    assert not list(reg.state_dict())  # nothing saved: checkpoints keep their keys with any regulariser


# ---------------------------------------------------------------- SIGReg


def sigreg_stat(x: torch.Tensor, num_slices: int = 512, step: int = 0) -> float:
    return float(SIGReg(num_slices=num_slices).statistic(x, step))


def test_sigreg_is_small_on_gaussian_samples_and_large_on_collapsed_or_low_rank_ones():
    g = torch.Generator().manual_seed(0)
    gauss = torch.randn(1024, 32, generator=g)
    collapsed = torch.randn(1, 32, generator=g).expand(1024, 32) + 0.01 * torch.randn(1024, 32, generator=g)
    low_rank = torch.randn(1024, 2, generator=g) @ torch.randn(2, 32, generator=g) / math.sqrt(2)
    shifted = gauss + 2.0
    assert sigreg_stat(gauss) < 2.0
    for bad in (collapsed, low_rank, shifted, 3 * gauss):
        assert sigreg_stat(bad) > 20 * sigreg_stat(gauss)


def test_sigreg_does_not_grow_with_the_sample_count_on_gaussians_but_does_on_a_collapse():
    g = torch.Generator().manual_seed(1)
    small, large = torch.randn(256, 16, generator=g), torch.randn(4096, 16, generator=g)
    assert sigreg_stat(large) < 2 * sigreg_stat(small) + 1
    point = torch.zeros(1, 16)
    assert sigreg_stat(point.expand(4096, 16)) > 8 * sigreg_stat(point.expand(256, 16))


def test_sigreg_rotating_embeddings_and_directions_together_changes_nothing():
    """Exact: the statistic only sees the projections x . a, and (xR)(R^T a) = x a."""
    x = torch.randn(300, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    a = random_directions(12, 64, step=5).double()
    from pjepa.regularisers.sigreg import epps_pulley

    t, phi, w = (v.double() for v in trapezoid_knots(17, 3.0))
    assert torch.allclose(epps_pulley(x @ a, t, phi, w), epps_pulley((x @ q) @ (q.T @ a), t, phi, w))


def test_sigreg_is_invariant_to_a_rotation_of_the_embeddings_in_expectation():
    """With many random directions the statistic of rotated embeddings matches the original's."""
    x = torch.randn(512, 8, generator=torch.Generator().manual_seed(4)) * torch.tensor([3.0] + [1.0] * 7)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(5)))
    a, b = sigreg_stat(x, num_slices=8192), sigreg_stat(x @ q, num_slices=8192)
    assert a == pytest.approx(b, rel=0.05)


@pytest.mark.slow
def test_sigreg_matches_an_independent_float64_integral():
    """The 17-knot trapezoid on [0, 3] against a fine complex-valued quadrature on [-3, 3] in numpy."""
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(6)) * 1.3 + 0.2
    reg = SIGReg(num_slices=32)
    a = random_directions(6, 32, step=7)
    ours = float(reg.statistic(x, step=7))
    proj = (x.double() @ a.double()).numpy()  # (T, K)
    t = np.linspace(-3.0, 3.0, 60_001)
    per_slice = []
    for k in range(proj.shape[1]):
        ecf = np.exp(1j * np.outer(t, proj[:, k])).mean(axis=1)
        integrand = np.abs(ecf - np.exp(-t**2 / 2)) ** 2 * np.exp(-t**2 / 2)
        per_slice.append(proj.shape[0] * np.trapezoid(integrand, t))
    # the coarse 17-knot rule is what LeJEPA uses: it agrees with the fine integral to a few per cent
    assert ours == pytest.approx(float(np.mean(per_slice)), rel=0.03)


def test_sigreg_directions_are_a_pure_function_of_the_step():
    assert torch.equal(random_directions(8, 4, 11), random_directions(8, 4, 11))
    assert not torch.equal(random_directions(8, 4, 11), random_directions(8, 4, 12))
    assert torch.allclose(random_directions(8, 4, 11).norm(dim=0), torch.ones(4))
    torch.manual_seed(0)
    a = SIGReg()(tokens(), step=9)[0]
    torch.manual_seed(1)  # the global RNG plays no part
    assert torch.equal(a, SIGReg()(tokens(), step=9)[0])


def test_sigreg_gradients_are_finite_and_push_a_collapse_apart():
    z = (torch.zeros(64, 1, 8) + 0.01 * torch.randn(64, 1, 8, generator=torch.Generator().manual_seed(8)))
    z.requires_grad_(True)
    loss, _ = SIGReg(weight=1.0)(z, step=0)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    with torch.no_grad():
        spread = (z - 1.0 * z.grad).std(dim=0).mean()  # one gradient step
    assert spread > z.detach().std(dim=0).mean()


@pytest.mark.parametrize("options, key", [({"weight": 0.0}, "weight"), ({"num_slices": 0}, "num_slices"),
                                          ({"knots": 2}, "knots"), ({"t_max": -1.0}, "t_max"),
                                          ({"level": "pixel"}, "level")])
def test_sigreg_options_are_checked_with_named_errors(options, key):
    with pytest.raises(ConfigError, match=f"reg.options.{key}"):
        check_config(load_config(SMOKE, TINY + ["reg.name=sigreg"] + [f"reg.options.{k}={v}" for k, v in options.items()]))


# ---------------------------------------------------------------- VICReg levels


def test_vicreg_image_level_sees_only_differences_between_images():
    """Tokens that vary inside each image but not between images: the token level is satisfied,
    the image level is not (its variance term is at its maximum, 1 - sqrt(eps))."""
    per_position = torch.randn(1, 6, 8, generator=torch.Generator().manual_seed(9)) * 3
    z = per_position.expand(32, 6, 8)  # every image the same
    token = build_regulariser("vicreg", {"level": "token"})(z, 0)[1]
    image = build_regulariser("vicreg", {"level": "image"})(z, 0)[1]
    assert token["reg/var"] < 0.2
    assert image["reg/var"] == pytest.approx(1 - math.sqrt(1e-4), abs=1e-4)


def test_vicreg_worked_example_matches_its_terms():
    z = tokens()
    loss, m = build_regulariser("vicreg", {"var_weight": 2.0, "cov_weight": 0.5, "level": "image"})(z, 0)
    pooled = z.mean(dim=1)
    assert torch.allclose(loss, 2.0 * variance_loss(pooled) + 0.5 * covariance_loss(pooled))


# ---------------------------------------------------------------- config: presets, migration, errors


def test_every_method_takes_the_regulariser_of_its_config():
    for overrides in (["method.name=ijepa"], ["method.name=njepa"],
                      ["method.name=mae", "mask.name=random", "method.options={decoder_dim: 16, decoder_depth: 1, "
                                                              "decoder_heads: 2}"]):
        m = build_method(check_config(load_config(SMOKE, TINY + overrides + ["reg.name=sigreg"])))
        assert isinstance(m.reg, SIGReg)


def test_a_run_written_with_method_vicreg_options_migrates_to_the_token_level_regulariser():
    old = {"method": {"name": "ijepa", "options": {"var_weight": 1.0, "cov_weight": 0.04}}}
    cfg = check_config(build_config(migrate_legacy(old)), build=False)
    assert cfg.reg.name == "vicreg" and cfg.method.options == {"target_norm": True, "target": "ema"}
    assert cfg.reg.options == {"var_weight": 1.0, "cov_weight": 0.04, "level": "token"}


def test_the_old_method_options_typed_by_a_user_say_where_they_moved():
    with pytest.raises(ConfigError, match="moved to the regulariser: write reg.name=vicreg"):
        check_config(load_config(SMOKE, TINY + ["method.options.var_weight=1.0"]))


def test_the_cpu_presets_carry_their_regulariser_and_mae_and_stl10_say_none():
    def reg(name: str):
        return check_config(load_config(PRESET_DIR / name), build=False).reg

    for name in ("cifar10/cpu.yaml", "cifar10/njepa.yaml", "cifar10/flow_matching.yaml", "tin100/cpu.yaml"):
        assert reg(name).name == "vicreg" and reg(name).options["level"] == "token"
    for name in ("cifar10/mae.yaml", "cifar10/stl10_cpu_ijepa.yaml", "cifar10/stl10_cpu_mae.yaml"):
        assert reg(name).name == "none"


# ---------------------------------------------------------------- the target and the mask sets


def test_an_online_target_has_no_teacher_and_rates_the_context_encoder():
    m = build_method(check_config(load_config(SMOKE, TINY + ["method.options.target=online", "reg.name=sigreg"])))
    assert m.target_encoder is None and m.ema_pairs() == ([], [])
    assert m.feature_encoder("target") is m.encoder and list(m.monitors().encoders) == ["context"]
    assert not any("target_encoder" in k for k in m.state_dict())


@pytest.mark.parametrize("target, flows", [("online", True), ("online_stopgrad", False)])
def test_gradients_reach_the_encoder_through_the_target_only_when_online(target, flows):
    m = build_method(check_config(load_config(SMOKE, TINY + [f"method.options.target={target}"])))
    images = torch.randn(4, 3, 24, 24)
    tgt_idx = torch.arange(6).repeat(4, 1)
    y = m.targets(images, tgt_idx)
    assert y.requires_grad is flows


def test_a_bad_target_is_named():
    with pytest.raises(ConfigError, match="method.options.target='teacher'"):
        check_config(load_config(SMOKE, TINY + ["method.options.target=teacher"]))


def test_mask_sets_share_one_target_pass_per_image():
    m = build_method(check_config(load_config(SMOKE, TINY + ["mask.options.sets_per_image=3"])))
    calls: list[int] = []
    hook = m.target_encoder.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    images = torch.randn(4, 3, 24, 24)
    h, y, z, ctx_idx, tgt_idx = m.head_inputs(images, torch.Generator().manual_seed(0))
    assert calls == [4]  # one teacher pass over the 4 images
    assert ctx_idx.shape[0] == tgt_idx.shape[0] == z.shape[0] == y.shape[0] == h.shape[0] == 12
    hook.remove()
    with torch.no_grad():  # rows 3i .. 3i+2 are image i's: their targets are gathered from its features
        full = torch.nn.functional.layer_norm(m.target_encoder(images), (m.encoder.embed_dim,))
    for row in range(12):
        assert torch.allclose(y[row], full[row // 3][tgt_idx[row].flatten()], atol=1e-6)


def test_mask_sets_rows_are_image_major_and_differ():
    from pjepa.masking import build_mask_sampler

    sampler = build_mask_sampler("multiblock", 8, {"sets_per_image": 2})
    masks = sampler(5, torch.Generator().manual_seed(0))
    assert masks.ctx_idx.shape[0] == masks.tgt_idx.shape[0] == 10
    assert not torch.equal(masks.tgt_idx[0], masks.tgt_idx[1])  # an image's two sets are drawn independently


def test_a_bad_sets_per_image_is_named():
    with pytest.raises(ConfigError, match="sets_per_image"):
        check_config(load_config(SMOKE, TINY + ["mask.options.sets_per_image=0"]))


# ---------------------------------------------------------------- how results name what was trained


def test_a_table_row_names_its_regulariser_target_and_mask_sets():
    from pjepa.eval.table import method_label

    def label(*overrides: str) -> str:
        return method_label(check_config(load_config(SMOKE, TINY + list(overrides)), build=False))

    assert label() == "I-JEPA"
    assert label("reg.name=sigreg") == "I-JEPA + SIGReg (image)"
    assert label("reg.name=vicreg", "reg.options.level=token") == "I-JEPA + VICReg (token)"
    assert label("method.name=njepa", "reg.name=sigreg", "method.options.target=online",
                 "mask.options.sets_per_image=2") == "N-JEPA + SIGReg (image), online target, 2 mask sets"


def test_results_of_an_online_target_run_say_the_target_is_the_context_encoder(tmp_path):
    import yaml

    from pjepa.config import config_to_dict
    from pjepa.eval.sources import Source
    from pjepa.runs import Run

    for target in ("ema", "online"):
        cfg = check_config(load_config(SMOKE, TINY + [f"method.options.target={target}"]), build=False)
        (tmp_path / target).mkdir()
        (tmp_path / target / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    assert Source().describe(Run(tmp_path / "ema")) == "target encoder (last)"
    assert "context encoder (online target" in Source().describe(Run(tmp_path / "online"))
    assert Source(encoder="context").describe(Run(tmp_path / "online")) == "context encoder (last)"
