"""The optimiser, its schedules and mixed precision."""

from __future__ import annotations

from pathlib import Path

import torch

from pjepa import schedules
from pjepa.config import Config
from pjepa.methods import Method
from pjepa.runs import ResolvedPrecision, Run, from_record, legacy_precision
from pjepa.train.distributed import broadcast_flag, is_distributed
from pjepa.train.precision import resolve_precision


def build_optimizer(cfg: Config, method: Method, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the method's parameter groups, fused (one kernel for all parameters, on the CPU too): the
    unfused CPU path reads every parameter's step counter back with ``.item()``; the fused one keeps it on
    the device, and with a GradScaler it also skips the inf check's read-back."""
    return torch.optim.AdamW(method.param_groups(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                             fused=device.type in ("cuda", "cpu"))


def apply_schedules(optimizer: torch.optim.Optimizer, cfg: Config, step: int, total: int, warmup: int,
                    peak_lr: float) -> dict[str, float]:
    """Set this step's learning rate and weight decay on every group (times the group's
    ``lr_scale`` / ``wd_scale``); returns {"lr", "ema"} (the EMA momentum of the step)."""
    o = cfg.optim
    lr = schedules.learning_rate(step, total, peak_lr, warmup, o.min_lr, o.start_lr)
    wd = schedules.weight_decay(step, total, o.weight_decay, o.final_weight_decay)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        group["weight_decay"] = wd * group.get("wd_scale", 1.0)
    ema = schedules.ema_momentum(step, total, cfg.train.ema[0], cfg.train.ema[1], cfg.train.ema_schedule)
    return {"lr": lr, "ema": ema}


def run_precision(cfg: Config, device: torch.device, run_dir: Path, resume: bool,
                  is_main: bool = True) -> tuple[ResolvedPrecision, str]:
    """(what the run trains in, the start-up line that says so).

    A new run resolves ``train.precision`` (``auto`` probes the CPU at the encoder's width with the
    threads torch uses; see ``pjepa.train.precision``). Under torchrun on CPUs only rank 0 probes and every
    rank takes its choice. A resume reuses the precision stored in ``run_info.json`` without probing, on
    any machine; a run written before precision was stored keeps pjepa's old rule (fp32 on a CPU,
    ``train.precision`` on CUDA)."""
    if resume:
        record = Run(run_dir).info.get("precision") if (run_dir / "config.yaml").is_file() else None
        if isinstance(record, dict):
            p = from_record(record, device)
            return p, (f"[pjepa] precision: {p.name}, stored in {run_dir / 'run_info.json'} and reused without "
                       f"probing (at the run's start: {p.describe()})")
        p = legacy_precision(cfg.train.precision, device)
        return p, f"[pjepa] precision: {p.name} ({p.reason})"
    requested = cfg.train.precision
    width, threads = cfg.model.encoder.embed_dim, torch.get_num_threads()
    if requested == "auto" and device.type == "cpu" and is_distributed():
        probed = resolve_precision(requested, device, width, threads) if is_main else None
        bf16 = broadcast_flag(probed is not None and probed.name == "bf16", device)
        p = probed if probed is not None else from_record(
            {"requested": requested, "name": "bf16" if bf16 else "fp32", "reason": "rank 0's probe"}, device)
    else:
        p = resolve_precision(requested, device, width, threads)
    return p, f"[pjepa] precision: {p.describe()}"
