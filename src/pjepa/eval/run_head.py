"""``pjepa eval head --run DIR``: the shared head metrics of a run, written to DIR/eval/head.json.

Validation images (a seeded random subset), masks from the run's own sampler
under a fixed seed, the checkpoint's trunk and head: see ``head_metrics`` for
what each number means. The same code runs periodically during training
(``headeval/*`` in metrics.jsonl).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from pjepa.data import load_dataset
from pjepa.eval.head_metrics import collect_pairs, head_metrics
from pjepa.eval.run_knn import load_run_config, load_run_method, load_run_stats, subset
from pjepa.train.distributed import resolve_device
from pjepa.utils import stream_seed


def evaluate_head(
    run_dir: str | Path,
    checkpoint: str = "last",
    eval_limit: int = 1000,
    num_samples: int = 8,
    device: str = "auto",
) -> dict[str, Any]:
    """Compute the head metrics of ``run_dir``'s checkpoint on ``eval_limit`` validation images (0 = all)."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    mean, std = load_run_stats(run_dir)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    val = load_dataset(cfg.data.name, cfg.data.val_split, cfg.data.path, **cfg.data.options)
    images, _ = subset(val, eval_limit, cfg.train.seed, "head-eval")
    method, step = load_run_method(cfg, run_dir, checkpoint)
    method.to(dev).eval()
    amp = torch.bfloat16 if dev.type == "cuda" else None
    pairs = collect_pairs(method.head_conditions, images, cfg.data.image_size, mean, std, dev,
                          seed=stream_seed(cfg.train.seed, 0, 0, "head-eval-masks"), amp_dtype=amp,
                          batch_size=cfg.eval.batch_size)
    gen = torch.Generator(device=dev).manual_seed(stream_seed(cfg.train.seed, 0, 0, "head-eval-samples"))
    metrics = head_metrics(method.head, pairs, gen, num_samples=num_samples)
    result = {
        **metrics, "head": cfg.head.name, "head_options": dict(cfg.head.options),
        "has_log_prob": method.head.has_log_prob, "num_samples": num_samples,
        "dataset": cfg.data.name, "split": cfg.data.val_split, "n_images": int(images.shape[0]),
        "checkpoint": checkpoint, "step": step, "device": str(dev),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    out = run_dir / "eval" / "head.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    result["path"] = str(out)
    return result
