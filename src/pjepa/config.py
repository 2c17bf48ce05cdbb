"""Typed configuration: dataclass schema <- YAML file <- dotted CLI overrides.

Resolution order (later wins), as in dinov2: the schema's defaults, then the
experiment YAML (which may name a ``base:`` YAML of its own), then
``key.sub=value`` overrides from the command line. Every key is checked
against the schema: an unknown key is an error that names it and lists the
valid keys of its section, and every value is coerced to the field's type or
rejected with the key and the value in the message.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from pjepa.errors import ConfigError


@dataclass
class DataConfig:
    """Which images, how they are split and augmented."""

    name: str = "synthetic"  # a registered dataset: see `pjepa.data.DATASETS`
    path: Optional[Union[str, list[str]]] = None  # file, folder, list or glob; None = built-in / download
    train_split: str = "train"
    val_split: str = "val"  # queries of the kNN evaluation
    bank_split: Optional[str] = None  # kNN bank; None = train_split (set e.g. "train" when pretraining on STL-10 "unlabeled")
    options: dict[str, Any] = field(default_factory=dict)  # loader-specific (e.g. num_classes)
    image_size: int = 32  # model resolution: random-resized-crop / resize target
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    flip: bool = True
    stats_samples: int = 2000  # images used to estimate the per-channel mean/std


@dataclass
class ModelConfig:
    """ViT encoder and narrow predictor trunk."""

    patch_size: int = 4
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    pred_dim: int = 96
    pred_depth: int = 4
    pred_num_heads: int = 4
    # "joint": one pass for all target blocks with a block attention mask;
    # "per_block": the official layout, the context repeated once per block.
    pred_layout: Literal["joint", "per_block"] = "joint"


@dataclass
class MaskConfig:
    """I-JEPA multi-block masking (scales are fractions of the patch grid)."""

    num_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    context_aspect: tuple[float, float] = (1.0, 1.0)
    min_context: int = 8
    num_candidates: int = 4  # target layouts drawn per sample to equalise context counts


@dataclass
class HeadConfig:
    """The predictor head: models p(y | h) of each target token.

    ``options`` are the head's own constructor arguments, checked by the head
    (e.g. deterministic: loss, align_weight, var_weight, cov_weight).
    """

    name: str = "deterministic"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """AdamW with warmup + cosine learning rate and a cosine weight-decay ramp."""

    batch_size: int = 128  # global batch (all ranks together)
    lr: float = 1e-3  # peak learning rate at `ref_batch_size`
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    ref_batch_size: int = 256
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    start_lr: float = 0.0  # learning rate at step 0 of the warmup, as a fraction of lr
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 3.0  # max global grad norm; 0 disables clipping


@dataclass
class TrainConfig:
    """The loop: duration, EMA, precision, logging, evaluation and checkpoints."""

    method: str = "ijepa"
    epochs: float = 10.0
    max_steps: int = 0  # > 0 overrides `epochs`
    time_limit_min: float = 0.0  # > 0: stop (and checkpoint) after this many minutes of training
    ema: tuple[float, float] = (0.998, 1.0)
    ema_schedule: Literal["cosine", "linear"] = "cosine"
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"  # autocast on GPU; CPU always fp32
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    log_every: int = 20
    eval_every: int = 500  # periodic kNN; 0 disables
    ckpt_every: int = 500
    num_threads: int = 0  # CPU intra-op threads; 0 = torch default
    progress: bool = True


@dataclass
class EvalConfig:
    """kNN evaluation (GUIDE section 6)."""

    k: int = 20
    temperature: float = 0.07
    batch_size: int = 512  # feature extraction batch
    periodic_train_subset: int = 5000  # bank size of the periodic kNN during training
    periodic_val_subset: int = 1000  # queries of the periodic kNN during training
    periodic_head_subset: int = 256  # val images for the head metrics logged with each periodic kNN (0 = off)
    head_samples: int = 8  # draws per token for the head metrics' sample spread
    head_sample_tokens: int = 1024  # target tokens the periodic head metrics draw samples for


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- coercion


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to type ``tp``, or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        errors = []
        for arm in typing.get_args(tp):
            if arm is type(None):
                continue
            try:
                return _coerce(value, arm, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}={value!r} does not fit {tp}: " + "; ".join(errors))
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}={value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}={value!r} must be a list of {len(args)} values")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} must be a list")
        return [_coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r} must be a mapping")
        return dict(value)
    return _coerce_scalar(value, tp, key)


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r} must be true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}={value!r} must be an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r} must be a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}={value!r} must be a string")
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported schema type {tp}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """Build dataclass ``cls`` from a (partial) mapping; unknown keys are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = prefix or "the top level"
        raise ConfigError(
            f"unknown config key {prefix + '.' if prefix else ''}{unknown[0]!s} "
            f"(valid keys at {where}: {', '.join(names)})"
        )
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name], key)
        else:
            kwargs[name] = _coerce(data[name], tp, key)
    return cls(**kwargs)


# --------------------------------------------------------------------------- loading


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config YAML, following its optional ``base:`` chain (relative paths)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (pass an existing YAML to --config)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    base = data.pop("base", None)
    if base is not None:
        data = _deep_merge(load_yaml(path.parent / base), data)
    return data


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["optim.lr=1e-3", "data.path=[a,b]"]`` into a nested mapping."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part}")
        node[parts[-1]] = value
    return nested


def build_config(data: dict[str, Any] | None = None, overrides: list[str] | None = None) -> Config:
    """Schema defaults <- ``data`` <- dotted ``overrides``, validated."""
    merged = _deep_merge(data or {}, parse_overrides(overrides or []))
    return _build(Config, merged, "")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    return build_config(load_yaml(path) if path is not None else {}, overrides)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML/JSON dumps."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
