"""``pjepa table RUN...``: the kNN@1 comparison table of run directories.

Reads artefacts only (config.yaml, metrics.jsonl, eval/knn*.json,
eval/head.json), never trains or evaluates. One row per run with both votes
and the run's budget (epochs, steps, global batch, peak lr, training wall
time), then the baselines found in the runs' eval folders (random-init
encoder, raw pixels), once each. Markdown for reading, CSV for plotting.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from pjepa.runs import Run

COLUMNS = [
    "run", "method", "head", "epochs", "steps", "batch", "lr", "wall_min",
    "knn_weighted", "knn_majority", "bank", "queries", "nll", "point_cos", "sample_spread", "sample_s_per_1000",
]


def _budget(run: Run) -> dict[str, Any]:
    cfg = run.config
    rows = [r for r in run.metrics() if "train/loss" in r]
    last = rows[-1] if rows else {}
    return {
        "method": cfg.method.name, "head": cfg.head.name,
        "epochs": round(last.get("epoch", 0.0), 2), "steps": last.get("step", 0),
        "batch": cfg.optim.batch_size, "lr": cfg.optim.lr,
        "wall_min": round(last["wall_seconds"] / 60, 1) if "wall_seconds" in last else None,
    }


def _knn_cells(res: dict[str, Any] | None) -> dict[str, Any]:
    if res is None:
        return {"knn_weighted": None, "knn_majority": None, "bank": None, "queries": None}
    return {"knn_weighted": res["top1_weighted"], "knn_majority": res["top1_majority"],
            "bank": res["n_train"], "queries": res["n_eval"]}


def _head_cells(res: dict[str, Any] | None) -> dict[str, Any]:
    res = res or {}
    return {"nll": res.get("nll"), "point_cos": res.get("point_cos"), "sample_spread": res.get("sample_spread"),
            "sample_s_per_1000": res.get("sample_seconds_per_1000")}


def table_rows(runs: list[str | Path]) -> list[dict[str, Any]]:
    """One row per run, then one per baseline (random-init, pixels) found in the first run that has it."""
    rows, baselines = [], {}
    for run in map(Run, runs):
        knn = run.eval_result("knn")
        rows.append({"run": run.name, **_budget(run), **_knn_cells(knn), **_head_cells(run.eval_result("head"))})
        for name in ("random_init", "pixels"):
            res = run.eval_result(f"knn_{name}")
            if res is not None and name not in baselines:
                baselines[name] = {"run": f"({name.replace('_', '-')}, {run.name})", "method": "baseline",
                                   "head": name.replace("_", "-"), **_knn_cells(res)}
    return rows + list(baselines.values())


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if 0 < abs(v) < 0.1 else f"{v:.2f}"
    return str(v)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in COLUMNS})
    return buf.getvalue()
