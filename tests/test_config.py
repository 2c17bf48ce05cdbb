"""The config schema: defaults <- YAML (with base:) <- dotted overrides, strictly checked."""

from pathlib import Path

import pytest

from pjepa.config import Config, build_config, dump_config, load_config, load_yaml
from pjepa.errors import ConfigError
from pjepa.heads import build_head

ROOT_CONFIGS = Path(__file__).resolve().parents[1].joinpath("configs")
CONFIGS = sorted(ROOT_CONFIGS.rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT_CONFIGS)))
def test_every_shipped_config_loads_and_builds_its_head(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    # A resolved config survives a dump/load round trip unchanged.
    assert build_config(__import__("yaml").safe_load(dump_config(cfg))) == cfg
    # head.options are checked by the head itself: construct it (cheap; the encoders are not built)
    build_head(cfg.head.name, cfg.model.pred_dim, cfg.model.embed_dim, **cfg.head.options)


def test_shipped_presets_exist():
    names = {str(p.relative_to(p.parents[1])) if p.parent.name != "configs" else p.name for p in CONFIGS}
    heads = ["deterministic", "mdn", "autoregressive", "flow", "diffusion"]
    assert {"smoke.yaml", "cifar10/cpu.yaml"} | {f"tin100/{h}.yaml" for h in heads} <= names
    assert {f"cifar10/{h}.yaml" for h in heads if h != "deterministic"} <= names


def test_overrides_win_and_are_typed():
    cfg = build_config({"optim": {"lr": 0.1}}, ["optim.lr=1e-3", "train.ema=[0.99,1]", "data.path=[a,b]",
                                              "model.pred_layout=per_block", "head.options.var_weight=0.1"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.train.ema == (0.99, 1.0)
    assert cfg.data.path == ["a", "b"]
    assert cfg.model.pred_layout == "per_block"
    assert cfg.head.options == {"var_weight": 0.1}


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("optim.lrr=1", "optim.lrr"),
        ("nosuch.key=1", "nosuch"),
        ("model.depth=1.5", "model.depth"),
        ("model.pred_layout=diagonal", "model.pred_layout"),
        ("train.ema=[0.9]", "train.ema"),
        ("optim.lr=fast", "optim.lr"),
        ("novalue", "key.sub=value"),
    ],
)
def test_bad_keys_and_values_are_named(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        build_config(None, [override])


def test_base_chain_and_missing_file(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {depth: 3}\noptim: {lr: 0.5}\n")
    (tmp_path / "exp.yaml").write_text("base: base.yaml\noptim: {lr: 0.25}\n")
    cfg = load_config(tmp_path / "exp.yaml")
    assert cfg.model.depth == 3 and cfg.optim.lr == 0.25
    assert "base" not in load_yaml(tmp_path / "exp.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
