"""The config: defaults <- YAML (with base:) <- dotted overrides, typed, then checked against every plug-in."""

from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from pjepa.checks import check_config
from pjepa.config import Config, build_config, dump_config, load_config, load_yaml, migrate_legacy
from pjepa.errors import ConfigError
from pjepa.presets import PRESET_DIR, list_presets, preset_names, resolve_config_path

CONFIGS = sorted(PRESET_DIR.rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(PRESET_DIR)))
def test_every_shipped_preset_passes_every_check_and_round_trips(path):
    cfg = check_config(load_config(path))  # builds the method (encoders, trunk, head, masks) on the meta device
    assert isinstance(cfg, Config)
    assert check_config(build_config(yaml.safe_load(dump_config(cfg)))) == cfg


def test_shipped_presets_exist_and_resolve_by_name():
    heads = ["deterministic", "mdn", "autoregressive", "flow", "diffusion"]
    names = set(preset_names())
    assert {"smoke", "cifar10/cpu"} | {f"tin100/{h}" for h in heads} <= names
    assert {f"cifar10/{h}" for h in heads if h != "deterministic"} <= names
    methods = {f"{where}/{m}" for where in ("smoke", "cifar10", "tin100") for m in ("njepa", "mae")}
    assert methods | {"smoke/njepa_mdn", "stl10/ijepa_vitb16", "stl10/mae_vitb16", "cifar10/stl10_cpu_mae"} <= names
    assert resolve_config_path("smoke") == PRESET_DIR / "smoke.yaml"
    assert resolve_config_path("cifar10/cpu.yaml") == PRESET_DIR / "cifar10" / "cpu.yaml"
    assert resolve_config_path("configs/smoke.yaml").name == "smoke.yaml"
    assert all(line for _, line in list_presets())  # every preset says what it is in its first comment line
    with pytest.raises(ConfigError, match="pjepa presets"):
        resolve_config_path("smok")


def test_a_misspelt_preset_is_answered_with_the_nearest_names():
    with pytest.raises(ConfigError, match=r"presets like it: cifar10/cpu[,;]"):
        resolve_config_path("cifar10/cpuu")  # the nearest spelling first, not the first names of the list
    with pytest.raises(ConfigError) as nothing_near:
        resolve_config_path("zzzzqqq")
    assert "presets like it" not in str(nothing_near.value) and "pjepa presets" in str(nothing_near.value)


