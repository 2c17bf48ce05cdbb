"""pjepa sweep: the grid (axes, names), the plan checked up front, run state, the local launcher (failures go
on, a signal stops and the same command continues), and the submitit launcher on submitit's local executor."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SMOKE, TINY

from pjepa.cli.main import main
from pjepa.errors import ConfigError
from pjepa.runs import save_checkpoint
from pjepa.sweep import (
    PointJob,
    grid_points,
    parse_grid,
    plan_sweep,
    point_jobs,
    run_local,
    run_sweep,
    settle_sweep_dir,
)
from pjepa.sweep.grid import split_top_level
from pjepa.sweep.runner import Children, time_left
from pjepa.sweep.state import DONE_FILE, eval_current, mark_done, recorded_seconds, run_state

TABLE_SEED = re.compile(r"(?<=[_-]s)(eed)?\d+$")  # pjepa.eval.table._group's seed suffix


# --------------------------------------------------------------------------- the grid


def test_commas_split_only_at_the_top_level():
    assert split_top_level("a,b", "x") == ["a", "b"]
    assert split_top_level("[0.99,1.0]", "x") == ["[0.99,1.0]"]
    assert split_top_level("[0.99,1.0],[0.996,1.0]", "x") == ["[0.99,1.0]", "[0.996,1.0]"]
    assert split_top_level("{a: 1, b: [2,3]},{}", "x") == ["{a: 1, b: [2,3]}", "{}"]
    assert split_top_level("'a,b',\"c,d\"", "x") == ["'a,b'", '"c,d"']
    assert split_top_level("", "x") == [""]
    for bad in ("[1,2", "1]", "[1,2}", "'a,b"):
        with pytest.raises(ConfigError, match="override 'x'"):
            split_top_level(bad, "x")


def test_axes_fixed_overrides_and_bad_items():
    items = parse_grid(["head.name=deterministic,mdn", "train.ema=[0.99,1.0]", "optim.lr=1e-3",
                        "train.ema=[0.99,1.0],[0.996,1.0]", "data.path="])
    assert [(o.key, o.values) for o in items] == [  # a repeated key: the later one wins, at its place
        ("head.name", ("deterministic", "mdn")), ("optim.lr", ("1e-3",)),
        ("train.ema", ("[0.99,1.0]", "[0.996,1.0]")), ("data.path", ("",))]
    assert [o.is_axis for o in items] == [True, False, True, False]
    for bad, message in (("optim.lr", "must look like key.sub=value"), ("=1", "must look like"),
                         ("optim.lr=1,,2", "empty value"), ("optim.lr=1,2,1", "listed twice")):
        with pytest.raises(ConfigError, match=message):
            parse_grid([bad])


def test_grid_order_overrides_and_names():
    items = parse_grid(["head.name=deterministic,mdn", "train.seed=0,1", "optim.lr=1e-3",
                        "train.ema=[0.99,1.0],[0.9,1]"])
    points = grid_points(items, "smoke")
    assert len(points) == 8
    # Cartesian product in command-line order, the last axis fastest; every run keeps the overrides' order
    assert points[0].overrides == ("head.name=deterministic", "train.seed=0", "optim.lr=1e-3", "train.ema=[0.99,1.0]")
    assert points[1].overrides == ("head.name=deterministic", "train.seed=0", "optim.lr=1e-3", "train.ema=[0.9,1]")
    assert points[-1].varying == ("head.name=mdn", "train.seed=1", "train.ema=[0.9,1]")
    # varying keys only, the seed last as seedN, file-name-safe, unique
    assert points[0].name == "head.name-deterministic_train.ema-0.99-1.0_seed0"
    assert points[-1].name == "head.name-mdn_train.ema-0.9-1_seed1"
    assert len({p.name for p in points}) == 8
    assert all(re.fullmatch(r"[A-Za-z0-9_.+-]+", p.name) and not p.name.startswith(".") for p in points)
    # pjepa table strips the seed suffix: the two seeds of a config share a row label
    labels = {TABLE_SEED.sub("*", p.name) for p in points}
    assert len(labels) == 4 and "head.name-mdn_train.ema-0.9-1_s*" in labels


def test_names_of_seed_only_grids_collisions_and_long_values():
    assert [p.name for p in grid_points(parse_grid(["train.seed=0,1"]), "smoke")] == ["smoke_seed0", "smoke_seed1"]
    assert [p.name for p in grid_points(parse_grid(["optim.lr=1e-3"]), "cpu")] == ["cpu"]  # no axis: one run
    clash = [p.name for p in grid_points(parse_grid(["data.path=a/b,a-b", "train.seed=3,4"]), "x")]
    assert len(set(clash)) == 4 and all(TABLE_SEED.search(n) for n in clash)
    assert clash[0].startswith("data.path-a-b-") and clash[0].endswith("_seed3")
    long = grid_points(parse_grid([f"data.path={'x' * 300},{'y' * 300}"]), "x")
    assert all(len(p.name) <= 100 for p in long) and long[0].name != long[1].name


# --------------------------------------------------------------------------- the plan


def test_every_point_is_checked_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", "--config", str(SMOKE), "--out", str(out), "optim.lr=1e-3,-1", "head.name=mdn"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("pjepa: error: run optim.lr--1 (optim.lr=-1): optim.lr=-1.0: need a finite number > 0")
    assert not out.exists()  # nothing written, nothing trained
    assert main(["sweep", "--config", str(SMOKE), "--out", str(out), "--eval", "knn,lineer", "train.seed=0,1"]) == 2
    assert "unknown protocol 'lineer'" in capsys.readouterr().err
    assert main(["sweep", "--config", "no-such-preset", "--out", str(out), "train.seed=0,1"]) == 2
    with pytest.raises(ConfigError, match="resolve to the same config"):
        plan_sweep(str(SMOKE), out, ["optim.lr=1e-3,0.001"])


def test_dry_run_prints_the_grid(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--config", "smoke", "--out", str(out), "--dry-run", "--eval", "knn", "--baselines",
                 "head.name=deterministic,mdn", "train.seed=0,1"]) == 0
    text = capsys.readouterr().out
    assert "4 runs of smoke.yaml" in text and "evaluations: knn, knn_random_init, knn_pixels" in text
    assert "  head.name-mdn_seed1: head.name=mdn train.seed=1" in text and not out.exists()


def test_sweep_json_and_another_grid_into_the_same_folder(tmp_path):
    out = tmp_path / "sweep"
    plan = plan_sweep(str(SMOKE), out, ["train.seed=0,1", "optim.lr=1e-3"])
    settle_sweep_dir(plan, ["pjepa", "sweep", "..."])
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["axes"] == [["train.seed", ["0", "1"]]] and saved["fixed"] == ["optim.lr=1e-3"]
    assert [r["name"] for r in saved["runs"]] == ["smoke_seed0", "smoke_seed1"] and saved["command"][1] == "sweep"
    settle_sweep_dir(plan_sweep("smoke", out, ["train.seed=0,1", "optim.lr=1e-3"]))  # the same grid: continues
    with pytest.raises(ConfigError, match="holds another sweep .*pick another --out"):
        settle_sweep_dir(plan_sweep(str(SMOKE), out, ["train.seed=0,1,2", "optim.lr=1e-3"]))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty and holds no sweep.json"):
        settle_sweep_dir(plan_sweep(str(SMOKE), tmp_path / "other", ["train.seed=0,1"]))


# --------------------------------------------------------------------------- run state and commands


def _fake_run(run: Path, step: int, total: int) -> None:
    """A run directory as pjepa train leaves it: config, run_info (planned steps), checkpoints/last at ``step``."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text("{}\n")
    (run / "run_info.json").write_text(json.dumps({"total_steps": total}))
    state = {"step": step, "optimizer": {"m": torch.ones(3)}}
    save_checkpoint(run / "checkpoints", "last", {"w": torch.zeros(2)}, state)


