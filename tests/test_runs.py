"""The run directory reader: what a run holds, old runs, and the errors that say what to do."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import SMOKE, TINY, run_cli

from pjepa.config import MASK_OPTION_KEYS, load_config
from pjepa.errors import CheckpointError
from pjepa.eval.protocols.knn import evaluate_knn
from pjepa.runs import Run
from pjepa.train.loop import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    train(load_config(SMOKE, TINY + ["train.max_steps=4"]), run)
    return run


def test_run_reads_everything_training_wrote(trained):
    run = Run(trained)
    assert run.config.optim.batch_size == 16 and run.info["total_steps"] == 4
    mean, std = run.stats()
    assert mean.shape == std.shape == (3,)
    assert any("train/loss" in r for r in run.metrics())
    assert run.checkpoint("last") is not None and run.checkpoint("best") is not None
    weights, state = run.load_checkpoint("last")
    assert state["step"] == 4 and "encoder.patch_embed.weight" in weights
    path = run.write_eval("probe", {"top1": 1.5})
    assert path == trained / "eval" / "probe.json" and run.eval_results()["probe"] == {"top1": 1.5}
    assert run.figures_dir == trained / "figures"
    assert run.info["num_val"] == 12 and run.info["num_train"] == 116


def test_missing_pieces_get_named_errors(trained, tmp_path):
    with pytest.raises(CheckpointError, match="not a pjepa run directory"):
        Run(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint 'final'.*it has: last, best"):
        Run(trained).load_checkpoint("final")


def test_a_run_written_by_pjepa_0_1_loads_and_evaluates(trained, tmp_path):
    """Old layout (train.method, flat model keys, data.val_split): migrated on read, weights unchanged."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(trained, old)
    cfg = yaml.safe_load((old / "config.yaml").read_text())
    enc, pred = cfg["model"].pop("encoder"), cfg["model"].pop("predictor")
    cfg["model"] = {**enc, **{f"pred_{k}" if k != "embed_dim" else "pred_dim": v for k, v in pred.items()
                              if k != "mlp_ratio"}}
    cfg["model"]["pred_layout"] = cfg["model"].pop("pred_layout")
    cfg["train"]["method"] = cfg.pop("method")["name"]
    cfg["mask"] = {k: v for k, v in cfg["mask"]["options"].items() if k in MASK_OPTION_KEYS}  # 0.1 had these
    cfg["data"]["val_split"] = cfg["data"].pop("eval_split")
    del cfg["data"]["val_fraction"]
    (old / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = Run(old)
    assert run.config.model.encoder.depth == 2 and run.config.data.val_fraction == 0.0
    r = evaluate_knn(old, progress=False)
    assert r["step"] == 4 and r["n_train"] == 128  # an old run validated on its reported split: full bank


def test_a_config_that_no_longer_fits_is_a_named_error(trained, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained, bad)
    (bad / "config.yaml").write_text((bad / "config.yaml").read_text().replace("optim:", "optim:\n  lr_warp: 3", 1))
    out = run_cli("eval", "knn", "--run", str(bad))
    assert out.returncode == 2 and "does not fit this pjepa version" in out.stderr and "lr_warp" in out.stderr


@pytest.mark.slow
def test_resume_reads_the_config_through_the_run(trained, tmp_path):
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(trained, run)
    out = run_cli("train", "--resume", str(run), "train.max_steps=6")
    assert out.returncode == 0, out.stderr
    assert json.loads((run / "run_info.json").read_text())["total_steps"] == 6


def test_a_weights_and_biases_logger_logs_offline_and_continues_on_resume(tmp_path, monkeypatch):
    """train.wandb=PROJECT logs every metrics row to W&B as well (offline here: no network), and a resumed
    run continues the same W&B run; without the package the key is a named error."""
    wandb = pytest.importorskip("wandb")
    from pjepa.config import load_config
    from pjepa.train.loop import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    cfg = load_config(SMOKE, TINY + ["train.max_steps=4", "train.eval_every=0", "train.log_every=2",
                                     "train.ckpt_every=2", "train.wandb=pjepa-test"])
    train(cfg, run)
    first = (run / "wandb_id").read_text()
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert offline and first in offline[0].name
    assert any(p.suffix == ".wandb" for p in offline[0].iterdir())  # the logged rows
    train(load_config(SMOKE, TINY + ["train.max_steps=6", "train.eval_every=0", "train.log_every=2",
                                     "train.ckpt_every=2", "train.wandb=pjepa-test"]), run, resume=True)
    assert (run / "wandb_id").read_text() == first
    assert wandb.run is None  # finished when training ended


def test_wandb_without_the_package_is_a_named_error(tmp_path, monkeypatch):
    import builtins

    from pjepa.errors import CheckpointError
    from pjepa.runs.metrics import start_wandb

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(CheckpointError, match="needs the wandb package: pip install wandb"):
        start_wandb(tmp_path, "proj", {})


def test_a_result_is_never_replaced_silently(tiny_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "r"
    shutil.copytree(tiny_run, run_dir)
    shutil.rmtree(run_dir / "eval", ignore_errors=True)  # results other tests wrote into the shared run
    run = Run(run_dir)
    run.write_eval("finetune", {"top1": 54.0, "step": 2})
    capsys.readouterr()
    run.write_eval("finetune", {"top1": 10.0, "step": 2})
    out = capsys.readouterr().out
    assert "the previous result (top-1 54.00 %, step 2) is kept as eval/previous/finetune.1.json" in out
    assert "the new one has top-1 10.00 %" in out
    assert json.loads((run_dir / "eval" / "previous" / "finetune.1.json").read_text())["top1"] == 54.0
    assert run.eval_result("finetune")["top1"] == 10.0
