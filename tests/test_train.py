"""The training loop end to end: run directory, exact resume after SIGKILL, NaN guard, CLI, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, SMOKE, TINY, run_cli, run_group

from pjepa.config import load_config
from pjepa.eval.protocols.knn import evaluate_knn
from pjepa.runs.checkpoint import load_checkpoint
from pjepa.runs.metrics import read_metrics
from pjepa.train.loop import NonFiniteLossError, train


def losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_metrics(run_dir) if "train/loss" in r}


def test_train_writes_a_complete_run_directory(tmp_path):
    run = tmp_path / "run"
    result = train(load_config(SMOKE, TINY), run)
    assert result["step"] == 8
    for name in ("config.yaml", "metrics.jsonl", "data_stats.json", "run_info.json"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last" / "model.safetensors").is_file()
    assert (run / "checkpoints" / "best" / "model.safetensors").is_file()
    rows = read_metrics(run)
    assert [r["step"] for r in rows if "train/loss" in r] == [2, 4, 6, 8]
    logged = set().union(*rows)
    for key in ("train/loss", "train/grad_norm", "lr", "ema", "images_per_s", "mask/num_context",
                "mask/num_target", "collapse/target_std", "collapse/target_erank", "knn/top1_weighted"):
        assert key in logged, key
    info = json.loads((run / "run_info.json").read_text())
    assert info["global_batch"] == 16 and info["world_size"] == 1 and info["total_steps"] == 8
    # the target encoder moved by EMA, the context encoder by gradients
    w, st = load_checkpoint(run / "checkpoints", "last")
    assert st["step"] == 8
    assert not torch.equal(w["encoder.patch_embed.weight"], w["target_encoder.patch_embed.weight"])


def test_eval_knn_writes_the_result_file_and_baselines(tmp_path):
    run = tmp_path / "run"
    train(load_config(SMOKE, TINY), run)
    r = evaluate_knn(run, progress=False)
    saved = json.loads((run / "eval" / "knn.json").read_text())
    for key in ("top1", "k", "temperature", "vote", "encoder", "dataset", "split", "n_train", "n_eval", "step"):
        assert key in saved, key
    # the bank is train minus the validation carve: 4 classes x round(0.1 * 32) = 12 held out
    assert saved["n_train"] == 116 and saved["n_eval"] == 64 and saved["step"] == 8 and saved["k"] == 5
    assert 0.0 <= r["top1"] <= 100.0
    rnd = evaluate_knn(run, baseline="random-init", progress=False)
    pix = evaluate_knn(run, baseline="pixels", progress=False)
    assert (run / "eval" / "knn_random_init.json").is_file() and (run / "eval" / "knn_pixels.json").is_file()
    assert rnd["encoder"] == "target" and rnd["step"] == 0 and pix["feature_dim"] == 3 * 24 * 24


KILL_AT = """
import os, signal, sys
import pjepa.train.loop as loop
original = loop.Trainer.train_step
def step(self, s, *a, **k):
    if s == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, s, *a, **k)
loop.Trainer.train_step = step
from pjepa.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("extra", [["head.name=deterministic"], ["head.name=diffusion"], ["head.name=flow"],
                                   ["reg.name=sigreg", "method.options.target=online"]],
                         ids=["deterministic", "diffusion", "flow", "sigreg-online"])