def test_run_state_from_the_run_directory(tmp_path):
    run = tmp_path / "r"
    assert run_state(run).kind == "new"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    assert run_state(run).kind == "new"  # died before its first checkpoint: --auto-resume starts it again
    _fake_run(run, 4, 8)
    assert (run_state(run).kind, run_state(run).step, run_state(run).total) == ("unfinished", 4, 8)
    mark_done(run)  # pjepa train exited 0 at step 4 (a time limit): done
    assert run_state(run).kind == "finished" and json.loads((run / DONE_FILE).read_text())["step"] == 4
    _fake_run(run, 6, 8)  # trained on since (by hand): the mark is stale
    assert run_state(run).kind == "unfinished"
    _fake_run(run, 8, 8)
    assert run_state(run).kind == "finished"


def test_a_run_kept_without_its_checkpoints_is_finished_with_current_results(tmp_path):
    """Results kept without weights: skipped, not retrained or re-rated;
    without sweep_done.json it is a run that died early and starts again."""
    run = tmp_path / "r"
    _fake_run(run, 8, 8)
    mark_done(run)
    (run / "eval").mkdir()
    (run / "eval" / "knn.json").write_text("{}")
    shutil.rmtree(run / "checkpoints")
    assert (run_state(run).kind, run_state(run).step) == ("finished", 8)
    assert eval_current(run, "knn") and not eval_current(run, "linear")
    (run / DONE_FILE).unlink()
    assert run_state(run).kind == "new" and not eval_current(run, "knn")


