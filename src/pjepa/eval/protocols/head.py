"""``pjepa eval head --run DIR``: the shared head metrics of a run, written to DIR/eval/head.json.

Images of the reported split (a seeded random subset), masks from the run's own
sampler under a fixed seed, the checkpoint's trunk and head: see
``head_metrics`` for what each number means. The same code runs periodically
during training on the validation split (``headeval/*`` in metrics.jsonl).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from pjepa.data import Images, splits_for
from pjepa.errors import ConfigError
from pjepa.eval.head_metrics import collect_pairs, head_metrics
from pjepa.eval.protocols.base import PROTOCOLS, Protocol, add_run_arguments, non_negative_int, positive_int
from pjepa.eval.protocols.knn import subset
from pjepa.eval.protocols.outputs import Column, number
from pjepa.methods import HeadMonitor
from pjepa.methods.load import load_run_method
from pjepa.runs import Run, resolve_device
from pjepa.utils import stream_seed


def head_pairs(run: Run, checkpoint: str, images: Images, dev: torch.device,
               mask_stream: str) -> tuple[HeadMonitor, list[tuple[torch.Tensor, torch.Tensor]], int]:
    """(the run's head monitor, its (h, y) pairs of uint8 ``images`` under masks seeded by ``mask_stream``,
    the checkpoint's step); a ConfigError for a method without a predictor head (MAE)."""
    cfg = run.config
    method, step = load_run_method(run, checkpoint)
    monitors = method.monitors().heads
    if not monitors:
        raise ConfigError(f"run {run.path} (method {cfg.method.name!r}) has no predictor head to evaluate: "
                          "use a JEPA method (ijepa, njepa); rate this run with pjepa eval knn or linear")
    monitor = next(iter(monitors.values()))
    method.to(dev).eval()
    mean, std = run.stats()
    pairs = collect_pairs(monitor.conditions, images, cfg.data.image_size, mean, std, dev,
                          seed=stream_seed(cfg.train.seed, 0, 0, mask_stream), amp_dtype=run.amp_dtype(dev),
                          batch_size=cfg.eval.batch_size)
    return monitor, pairs, step


def evaluate_head(
    run_dir: str | Path,
    checkpoint: str = "last",
    eval_limit: int = 1000,
    num_samples: int = 8,
    device: str = "auto",
) -> dict[str, Any]:
    """Compute the head metrics of ``run_dir``'s checkpoint on ``eval_limit`` images of the reported split (0 = all)."""
    run = Run(run_dir)
    cfg = run.config
    dev = resolve_device(device)
    t0 = time.perf_counter()
    reported = splits_for(cfg).eval
    images, _ = subset(reported, eval_limit, cfg.train.seed, "head-eval")
    monitor, pairs, step = head_pairs(run, checkpoint, images, dev, "head-eval-masks")
    gen = torch.Generator(device=dev).manual_seed(stream_seed(cfg.train.seed, 0, 0, "head-eval-samples"))
    metrics = head_metrics(monitor.head, pairs, gen, num_samples=num_samples)
    result = {
        **metrics, "head": cfg.head.name, "head_options": dict(cfg.head.options),
        "has_log_prob": monitor.head.has_log_prob, "num_samples": num_samples,
        "dataset": cfg.data.name, "split": reported.split, "n_images": int(images.shape[0]),
        "checkpoint": checkpoint, "step": step, "device": str(dev),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    result["path"] = str(run.write_eval("head", result))
    return result


def _add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--eval-limit", type=non_negative_int, default=1000, help="images of the reported split (0 = all)")
    p.add_argument("--samples", type=positive_int, default=8, help="draws per target token for the sample spread")


def _run(args: argparse.Namespace) -> list[str]:
    r = evaluate_head(args.run, checkpoint=args.checkpoint, eval_limit=args.eval_limit, num_samples=args.samples,
                      device=args.device)
    nll = f"nll/dim {r['nll']:.4f}  " if "nll" in r else "nll - (no exact likelihood)  "
    return [f"head {r['head']} ({r['dataset']} {r['split']}: {r['n_images']} images, {int(r['tokens'])} target "
            f"tokens, step {r['step']}): {nll}point mse {r['point_mse']:.4f} cos {r['point_cos']:.4f}  "
            f"sample spread {r['sample_spread']:.4f}  sampling {r['sample_seconds_per_1000']:.4f} s/1000 tokens",
            f"wrote {r['path']}"]


PROTOCOLS.register("head")(Protocol(
    "head", "shared head metrics: NLL (exact heads), point error, sample spread and cost", _add_arguments, _run,
    columns=(Column("nll", ("head metrics", "NLL / dim"), number("nll"), higher_is_better=False),
             Column("point_cos", ("head metrics", "point cos"), number("point_cos"), tensorboard="head_point_cos"),
             Column("sample_spread", ("head metrics", "spread"), number("sample_spread"), higher_is_better=None),
             Column("sample_s_per_1000", ("head metrics", "s / 1000 draws"), number("sample_seconds_per_1000"),
                    higher_is_better=False)),
    order=50))
