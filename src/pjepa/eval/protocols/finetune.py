"""``pjepa eval finetune --run DIR``: fine-tune the run's encoder on the labels, written to
DIR/eval/finetune*.json (``pjepa.eval.finetune``: recipe, epoch chosen on validation; a run without a
validation split, ``data.val_fraction=0``, chose it on the reported split, and ``chosen_on`` and a
printed warning say so).

``--random-init`` fine-tunes the untrained architecture: supervised training from scratch,
labelled as such in the output. Raw pixels have no fine-tune.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

from pjepa.errors import ConfigError
from pjepa.eval.finetune import Recipe, finetune
from pjepa.eval.protocols.base import (Protocol, add_run_arguments, add_source_arguments, choice_split,
                                       choice_split_short, choice_warning, float_in, held_out_validation,
                                       non_negative_float, positive_float, positive_int, register, source_of)
from pjepa.eval.sources import Source, labelled_splits, load_encoder_for
from pjepa.methods.finetune import FineTune
from pjepa.runs import Run, resolve_device
from pjepa.utils import seed_everything


def evaluate_finetune(run_dir: str | Path, source: Source | None = None, device: str = "auto",
                      recipe: Recipe | None = None, progress: bool = True) -> dict[str, Any]:
    run = Run(run_dir)
    source, recipe = source or Source(), recipe or Recipe()
    if source.baseline == "pixels":
        raise ConfigError("raw pixels have no fine-tune: use --random-init for supervised training from scratch")
    dev = resolve_device(device)
    t0 = time.perf_counter()
    data = labelled_splits(run)
    cfg = run.config
    seed_everything(cfg.train.seed)
    model = FineTune(cfg, data["bank"].num_classes, recipe.layer_decay, recipe.drop_path, recipe.label_smoothing)
    step = 0
    if source.baseline != "random-init":
        encoder, step, _ = load_encoder_for(run, source)
        model.encoder.load_state_dict(encoder.state_dict())
    mean, std = run.stats()
    report = finetune(model, data, cfg, mean, std, dev, recipe, cfg.train.seed, progress)
    what = ("supervised training from scratch (untrained encoder)" if source.baseline == "random-init"
            else f"fine-tune of the {source.describe(run)}")
    result = {**report, "protocol": what, "features": source.describe(run), "recipe": dataclasses.asdict(recipe),
              "dataset": cfg.data.name, "split": data["eval"].split, "n_train": len(data["bank"]),
              "n_val": len(data["val"]), "n_eval": len(data["eval"]), "step": step,
              "chosen_on": choice_split(cfg.data, "best epoch"),
              "warning": choice_warning(cfg.data, "the choice of the epoch kept"), "device": str(dev),
              "seconds": round(time.perf_counter() - t0, 2)}
    result["path"] = str(run.write_eval("finetune" + source.suffix, result))
    return result


#: The range of every Recipe flag (crop_scale has none: it is not a flag). A new Recipe field fails
#: here with a KeyError when the parser is built, so it cannot reach the command line unchecked.
FLAG_TYPES: dict[str, Callable[[str], Any]] = {
    "epochs": positive_int,
    "batch_size": positive_int,
    "lr": positive_float,
    "min_lr": non_negative_float,
    "warmup_fraction": float_in(0, 1),
    "weight_decay": non_negative_float,
    "layer_decay": float_in(0, 1, low_open=True),
    "drop_path": float_in(0, 1, high_open=True),
    "label_smoothing": float_in(0, 1, high_open=True),
}


def _add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    add_source_arguments(p, pixels=False)
    r = Recipe()
    for f in dataclasses.fields(Recipe):
        if f.name != "crop_scale":
            p.add_argument(f"--{f.name.replace('_', '-')}", type=FLAG_TYPES[f.name], default=getattr(r, f.name))


def _run(args: argparse.Namespace) -> list[str]:
    recipe = Recipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe) if f.name != "crop_scale"})
    r = evaluate_finetune(args.run, source_of(args), args.device, recipe)
    data = Run(args.run).config.data
    where, val = choice_split_short(data), f"{r['n_val']} val / " if held_out_validation(data) else ""
    lines = [f"{r['protocol']} ({r['dataset']} {r['split']}: {r['n_train']} train / {val}"
             f"{r['n_eval']} eval, {recipe.epochs} epochs, best epoch {r['best_epoch']} on {where} "
             f"{r['val_top1']:.2f}%): "
             f"top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  macro-F1 {r['macro_f1']:.2f}%",
             f"wrote {r['path']}"]
    return ([r["warning"]] if r["warning"] else []) + lines


register(Protocol("finetune", "fine-tune the whole encoder (layer-wise lr decay, drop-path, label smoothing)",
                  _add_arguments, _run))