def test_overrides_win_and_are_typed():
    cfg = build_config({"optim": {"lr": 0.1}}, ["optim.lr=1e-3", "train.ema=[0.99,1]", "data.path=[a,b]",
                                              "model.predictor.layout=per_block", "head.options.var_weight=0.1"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.train.ema == (0.99, 1.0)
    assert cfg.data.path == ["a", "b"]
    assert cfg.model.predictor.layout == "per_block"
    assert cfg.head.options == {"var_weight": 0.1}


def test_checking_fills_every_plugin_option_with_its_default():
    cfg = check_config(build_config(None, ["head.name=mdn", "head.options.components=3"]))
    assert cfg.head.options["components"] == 3 and cfg.head.options["min_scale"] == 0.01
    assert cfg.mask.options["num_targets"] == 4
    assert cfg.method.options == {"target_norm": True, "target": "ema"}
    assert cfg.reg.name == "none" and cfg.reg.options == {}
    assert cfg.data.options["num_classes"] == 10


def test_switching_a_plugin_starts_from_its_defaults():
    """head.name= on the command line (or in a base chain) drops the old head's options."""
    cfg = check_config(load_config(PRESET_DIR / "cifar10" / "mdn.yaml", ["head.name=deterministic"]))
    assert cfg.head.name == "deterministic" and "components" not in cfg.head.options
    assert cfg.head.options == {"loss": "smooth_l1", "align_weight": 1.0, "var_weight": 0.0, "cov_weight": 0.0}
    kept = load_config(PRESET_DIR / "cifar10" / "mdn.yaml", ["head.name=mdn"])  # same name: options kept
    assert kept.head.options == {"components": 5, "logvar_weight": 0.1}
    data = build_config({"data": {"name": "cifar10", "path": "x.npz", "options": {"image_size": 32}}},
                        ["data.name=synthetic"])
    assert data.data.path is None and data.data.options == {}


def test_an_empty_mapping_clears_inherited_options(tmp_path):
    (tmp_path / "base.yaml").write_text("head: {name: mdn, options: {components: 2, hidden: 8}}\n")
    (tmp_path / "exp.yaml").write_text("base: base.yaml\nhead: {options: {}}\n")
    assert load_config(tmp_path / "exp.yaml").head.options == {}
    assert load_config(tmp_path / "base.yaml", ["head.options={}"]).head.options == {}
    assert load_config(tmp_path / "base.yaml", ["head.options.hidden=4"]).head.options == {"components": 2, "hidden": 4}


def test_base_chain_cycle_and_missing_file(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {encoder: {depth: 3}}\noptim: {lr: 0.5}\n")
    (tmp_path / "exp.yaml").write_text("base: base.yaml\noptim: {lr: 0.25}\n")
    cfg = load_config(tmp_path / "exp.yaml")
    assert cfg.model.encoder.depth == 3 and cfg.optim.lr == 0.25
    assert "base" not in load_yaml(tmp_path / "exp.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle.*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_config(tmp_path / "a.yaml")


def test_yaml_syntax_errors_name_file_and_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("optim:\n  lr: 1e-3\n  batch_size: [64\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+"):
        load_config(tmp_path / "bad.yaml")


def test_moved_keys_say_where_they_went():
    with pytest.raises(ConfigError, match="model.pred_dim moved to model.predictor.embed_dim"):
        build_config(None, ["model.pred_dim=64"])
    with pytest.raises(ConfigError, match="train.method moved to method.name"):
        build_config(None, ["train.method=ijepa"])


def test_legacy_layout_is_migrated():
    old = {"data": {"val_split": "test"}, "model": {"patch_size": 4, "pred_dim": 32, "pred_layout": "per_block"},
           "mask": {"num_targets": 2}, "train": {"method": "ijepa", "epochs": 3}}
    cfg = build_config(migrate_legacy(old))
    assert cfg.data.eval_split == "test" and cfg.data.val_fraction == 0.0
    assert cfg.model.encoder.patch_size == 4 and cfg.model.predictor.embed_dim == 32
    assert cfg.model.predictor.layout == "per_block" and cfg.method.name == "ijepa"
    assert cfg.mask.options == {"num_targets": 2} and cfg.train.epochs == 3


# Each bad value, what the one-line message must name. All rejected by `--dry-run` with exit code 2.
BAD = [
    ("optim.lrr=1", "unknown config key optim.lrr"),
    ("nosuch.key=1", "unknown config key nosuch"),
    ("model.encoder.depth=1.5", "model.encoder.depth=1.5"),
    ("model.predictor.layout=diagonal", "model.predictor.layout='diagonal'"),
    ("train.ema=[0.9]", "train.ema"),
    ("optim.lr=fast", "optim.lr='fast'"),
    ("optim.batch_size=0", "optim.batch_size=0"),
    ("optim.batch_size=-8", "optim.batch_size=-8"),
    ("optim.lr=0", "optim.lr=0.0"),
    ("optim.lr=-1e-3", "optim.lr=-0.001"),
    ("optim.lr=.nan", "optim.lr=nan"),
    ("optim.lr=.inf", "optim.lr=inf"),
    ("train.ema=[0.9,1.2]", "train.ema=[0.9, 1.2]"),
    ("train.ema=[-0.1,1.0]", "train.ema=[-0.1, 1.0]"),
    ("train.epochs=0", "train.epochs=0.0"),
    ("train.epochs=-2", "train.epochs=-2.0"),
    ("data.crop_scale=[0.9,0.3]", "data.crop_scale=[0.9, 0.3]"),
    ("model.encoder.patch_size=5", "model.encoder.patch_size=5"),
    ("model.encoder.num_heads=3", "model.encoder.num_heads=3"),
    ("model.predictor.num_heads=5", "model.predictor.num_heads=5"),
    ("model.encoder.depth=0", "model.encoder.depth=0"),
    ("model.predictor.depth=0", "model.predictor.depth=0"),
    ("train.device=gpu", "train.device='gpu'"),
    ("head.name=gmm", "unknown head 'gmm'"),
    ("head.options.no_such_option=1", "head.options.no_such_option"),
    ("head.options.loss=l3", "head.options.loss='l3'"),
    ("method.name=byol", "unknown method 'byol'"),
    ("method.options.target_norm=maybe", "method.options.target_norm='maybe'"),
    ("mask.name=grid", "unknown mask sampler 'grid'"),
    ("mask.options.num_targets=0", "mask.options ('multiblock' on a 8 x 8 grid): num_targets must be an int >= 1, got 0"),
    ("mask.options.target_scale=[0.5,1.5]", "mask.options ('multiblock' on a 8 x 8 grid): target_scale"),
    ("data.name=imagenet", "unknown dataset 'imagenet'"),
    ("data.options.num_classes=ten", "data.options.num_classes='ten'"),
    ("data.val_fraction=1.5", "data.val_fraction=1.5"),
    ("optim.warmup_epochs=20", "optim.warmup_epochs=20.0"),
    ("train.log_every=0", "train.log_every=0"),
    ("train.eval_every=7", "train.eval_every=7"),
    ("eval.k=0", "eval.k=0"),
    ("model.init_scheme=timm", "model.init_scheme='timm'"),
    ("mask.options.size_rule=exact", "size_rule must be one of pjepa, official, got 'exact'"),
]


@pytest.mark.parametrize("override, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_values_are_rejected_before_anything_is_built(override, fragment):
    with pytest.raises(ConfigError) as err:
        check_config(load_config(PRESET_DIR / "smoke.yaml", [override]))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_dry_run_rejects_with_exit_code_2_and_one_line(tmp_path, capsys):
    from pjepa.cli.main import main

    for override, fragment in BAD:  # in-process: main() is the console entry point
        assert main(["train", "--config", "smoke", "--dry-run", override]) == 2, override
        err = capsys.readouterr().err
        assert err.startswith("pjepa: error:") and fragment in err and err.count("\n") == 1, (override, err)
    # and as a real process: no traceback, also for a YAML syntax error (file and line)
    (tmp_path / "bad.yaml").write_text("optim: {lr: 1e-3\n")
    out = run_cli("train", "--config", str(tmp_path / "bad.yaml"), "--dry-run")
    assert out.returncode == 2 and "line" in out.stderr and "Traceback" not in out.stderr


def test_dry_run_after_a_head_switch_shows_the_new_heads_defaults():
    out = run_cli("train", "--config", str(Path(PRESET_DIR, "cifar10", "mdn.yaml")), "head.name=deterministic",
                  "--dry-run", env={"PJEPA_DATA": "/nowhere"})
    assert out.returncode == 0, out.stderr
    head = yaml.safe_load(out.stdout)["head"]
    assert head == {"name": "deterministic", "options": {"loss": "smooth_l1", "align_weight": 1.0,
                                                         "var_weight": 0.0, "cov_weight": 0.0}}


def test_config_mistakes_that_used_to_give_generic_errors_are_named(tmp_path):
    from pjepa.presets import resolve_config_path

    (tmp_path / "a.yaml").write_text("train: {epochs: 1}\n")
    with pytest.raises(ConfigError, match="is a folder, not a config file \\(it holds a.yaml\\)"):
        resolve_config_path(tmp_path)
    (tmp_path / "child.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="base: missing.yaml in .* does not exist: the path is relative"):
        load_config(tmp_path / "child.yaml")
    (tmp_path / "latin1.yaml").write_bytes("# caf\xe9\ntrain: {epochs: 1}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(tmp_path / "latin1.yaml")
    with pytest.raises(ConfigError, match="eval.periodic_train_subset=0: need an integer > 0 while train.eval_every"):
        check_config(build_config(None, ["eval.periodic_train_subset=0"]))
    check_config(build_config(None, ["eval.periodic_train_subset=0", "train.eval_every=0"]))  # no periodic kNN: fine


def test_a_misspelt_plugin_name_is_named_with_the_closest_one():
    from pjepa.heads import HEADS

    with pytest.raises(ConfigError, match=r"unknown head 'flow_matchin' \(did you mean 'flow_matching'\?\); choose one of"):
        HEADS.get("flow_matchin")
    with pytest.raises(ConfigError, match=r"unknown head 'zzz'; choose one of"):  # nothing close: no guess
        HEADS.get("zzz")
