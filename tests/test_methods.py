"""Contract test over every registered method: the seam between the one loop and every method.

A few steps on a fake batch: the loss is a finite scalar, the parameters the
optimiser holds move, the EMA pairs line up, ``monitors()`` and
``feature_encoder()`` give what evaluation needs, and a step is a pure function
of (weights, optimiser state, step): stopping after step k and continuing from
copied state repeats the uninterrupted run's losses exactly (what resume needs).
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import SMOKE, TINY

from pjepa.checks import check_config
from pjepa.config import load_config
from pjepa.methods import METHODS, Batch, Method, Monitors, StepOutput, build_method
from pjepa.models import ema_update

#: Per-method overrides: keep the tiny model tiny (MAE's default decoder is 512 x 8), give what is required.
SIZES = {"mae": ["mask.name=random", "method.options={decoder_dim: 16, decoder_depth: 1, decoder_heads: 2}"],
         "finetune": ["method.options={num_classes: 4}"]}
#: Variants that take another code path: N-JEPA with shared modules, single-level noise, a probabilistic head.
VARIANTS = {
    "njepa-shared": ["method.name=njepa", "method.options={share_predictor: true, noise: single}"],
    "njepa-token": ["method.name=njepa", "method.options={share_mask_token: true}"],
    "njepa-mdn": ["method.name=njepa", "head.name=mdn"],
    "ijepa-vicreg": ["method.name=ijepa", "reg.name=vicreg", "reg.options={var_weight: 1.0, cov_weight: 0.04, level: token}"],
    "ijepa-sigreg-token": ["method.name=ijepa", "reg.name=sigreg", "reg.options={num_slices: 16, level: token}"],
    "ijepa-online": ["method.name=ijepa", "method.options={target: online}", "reg.name=sigreg"],
    "ijepa-online-stopgrad": ["method.name=ijepa", "method.options={target: online_stopgrad}", "reg.name=vicreg",
                              "reg.options={level: image}"],
    "ijepa-sets2": ["method.name=ijepa", "mask.options={sets_per_image: 2}", "reg.name=sigreg"],
    "njepa-sigreg": ["method.name=njepa", "reg.name=sigreg"],
    "mae-sigreg": ["method.name=mae", "method.options={decoder_dim: 16, decoder_depth: 1, decoder_heads: 2}",
                   "mask.name=random", "reg.name=sigreg"],
    "mae-l1-pixels": ["method.name=mae", "method.options={loss: l1, norm_pix: false, decoder_dim: 16, "
                      "decoder_depth: 1, decoder_heads: 2}", "mask.name=random"],
}


def tiny_method(name: str) -> Method:
    torch.manual_seed(0)
    overrides = VARIANTS.get(name, [f"method.name={name}"] + SIZES.get(name, []))
    return build_method(check_config(load_config(SMOKE, TINY + overrides)))


def fake_batch(step: int, diagnostics: bool = False) -> Batch:
    g = torch.Generator().manual_seed(1000 + step)
    images = torch.randn(4, 3, 24, 24, generator=g)
    labels = torch.randint(0, 4, (4,), generator=g)
    return Batch(images, labels, step, torch.Generator().manual_seed(step), torch.Generator().manual_seed(-step - 1),
                 diagnostics)


def run_steps(method: Method, opt: torch.optim.Optimizer, steps: range) -> list[float]:
    losses = []
    for s in steps:
        out = method(fake_batch(s, diagnostics=s % 2 == 0))
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema_update(*method.ema_pairs(), 0.9)
        losses.append(out.loss.item())
    return losses


@pytest.fixture(params=METHODS.names() + list(VARIANTS))
def name(request) -> str:
    return request.param


def test_training_step_gives_a_finite_scalar_and_moves_the_parameters(name, one_thread):
    method = tiny_method(name)
    groups = method.param_groups()
    assert all({"params", "wd_scale", "lr_scale"} <= set(g) for g in groups)
    held = [p for g in groups for p in g["params"]]
    assert len({id(p) for p in held}) == len(held)  # no parameter in two groups
    assert {id(p) for p in held} == {id(p) for p in method.parameters() if p.requires_grad}
    before = [p.detach().clone() for p in held]
    out = method.training_step(fake_batch(0, diagnostics=True))
    assert isinstance(out, StepOutput) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert all(isinstance(k, str) and "/" in k for k in out.metrics)
    opt = torch.optim.AdamW(groups, lr=1e-2)
    out.loss.backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, held))


def test_ema_pairs_line_up_and_move_the_targets(name):
    method = tiny_method(name)
    target, online = method.ema_pairs()
    assert len(target) == len(online) and all(t.shape == o.shape for t, o in zip(target, online))
    assert not any(t.requires_grad for t in target)
    with torch.no_grad():
        for o in online:
            o.add_(1.0)
    before = [t.clone() for t in target]
    ema_update(target, online, 0.5)
    assert all(not torch.equal(b, t) for b, t in zip(before, target))


def test_monitors_and_feature_encoder_give_what_evaluation_needs(name):
    method = tiny_method(name).eval()  # evaluation's mode (a fine-tune's drop-path is off)
    mon = method.monitors()
    assert isinstance(mon, Monitors)
    images = torch.randn(2, 3, 24, 24)
    for encoder in mon.encoders.values():
        assert encoder(images).shape[:2] == (2, 36)
    for m in mon.heads.values():
        h, y = m.conditions(images, torch.Generator().manual_seed(0))
        assert m.head.predict(h).shape == y.shape
    enc = method.feature_encoder()
    tokens = enc(images)  # (B, N, D)
    layers = enc.intermediate_layers(images, 2)
    assert len(layers) == 2 and all(t.shape == tokens.shape for t in layers)
    assert torch.allclose(layers[-1], tokens, atol=1e-6)
    assert set(method.compile_modules()) <= set(method.modules())


def test_a_continued_run_repeats_the_uninterrupted_one(name, one_thread):
    ref = tiny_method(name)
    ref_losses = run_steps(ref, torch.optim.AdamW(ref.param_groups(), lr=1e-3), range(6))
    first = tiny_method(name)
    opt = torch.optim.AdamW(first.param_groups(), lr=1e-3)
    run_steps(first, opt, range(3))
    weights, opt_state = copy.deepcopy(first.state_dict()), copy.deepcopy(opt.state_dict())
    torch.manual_seed(12345)  # a different global RNG: the step must not depend on it
    second = tiny_method(name)
    second.load_state_dict(weights)
    opt2 = torch.optim.AdamW(second.param_groups(), lr=1e-3)
    opt2.load_state_dict(opt_state)
    assert run_steps(second, opt2, range(3, 6)) == ref_losses[3:]


@pytest.mark.parametrize("head", ["diffusion", "flow", "flow_matching"])  # flow: objective flow_matching, migrated
def test_stochastic_heads_draw_from_the_batch_generator(head):
    """Same batch generators -> same loss, whatever the global RNG; another noise seed -> another loss."""
    torch.manual_seed(0)
    m = build_method(check_config(load_config(SMOKE, TINY + [f"head.name={head}", "head.options.objective=flow_matching"]
                                              if head == "flow" else TINY + [f"head.name={head}"])))
    torch.manual_seed(1)
    a = m(fake_batch(0)).loss
    torch.manual_seed(2)
    b = m(fake_batch(0)).loss
    assert torch.equal(a, b)
    other = fake_batch(0)
    other.noise_generator.manual_seed(99)
    assert not torch.equal(a, m(other).loss)


def test_encoder_variance_covariance_terms_add_to_the_loss(one_thread):
    """reg.name=vicreg at token level (C-JEPA): the step's loss is the head's loss plus the
    weighted VICReg terms of the context tokens, reported as reg/var and reg/cov."""
    from pjepa.heads.deterministic import covariance_loss, variance_loss

    plain, reg = tiny_method("ijepa"), tiny_method("ijepa-vicreg")
    reg.load_state_dict(plain.state_dict())
    a, b = plain.training_step(fake_batch(3)), reg.training_step(fake_batch(3))
    _, _, z, _, _ = reg.head_inputs(fake_batch(3).images, fake_batch(3).mask_generator)
    flat = z.float().flatten(0, 1)
    expected = a.loss + variance_loss(flat) + 0.04 * covariance_loss(flat)
    assert torch.allclose(b.loss, expected, atol=1e-6)
    assert torch.allclose(b.metrics["reg/var"], variance_loss(flat)) and b.metrics["reg/var"] > 0
    assert "reg/var" not in a.metrics