@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, extra):
    # diffusion draws its noise from the per-step-seeded global RNG; flow has ActNorm's data-dependent init;
    # SIGReg draws its directions from a generator seeded by the step
    args = ["train", "--config", str(SMOKE), *TINY, "train.max_steps=12", "train.log_every=1",
            "train.ckpt_every=4", "train.eval_every=0", *extra]
    ref = run_cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", KILL_AT_STEP="6")
    killed = subprocess.run([sys.executable, "-c", KILL_AT, *args, "--out", str(tmp_path / "run")],
                            env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    _, state = load_checkpoint(tmp_path / "run" / "checkpoints", "last")
    assert state["step"] == 4  # the last checkpoint before the kill survived intact
    resumed = run_cli("train", "--resume", str(tmp_path / "run"))
    assert resumed.returncode == 0, resumed.stderr
    a, b = losses(tmp_path / "ref"), losses(tmp_path / "run")
    assert sorted(b) == list(range(1, 13))  # no step logged twice, none missing
    assert a == b  # bit-identical losses, before and after the resume


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from pjepa.heads.deterministic import DeterministicHead

    calls = {"n": 0}
    original = DeterministicHead.loss

    def poisoned(self, h, y, generator=None):
        loss, diag = original(self, h, y, generator)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 7 else loss), diag

    monkeypatch.setattr(DeterministicHead, "loss", poisoned)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="step 6.*the last good checkpoint \\(checkpoints/last at step 4\\)"):
        train(load_config(SMOKE, TINY + ["train.eval_every=0"]), run)
    _, state = load_checkpoint(run / "checkpoints", "last")
    assert state["step"] == 4
    w, _ = load_checkpoint(run / "checkpoints", "last")
    assert all(torch.isfinite(v).all() for v in w.values())