def test_an_evaluation_is_current_only_when_newer_than_its_checkpoint(tmp_path):
    run = tmp_path / "r"
    _fake_run(run, 8, 8)
    assert not eval_current(run, "knn")
    (run / "eval").mkdir()
    (run / "eval" / "knn.json").write_text("{}")
    ckpt = run / "checkpoints" / "last" / "model.safetensors"
    os.utime(run / "eval" / "knn.json", (ckpt.stat().st_mtime + 5,) * 2)
    assert eval_current(run, "knn")
    os.utime(ckpt, (ckpt.stat().st_mtime + 10,) * 2)  # the run trained on after the evaluation
    assert not eval_current(run, "knn")


def test_a_job_trains_with_auto_resume_then_evaluates(tmp_path):
    """The commands a local run or a SLURM job executes (no submitit needed); a job pickles."""
    from pjepa.sweep.slurm import SlurmOptions, SweepJob

    plan = plan_sweep(str(SMOKE), tmp_path / "s", ["head.name=deterministic,mdn", "optim.lr=5e-4"])
    job = point_jobs(plan, ("knn", "linear"), baselines=True)[1]
    run = (tmp_path / "s" / "head.name-mdn").resolve()
    assert job.train_command() == [sys.executable, "-m", "pjepa", "train", "--config", str(SMOKE.resolve()),
                                   "--out", str(run), "--auto-resume", "head.name=mdn", "optim.lr=5e-4"]
    cmds = dict(job.eval_commands())
    assert list(cmds) == ["knn", "linear", "knn_random_init", "knn_pixels", "linear_random_init", "linear_pixels"]
    assert cmds["linear_random_init"][3:] == ["eval", "linear", "--run", str(run), "--random-init"]
    assert cmds["linear"][3:] == ["eval", "linear", "--run", str(run)]
    assert cmds["knn_pixels"][3:] == ["eval", "knn", "--run", str(run), "--pixels"]
    val = dict(point_jobs(plan, ("knn_val",))[0].eval_commands())  # choices read the validation split
    assert val["knn_val"][3:] == ["eval", "knn", "--run", str(tmp_path / "s" / "head.name-deterministic"),
                                  "--split", "val"]
    white = dict(point_jobs(plan, ("knn", "knn_white"), baselines=True)[0].eval_commands())
    assert list(white) == ["knn", "knn_white", "knn_random_init", "knn_pixels", "knn_random_init_white",
                           "knn_pixels_white"]  # whitened kNN: its baselines whitened too
    assert white["knn_pixels_white"][3:] == ["eval", "knn", "--run", str(tmp_path / "s" / "head.name-deterministic"),
                                             "--pixels", "--whiten"]
    context = dict(point_jobs(plan, ("knn", "knn_context"), baselines=True)[0].eval_commands())
    assert list(context) == ["knn", "knn_context", "knn_random_init", "knn_pixels"]  # no baseline has a student
    assert context["knn_context"][3:] == ["eval", "knn", "--run", str(tmp_path / "s" / "head.name-deterministic"),
                                          "--encoder", "context"]
    again = pickle.loads(pickle.dumps(SweepJob(job)))
    assert again.job == job and again.job.train_command() == job.train_command()
    params = SlurmOptions(partition="gpu", time_min=60, gpus=2, cpus=4).parameters()
    assert params == {"timeout_min": 60, "gpus_per_node": 2, "cpus_per_task": 4, "tasks_per_node": 1, "nodes": 1,
                      "slurm_partition": "gpu"}


# --------------------------------------------------------------------------- the local launcher


def _script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def test_a_signal_reaches_the_child_once_and_sets_the_exit_code(tmp_path):
    """Ctrl-C to the sweep goes to the child exactly once (it runs in its own session), the sweep returns 130."""
    log = tmp_path / "got"
    child = _script(tmp_path, "child", f"""
        import signal, sys, time
        got = []
        signal.signal(signal.SIGINT, lambda s, f: got.append(s))
        open({str(tmp_path / "ready")!r}, "w").close()
        t = time.time()
        while not got and time.time() - t < 20:
            time.sleep(0.01)
        time.sleep(0.3)  # a second, forwarded-twice signal would arrive here
        open({str(log)!r}, "w").write(str(len(got)))
        sys.exit(130)
    """)

    def press_ctrl_c():
        for _ in range(2000):
            if (tmp_path / "ready").exists():
                break
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    with Children(forward=True) as children:
        threading.Thread(target=press_ctrl_c, daemon=True).start()
        assert children.run(child) == 130
        assert children.run([sys.executable, "-c", "pass"]) == 130  # stopped: no further child starts
    assert log.read_text() == "1" and signal.getsignal(signal.SIGINT) is before


