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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pjepa.errors import ConfigError
from pjepa.eval.finetune import Recipe, finetune
from pjepa.eval.protocols.base import (
    PROTOCOLS,
    Protocol,
    add_run_arguments,
    add_source_arguments,
    choice_split,
    choice_split_short,
    choice_warning,
    float_in,
    held_out_validation,
    non_negative_float,
    positive_float,
    positive_int,
    source_of,
)
from pjepa.eval.protocols.outputs import Column, number
from pjepa.eval.sources import Source, labelled_splits, load_encoder_for
from pjepa.methods.finetune import FineTune
from pjepa.runs import Run, resolve_device
from pjepa.utils import seed_everything

#: Fewer epochs than this: the best-epoch choice has too few candidates to mean anything and the warm-up
#: plus cosine schedule leaves almost no steps at a useful learning rate (an MAE encoder fine-tuned for 1
#: epoch on CIFAR-10 stayed at chance, 10 %, where its linear probe reached 54 %).
MIN_USEFUL_EPOCHS = 3


def check_recipe(recipe: Recipe) -> str | None:
    """Refuse settings that contradict each other; return a warning when the budget is too small for the
    fine-tune's own selection (the best epoch on validation) to mean anything, else None."""
    if recipe.min_lr > recipe.lr:
        raise ConfigError(f"--min-lr {recipe.min_lr:g} is above --lr {recipe.lr:g}: the cosine schedule decays "
                          "from lr to min_lr; give a min-lr at most the lr")
    if recipe.epochs < MIN_USEFUL_EPOCHS:
        return (f"warning: --epochs {recipe.epochs}: the fine-tune keeps the best of {recipe.epochs} epoch(s) on "
                f"validation, too few for that choice to mean anything, and its warm-up and cosine schedule leave "
                f"few steps at a useful learning rate; expect an accuracy far below the encoder's (use "
                f"--epochs {MIN_USEFUL_EPOCHS} or more; the default is {Recipe().epochs})")
    return None


def evaluate_finetune(run_dir: str | Path, source: Source | None = None, device: str = "auto",
                      recipe: Recipe | None = None, progress: bool = True) -> dict[str, Any]:
    run = Run(run_dir)
    source, recipe = source or Source(), recipe or Recipe()
    budget_warning = check_recipe(recipe)
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
              "warning": choice_warning(cfg.data, "the choice of the epoch kept"), "budget_warning": budget_warning,
              "device": str(dev),
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


FLAG_HELP = {
    "epochs": "training epochs over the bank split; the best epoch on validation is kept",
    "batch_size": "images per step",
    "lr": "peak learning rate (AdamW, after warm-up)",
    "min_lr": "learning rate at the end of the cosine decay (at most --lr)",
    "warmup_fraction": "fraction of the steps spent warming the learning rate up",
    "weight_decay": "AdamW weight decay",
    "layer_decay": "layer-wise learning-rate decay (1 = none; the head gets lr, each block below x this)",
    "drop_path": "stochastic-depth rate of the encoder's blocks",
    "label_smoothing": "label smoothing of the cross-entropy",
}


def _add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    add_source_arguments(p, pixels=False)
    r = Recipe()
    for f in dataclasses.fields(Recipe):
        if f.name != "crop_scale":
            p.add_argument(f"--{f.name.replace('_', '-')}", type=FLAG_TYPES[f.name], default=getattr(r, f.name),
                           help=f"{FLAG_HELP[f.name]} (default {getattr(r, f.name)!r})")


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
    return [w for w in (r["warning"], r["budget_warning"]) if w] + lines


PROTOCOLS.register("finetune")(Protocol(
    "finetune", "fine-tune the whole encoder (layer-wise lr decay, drop-path, label smoothing)", _add_arguments, _run,
    columns=(Column("finetune", ("fine-tune (%)", "top-1"), number("top1"), rated=0, tensorboard="finetune"),),
    baselines=True, order=40))
