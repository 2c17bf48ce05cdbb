"""The flow-matching head by its own name: the loss, no likelihood, option validation; and the
migration from earlier releases, where it was the flow head's ``objective: flow_matching``: the
options, configs, checkpoints and run directories of those releases load, evaluate and resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from conftest import SMOKE, TINY, run_cli

from pjepa.checks import check_config
from pjepa.config import build_config, load_config, migrate_flow_head, migrate_legacy
from pjepa.errors import ConfigError
from pjepa.heads import HEADS, build_head
from pjepa.heads.flow import FlowHead
from pjepa.heads.flow_matching import FlowMatchingHead
from pjepa.runs import Run, is_legacy

B, M, DP = 3, 5, 16

# What a resolved config of an earlier release held for the flow head (`pjepa train --dry-run`): every option
# of both objectives, the unused ones at their defaults.
OLD_OPTIONS = {"layers": 6, "hidden": 128, "scale_clamp": 2.0, "actnorm": True, "ode_steps": 20, "solver": "midpoint",
               "fm_blocks": 3}

# The state-dict keys and shapes the flow head of earlier releases wrote (cond_dim 4, embed_dim 3, hidden 8).
OLD_FLOW_MATCHING_KEYS = {  # objective flow_matching, fm_blocks 1
    "field.inp.weight": (8, 3), "field.inp.bias": (8,), "field.cond_in.weight": (8, 4), "field.cond_in.bias": (8,),
    "field.cond.weight": (8, 4), "field.cond.bias": (8,), "field.t_mlp.0.weight": (8, 8), "field.t_mlp.0.bias": (8,),
    "field.t_mlp.2.weight": (8, 8), "field.t_mlp.2.bias": (8,), "field.blocks.0.norm.weight": (8,),
    "field.blocks.0.norm.bias": (8,), "field.blocks.0.fc1.weight": (16, 8), "field.blocks.0.fc1.bias": (16,),
    "field.blocks.0.film.proj.weight": (32, 8), "field.blocks.0.film.proj.bias": (32,),
    "field.blocks.0.fc2.weight": (8, 16), "field.blocks.0.fc2.bias": (8,), "field.out_norm.weight": (8,),
    "field.out_norm.bias": (8,), "field.out.weight": (3, 8), "field.out.bias": (3,),
}
OLD_NLL_KEYS = {  # objective nll, layers 2
    "flow.couplings.0.net.0.weight": (8, 5), "flow.couplings.0.net.0.bias": (8,),
    "flow.couplings.0.net.2.weight": (8, 8), "flow.couplings.0.net.2.bias": (8,),
    "flow.couplings.0.net.4.weight": (4, 8), "flow.couplings.0.net.4.bias": (4,),
    "flow.couplings.1.net.0.weight": (8, 6), "flow.couplings.1.net.0.bias": (8,),
    "flow.couplings.1.net.2.weight": (8, 8), "flow.couplings.1.net.2.bias": (8,),
    "flow.couplings.1.net.4.weight": (2, 8), "flow.couplings.1.net.4.bias": (2,),
    "flow.norms.0.bias": (3,), "flow.norms.0.log_scale": (3,), "flow.norms.0.initialized": (),
    "flow.norms.1.bias": (3,), "flow.norms.1.log_scale": (3,), "flow.norms.1.initialized": (),
}


# ---------------------------------------------------------------- the head


def test_registered_with_its_own_options_only():
    assert {"flow", "flow_matching"} <= set(HEADS.names())
    head = build_head("flow_matching", DP, 4)
    assert isinstance(head, FlowMatchingHead) and not hasattr(head, "flow")
    assert (head.ode_steps, head.solver) == (20, "midpoint") and len(head.field.blocks) == 3
    assert isinstance(build_head("flow", DP, 4), FlowHead)
    for option in ("objective", "layers", "scale_clamp", "actnorm"):
        with pytest.raises(ConfigError, match=f"head 'flow_matching' rejected .*{option}"):
            build_head("flow_matching", DP, 4, **{option: 1})


def test_loss_worked_example():
    D = 3
    head = build_head("flow_matching", DP, D, hidden=32)
    h, y = torch.randn(B, M, DP), torch.randn(B, M, D)
    torch.manual_seed(5)
    loss, diag = head.loss(h, y)
    torch.manual_seed(5)  # the same draws, in the head's order: x0 then t
    x0, t = torch.randn(B, M, D), torch.rand(B, M)
    xt = (1 - t[..., None]) * x0 + t[..., None] * y
    expected = ((head.field(xt, t, h) - (y - x0)) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and diag["fm_mse"] == loss.detach()
    torch.testing.assert_close(head.predict(h), head.field(torch.zeros(B, M, D), torch.zeros(B, M), h))


def test_euler_sampling_is_the_ode_by_hand():
    D, steps = 2, 3
    head = build_head("flow_matching", DP, D, hidden=16, fm_blocks=1, ode_steps=steps, solver="euler")
    h = torch.randn(1, 2, DP)
    got = head.sample(h, 2, torch.Generator().manual_seed(0))
    x = torch.randn((2, 1, 2, D), generator=torch.Generator().manual_seed(0))
    for k in range(steps):
        x = x + head.field(x, torch.full(x.shape[:-1], k / steps), h.expand(2, 1, 2, DP)) / steps
    torch.testing.assert_close(got, x, atol=1e-5, rtol=0)


def test_has_no_log_prob():
    head = build_head("flow_matching", DP, 4)
    assert head.has_log_prob is False
    with pytest.raises(ConfigError, match="no exact log-likelihood"):
        head.log_prob(torch.randn(B, M, DP), torch.randn(B, M, 4))
    assert set(head.loss(torch.randn(B, M, DP), torch.randn(B, M, 4))[1]) == {"fm_mse"}


@pytest.mark.parametrize("options, name", [({"solver": "rk4"}, "solver"), ({"hidden": 2.5}, "hidden"),
                                           ({"ode_steps": 0}, "ode_steps"), ({"fm_blocks": True}, "fm_blocks")])
def test_bad_options_name_the_option(options, name):
    with pytest.raises(ConfigError, match=f"head.options.{name}="):
        build_head("flow_matching", DP, 4, **options)


# ---------------------------------------------------------------- the migration


def test_the_old_spelling_builds_the_same_head():
    """head "flow" + objective flow_matching (the other objective's options ignored, as they were) is the
    flow_matching head: the same class, parameters, draws and loss from the same seed."""
    torch.manual_seed(0)
    old = build_head("flow", DP, 3, **{**OLD_OPTIONS, "hidden": 32, "fm_blocks": 2, "ode_steps": 4},
                     objective="flow_matching")
    torch.manual_seed(0)
    new = build_head("flow_matching", DP, 3, hidden=32, fm_blocks=2, ode_steps=4)
    assert type(old) is FlowMatchingHead and (old.ode_steps, old.solver) == (new.ode_steps, new.solver)
    assert old.state_dict().keys() == new.state_dict().keys()
    assert all(torch.equal(v, new.state_dict()[k]) for k, v in old.state_dict().items())
    h, y = torch.randn(B, M, DP), torch.randn(B, M, 3)
    torch.testing.assert_close(old.sample(h, 2, torch.Generator().manual_seed(1)),
                               new.sample(h, 2, torch.Generator().manual_seed(1)))
    assert torch.equal(old.loss(h, y, torch.Generator().manual_seed(2))[0],
                       new.loss(h, y, torch.Generator().manual_seed(2))[0])


def test_migrate_flow_head():
    fm = {"objective": "flow_matching", **OLD_OPTIONS}
    assert migrate_flow_head("flow", fm) == ("flow_matching", {"hidden": 128, "ode_steps": 20, "solver": "midpoint",
                                                               "fm_blocks": 3})
    assert fm == {"objective": "flow_matching", **OLD_OPTIONS}  # the caller's mapping is left alone
    assert migrate_flow_head("flow", {"objective": "nll", **OLD_OPTIONS}) == (
        "flow", {"layers": 6, "hidden": 128, "scale_clamp": 2.0, "actnorm": True})
    assert migrate_flow_head("flow", {"layers": 4}) == ("flow", {"layers": 4})
    assert migrate_flow_head("mdn", {"objective": "x"}) == ("mdn", {"objective": "x"})  # another head's business
    with pytest.raises(ConfigError, match=r"head.options.objective='mle'.*head.name=flow_matching"):
        migrate_flow_head("flow", {"objective": "mle"})
    with pytest.raises(ConfigError, match=r"head.options.ode_steps=5: .*write head.name=flow_matching"):
        migrate_flow_head("flow", {"ode_steps": 5})


def test_an_old_config_and_an_old_override_resolve_to_the_flow_matching_head(tmp_path):
    old = {"base": str(SMOKE), "head": {"name": "flow", "options": {"objective": "flow_matching", "hidden": 16,
                                                                    "fm_blocks": 1, "ode_steps": 4}}}
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    cfg = check_config(load_config(tmp_path / "old.yaml", TINY), build=False)
    assert cfg.head.name == "flow_matching"
    assert cfg.head.options == {"hidden": 16, "ode_steps": 4, "solver": "midpoint", "fm_blocks": 1}
    # an override on a flow preset, as the sweeps of earlier releases wrote it
    cfg = build_config(None, ["head.name=flow", "head.options={objective: flow_matching, hidden: 16}"])
    assert (cfg.head.name, cfg.head.options) == ("flow_matching", {"hidden": 16})
    cfg = build_config({"head": {"name": "flow", "options": {"layers": 2}}}, ["head.options.objective=flow_matching"])
    assert (cfg.head.name, cfg.head.options) == ("flow_matching", {})
    with pytest.raises(ConfigError, match="head.name=flow_matching"):
        build_config(None, ["head.name=flow", "head.options.solver=euler"])


def test_a_run_config_of_an_earlier_release_is_legacy_and_migrates():
    old = {"head": {"name": "flow", "options": {"objective": "flow_matching", **OLD_OPTIONS}}}
    assert is_legacy(old) and not is_legacy(migrate_legacy(old))
    assert migrate_legacy(old)["head"]["name"] == "flow_matching"
    nll = {"head": {"name": "flow", "options": {"objective": "nll", **OLD_OPTIONS}}}
    assert is_legacy(nll) and migrate_legacy(nll)["head"] == {
        "name": "flow", "options": {"layers": 6, "hidden": 128, "scale_clamp": 2.0, "actnorm": True}}


@pytest.mark.parametrize("name, options, keys", [
    ("flow_matching", {"hidden": 8, "fm_blocks": 1}, OLD_FLOW_MATCHING_KEYS),
    ("flow", {"layers": 2, "hidden": 8}, OLD_NLL_KEYS),
])
def test_a_checkpoint_of_the_old_flow_head_loads_unchanged(name, options, keys):
    """The weights the flow head of earlier releases saved (both objectives) load strictly, by the same names."""
    gen = torch.Generator().manual_seed(0)
    old = {k: torch.randn(shape, generator=gen) if shape else torch.tensor(True) for k, shape in keys.items()}
    head = build_head(name, 4, 3, **options)
    head.load_state_dict(old)  # strict: no key missing, none left over, every shape the same
    assert all(torch.equal(head.state_dict()[k], v) for k, v in old.items())


# ---------------------------------------------------------------- a run directory of an earlier release


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    """A tiny flow-matching run, its config.yaml then rewritten as an earlier release wrote it."""
    run = tmp_path_factory.mktemp("runs") / "fm"
    train_cfg = load_config(SMOKE, TINY + ["train.max_steps=4", "head.name=flow_matching",
                                           "head.options={hidden: 16, fm_blocks: 1, ode_steps: 2}"])
    from pjepa.train.loop import train

    train(train_cfg, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["head"]["name"] == "flow_matching"
    cfg["head"] = {"name": "flow", "options": {"objective": "flow_matching", **OLD_OPTIONS, "hidden": 16,
                                               "fm_blocks": 1, "ode_steps": 2}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return run


def test_an_old_flow_matching_run_loads_and_evaluates(old_run, tmp_path, one_thread):
    from pjepa.eval.protocols.head import evaluate_head

    run = tmp_path / "old"
    shutil.copytree(old_run, run)
    assert Run(run).raw_config["head"]["name"] == "flow_matching"
    assert Run(run).config.head.options == {"hidden": 16, "ode_steps": 2, "solver": "midpoint", "fm_blocks": 1}
    r = evaluate_head(run, eval_limit=8, num_samples=2, device="cpu")
    assert r["step"] == 4 and r["head"] == "flow_matching" and r["has_log_prob"] is False
    assert all(v is None or v == v for v in r.values() if isinstance(v, float))  # no NaN


@pytest.mark.slow
def test_an_old_flow_matching_run_resumes(old_run, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(old_run, run)
    out = run_cli("train", "--resume", str(run), "train.max_steps=6")
    assert out.returncode == 0, out.stderr
    assert json.loads((run / "run_info.json").read_text())["total_steps"] == 6
    assert Run(run).load_checkpoint("last")[1]["step"] == 6
