"""Runs that survive faults: stop signals, non-finite gradients, torn metrics lines, failed writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
from conftest import ROOT, SMOKE, TINY, run_cli

from pjepa.config import load_config
from pjepa.errors import CheckpointError
from pjepa.runs.checkpoint import load_checkpoint
from pjepa.runs.metrics import MetricsLogger, append_line, read_metrics
from pjepa.train.loop import NonFiniteLossError, train

SIGNAL_AT = """
import os, signal, sys
import pjepa.train.loop as loop
original = loop.Trainer.train_step
def step(self, s, *a, **k):
    if s == int(os.environ["SIGNAL_AT_STEP"]):
        os.kill(os.getpid(), int(os.environ["SIGNAL"]))
    return original(self, s, *a, **k)
loop.Trainer.train_step = step
from pjepa.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def losses(run) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_metrics(run) if "train/loss" in r}


@pytest.mark.slow
def test_sigterm_then_resume_continues_bit_identically(tmp_path):
    # log_every=2: the signal at step 6 stops the run at step 7, inside a logging window
    args = ["train", "--config", str(SMOKE), *TINY, "train.max_steps=12", "train.ckpt_every=4",
            "train.eval_every=0", "head.name=mdn"]
    ref = run_cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", SIGNAL_AT_STEP="6",
               SIGNAL=str(int(signal.SIGTERM)))
    stopped = subprocess.run([sys.executable, "-c", SIGNAL_AT, *args, "--out", str(tmp_path / "run")],
                             env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert stopped.returncode == 143, stopped.stderr  # 128 + SIGTERM, after saving
    assert "SIGTERM at step 7: saved checkpoints/last" in stopped.stdout
    _, state = load_checkpoint(tmp_path / "run" / "checkpoints", "last")
    assert state["step"] == 7  # the step in flight finished; not the step-4 checkpoint
    resumed = run_cli("train", "--resume", str(tmp_path / "run"))
    assert resumed.returncode == 0, resumed.stderr
    a, b = losses(tmp_path / "ref"), losses(tmp_path / "run")
    assert sorted(b) == list(range(2, 13, 2))  # no step twice, none missing, the cut window logged whole
    assert a == b  # bit-identical continuation
    wa, _ = load_checkpoint(tmp_path / "ref" / "checkpoints", "last")
    wb, _ = load_checkpoint(tmp_path / "run" / "checkpoints", "last")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_non_finite_gradients_with_a_finite_loss_are_never_saved(tmp_path, monkeypatch, one_thread):
    """A finite loss whose gradient is NaN (here: a hook on the predictor's output) stops the run at the
    next check, and no checkpoint with a non-finite value exists afterwards."""
    from pjepa.methods.ijepa import IJEPA

    original = IJEPA.training_step

    def poisoned(self, batch):
        out = original(self, batch)
        if int(batch.step) == 5:
            out.loss.register_hook(lambda g: g * float("nan"))  # the loss stays finite
        return out

    monkeypatch.setattr(IJEPA, "training_step", poisoned)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="step 5"):
        train(load_config(SMOKE, TINY + ["train.eval_every=0", "train.ckpt_every=4", "train.log_every=4"]), run)
    for name in ("last", "best"):
        path = run / "checkpoints" / name
        if path.exists():
            weights, state = load_checkpoint(run / "checkpoints", name)
            assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
            assert state["step"] == 4


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "train/loss": 0.5}) + "\n" + '{"step": 2, "train/lo')
    with pytest.warns(UserWarning, match="line 2 is not a whole metrics row"):
        rows = read_metrics(tmp_path)
    assert rows == [{"step": 1, "train/loss": 0.5}]


def test_resume_rewrites_the_log_atomically_and_drops_later_and_torn_rows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "x": s}) + "\n" for s in (1, 2, 3, 4)) + '{"st')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MetricsLogger(tmp_path, resume_step=2).close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    assert not list(tmp_path.glob(".metrics.jsonl.*"))  # no temporary file left