def test_local_sweep_goes_on_after_a_failure_and_stops_on_a_signal(tmp_path, monkeypatch):
    """Fake training commands: a failing run is reported and the next one runs (exit 1 at the end); a run
    stopped by SIGTERM stops the sweep with 143 before the next run starts."""
    ok = _script(tmp_path, "ok", "pass")
    fail = _script(tmp_path, "fail", "raise SystemExit(3)")
    stop = _script(tmp_path, "stop", """
        import os, signal, sys, time
        signal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))
        os.kill(os.getppid(), signal.SIGTERM)  # as if a scheduler stopped the sweep: it forwards the signal here
        time.sleep(20)
    """)
    commands = {"a": ok, "b": fail, "c": ok, "d": stop, "e": ok}
    monkeypatch.setattr(PointJob, "train_command", lambda self: commands[self.name])
    jobs = [PointJob(n, tmp_path / n, SMOKE, ()) for n in "abc"]
    lines: list[str] = []
    assert run_local(jobs, lines.append) == 1
    assert lines[0] == "[sweep] 3 runs: 3 to start, 0 to continue, 0 trained already"
    assert lines[1] == "[sweep] 1/3 a: training"
    assert lines[2].startswith("[sweep] 1/3 a: trained in 0s; about 0s left (2 runs")
    assert lines[4].startswith("[sweep] 2/3 b: FAILED in ") and "pjepa train exited with 3" in lines[4]
    assert lines[6].startswith("[sweep] 3/3 c: trained in") and lines[6].endswith("no run left to train")
    assert "2 trained, 0 resumed, 0 skipped, 1 failed; 1 of 3 runs with failures" in lines[7]
    assert lines[8] == "[sweep] FAILED b: pjepa train exited with 3"
    lines.clear()
    jobs = [PointJob(n, tmp_path / n, SMOKE, ()) for n in "de"]
    assert run_local(jobs, lines.append) == 143
    assert lines[-1].startswith("[sweep] 1/2 d: stopped by SIGTERM") and not any("2/2" in line for line in lines)


def test_time_left_is_the_mean_cost_of_a_run_times_the_share_still_to_do():
    assert time_left([60.0, 120.0], [1, 1, 1, 1]) == "about 6m00s left (4 runs to train)"
    assert time_left([600.0], [1, 0.25]) == "about 12m30s left (2 runs to train)"  # one run three quarters done
    assert time_left([], [1, 1]) == "2 runs to train; time left known after the first one"
    assert time_left([60.0], []) == "no run left to train"


def test_a_continued_sweep_estimates_from_the_runs_an_earlier_command_finished(tmp_path, monkeypatch):
    """The estimate needs no run trained by this command: a finished run's directory records its cost
    (training wall time across resumes + its evaluations' seconds), and a half-done run counts half."""
    done, half = tmp_path / "a", tmp_path / "b"
    _fake_run(done, 8, 8)
    (done / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "train/loss": 1.0, "wall_seconds": w}) + "\n"
                                                for s, w in ((4, 1000.0), (8, 3000.0))))
    (done / "eval").mkdir()
    (done / "eval" / "knn.json").write_text(json.dumps({"seconds": 600.0}))
    (done / "eval" / "broken.json").write_text("{")  # a torn file costs nothing and breaks nothing
    assert recorded_seconds(done) == 3600.0 and recorded_seconds(tmp_path / "none") is None
    _fake_run(half, 4, 8)
    monkeypatch.setattr(PointJob, "train_command", lambda self: [sys.executable, "-c", "raise SystemExit(130)"])
    lines: list[str] = []
    jobs = [PointJob(n, tmp_path / n, SMOKE, ()) for n in "abc"]
    assert run_local(jobs, lines.append) == 130  # b "stopped" at once: only the first lines matter here
    assert lines[0] == ("[sweep] 3 runs: 1 to start, 1 to continue, 1 trained already; "
                        "about 1h30m left (2 runs to train)")  # 3600 s x (0.5 + 1)
    assert lines[1] == "[sweep] 1/3 a: trained already; nothing to do"
    assert lines[2] == "[sweep] 1/3 a: skipped in 0s; about 1h30m left (2 runs to train)"


