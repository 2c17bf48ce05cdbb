"""Every check a config can get before anything is built or loaded.

``pjepa.config`` types the values; this module, which knows the registries,
checks what types cannot say: ranges (batch size > 0, a finite positive
learning rate, EMA momenta in [0, 1], ...), rules across fields (the patch
size divides the image, the heads divide the width), and each plug-in's own
options (data, mask, method, head), which every plug-in declares by its
signature (``pjepa.registry.declared_options``). Options are filled with the
plug-in's defaults, so the resolved config (``--dry-run``, ``config.yaml``)
shows every value a run uses. Finally the method is built on the ``meta``
device (no memory, no compute), which runs every plug-in's own value checks.

What needs the dataset (a warm-up longer than the run, a batch larger than the
training set) is checked at start-up by the loop, before the first step.
Every failure is a ``ConfigError`` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any

import torch

from pjepa.config import VICREG_METHOD_OPTIONS, Config, coerce
from pjepa.data import DATASETS
from pjepa.errors import ConfigError
from pjepa.heads import HEADS
from pjepa.masking import MASKS, build_mask_sampler
from pjepa.methods import METHODS, build_method
from pjepa.registry import Registry, declared_options
from pjepa.regularisers import REGULARISERS

#: section -> (registry, leading parameters the framework passes itself)
PLUGINS: dict[str, tuple[Registry, int]] = {
    "data": (DATASETS, 2),  # loader(split, path, **options)
    "mask": (MASKS, 1),  # sampler(grid_size, **options)
    "method": (METHODS, 1),  # method(cfg, **options)
    "head": (HEADS, 2),  # head(cond_dim, embed_dim, **options)
    "reg": (REGULARISERS, 0),  # regulariser(**options)
}
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {allowed}")


def _positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    _require(ok, key, value, "need a finite number >= 0" if allow_zero else "need a finite number > 0")


def _pair(key: str, value: tuple[float, float], low: float, high: float) -> None:
    lo, hi = value
    _require(low < lo <= hi <= high, key, list(value), f"need [min, max] with {low} < min <= max <= {high}")


def _check_data(cfg: Config) -> None:
    d, patch = cfg.data, cfg.model.encoder.patch_size
    _require(d.image_size > 0, "data.image_size", d.image_size, "need an integer > 0")
    _require(patch > 0 and d.image_size % patch == 0, "model.encoder.patch_size", patch,
             f"need a divisor of data.image_size={d.image_size}")
    _require(0.0 <= d.val_fraction < 1.0, "data.val_fraction", d.val_fraction, "need a fraction in [0, 1)")
    _pair("data.crop_scale", d.crop_scale, 0.0, 1.0)
    _pair("data.crop_ratio", d.crop_ratio, 0.0, math.inf)
    _require(d.stats_samples > 0, "data.stats_samples", d.stats_samples, "need an integer > 0")


def _check_model(cfg: Config) -> None:
    for name in ("encoder", "predictor"):
        m = getattr(cfg.model, name)
        key = f"model.{name}"
        _require(m.embed_dim > 0, f"{key}.embed_dim", m.embed_dim, "need an integer > 0")
        _require(m.depth > 0, f"{key}.depth", m.depth, "need an integer > 0 (layers)")
        _require(m.num_heads > 0 and m.embed_dim % m.num_heads == 0, f"{key}.num_heads", m.num_heads,
                 f"need a divisor of {key}.embed_dim={m.embed_dim}")
        _positive(f"{key}.mlp_ratio", m.mlp_ratio)


def _check_optim(cfg: Config) -> None:
    o = cfg.optim
    _require(o.batch_size > 0, "optim.batch_size", o.batch_size, "need an integer > 0 (the global batch)")
    _require(o.ref_batch_size > 0, "optim.ref_batch_size", o.ref_batch_size, "need an integer > 0")
    _positive("optim.lr", o.lr)
    for key in ("min_lr", "start_lr", "warmup_epochs", "weight_decay", "final_weight_decay", "grad_clip"):
        _positive(f"optim.{key}", getattr(o, key), allow_zero=True)
    _require(all(0.0 <= b < 1.0 for b in o.betas), "optim.betas", list(o.betas), "need two numbers in [0, 1)")


def _check_train(cfg: Config) -> None:
    t = cfg.train
    _require(t.max_steps >= 0, "train.max_steps", t.max_steps, "need an integer >= 0 (0: use train.epochs)")
    if t.max_steps == 0:
        _positive("train.epochs", t.epochs)
        _require(cfg.optim.warmup_epochs < t.epochs, "optim.warmup_epochs", cfg.optim.warmup_epochs,
                 f"need fewer warm-up epochs than train.epochs={t.epochs}")
    _positive("train.time_limit_min", t.time_limit_min, allow_zero=True)
    _positive("train.ckpt_every_min", t.ckpt_every_min, allow_zero=True)
    _require(all(0.0 <= m <= 1.0 for m in t.ema) and t.ema[0] <= t.ema[1], "train.ema", list(t.ema),
             "need [start, end] momenta with 0 <= start <= end <= 1")
    _require(bool(DEVICE.match(t.device)), "train.device", t.device, "choose auto, cpu, cuda, cuda:N or mps")
    _require(t.num_threads >= 0, "train.num_threads", t.num_threads, "need an integer >= 0 (0: torch's default)")
    _require(t.log_every > 0, "train.log_every", t.log_every, "need an integer > 0")
    for key in ("eval_every", "ckpt_every"):
        value = getattr(t, key)
        _require(value >= 0 and value % t.log_every == 0, f"train.{key}", value,
                 f"need a non-negative multiple of train.log_every={t.log_every}")
    _require(t.keep_last >= 1, "train.keep_last", t.keep_last, "need an integer >= 1 (1: only checkpoints/last)")
    _require(t.ckpt_every > 0, "train.ckpt_every", t.ckpt_every,
             "checkpoints cannot be disabled; set a multiple of train.log_every")


def _check_eval(cfg: Config) -> None:
    e = cfg.eval
    _require(e.k > 0, "eval.k", e.k, "need an integer > 0 (neighbours)")
    _positive("eval.temperature", e.temperature)
    _require(e.batch_size > 0, "eval.batch_size", e.batch_size, "need an integer > 0")
    for key in ("periodic_train_subset", "periodic_val_subset", "periodic_head_subset"):
        _require(getattr(e, key) >= 0, f"eval.{key}", getattr(e, key), "need an integer >= 0")
    if cfg.train.eval_every > 0:  # the periodic kNN needs a bank and queries (train.eval_every=0 turns it off)
        for key in ("periodic_train_subset", "periodic_val_subset"):
            _require(getattr(e, key) > 0, f"eval.{key}", getattr(e, key),
                     "need an integer > 0 while train.eval_every > 0 (set train.eval_every=0 for no periodic kNN)")
    _require(e.head_samples > 1, "eval.head_samples", e.head_samples, "need an integer >= 2 (a spread needs two draws)")


def plugin_options(section: str, name: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` options of plug-in ``section.name``, checked against its declaration and completed
    with its defaults (in declaration order)."""
    registry, skip = PLUGINS[section]
    declared = declared_options(registry.get(name), skip)
    unknown = sorted(set(given) - set(declared))
    if section == "method" and set(unknown) & set(VICREG_METHOD_OPTIONS):
        raise ConfigError(f"method.options.{unknown[0]} moved to the regulariser: write reg.name=vicreg "
                          f"reg.options.{unknown[0]}=... reg.options.level=token (the same terms on the context tokens)")
    if unknown:
        allowed = ", ".join(declared) or "no options"
        raise ConfigError(f"{section}.options.{unknown[0]}: {registry.kind} {name!r} has no such option "
                          f"(it takes: {allowed})")
    out = {}
    for key, opt in declared.items():
        if key in given:
            out[key] = coerce(given[key], opt.type, f"{section}.options.{key}")
        elif opt.default is not inspect.Parameter.empty:
            out[key] = coerce(opt.default, opt.type, f"{section}.options.{key}")
        else:
            raise ConfigError(f"{section}.options.{key} is required by {registry.kind} {name!r}")
    return out


