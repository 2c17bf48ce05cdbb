"""``RunDirectory``: the one writer of a run directory's life (policy, lock, run files), without training."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SMOKE, TINY

from pjepa.checks import check_config
from pjepa.config import load_config
from pjepa.errors import CheckpointError, ConfigError
from pjepa.runs import RunDirectory, RunLock


@pytest.fixture
def cfg():
    return check_config(load_config(SMOKE, TINY), build=False)


def test_a_new_run_needs_out_under_torchrun_and_with_auto_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="--auto-resume needs --out DIR"):
        RunDirectory.for_new_run(None, "smoke", auto_resume=True)
    assert RunDirectory.for_new_run(None, "smoke").path.as_posix() == "runs/00000-smoke"
    assert RunDirectory.for_new_run(tmp_path / "r", "smoke", auto_resume=True).path == tmp_path / "r"
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="under torchrun pass --out DIR"):
        RunDirectory.for_new_run(None, "smoke")


def test_run_files_are_written_and_read_back(tmp_path, cfg):
    d = RunDirectory(tmp_path / "run", main=True)
    assert d.data_stats() is None
    d.write_run_files(cfg, torch.tensor([0.5, 0.25, 0.0]), torch.tensor([1.0, 2.0, 3.0]), {"world_size": 1})
    mean, std = d.data_stats()
    assert mean.tolist() == [0.5, 0.25, 0.0] and std.tolist() == [1.0, 2.0, 3.0]
    assert json.loads((d.path / "data_stats.json").read_text())["samples"] == cfg.data.stats_samples
    assert json.loads((d.path / "run_info.json").read_text()) == {"world_size": 1}
    (d.path / "config.yaml").write_text("kept: true\n")
    d.write_run_files(cfg, mean, std, {}, keep_config=True)  # a resume keeps the config the run started with
    assert (d.path / "config.yaml").read_text() == "kept: true\n"
    d.write_run_files(cfg, mean, std, {})
    assert (d.path / "config.yaml").read_text() != "kept: true\n"


def test_a_folder_holding_a_run_is_refused_cleared_or_moved_aside(tmp_path, cfg):
    d = RunDirectory(tmp_path / "run", main=True)
    d.write_run_files(cfg, torch.zeros(3), torch.ones(3), {})
    (d.path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already holds a run; continue it with --resume"):
        d.open(cfg, check_config, resume=False)
    start = d.open(cfg, check_config, resume=False, auto_resume=True)  # no checkpoint: died before its first
    assert start == (False, cfg) and not (d.path / "config.yaml").exists()
    assert (d.path / "previous" / "1" / "config.yaml").is_file() and (d.path / "notes.txt").is_file()
    d.write_run_files(cfg, torch.zeros(3), torch.ones(3), {})
    (d.path / "eval").mkdir()
    (d.path / "eval" / "knn.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds results \\(eval/knn.json\\) but no checkpoint"):
        d.open(cfg, check_config, resume=False, auto_resume=True)
    assert d.open(cfg, check_config, resume=False, force=True) == (False, cfg)
    assert not (d.path / "config.yaml").exists() and not (d.path / "eval").exists()
    assert (d.path / "notes.txt").is_file() and (d.path / "previous").is_dir()  # only pjepa's own files go


def test_open_refuses_while_another_process_writes(tmp_path, cfg):
    d = RunDirectory(tmp_path / "run", main=True)
    with RunLock(d.path), pytest.raises(CheckpointError, match="one writer per run directory"):
        d.open(cfg, check_config, resume=False)


def test_another_rank_neither_locks_nor_writes(tmp_path, cfg):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    other = RunDirectory(a_file, main=False)
    other.check_writable()  # rank 0 checks; the others leave it to rank 0
    with RunLock(tmp_path / "run"), RunDirectory(tmp_path / "run", main=False).lock():
        pass
    assert RunDirectory(tmp_path / "fresh", main=False).open(cfg, check_config, resume=False) == (False, cfg)
    assert not (tmp_path / "fresh").exists()
