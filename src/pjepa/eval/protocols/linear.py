"""``pjepa eval linear --run DIR``: linear probes on frozen features, written to DIR/eval/linear*.json.

Features (extracted once, cached): the mean-pooled last layer, and the last 4 layers
concatenated (the encoder's depth if shallower). For each, a grid of learning rates x
weight decays is trained in one pass on the bank split (the labelled training split minus
validation), the probe is chosen on the validation split, and the reported split is scored
once (``pjepa.eval.linear``). ``top1`` of the result is the last-layer probe's. A run without a
validation split (``data.val_fraction=0``) chose on the reported split: ``chosen_on`` and a
printed warning say so.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pjepa.eval.linear import linear_probe
from pjepa.eval.protocols.base import (
    PROTOCOLS,
    Protocol,
    add_run_arguments,
    add_source_arguments,
    choice_split,
    choice_split_short,
    choice_warning,
    held_out_validation,
    positive_int,
    source_of,
)
from pjepa.eval.protocols.outputs import Column, ResultFile, number
from pjepa.eval.sources import Source, feature_amp, precision_name, probe_layers, split_features
from pjepa.runs import Run, resolve_device


def feature_views(feats: dict, layers: int, pixels: bool) -> dict[str, dict]:
    """{"last": ..., "last<layers>": ...} column views of (N, layers * D) features ({"pixels": ...} for pixels)."""
    if pixels:
        return {"pixels": feats}
    width = feats["bank"][0].shape[1] // layers
    views = {"last": {k: (x[:, -width:], y) for k, (x, y) in feats.items()}}
    if layers > 1:
        views[f"last{layers}"] = feats
    return views


def evaluate_linear(run_dir: str | Path, source: Source | None = None, device: str = "auto", epochs: int = 100,
                    progress: bool = True) -> dict[str, Any]:
    run = Run(run_dir)
    source = source or Source()
    dev = resolve_device(device)
    t0 = time.perf_counter()
    layers = probe_layers(run, source)
    feats, step, info = split_features(run, source, dev, layers, progress)
    num_classes = info.num_classes
    probes = {name: linear_probe(v["bank"], v["val"], v["eval"], num_classes, epochs=epochs, seed=run.config.train.seed)
              for name, v in feature_views(feats, layers, source.baseline == "pixels").items()}
    primary = probes["last"] if "last" in probes else probes["pixels"]
    result = {
        "top1": primary["top1"], "top5": primary["top5"], "macro_f1": primary["macro_f1"],
        "val_top1": primary["val_top1"], "probes": probes, "features": source.describe(run), "layers": layers,
        "feature_precision": None if source.baseline == "pixels" else precision_name(feature_amp(run, dev)),
        "epochs": epochs, "dataset": run.config.data.name, "split": info.names["eval"],
        "n_train": int(feats["bank"][0].shape[0]), "n_val": int(feats["val"][0].shape[0]),
        "n_eval": int(feats["eval"][0].shape[0]), "step": step, "chosen_on": choice_split(run.config.data),
        "warning": choice_warning(run.config.data, "the choice of the probe's lr and weight decay"),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    result["path"] = str(run.write_eval("linear" + source.suffix, result))
    return result


def _add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    add_source_arguments(p)
    p.add_argument("--epochs", type=positive_int, default=100, help="epochs over the cached features")


def _run(args: argparse.Namespace) -> list[str]:
    r = evaluate_linear(args.run, source_of(args), args.device, args.epochs)
    data = Run(args.run).config.data
    where, val = choice_split_short(data), f"{r['n_val']} val / " if held_out_validation(data) else ""
    lines = [r["warning"]] if r["warning"] else []
    for name, probe in r["probes"].items():
        lines.append(f"linear probe ({r['features']}, {name}; {r['dataset']} {r['split']}: {r['n_train']} train / "
                     f"{val}{r['n_eval']} eval, step {r['step']}): top-1 {probe['top1']:.2f}%  "
                     f"top-5 {probe['top5']:.2f}%  macro-F1 {probe['macro_f1']:.2f}%  (lr {probe['lr']:g}, "
                     f"wd {probe['weight_decay']:g} chosen on {where}: {probe['val_top1']:.2f}%)")
    return lines + [f"wrote {r['path']}"]


def deeper_probe_top1(result: dict[str, Any]) -> float | None:
    """Top-1 of the probe over the last N > 1 layers (``last4``), None where the encoder had one layer."""
    deep = [v for k, v in result.get("probes", {}).items() if k.startswith("last") and k != "last"]
    return deep[0]["top1"] if deep else None


PROTOCOLS.register("linear")(Protocol(
    "linear", "linear probes (last layer, last 4 layers) on frozen features; grid chosen on val", _add_arguments, _run,
    results=(ResultFile(sweep_baselines="asked"),),
    columns=(Column("linear", ("linear probe (%)", "last layer"), number("top1"), rated=0, tensorboard="linear"),
             Column("linear_last4", ("linear probe (%)", "last 4 layers"), deeper_probe_top1, rated=0)),
    baselines=True, order=20))
