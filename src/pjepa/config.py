"""Typed configuration: dataclass schema <- YAML file <- dotted CLI overrides.

Resolution order (later wins), as in dinov2: the schema's defaults, then the
experiment YAML (which may name a ``base:`` YAML of its own), then
``key.sub=value`` overrides from the command line. Every key is checked
against the schema: an unknown key is an error that names it and lists the
valid keys of its section, and every value is coerced to the field's type or
rejected with the key and the value in the message.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from pjepa.errors import ConfigError


@dataclass
class DataConfig:
    """Which images, how they are split and augmented.

    Splits: ``train_split`` is pretrained on; ``val_fraction`` of the labelled
    bank split (``bank_split``, default ``train_split``) is carved out, seeded and
    class-balanced, as the *validation* split: left out of pretraining and of the
    kNN bank, it is what periodic evaluation, ``checkpoints/best`` and every
    choice made from a number look at. ``eval_split`` is the split tables report
    (CIFAR ``test``, Tiny ImageNet ``val``), read once by ``pjepa eval``.
    """

    name: str = "synthetic"  # a registered dataset: see `pjepa.data.DATASETS`
    path: str | list[str] | None = None  # file, folder, list or glob; $PJEPA_DATA expands; None = built-in / download
    train_split: str = "train"  # the split pretrained on
    eval_split: str = "val"  # the reported split: queries of `pjepa eval`
    val_fraction: float = 0.1  # held out of the bank split for validation; 0 = validate on eval_split (not advised)
    bank_split: str | None = None  # kNN bank; None = train_split (set e.g. "train" when pretraining on STL-10 "unlabeled")
    options: dict[str, Any] = field(default_factory=dict)  # the loader's own options (e.g. num_classes)
    # Where the decoded splits live: "memory" (one uint8 tensor per split, per process) or "disk" (decoded
    # once into a file under cache_dir, each batch's rows read from it: data larger than memory, one copy
    # shared by all DDP ranks).
    cache: Literal["memory", "disk"] = "memory"
    cache_dir: str | None = None  # the disk cache's folder ($VARS and ~ expand); None = $PJEPA_CACHE/decoded
    image_size: int = 32  # model resolution: random-resized-crop / resize target
    crop_scale: tuple[float, float] = (0.3, 1.0)  # random-resized-crop area range (fraction of the image)
    crop_ratio: tuple[float, float] = (0.75, 4.0 / 3.0)  # random-resized-crop aspect range
    flip: bool = True  # random horizontal flips
    stats_samples: int = 2000  # images used to estimate the per-channel mean/std


@dataclass
class EncoderConfig:
    """The ViT encoder (context encoder; the target encoder is its EMA copy)."""

    patch_size: int = 4
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0


@dataclass
class PredictorConfig:
    """The narrow predictor trunk (I-JEPA) that conditions the head."""

    embed_dim: int = 96
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    # "joint": one pass for all target blocks with a block attention mask;
    # "per_block": the official layout, the context repeated once per block.
    layout: Literal["joint", "per_block"] = "joint"


@dataclass
class ModelConfig:
    """Network sizes, one subsection per network."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    # Start the encoders from this file (written by `pjepa export` / `pjepa import`: timm-layout
    # safetensors + JSON) instead of a random initialisation; None = random.
    init: str | None = None
    # Random initialisation: "pjepa" (patch embedding at PyTorch's Conv2d default, predictor residual
    # branches unscaled) or "official" (I-JEPA's: trunc-normal(0.02) patch embedding, predictor
    # residual branches divided by sqrt(2 * layer) like the encoder's).
    init_scheme: Literal["pjepa", "official"] = "pjepa"


@dataclass
class MaskConfig:
    """The mask sampler: ``multiblock`` (I-JEPA) or ``random`` (MAE); options are the sampler's own."""

    name: str = "multiblock"  # a registered mask sampler: multiblock (I-JEPA), random (MAE)
    options: dict[str, Any] = field(default_factory=dict)  # the sampler's own options


@dataclass
class MethodConfig:
    """The method the loop trains and its own options."""

    name: str = "ijepa"  # a registered method: ijepa, njepa, mae, finetune
    options: dict[str, Any] = field(default_factory=dict)  # the method's own options