def test_a_failed_append_is_a_named_error(tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    os.chmod(target, 0o500)
    try:
        if os.access(target, os.W_OK):  # root ignores permissions: use a path that cannot be a file
            target = tmp_path / "metrics.jsonl"
            target.mkdir()
            with pytest.raises(CheckpointError, match="cannot append to .*metrics.jsonl"):
                append_line(target, "{}")
        else:
            with pytest.raises(CheckpointError, match="cannot append to"):
                append_line(target / "metrics.jsonl", "{}")
    finally:
        os.chmod(tmp_path / "ro", 0o700)


def tiny_args(out, *extra):
    return ["train", "--config", str(SMOKE), *TINY, "train.max_steps=4", "train.eval_every=0", *extra,
            "--out", str(out)]


@pytest.mark.slow
def test_one_writer_per_run_directory(tmp_path):
    from pjepa.runs import RunLock

    run = tmp_path / "run"
    with RunLock(run):  # another live process (this one) holds it
        second = run_cli(*tiny_args(run))
    assert second.returncode == 2 and "is being written by pid" in second.stderr
    (run / ".lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename, "started": 0}))
    taken = run_cli(*tiny_args(run))  # a dead process's lock on this host: taken over
    assert taken.returncode == 0, taken.stderr
    assert not (run / ".lock").exists()  # released at the end


@pytest.mark.slow
def test_a_fresh_run_into_an_existing_one_is_refused_unless_forced(tmp_path):
    run = tmp_path / "run"
    assert run_cli(*tiny_args(run)).returncode == 0
    again = run_cli(*tiny_args(run))
    assert again.returncode == 2 and "already holds a run" in again.stderr and "--force" in again.stderr
    forced = run_cli(*tiny_args(run, "train.max_steps=2"), "--force")
    assert forced.returncode == 0, forced.stderr
    assert sorted(losses(run)) == [2]  # the old log (steps 2, 4) is gone: log_every=2 in TINY


@pytest.mark.slow
def test_a_resume_may_not_change_the_experiment_and_records_what_it_changes(tmp_path):
    run = tmp_path / "run"
    assert run_cli(*tiny_args(run)).returncode == 0
    config_before = (run / "config.yaml").read_text()
    bad = run_cli("train", "--resume", str(run), "optim.lr=1e6")
    assert bad.returncode == 2 and "optim.lr would make it another experiment" in bad.stderr
    longer = run_cli("train", "--resume", str(run), "train.max_steps=6")
    assert longer.returncode == 0, longer.stderr
    assert (run / "config.yaml").read_text() == config_before  # the run's own config is kept
    entries = [json.loads(line) for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert entries[0]["step"] == 4 and entries[0]["overrides"] == ["train.max_steps=6"]
    from pjepa.runs import Run

    assert Run(run).config.train.max_steps == 6  # readers see the resumed config
    assert sorted(losses(run)) == [2, 4, 6]  # log_every=2 in TINY: each step once


@pytest.mark.slow
def test_auto_resume_continues_or_starts(tmp_path):
    run = tmp_path / "run"
    first = run_cli(*tiny_args(run, "train.max_steps=2"), "--auto-resume")  # nothing there: starts
    assert first.returncode == 0, first.stderr
    again = run_cli(*tiny_args(run, "train.max_steps=2"), "--auto-resume")  # complete: resumes, nothing to do
    assert again.returncode == 0 and "finished at step 2" in again.stdout
    import shutil

    shutil.rmtree(run / "checkpoints")  # died before its first checkpoint: starts again, cleanly
    third = run_cli(*tiny_args(run, "train.max_steps=2"), "--auto-resume")
    assert third.returncode == 0, third.stderr
    assert sorted(losses(run)) == [2]


def test_a_full_disk_is_a_named_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, one_thread):
    """The second checkpoint's write fails with ENOSPC: a CheckpointError naming the file; checkpoints/last
    still holds the first one, complete, and no temporary folder is left."""
    import errno

    import pjepa.atomic as atomic

    calls = {"saves": 0}
    real_fdopen = os.fdopen

    def fdopen(fd, *a, **k):
        f = real_fdopen(fd, *a, **k)
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if "model.safetensors" in name:
            calls["saves"] += 1
            if calls["saves"] == 2:
                f.close()
                raise OSError(errno.ENOSPC, "No space left on device")
        return f

    monkeypatch.setattr(atomic.os, "fdopen", fdopen)
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match=r"cannot write .*model.safetensors.*No space left on device"):
        train(load_config(SMOKE, TINY + ["train.eval_every=0", "train.ckpt_every=4", "train.log_every=4"]), run)
    _, state = load_checkpoint(run / "checkpoints", "last")
    assert state["step"] == 4
    assert not list((run / "checkpoints").glob(".*"))  # no half-written folder or file


def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path, one_thread):
    from pjepa.runs.checkpoint import save_checkpoint

    run = tmp_path / "run"
    train(load_config(SMOKE, TINY + ["train.eval_every=0", "train.max_steps=2"]), run)
    weights, state = load_checkpoint(run / "checkpoints", "last")
    key = next(k for k, v in weights.items() if v.is_floating_point())
    weights[key] = weights[key].clone().fill_(float("nan"))
    save_checkpoint(run / "checkpoints", "last", weights, state)  # crafted: pjepa itself never writes this
    with pytest.raises(CheckpointError, match="non-finite weights"):
        load_checkpoint(run / "checkpoints", "last")
    r = run_cli("eval", "knn", "--run", str(run))
    assert r.returncode == 2 and "non-finite weights" in r.stderr and "Traceback" not in r.stderr


