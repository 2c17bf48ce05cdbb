"""``pjepa eval calibration --run DIR``: how well the head's distribution is calibrated, to DIR/eval/calibration.json.

Images of the **validation** split (a seeded random subset; calibration is a
diagnostic that may be used to choose a head or a sampler setting, so it must
not read the reported split), masks from the run's own sampler under a fixed
seed, the checkpoint's trunk and head. ``calibration_metrics`` says what each
number means; ``sampling_times`` gives the cost of one draw per sampler setting. A run
without a validation split (``data.val_fraction=0``) has only the reported split to offer:
the result's ``selection_split`` and a printed warning say so.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pjepa.data import splits_for
from pjepa.eval.calibration import calibration_metrics, sampling_times
from pjepa.eval.head_metrics import token_rows
from pjepa.eval.protocols.base import (
    PROTOCOLS,
    Protocol,
    add_run_arguments,
    choice_split,
    choice_warning,
    non_negative_int,
    positive_int,
)
from pjepa.eval.protocols.head import head_pairs
from pjepa.eval.protocols.knn import subset
from pjepa.eval.protocols.outputs import Column, Details, number
from pjepa.runs import Run, resolve_device
from pjepa.utils import stream_seed


def json_safe(value: Any) -> Any:
    """``value`` with every nan / inf float replaced by None: json.dumps would write NaN, which is not JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def evaluate_calibration(
    run_dir: str | Path,
    checkpoint: str = "last",
    eval_limit: int = 500,
    num_samples: int = 64,
    tokens: int = 2048,
    device: str = "auto",
) -> dict[str, Any]:
    """Calibrate ``run_dir``'s head on ``eval_limit`` validation images (0 = all), ``num_samples`` draws
    for each of ``tokens`` target tokens; writes and returns the result (nan written as null)."""
    run = Run(run_dir)
    cfg = run.config
    dev = resolve_device(device)
    t0 = time.perf_counter()
    val = splits_for(cfg).val
    images, _ = subset(val, eval_limit, cfg.train.seed, "calibration")
    monitor, pairs, step = head_pairs(run, checkpoint, images, dev, "calibration-masks")
    gen = torch.Generator(device=dev).manual_seed(stream_seed(cfg.train.seed, 0, 0, "calibration-samples"))
    metrics = calibration_metrics(monitor.head, pairs, gen, num_samples=num_samples, sample_tokens=tokens)
    times = sampling_times(monitor.head, token_rows(pairs, 1000), gen)
    result = json_safe({
        **metrics, "sample_seconds_per_1000": times, "head": cfg.head.name, "head_options": dict(cfg.head.options),
        "has_log_prob": monitor.head.has_log_prob, "dataset": cfg.data.name, "split": val.split,
        "n_images": int(images.shape[0]), "checkpoint": checkpoint, "step": step, "device": str(dev),
        "selection_split": choice_split(cfg.data),
        "warning": choice_warning(cfg.data, "a choice of head or sampler setting read from this calibration"),
        "seconds": round(time.perf_counter() - t0, 2),
    })
    result["path"] = str(run.write_eval("calibration", result))
    return result


def _add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--eval-limit", type=non_negative_int, default=500, help="images of the validation split (0 = all)")
    p.add_argument("--samples", type=positive_int, default=64, help="draws per target token (intervals, CRPS, energy score)")
    p.add_argument("--tokens", type=positive_int, default=2048, help="target tokens to draw for (whole images)")


def _num(value: float | None, fmt: str = ".3f") -> str:
    """``value`` formatted, or '-' where it is undefined (null: a point mass has no spread-error correlation)."""
    return "-" if value is None else format(value, fmt)


def _coverage(r: dict[str, Any], levels: tuple[float, ...] = (0.5, 0.9)) -> str:
    """'50% 0.480 90% 0.850 (calibrated: 0.485 / 0.872)': coverage at ``levels`` and a calibrated head's."""
    idx = [r["levels"].index(p) for p in levels if p in r["levels"]]
    got = " ".join(f"{r['levels'][i]:.0%} {r['coverage'][i]:.3f}" for i in idx)
    ideal = " / ".join(f"{r['coverage_finite_n'][i]:.3f}" for i in idx)
    return f"{got} (calibrated with {r['num_samples']} draws: {ideal})"


def _run(args: argparse.Namespace) -> list[str]:
    r = evaluate_calibration(args.run, checkpoint=args.checkpoint, eval_limit=args.eval_limit,
                             num_samples=args.samples, tokens=args.tokens, device=args.device)
    nll = f"  nll/dim {r['nll']:.4f}" if "nll" in r else ""
    times = " ".join(f"{k} {v:.4f}" for k, v in r["sample_seconds_per_1000"].items())
    lines = [f"calibration of head {r['head']} ({r['dataset']} {r['split']}: {r['n_images']} images, "
             f"{r['sampled_tokens']} tokens, step {r['step']}): coverage {_coverage(r)}  "
             f"mean |coverage - level| {r['calibration_error']:.3f}{nll}",
             f"  CRPS {r['crps']:.4f} (point {r['point_crps']:.4f})  energy {r['energy_score']:.4f} "
             f"(point {r['point_energy_score']:.4f})  spread-error r {_num(r['spread_error_pearson'])} "
             f"rho {_num(r['spread_error_spearman'])}  diversity {r['diversity']:.4f}  s/1000 tokens: {times}",
             f"wrote {r['path']}"]
    return ([r["warning"]] if r["warning"] else []) + lines


def coverage_at(level: float) -> Callable[[dict[str, Any]], Any]:
    """A report field: the empirical coverage of the central interval at ``level`` (None if not measured)."""
    return lambda r: dict(zip(r.get("levels", []), r.get("coverage", []))).get(level)


def sampling_cost(r: dict[str, Any]) -> str | None:
    """A report field: seconds per 1000 draws of each sampler setting, "setting 0.0123, ..."."""
    return ", ".join(f"{k} {v:.3g}" for k, v in (r.get("sample_seconds_per_1000") or {}).items()) or None


#: The report's calibration table, one row per calibrated run.
DETAILS = Details("Calibration (validation targets)", "calibration", (
    ("head", number("head")), ("NLL/dim", number("nll")), ("cover@0.5", coverage_at(0.5)),
    ("cover@0.9", coverage_at(0.9)), ("mean |cover - level|", number("calibration_error")), ("CRPS", number("crps")),
    ("CRPS of point", number("point_crps")), ("energy score", number("energy_score")),
    ("ES of point", number("point_energy_score")), ("spread-error rank corr.", number("spread_error_spearman")),
    ("diversity", number("diversity")), ("s / 1000 tokens", sampling_cost)))

PROTOCOLS.register("calibration")(Protocol(
    "calibration", "head calibration on the validation split: interval coverage, CRPS, energy score, spread-error "
    "correlation, sampling cost", _add_arguments, _run,
    # a probabilistic head's own numbers; lower is better for all three
    columns=(Column("energy", ("calibration", "energy score"), number("energy_score"), higher_is_better=False),
             Column("cal_error", ("calibration", "coverage error"), number("calibration_error"),
                    higher_is_better=False, tensorboard="calibration_error"),
             Column("crps", ("calibration", "CRPS"), number("crps"), higher_is_better=False, table=False,
                    tensorboard="calibration_crps")),
    details=DETAILS, order=60))