def _sweep_cli(out: Path, options: list[str], overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "pjepa", "sweep", "--config", str(SMOKE), "--out", str(out), *options, *overrides]


@pytest.mark.slow
def test_interrupted_sweep_continues_with_the_same_command(tmp_path, monkeypatch, capfd):
    """A real run: SIGTERM to the sweep -> pjepa train saves checkpoints/last, the sweep exits 143; the same
    command resumes the run, evaluates it, and a third time skips it; pjepa table reads the sweep folder."""
    from pjepa.eval.table import table_rows

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "sweep"
    over = ["train.max_steps=80", "train.eval_every=0", "train.ckpt_every=1000", "train.seed=3"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen(_sweep_cli(out, ["--eval", "knn"], TINY + over), env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run = out / "smoke"
    for _ in range(1200):
        if (run / "metrics.jsonl").is_file() or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, text
    assert "[sweep] 1/1 smoke: stopped by SIGTERM" in text and "saved checkpoints/last" in text
    step = run_state(run).step
    assert run_state(run).kind == "unfinished" and 0 < step < 80 and not (run / "eval").exists()

    lines: list[str] = []
    assert run_sweep(str(SMOKE), out, TINY + over, ["knn"], echo=lines.append) == 0
    assert f"[sweep] 1/1 smoke: resuming from step {step} of 80" in lines
    assert any(line.startswith("[sweep] 1/1 smoke: resumed in") and "(evaluated: knn)" in line for line in lines)
    assert run_state(run).kind == "finished" and json.loads((run / "eval" / "knn.json").read_text())["step"] == 80
    stamp = (run / "eval" / "knn.json").stat().st_mtime

    lines.clear()
    assert run_sweep(str(SMOKE), out, TINY + over, ["knn"], echo=lines.append) == 0
    assert "[sweep] 1/1 smoke: trained already; nothing to do" in lines
    assert (run / "eval" / "knn.json").stat().st_mtime == stamp
    capfd.readouterr()
    rows = table_rows([out])
    assert [r["run"] for r in rows] == ["smoke"] and rows[0]["steps"] == 80 and rows[0]["vs_best"] == "best"


@pytest.mark.slow
def test_submitit_launcher_on_the_local_executor(tmp_path, monkeypatch, capfd):
    """One job per point with work left (submitit's LocalExecutor runs it here); submitting again: nothing to do."""
    pytest.importorskip("submitit")
    from pjepa.sweep import SlurmOptions

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "sweep"
    opts = SlurmOptions(time_min=10, gpus=0, cpus=1, cluster="local", wait=True)
    lines: list[str] = []
    over = TINY + ["train.eval_every=0", "train.max_steps=4"]
    assert run_sweep(str(SMOKE), out, over, launcher="submitit", slurm=opts, echo=lines.append) == 0, capfd.readouterr()
    assert any(line.startswith("[sweep] submitted smoke as job") for line in lines)
    assert any(re.match(r"\[sweep\] job \S+ smoke: trained in", line) for line in lines)
    assert run_state(out / "smoke").kind == "finished" and (out / "slurm" / "submissions.jsonl").is_file()
    assert list((out / "slurm").glob("*_log.out"))
    lines.clear()
    assert run_sweep(str(SMOKE), out, over, launcher="submitit", slurm=opts, echo=lines.append) == 0
    assert lines[-1] == "[sweep] all 1 runs are trained and evaluated: nothing to submit"


def test_submitit_on_a_machine_without_slurm_is_a_named_error(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="no sbatch on this machine"):
        run_sweep(str(SMOKE), tmp_path / "s", ["train.seed=0,1"], launcher="submitit", echo=lambda line: None)


def test_an_unknown_evaluation_is_named_with_the_choices_before_anything_runs(tmp_path):
    from pjepa.sweep import check_protocols

    assert check_protocols(["knn", "knn_val", "knn"]) == ("knn", "knn_val")
    with pytest.raises(ConfigError, match=r"unknown protocol 'knnval', did you mean 'knn_val'\? \(protocols: .*knn_val"):
        check_protocols(["knn", "knnval"])



def test_a_huge_grid_needs_max_runs(tmp_path, capsys):
    from pjepa.cli.main import main

    lrs = ",".join(f"{i}e-4" for i in range(1, 101))
    args = ["sweep", "--config", str(SMOKE), "--out", str(tmp_path / "s"), "--dry-run", f"optim.lr={lrs}",
            "train.seed=" + ",".join(map(str, range(20)))]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the grid has 2,000 runs (100 (optim.lr) x 20 (train.seed)), more than --max-runs 1,000" in err
    assert not (tmp_path / "s").exists()  # refused before anything was written