@dataclass
class RegConfig:
    """The anti-collapse regulariser on the student's features (``pjepa.regularisers``): ``none``,
    ``vicreg`` (variance / covariance terms) or ``sigreg`` (LeJEPA's isotropic-Gaussian test);
    ``options`` are its own (weights, ``level: token | image``, ...). Every method accepts one."""

    name: str = "none"  # a registered regulariser: none, vicreg, sigreg
    options: dict[str, Any] = field(default_factory=dict)  # its own options (see the plug-ins below)


@dataclass
class HeadConfig:
    """The predictor head: models p(y | h) of each target token.

    ``options`` are the head's own constructor arguments (e.g. deterministic:
    loss, align_weight, var_weight, cov_weight), checked when the config is built.
    """

    name: str = "deterministic"  # a registered head (see the plug-ins below)
    options: dict[str, Any] = field(default_factory=dict)  # the head's own options


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

    epochs: float = 10.0
    max_steps: int = 0  # > 0 overrides `epochs`
    time_limit_min: float = 0.0  # > 0: stop (and checkpoint) after this many minutes of training
    ema: tuple[float, float] = (0.998, 1.0)  # the EMA teacher's momentum, [start, end] over the run
    ema_schedule: Literal["cosine", "linear"] = "cosine"
    # auto: bf16 autocast on CUDA (fp16 + GradScaler without bf16), on a CPU bf16 only where a probe measures it
    # clearly faster (pjepa.train.precision); fp32 | bf16 | fp16 are honoured on every device (fp16: CUDA only)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False  # torch.compile each transformer block of the method, symbolic sizes (pjepa.train.compile)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    log_every: int = 20
    eval_every: int = 500  # periodic evaluation on the validation split; 0 disables
    ckpt_every: int = 500
    # > 0: also save checkpoints/last at the first log step this many minutes of training after the last save,
    # so a kill that gives no warning (SIGKILL, a lost machine) costs at most about this much work
    ckpt_every_min: float = 10.0
    keep_last: int = 1  # > 1: also keep the newest keep_last checkpoints as checkpoints/step_NNNNNNN (+ best)
    num_threads: int = 0  # CPU intra-op threads; 0 = torch default
    progress: bool = True
    # a Weights & Biases project to log to as well ("" = off; needs pip install wandb; WANDB_MODE=offline works
    # without a network); metrics.jsonl and TensorBoard (tensorboard --logdir runs) always log
    wandb: str = ""


@dataclass
class EvalConfig:
    """kNN evaluation (docs/evaluation.md)."""

    k: int = 20
    temperature: float = 0.07
    batch_size: int = 512  # feature extraction batch
    periodic_train_subset: int = 5000  # bank size of the periodic kNN during training
    periodic_val_subset: int = 1000  # validation queries of the periodic kNN during training
    periodic_head_subset: int = 256  # val images for the head metrics logged with each periodic kNN (0 = off)
    head_samples: int = 8  # draws per token for the head metrics' sample spread
    head_sample_tokens: int = 1024  # target tokens the periodic head metrics draw samples for


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    reg: RegConfig = field(default_factory=RegConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


#: Sections that name a plug-in: switching ``name`` starts from that plug-in's
#: defaults (these keys of the old plug-in are dropped, not carried over).
PLUGIN_SECTIONS: dict[str, tuple[str, ...]] = {
    "data": ("options", "path"),
    "mask": ("options",),
    "method": ("options",),
    "head": ("options",),
    "reg": ("options",),
}

#: Keys of earlier releases and where they live now (pre-0.2 run directories are migrated).
MOVED_KEYS: dict[str, str] = {
    "train.method": "method.name",
    "data.val_split": "data.eval_split",
    "model.patch_size": "model.encoder.patch_size",
    "model.embed_dim": "model.encoder.embed_dim",
    "model.depth": "model.encoder.depth",
    "model.num_heads": "model.encoder.num_heads",
    "model.mlp_ratio": "model.encoder.mlp_ratio",
    "model.pred_dim": "model.predictor.embed_dim",
    "model.pred_depth": "model.predictor.depth",
    "model.pred_num_heads": "model.predictor.num_heads",
    "model.pred_layout": "model.predictor.layout",
}
#: I-JEPA options of earlier releases that are now the ``vicreg`` regulariser's (token level).
VICREG_METHOD_OPTIONS = ("var_weight", "cov_weight")
MASK_OPTION_KEYS = ("num_targets", "target_scale", "target_aspect", "context_scale", "context_aspect",
                    "min_context", "num_candidates")
#: Options of the ``flow_matching`` head that the ``flow`` head took (and ignored under ``objective: nll``)
#: while flow matching was one of its objectives; ``hidden`` is both heads' own.
FLOW_MATCHING_OPTIONS = ("hidden", "ode_steps", "solver", "fm_blocks")


# --------------------------------------------------------------------------- coercion


def coerce(value: Any, tp: Any, key: str) -> Any:
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
                return coerce(value, arm, key)
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
        return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} must be a list")
        return [coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, collections.abc.Mapping) or tp is dict:
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


