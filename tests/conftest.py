"""Shared fixtures: a tiny model on a tiny synthetic dataset, trained in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"

# 24 px, patch 4 -> a 6 x 6 grid; two small blocks; one thread so runs are deterministic.
TINY = [
    "data.options={num_classes: 4, image_size: 24, num_train: 128, num_val: 64, seed: 0}",
    "data.image_size=24",
    "data.stats_samples=64",
    "model.encoder.patch_size=4",
    "model.encoder.embed_dim=32",
    "model.encoder.depth=2",
    "model.encoder.num_heads=2",
    "model.predictor.embed_dim=16",
    "model.predictor.depth=1",
    "model.predictor.num_heads=2",
    "optim.batch_size=16",
    "train.num_threads=1",
    "train.precision=fp32",  # not auto: the same numbers on every processor (tests/test_precision.py covers auto)
    "train.progress=false",
    "train.log_every=2",
    "train.eval_every=4",
    "train.ckpt_every=4",
    "train.max_steps=8",
    "eval.periodic_train_subset=64",
    "eval.periodic_val_subset=32",
    "eval.k=5",
]


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m pjepa ARGS`` in a subprocess with the source tree importable."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "pjepa", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


def run_group(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a new session whose whole process group is killed if it times out or the test
    is interrupted: a launcher's workers (torchrun) would otherwise outlive it and hold the cores."""
    import signal

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="session", autouse=True)
def precision_cache(tmp_path_factory):
    """Probe results of ``train.precision=auto`` go to a temporary cache, never the user's ~/.cache/pjepa
    (child processes inherit the variable)."""
    before = os.environ.get("PJEPA_CACHE_DIR")
    os.environ["PJEPA_CACHE_DIR"] = str(tmp_path_factory.mktemp("pjepa-cache"))
    yield Path(os.environ["PJEPA_CACHE_DIR"])
    if before is None:
        os.environ.pop("PJEPA_CACHE_DIR", None)
    else:
        os.environ["PJEPA_CACHE_DIR"] = before


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def one_thread():
    """Small matmuls: one thread is far faster than two when the cores are shared (pytest -n 2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny I-JEPA run (2 steps) on the tiny synthetic data: for the protocols, export and table."""
    from pjepa.config import load_config
    from pjepa.train.loop import train

    run = tmp_path_factory.mktemp("runs") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(SMOKE, TINY + ["train.max_steps=2", "train.eval_every=0"]), run)
    finally:
        torch.set_num_threads(before)
    return run
