"""``pjepa eval lowshot --run DIR``: linear probes from 1 % and 10 % of the labels, written to
DIR/eval/lowshot*.json.

For each fraction and each of 3 subset seeds: a class-balanced, seeded subset of the bank
split (the labelled training split minus validation); a class-balanced 20 % of that subset
is held out to choose the probe's learning rate and weight decay (the low-shot user has no
other labels: the run's validation split is not used), then the probe is retrained on the
whole subset with the chosen setting and the reported split is scored once. Features are
the last layer's (``--layers 4``: the last 4 concatenated), cached with the linear protocol's.
Reported: mean and standard deviation of top-1 over the subset seeds, and every seed's report.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pjepa.data import carve_validation
from pjepa.errors import ConfigError
from pjepa.eval.linear import BATCH, linear_probe
from pjepa.eval.protocols.base import (
    PROTOCOLS,
    Protocol,
    add_run_arguments,
    add_source_arguments,
    float_in,
    positive_int,
    source_of,
)
from pjepa.eval.protocols.linear import feature_views
from pjepa.eval.protocols.outputs import Column
from pjepa.eval.sources import Source, probe_layers, split_features
from pjepa.runs import Run, resolve_device
from pjepa.utils import stream_seed

FRACTIONS = (0.01, 0.1)
HOLDOUT = 0.2
MIN_STEPS = 1000  # small subsets: enough SGD steps whatever the subset size


def lowshot_once(bank, test, num_classes: int, fraction: float, seed: int, epochs: int) -> dict[str, Any]:
    """One subset: choose (lr, wd) on its hold-out, retrain on all of it, score ``test``."""
    x, y = bank
    g = torch.Generator().manual_seed(seed)
    _, subset = carve_validation(y, fraction, g)  # (n,) class-balanced
    fit, hold = carve_validation(y[subset], HOLDOUT, g)
    fit, hold = subset[fit], subset[hold]
    if len(hold) == 0:
        raise ConfigError(f"--fractions {fraction:g}: {len(subset)} labelled images for {num_classes} classes leave "
                          "no hold-out to choose the probe on (a class needs 2 images); use a larger fraction")
    per_epoch = max(len(fit) // BATCH, 1)
    ep = max(epochs, math.ceil(MIN_STEPS / per_epoch))  # e.g. 1 % of CIFAR-10: 360 images, one step an epoch
    chosen = linear_probe((x[fit], y[fit]), (x[hold], y[hold]), (x[hold], y[hold]), num_classes, ep, seed)
    final = linear_probe((x[subset], y[subset]), test, test, num_classes, ep, seed,
                         lrs=(chosen["lr"],), wds=(chosen["weight_decay"],))
    final.pop("grid")
    final.pop("val_top1")  # that probe was "chosen" on the reported split among one setting: no choice
    return {**final, "lr": chosen["lr"], "weight_decay": chosen["weight_decay"], "holdout_top1": chosen["val_top1"],
            "n_subset": int(len(subset)), "n_holdout": int(len(hold)), "subset_seed": seed}


def evaluate_lowshot(run_dir: str | Path, source: Source | None = None, device: str = "auto", seeds: int = 3,
                     fractions: tuple[float, ...] = FRACTIONS, epochs: int = 100, layers: int = 1,
                     progress: bool = True) -> dict[str, Any]:
    run = Run(run_dir)
    source = source or Source()
    t0 = time.perf_counter()
    cached = probe_layers(run, source)  # the linear protocol's features: one extraction serves both
    feats, step, info = split_features(run, source, resolve_device(device), cached, progress)
    views = feature_views(feats, cached, source.baseline == "pixels")
    view = views[f"last{cached}"] if layers > 1 and cached > 1 else next(iter(views.values()))
    n_layers = cached if layers > 1 else 1
    num_classes = info.num_classes
    result: dict[str, Any] = {"features": source.describe(run), "layers": n_layers, "step": step,
                              "dataset": run.config.data.name, "split": info.names["eval"],
                              "chosen_on": f"a class-balanced {HOLDOUT:.0%} hold-out of each labelled subset",
                              "fractions": {}}
    for fraction in fractions:
        runs = [lowshot_once(view["bank"], view["eval"], num_classes, fraction,
                             stream_seed(run.config.train.seed, s, 0, f"lowshot-{fraction}"), epochs)
                for s in range(seeds)]
        top1 = [r["top1"] for r in runs]
        result["fractions"][f"{fraction:g}"] = {
            "top1_mean": statistics.fmean(top1), "top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
            "top1": top1, "n_subset": runs[0]["n_subset"], "seeds": runs}
    result["seconds"] = round(time.perf_counter() - t0, 2)
    name = "lowshot" + source.suffix + (f"_last{n_layers}" if n_layers > 1 else "")
    result["path"] = str(run.write_eval(name, result))
    return result


def _add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    add_source_arguments(p)
    p.add_argument("--seeds", type=positive_int, default=3, help="subset seeds per fraction")
    p.add_argument("--fractions", type=float_in(0, 1, low_open=True, high_open=True), nargs="+", default=list(FRACTIONS), help="label fractions")
    p.add_argument("--layers", type=int, choices=[1, 4], default=1, help="last layer, or the last 4 concatenated")


def _run(args: argparse.Namespace) -> list[str]:
    r = evaluate_lowshot(args.run, source_of(args), args.device, args.seeds, tuple(args.fractions),
                         layers=args.layers)
    lines = [f"low-shot linear probe ({r['features']}, {r['dataset']} {r['split']}, step {r['step']}; "
             f"lr and wd chosen on {r['chosen_on']}):"]
    for frac, f in r["fractions"].items():
        lines.append(f"  {float(frac):.0%} of the labels ({f['n_subset']} images): top-1 {f['top1_mean']:.2f} "
                     f"+- {f['top1_std']:.2f}% over {len(f['top1'])} subsets ({', '.join(f'{t:.2f}' for t in f['top1'])})")
    return lines + [f"wrote {r['path']}"]


def fraction_top1(fraction: str) -> Callable[[dict[str, Any]], Any]:
    """A ``Column.read``: the mean top-1 over the subset seeds at label ``fraction`` ("0.01")."""
    return lambda result: result.get("fractions", {}).get(fraction, {}).get("top1_mean")


PROTOCOLS.register("lowshot")(Protocol(
    "lowshot", "1 %% / 10 %% of the labels: linear probe, lr/wd chosen on a hold-out of the subset", _add_arguments,
    _run, columns=(Column("lowshot_1", ("low-shot (%)", "1 % labels"), fraction_top1("0.01"), rated=0),
                   Column("lowshot_10", ("low-shot (%)", "10 % labels"), fraction_top1("0.1"), rated=0)),
    baselines=True, order=30))