def build_dataclass(cls: type, data: dict[str, Any], prefix: str = "", what: str = "config",
                    moved: collections.abc.Mapping[str, str] | None = None) -> Any:
    """Dataclass ``cls`` (a schema of nested dataclasses) from a partial mapping, values coerced to the fields' types.

    An unknown key is a ConfigError naming it ("unknown {what} key ...") and listing the valid keys of its
    section; a key in ``moved`` (full dotted name -> its new name) says where it went. Any schema in this form
    builds here: ``Config`` (``build_config``) and the generative study's options.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or what} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = f"{prefix + '.' if prefix else ''}{unknown[0]!s}"
        if moved and key in moved:
            raise ConfigError(f"{what} key {key} moved to {moved[key]}; write {moved[key]}=... instead")
        where = prefix or "the top level"
        raise ConfigError(f"unknown {what} key {key} (valid keys at {where}: {', '.join(names)})")
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[name] = build_dataclass(tp, data[name], key, what, moved)
        else:
            kwargs[name] = coerce(data[name], tp, key)
    return cls(**kwargs)


# --------------------------------------------------------------------------- loading


def merge(base: dict[str, Any], update: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``update`` laid over ``base`` (both nested mappings), for base chains and overrides.

    Two rules make presets compose:
    - switching a plug-in (``head.name``, ``method.name``, ``mask.name``,
      ``data.name``) to another one drops the old plug-in's ``options`` (and
      ``data.path``): the new one starts from its own defaults;
    - an empty mapping replaces instead of merging, so ``head.options={}``
      clears every option inherited from a base.
    """
    out = dict(base)
    plugin_keys = PLUGIN_SECTIONS.get(prefix, ())
    if plugin_keys and "name" in update and update["name"] != base.get("name"):
        for key in plugin_keys:
            out.pop(key, None)
    for k, v in update.items():
        if isinstance(v, dict) and v and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v, f"{prefix}.{k}" if prefix else k)
        else:
            out[k] = v
    return out


def _safe_load(text: str, where: str) -> Any:
    """``yaml.safe_load`` whose syntax errors name the file (or override) and the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"YAML syntax error in {where}{line} {problem}") from None


def load_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config YAML, following its optional ``base:`` chain (paths relative to the file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (pass an existing YAML or a preset name to --config; "
                          "`pjepa presets` lists the presets)")
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise ConfigError(f"base: cycle in config files: {cycle}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8 "
                          "YAML") from None
    data = _safe_load(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"base: in {path} must be a file name, got {base!r}")
        if not (path.parent / base).is_file():
            raise ConfigError(f"base: {base} in {path} does not exist: the path is relative to the folder of the file "
                              f"that names it ({path.parent}); fix the name or give a path from there")
        data = merge(load_yaml(path.parent / base, (*_chain, resolved)), data)
    return data


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["optim.lr=1e-3", "data.path=[a,b]"]`` into a nested mapping (later overrides win)."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        value = _safe_load(raw, f"override {item!r}") if raw != "" else None
        update: dict[str, Any] = {}
        node = update
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        nested = merge(nested, update)
    return nested


def migrate_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """A config mapping of pjepa 0.1 (``train.method``, flat ``model``/``mask`` keys, ``data.val_split``), or of
    a later release (VICReg weights among the method's options, flow matching as an objective of the flow
    head), rewritten in today's layout. Old runs validated on their reported split: ``val_fraction`` becomes 0."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for old, new in MOVED_KEYS.items():
        sec, key = old.split(".")
        if key not in data.get(sec, {}):
            continue
        value = data[sec].pop(key)
        node = data
        for part in new.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[new.split(".")[-1]] = value
        if old == "data.val_split":
            data["data"].setdefault("val_fraction", 0.0)
    mask = data.get("mask", {})
    flat = {k: mask.pop(k) for k in MASK_OPTION_KEYS if k in mask}
    if flat:
        mask.setdefault("options", {}).update(flat)
    return migrate_head(migrate_method_vicreg(data))