def _build_on_meta(cfg: Config) -> None:
    """Build the method (encoders, trunk, head, mask sampler) without memory: runs every plug-in's own checks."""
    try:
        with torch.device("meta"):
            build_method(cfg, init=False)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"method {cfg.method.name!r} cannot be built from this config: {e}") from None


def _check_mask_options(cfg: Config) -> None:
    """Build the mask sampler (cheap, no tensors) so its own range checks name ``mask.options``."""
    grid = cfg.data.image_size // cfg.model.encoder.patch_size
    try:
        build_mask_sampler(cfg.mask.name, grid, cfg.mask.options)
    except ConfigError as e:
        raise ConfigError(f"mask.options ({cfg.mask.name!r} on a {grid} x {grid} grid): {e}") from None


def _check_init(cfg: Config) -> None:
    """model.init names an encoder file and its architecture JSON (their contents are checked on loading)."""
    if not cfg.model.init:
        return
    from pathlib import Path

    from pjepa.methods import expand_path

    path = Path(expand_path(cfg.model.init))
    for p in (path, path.with_suffix(".json")):
        _require(p.is_file(), "model.init", cfg.model.init,
                 f"{p} is not a file; give a file written by `pjepa export` or `pjepa import` (with its .json)")


CHECKS: tuple[Callable[[Config], None], ...] = (_check_data, _check_model, _check_optim, _check_train, _check_eval)


def check_config(cfg: Config, build: bool = True) -> Config:
    """``cfg`` with every value checked and every plug-in's options completed; raises ConfigError.

    ``build=False`` skips building the method on the meta device (for callers
    that build it right away anyway).
    """
    for check in CHECKS:
        check(cfg)
    for section in PLUGINS:
        sec = getattr(cfg, section)
        sec.options = plugin_options(section, sec.name, sec.options)
    _check_mask_options(cfg)
    _check_init(cfg)
    if build:
        _build_on_meta(cfg)
    return cfg
