"""``pjepa table RUN...``: the comparison table of run directories, runs that differ only in seed grouped.

Reads artefacts only (config.yaml, metrics.jsonl, eval/*.json), never trains or evaluates.
One row per group of runs whose configs are equal but for ``train.seed``: every number is
the mean over the group, with its sample standard deviation (``*_std``) and the group's
size ``n`` (and ``seeds``). Columns: the budget (epochs, steps, global batch, peak lr,
training wall time), kNN@1 (weighted and majority votes), the linear probe (last layer and
last 4 layers), low-shot 1 % and 10 %, fine-tune, and the head metrics. Then the baselines
found in the runs' eval folders (untrained encoder, raw pixels), grouped the same way.
Markdown shows "mean ± std"; CSV has one column per number and one per spread.
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from pathlib import Path
from typing import Any

from pjepa.config import config_to_dict
from pjepa.methods import METHODS
from pjepa.runs import Run

BUDGET = ["method", "head", "epochs", "steps", "batch", "lr", "wall_min"]
SCORES = ["knn", "knn_majority", "linear", "linear_last4", "lowshot_1", "lowshot_10", "finetune",
          "nll", "point_cos", "sample_spread", "sample_s_per_1000"]
COLUMNS = ["run", "n", "seeds", *BUDGET, *SCORES]
BASELINES = {"random_init": "untrained encoder", "pixels": "raw pixels"}


def _budget(run: Run) -> dict[str, Any]:
    cfg = run.config
    rows = [r for r in run.metrics() if "train/loss" in r]
    last = rows[-1] if rows else {}
    uses_head = getattr(METHODS.get(cfg.method.name), "uses_head", True)
    return {
        "method": cfg.method.name, "head": cfg.head.name if uses_head else "-",
        "epochs": round(last.get("epoch", 0.0), 2), "steps": last.get("step", 0),
        "batch": cfg.optim.batch_size, "lr": cfg.optim.lr,
        "wall_min": round(last["wall_seconds"] / 60, 1) if "wall_seconds" in last else None,
    }


def _scores(run: Run, suffix: str = "") -> dict[str, Any]:
    """The protocol numbers of one run ('' = its own encoder, '_random_init' / '_pixels' = a baseline)."""
    knn, lin = run.eval_result("knn" + suffix), run.eval_result("linear" + suffix)
    low, ft = run.eval_result("lowshot" + suffix), run.eval_result("finetune" + suffix)
    probes = (lin or {}).get("probes", {})
    deep = [v for k, v in probes.items() if k.startswith("last") and k != "last"]
    fractions = (low or {}).get("fractions", {})
    return {
        "knn": knn and knn["top1_weighted"], "knn_majority": knn and knn["top1_majority"],
        "linear": lin and lin["top1"], "linear_last4": deep[0]["top1"] if deep else None,
        "lowshot_1": fractions.get("0.01", {}).get("top1_mean"), "lowshot_10": fractions.get("0.1", {}).get("top1_mean"),
        "finetune": ft and ft["top1"],
    }


def _head_cells(res: dict[str, Any] | None) -> dict[str, Any]:
    res = res or {}
    return {"nll": res.get("nll"), "point_cos": res.get("point_cos"), "sample_spread": res.get("sample_spread"),
            "sample_s_per_1000": res.get("sample_seconds_per_1000")}


def _key(run: Run, *drop: tuple[str, ...]) -> str:
    """The run's config without its seed (and any ``drop``ped sections): equal keys = one group."""
    cfg = config_to_dict(run.config)
    cfg["train"].pop("seed")
    for section, *keys in drop:
        target = cfg[section]
        for k in keys[:-1]:
            target = target[k]
        target.pop(keys[-1]) if keys else cfg.pop(section)
    return json.dumps(cfg, sort_keys=True, default=str)


def _group(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with equal ``_key`` -> one row: numbers averaged (+ ``<col>_std``), ``n`` and ``seeds``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["_key"], []).append(r)
    out = []
    for members in groups.values():
        row = {c: members[0].get(c) for c in ("run", *BUDGET)}
        if len(members) > 1 and row["method"] != "baseline":  # "ijepa_s0" + "ijepa_s1" -> "ijepa_s*"
            row["run"] = re.sub(r"(?<=[_-]s)(eed)?\d+$", "*", members[0]["run"])
        row["n"], row["seeds"] = len(members), ",".join(str(m["seed"]) for m in members)
        for col in ("epochs", "steps", "wall_min", *SCORES):
            values = [m[col] for m in members if isinstance(m.get(col), (int, float))]
            row[col] = statistics.fmean(values) if values else None
            if col == "steps" and row[col] is not None and float(row[col]).is_integer():
                row[col] = int(row[col])
            row[f"{col}_std"] = statistics.stdev(values) if len(values) > 1 else None
        out.append(row)
    return out


def table_rows(runs: list[str | Path]) -> list[dict[str, Any]]:
    """One row per seed group of runs, then one per baseline kind (grouped over the runs that have it)."""
    rows, baselines = [], []
    for run in map(Run, runs):
        seed = run.config.train.seed
        rows.append({"run": run.name, "seed": seed, "_key": _key(run), **_budget(run), **_scores(run),
                     **_head_cells(run.eval_result("head"))})
        for name, label in BASELINES.items():
            cells = _scores(run, f"_{name}")
            if any(v is not None for v in cells.values()):
                # a baseline depends on the data and the encoder's architecture, not on the method trained
                key = _key(run, ("method",), ("head",), ("mask",), ("optim",), ("train",), ("model", "predictor"))
                baselines.append({"run": f"({label})", "seed": seed, "_key": name + key, "method": "baseline",
                                  "head": "-", **cells})
    return _group(rows) + _group(baselines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if 0 < abs(v) < 0.1 else f"{v:.2f}"
    return str(v)


def cell(row: dict[str, Any], col: str) -> str:
    std = row.get(f"{col}_std")
    return _fmt(row.get(col)) + (f" ± {_fmt(std)}" if std is not None and col in SCORES else "")


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r, c) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_columns() -> list[str]:
    return COLUMNS[:3] + BUDGET + [c for s in SCORES for c in (s, f"{s}_std")]


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols = csv_columns()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})
    return buf.getvalue()
