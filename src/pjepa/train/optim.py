"""The optimiser, its schedules and mixed precision."""

from __future__ import annotations

import torch

from pjepa.config import Config
from pjepa.methods import Method
from pjepa.train import schedules


def build_optimizer(cfg: Config, method: Method, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the method's parameter groups (fused on GPU)."""
    return torch.optim.AdamW(method.param_groups(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                             fused=device.type == "cuda")


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


def amp_settings(cfg: Config, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a GradScaler). Autocast only on GPU."""
    if device.type != "cuda" or cfg.train.precision == "fp32":
        return None, False
    if cfg.train.precision == "bf16":
        return torch.bfloat16, False
    return torch.float16, True