def test_a_non_finite_loss_before_any_checkpoint_says_nothing_is_kept(tmp_path, monkeypatch):
    from pjepa.heads.deterministic import DeterministicHead

    original = DeterministicHead.loss

    def poisoned(self, h, y, generator=None):
        loss, diag = original(self, h, y, generator)
        return loss * float("nan"), diag

    monkeypatch.setattr(DeterministicHead, "loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="no checkpoint had been saved yet, so nothing is kept"):
        train(load_config(SMOKE, TINY + ["train.eval_every=0"]), tmp_path / "run")


@pytest.mark.slow
def test_cli_dry_run_and_errors(tmp_path):
    out = run_cli("train", "--config", str(SMOKE), "--dry-run", "optim.lr=0.5")
    assert out.returncode == 0 and "lr: 0.5" in out.stdout
    bad = run_cli("train", "--config", str(SMOKE), "--dry-run", "optim.lrr=0.5")
    assert bad.returncode == 2 and "unknown config key optim.lrr" in bad.stderr
    after = run_cli("train", "--config", str(SMOKE), "--out", str(tmp_path / "x"), "--dry-run", "optim.lr=0.25")
    assert after.returncode == 0 and "lr: 0.25" in after.stdout  # overrides after options work too
    missing = run_cli("eval", "knn", "--run", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "not a pjepa run directory" in missing.stderr


def test_a_timed_out_launcher_takes_its_workers_with_it(tmp_path):
    """The harness of the torchrun test: on a timeout the whole process group goes, not only the launcher."""
    pid_file = tmp_path / "worker.pid"
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    with pytest.raises(subprocess.TimeoutExpired):
        run_group(["sh", "-c", script], timeout=2)
    worker = int(pid_file.read_text())
    for _ in range(50):  # reaped by init shortly after the kill
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"worker {worker} outlived its launcher")


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pjepa",
           "train", "--config", str(SMOKE), "--out", str(run), *TINY, "train.max_steps=4"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    proc = run_group(cmd, timeout=600, env=env, cwd=ROOT)  # a timeout kills torchrun's workers too
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    info = json.loads((run / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["global_batch"] == 16 and info["local_batch"] == 8
    assert "global batch 16 (2 x 8)" in proc.stdout
    _, state = load_checkpoint(run / "checkpoints", "last")
    assert state["step"] == 4


def test_logged_metrics_are_window_means(tmp_path, monkeypatch):
    """Per-step metrics are averaged over the window; diagnostics over the steps that have them."""
    from pjepa.methods.ijepa import IJEPA

    original = IJEPA.training_step

    def training_step(self, batch):
        out = original(self, batch)
        out.metrics["probe/every_step"] = 3.0
        if batch.diagnostics:
            out.metrics["probe/diagnostic"] = 7.0
        return out

    monkeypatch.setattr(IJEPA, "training_step", training_step)
    run = tmp_path / "run"
    train(load_config(SMOKE, TINY + ["train.eval_every=0", "train.log_every=4"]), run)
    rows = [r for r in read_metrics(run) if "train/loss" in r]
    assert [r["probe/every_step"] for r in rows] == [3.0, 3.0]
    assert [r["probe/diagnostic"] for r in rows] == [7.0, 7.0]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_finishes_the_step_then_saves_last(tmp_path, monkeypatch, sig):
    """Ctrl-C / SIGTERM during step 5: the step completes, checkpoints/last holds step 6 (weights and
    step counter agree), and the result's exit code is 128 + the signal."""
    import pjepa.train.loop as loop

    original = loop.Trainer.train_step

    def step(self, s, *a, **k):
        if s == 5:
            os.kill(os.getpid(), sig)  # delivered mid-step, like a real one
        return original(self, s, *a, **k)

    monkeypatch.setattr(loop.Trainer, "train_step", step)
    run = tmp_path / "run"
    result = train(load_config(SMOKE, TINY + ["train.eval_every=0", "train.ckpt_every=4", "train.log_every=4"]), run)
    assert result["exit_code"] == 128 + sig and result["step"] == 6
    _, state = load_checkpoint(run / "checkpoints", "last")
    assert state["step"] == 6
    assert signal.getsignal(sig) is not None and signal.getsignal(sig) != loop.StopSignals._handle  # restored


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_plain_keys(tmp_path):
    """train.compile=true: same losses as eager, and checkpoints load into uncompiled models."""
    over = TINY + ["train.eval_every=0", "train.max_steps=4"]
    train(load_config(SMOKE, over + ["train.compile=true"]), tmp_path / "compiled")
    train(load_config(SMOKE, over), tmp_path / "eager")
    a, b = losses(tmp_path / "compiled"), losses(tmp_path / "eager")
    assert a.keys() == b.keys() and all(abs(a[s] - b[s]) < 1e-4 for s in a)
    weights, _ = load_checkpoint(tmp_path / "compiled" / "checkpoints", "last")
    assert not any("_orig_mod" in k for k in weights)
    assert evaluate_knn(tmp_path / "compiled", progress=False)["step"] == 4


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    from pjepa.errors import CheckpointError

    run = tmp_path / "run"
    train(load_config(SMOKE, TINY + ["train.eval_every=0", "train.max_steps=2"]), run)
    cfg = (run / "config.yaml").read_text().replace("depth: 2", "depth: 3", 1)
    (run / "config.yaml").write_text(cfg)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        evaluate_knn(run, progress=False)


def test_pretraining_on_an_unlabelled_split_needs_a_labelled_bank(tmp_path, monkeypatch):
    """STL-10 style: pretrain on 'unlabeled', use a labelled split as the kNN bank."""
    import pjepa.data
    from pjepa.data import load_dataset as real_load
    from pjepa.errors import PJepaError

    def load(name, split, path=None, **options):  # synthetic 'train' plays the unlabelled split
        ds = real_load(name, "train" if split == "unlabeled" else split, path, **options)
        if split == "unlabeled":
            ds.labels = torch.full_like(ds.labels, -1)
            ds.split = "unlabeled"
        return ds

    monkeypatch.setattr(pjepa.data, "load_dataset", load)
    base = TINY + ["data.train_split=unlabeled", "train.max_steps=4"]
    with pytest.raises(PJepaError, match="data.bank_split"):  # no labelled split to validate on or to bank
        train(load_config(SMOKE, base), tmp_path / "a")
    result = train(load_config(SMOKE, base + ["data.bank_split=val"]), tmp_path / "b")
    assert result["step"] == 4 and result["best_knn"] >= 0