def test_retention_keeps_the_newest_checkpoints(tmp_path, one_thread):
    run = tmp_path / "run"
    train(load_config(SMOKE, TINY + ["train.eval_every=0", "train.max_steps=16", "train.keep_last=2"]), run)
    kept = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert kept == ["step_0000012", "step_0000016"]
    _, state = load_checkpoint(run / "checkpoints", "step_0000012")
    assert state["step"] == 12
    assert (run / "checkpoints" / "last" / "model.safetensors").stat().st_ino == \
        (run / "checkpoints" / "step_0000016" / "model.safetensors").stat().st_ino  # a hard link: no extra space


@pytest.mark.parametrize("name, content, command", [
    ("config.yaml", "model: [\n", ["eval", "knn"]),
    ("eval/knn.json", "{not json", ["table"]),
    ("data_stats.json", "[1, 2]", ["eval", "knn"]),
])
def test_corrupt_run_files_are_named_errors(tiny_run, tmp_path, name, content, command):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / name).parent.mkdir(exist_ok=True)
    (run / name).write_text(content)
    args = [*command, str(run)] if command == ["table"] else [*command, "--run", str(run)]
    r = run_cli(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert name.split("/")[-1] in r.stderr.splitlines()[-1]


@pytest.mark.slow
def test_a_kill_during_the_first_checkpoint_write_restarts_cleanly(tmp_path):
    """SIGKILL between the first checkpoint's two files: no complete checkpoint exists; --resume says so by
    name, a plain restart is refused, --auto-resume starts again and ends equal to an uninterrupted run."""
    args = ["train", "--config", str(SMOKE), *TINY, "train.max_steps=8", "train.ckpt_every=4", "train.eval_every=0"]
    ref = run_cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    inject = """
import os, signal, sys
import pjepa.runs.state_io as io, pjepa.runs.checkpoint as ck
original = io.atomic_write_bytes
def write(path, data):
    original(path, data)
    if path.name == "model.safetensors":
        os.kill(os.getpid(), signal.SIGKILL)
io.atomic_write_bytes = ck.atomic_write_bytes = write
from pjepa.cli.main import main
sys.exit(main(sys.argv[1:]))
"""
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    killed = subprocess.run([sys.executable, "-c", inject, *args, "--out", str(run)], env=env,
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert not (run / "checkpoints" / "last").exists()
    resume = run_cli("train", "--resume", str(run))
    assert resume.returncode == 2 and "no complete checkpoint" in resume.stderr
    assert run_cli(*args, "--out", str(run)).returncode == 2  # a plain restart: "already holds a run"
    restarted = run_cli(*args, "--out", str(run), "--auto-resume")
    assert restarted.returncode == 0, restarted.stderr
    assert losses(run) == losses(tmp_path / "ref")


@pytest.mark.parametrize("minutes, saved", [(1e-7, [4, 8, 12]), (0.0, [12])])
def test_a_checkpoint_is_also_saved_after_ckpt_every_min_of_training(tmp_path, one_thread, minutes, saved):
    # ckpt_every far beyond the run: only the minute rule (checked at log steps) or the end saves; a kill
    # without warning then loses at most about train.ckpt_every_min of work. 0 turns the rule off.
    run = tmp_path / "run"
    train(load_config(SMOKE, TINY + ["train.eval_every=0", "train.max_steps=12", "train.log_every=4",
                                     "train.ckpt_every=400", "train.keep_last=5",
                                     f"train.ckpt_every_min={minutes}"]), run)
    kept = sorted(int(p.name.split("_")[1]) for p in (run / "checkpoints").glob("step_*"))
    assert kept == saved


def test_auto_resume_never_deletes_results_and_moves_a_dead_start_aside(tmp_path, capsys):
    """A folder with results but no checkpoint (a kept run) is refused and left as it was; one that died
    before its first checkpoint starts again with what it left moved into previous/1, named in the output."""
    import shutil

    from pjepa.cli.main import main

    kept = tmp_path / "kept"
    assert main(tiny_args(kept, "train.max_steps=2")) == 0
    (kept / "eval").mkdir(exist_ok=True)
    (kept / "eval" / "knn.json").write_text('{"top1": 50.0}')
    shutil.rmtree(kept / "checkpoints")
    before = sorted(p.relative_to(kept) for p in kept.rglob("*"))
    assert main(tiny_args(kept, "train.max_steps=2", "--auto-resume")) == 2
    err = capsys.readouterr().err
    assert "holds results (eval/knn.json) but no checkpoint" in err and "Traceback" not in err
    assert sorted(p.relative_to(kept) for p in kept.rglob("*")) == before  # nothing touched

    dead = tmp_path / "dead"
    assert main(tiny_args(dead, "train.max_steps=2")) == 0
    shutil.rmtree(dead / "checkpoints")
    old_log = (dead / "metrics.jsonl").read_text()
    assert main(tiny_args(dead, "train.max_steps=2", "--auto-resume")) == 0
    out = capsys.readouterr().out
    assert f"what it left is in {dead / 'previous' / '1'}" in out
    assert (dead / "previous" / "1" / "metrics.jsonl").read_text() == old_log
    assert sorted(losses(dead)) == [2] and (dead / "checkpoints").is_dir()


def test_auto_resume_refuses_another_experiment_and_applies_what_a_resume_may_change(tmp_path, capsys):
    from pjepa.cli.main import main
    from pjepa.runs import Run

    run = tmp_path / "run"
    assert main(tiny_args(run, "train.max_steps=2")) == 0
    assert main(tiny_args(run, "train.max_steps=2", "optim.lr=0.5", "--auto-resume")) == 2
    err = capsys.readouterr().err
    assert "another experiment" in err and "optim.lr: 0.002 in the run, 0.5 given" in err
    assert main(tiny_args(run, "train.max_steps=4", "--auto-resume")) == 0  # longer: a resume may do that
    assert "continuing it with train.max_steps=4" in capsys.readouterr().out
    assert Run(run).resume_overrides() == ["train.max_steps=4"] and sorted(losses(run)) == [2, 4]


def test_a_lock_being_created_cannot_be_taken_over(tmp_path, monkeypatch):
    """The window between creating the lock and writing it: a second writer that looks then sees a lock
    that is whole (linked into place) or, on a file system without links, fresh and so held."""
    from pjepa.runs import RunLock
    from pjepa.runs.lock import writer

    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("")  # created, not yet written: what a second writer could see without the fix
    assert writer(run) is not None
    with pytest.raises(CheckpointError, match="one writer per run directory"):
        RunLock(run).acquire()
    old = time.time() - 60
    os.utime(run / ".lock", (old, old))  # an empty lock a minute old: a writer that died mid-create
    with RunLock(run):
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
        assert not list(run.glob(".lock.*"))  # the temporary file is gone


def test_a_bit_flip_inside_a_checkpoint_is_named_and_old_checkpoints_still_load(tmp_path):
    from pjepa.runs.checkpoint import CHECKSUM_FILE, MODEL_FILE, save_checkpoint

    root = tmp_path / "checkpoints"
    save_checkpoint(root, "last", {"w": torch.ones(64)}, {"step": 3})
    weights, state = load_checkpoint(root, "last")
    assert state["step"] == 3
    data = bytearray((root / "last" / MODEL_FILE).read_bytes())
    data[-5] ^= 0x10  # one bit inside the tensor data: still a valid file, silently wrong weights
    (root / "last" / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the checksum written with it"):
        load_checkpoint(root, "last")
    (root / "last" / CHECKSUM_FILE).unlink()  # as a checkpoint written before checksums
    with pytest.warns(UserWarning, match="written before checkpoints carried checksums"):
        load_checkpoint(root, "last")


@pytest.mark.parametrize("skeleton", [
    "[" * 100_000 + "]" * 100_000,                                    # nesting that exhausts the stack
    '{"type": "dict", "items": [[1]]}',                               # an item that is not a pair
    '{"type": "dict", "items": "abc"}',                               # items that are not a list
    '{"type": "tensor", "key": "missing"}',                           # a tensor that is not there
    '{"type": "dict", "items": [["step", {"type": "int", "value": "x"}]]}',  # a scalar of the wrong kind
    '["not", "a", "node"]',
])
def test_a_crafted_state_file_is_a_named_error(tmp_path, skeleton):
    from safetensors.torch import save_file

    from pjepa.runs.state_io import load_tree

    path = tmp_path / "state.safetensors"
    save_file({"t": torch.zeros(1)}, str(path), metadata={"format": "pjepa.state_tree/1", "tree": skeleton})
    with pytest.raises(CheckpointError, match="is corrupt or incomplete"):
        load_tree(path)


@pytest.mark.slow
def test_a_state_tree_that_is_not_a_training_state_is_named_on_resume(tmp_path):
    from pjepa.runs.state_io import save_tree

    run = tmp_path / "run"
    assert run_cli(*tiny_args(run, "train.max_steps=2")).returncode == 0
    save_tree(run / "checkpoints" / "last" / "state.safetensors", {"step": 2})  # no optimiser, no RNG
    (run / "checkpoints" / "last" / "checksums.json").unlink()  # as if written before checksums
    r = run_cli("train", "--resume", str(run), "train.max_steps=4")
    assert r.returncode == 2 and "does not hold a pjepa training state (KeyError" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_full_disk_under_tensorboard_is_a_named_error_and_the_run_resumes(tmp_path, monkeypatch, capfd, one_thread):
    """TensorBoard writes from its own thread; when its event file meets a full disk, training ends with a
    CheckpointError naming RUN/tb (no raw traceback from the thread), the checkpoint written before is intact
    and ``--resume`` finishes the run."""
    import errno

    from tensorboard.summary.writer import record_writer

    real_write, full = record_writer.RecordWriter.write, {"on": False}

    def write(self, data):
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    import pjepa.train.loop as loop

    real_save = loop.Trainer._save

    def save(self, *a, **k):  # the disk fills up right after the first checkpoint
        out = real_save(self, *a, **k)
        full["on"] = True
        return out

    monkeypatch.setattr(record_writer.RecordWriter, "write", write)
    monkeypatch.setattr(loop.Trainer, "_save", save)
    run = tmp_path / "run"
    cfg = load_config(SMOKE, TINY + ["train.eval_every=0", "train.ckpt_every=4", "train.log_every=2",
                                      "train.max_steps=12"])
    with pytest.raises(CheckpointError, match=r"cannot write TensorBoard events to .*tb: No space left"):
        train(cfg, run)
    assert "Traceback" not in capfd.readouterr().err
    _, state = load_checkpoint(run / "checkpoints", "last")
    assert state["step"] == 4
    full["on"] = False
    monkeypatch.setattr(loop.Trainer, "_save", real_save)
    train(cfg, run, resume=True)
    _, state = load_checkpoint(run / "checkpoints", "last")
    assert state["step"] == 12
