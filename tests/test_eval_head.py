"""Shared head metrics: the pure function, their logging during training, `pjepa eval head` and `pjepa table`."""

import json

import pytest
import torch
from conftest import SMOKE, TINY, run_cli

from pjepa.config import load_config
from pjepa.eval.head_metrics import head_metrics
from pjepa.heads import build_head
from pjepa.runs.metrics import read_metrics
from pjepa.train.loop import train


def test_metrics_of_a_known_head():
    torch.manual_seed(0)
    head = build_head("deterministic", 4, 3)
    h, y = torch.randn(2, 5, 4), torch.randn(2, 5, 3)
    pairs = [(h[:1], y[:1]), (h[1:], y[1:])]
    m = head_metrics(head, pairs, torch.Generator().manual_seed(0), num_samples=4, sample_tokens=5)
    pred = head.predict(h)
    assert m["point_mse"] == pytest.approx(((pred - y) ** 2).mean().item(), rel=1e-5)
    assert m["sample_spread"] == 0.0 and "nll" not in m  # a point mass; no exact likelihood
    assert m["tokens"] == 10 and m["sampled_tokens"] == 5  # samples only on the first 5 tokens
    assert m["sample_seconds_per_1000"] >= 0


def test_nll_is_reported_exactly_for_heads_with_a_likelihood():
    torch.manual_seed(0)
    head = build_head("mdn", 4, 3)
    h, y = torch.randn(2, 5, 4), torch.randn(2, 5, 3)
    m = head_metrics(head, [(h, y)], torch.Generator().manual_seed(0))
    assert m["nll"] == pytest.approx((-head.log_prob(h, y).mean() / 3).item(), rel=1e-5)
    assert m["sample_spread"] > 0


@pytest.mark.slow
def test_head_metrics_logged_in_training_then_eval_head_and_table(tmp_path):
    run = tmp_path / "mdn"
    train(load_config(SMOKE, TINY + ["head.name=mdn", "eval.periodic_head_subset=8"]), run)
    logged = set().union(*read_metrics(run))
    assert {"headeval/nll", "headeval/point_cos", "headeval/sample_spread", "headeval/sample_seconds_per_1000",
            "wall_seconds"} <= logged
    out = run_cli("eval", "head", "--run", str(run), "--eval-limit", "16", "--samples", "3")
    assert out.returncode == 0, out.stderr
    assert "nll/dim" in out.stdout and "s/1000 tokens" in out.stdout
    saved = json.loads((run / "eval" / "head.json").read_text())
    assert saved["head"] == "mdn" and saved["has_log_prob"] and saved["n_images"] == 16 and saved["step"] == 8
    assert run_cli("eval", "knn", "--run", str(run)).returncode == 0
    assert run_cli("eval", "knn", "--run", str(run), "--pixels").returncode == 0
    table = run_cli("table", str(run), "--csv", str(tmp_path / "t.csv"))
    assert table.returncode == 0, table.stderr
    md = table.stdout.splitlines()
    assert md[0].startswith("| run | n | seeds | method | head |") and md[2].startswith("| mdn | 1 | 0 | I-JEPA | mdn |")
    assert any(line.startswith("| (raw pixels) | 1 | 0 | baseline | - |") for line in md)
    csv_rows = (tmp_path / "t.csv").read_text().splitlines()
    knn = json.loads((run / "eval" / "knn.json").read_text())
    assert csv_rows[1].startswith("mdn,1,0,I-JEPA,mdn,") and str(knn["top1_weighted"]) in csv_rows[1]


def test_table_of_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path):
    out = run_cli("table", str(tmp_path))
    assert out.returncode == 2 and "not a pjepa run directory" in out.stderr