def has_method_vicreg(data: dict[str, Any]) -> bool:
    """True for a config whose method options carry the VICReg weights of earlier releases."""
    options = (data.get("method") or {}).get("options") or {}
    return isinstance(options, dict) and any(k in options for k in VICREG_METHOD_OPTIONS)


def migrate_method_vicreg(data: dict[str, Any]) -> dict[str, Any]:
    """``method.options.{var,cov}_weight`` of earlier releases moved to ``reg: {name: vicreg, level: token}``
    (what those runs trained with); nothing changes for a config without them."""
    if not has_method_vicreg(data):
        return data
    method = dict(data["method"])
    options = dict(method["options"])
    moved = {k: options.pop(k) for k in VICREG_METHOD_OPTIONS if k in options}
    method["options"] = options
    data = {**data, "method": method}
    if any(moved.values()) and not (data.get("reg") or {}).get("name"):
        data["reg"] = {"name": "vicreg", "options": {"var_weight": moved.get("var_weight", 0.0),
                                                     "cov_weight": moved.get("cov_weight", 0.0), "level": "token"}}
    return data


def migrate_flow_head(name: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(head.name, head.options)`` in today's layout: flow matching was ``head.name: flow`` with
    ``objective: flow_matching`` and is now the ``flow_matching`` head; ``objective: nll`` is the ``flow`` head.

    A ``flow`` head with an ``objective`` (every run directory of those releases has one) keeps only the
    chosen head's options: the other objective's were ignored then. Flow-matching options on a ``flow``
    head without an ``objective`` chose nothing and are a ConfigError that names the new head; so is an
    objective that never existed. Any other head passes unchanged (``options`` is not modified).
    """
    if name != "flow" or not isinstance(options, dict):
        return name, options
    moved = [k for k in FLOW_MATCHING_OPTIONS[1:] if k in options]
    if "objective" not in options:
        if moved:
            raise ConfigError(f"head.options.{moved[0]}={options[moved[0]]!r}: flow matching is its own head now; "
                              f"write head.name=flow_matching (the flow head is the RealNVP, trained by exact NLL)")
        return name, options
    objective = options["objective"]
    if objective == "flow_matching":
        return "flow_matching", {k: v for k, v in options.items() if k in FLOW_MATCHING_OPTIONS}
    if objective == "nll":
        return name, {k: v for k, v in options.items() if k != "objective" and k not in moved}
    raise ConfigError(f"head.options.objective={objective!r}: the objectives are heads now; write head.name=flow "
                      "(conditional RealNVP, exact NLL) or head.name=flow_matching, without an objective")


def has_legacy_flow_head(data: dict[str, Any]) -> bool:
    """True for a config whose ``flow`` head still names an ``objective`` (flow matching was one of them)."""
    head = data.get("head") or {}
    return (isinstance(head, dict) and head.get("name") == "flow"
            and isinstance(head.get("options"), dict) and "objective" in head["options"])


def migrate_head(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its ``head`` section in today's layout (``migrate_flow_head``); other sections unchanged."""
    head = data.get("head")
    if not isinstance(head, dict) or head.get("name") != "flow":
        return data
    name, options = migrate_flow_head("flow", head.get("options") or {})
    if name == "flow" and options == (head.get("options") or {}):
        return data
    return {**data, "head": {**head, "name": name, "options": options}}


def build_config(data: dict[str, Any] | None = None, overrides: list[str] | None = None) -> Config:
    """Schema defaults <- ``data`` <- dotted ``overrides``, coerced to the schema's types.

    Values are typed here; ranges, cross-field rules and plug-in options are
    checked by ``pjepa.checks.check_config`` (which needs the registries).
    """
    # migrated after the overrides: `head.options.objective=flow_matching` on a flow preset still means flow matching
    merged = migrate_head(merge(data or {}, parse_overrides(overrides or [])))
    return build_dataclass(Config, merged, moved=MOVED_KEYS)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    return build_config(load_yaml(path) if path is not None else {}, overrides)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) of a schema dataclass (``Config`` or another), for YAML/JSON dumps."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
