"""Encoder weights in and out, in timm's ViT layout (safetensors + a JSON architecture file).

The layout is the state dict of

    timm.models.vision_transformer.VisionTransformer(
        img_size, patch_size, embed_dim=D, depth, num_heads, mlp_ratio,
        class_token=False, global_pool='avg', fc_norm=False, num_classes=0)   # qkv_bias=True, no layer scale

whose forward features (final ``norm`` per token, then the mean over tokens) are ours. ``fc_norm=False``
matters: with ``global_pool='avg'`` timm turns ``fc_norm`` on by default, which moves the final norm
after the pooling and renames ``norm.*`` to ``fc_norm.*``. Keys (D width, N = (img_size / patch)^2
patches, p patch side, H = int(D * mlp_ratio) MLP width)::

    pos_embed                                   (1, N, D)
    patch_embed.proj.weight / .bias             (D, 3, p, p) / (D,)
    blocks.{i}.norm1.weight / .bias             (D,)
    blocks.{i}.attn.qkv.weight / .bias          (3D, D) / (3D,)
    blocks.{i}.attn.proj.weight / .bias         (D, D) / (D,)
    blocks.{i}.norm2.weight / .bias             (D,)
    blocks.{i}.mlp.fc1.weight / .bias           (H, D) / (H,)
    blocks.{i}.mlp.fc2.weight / .bias           (D, H) / (D,)
    norm.weight / .bias                         (D,)

``save_encoder(encoder, "enc.safetensors")`` writes these tensors and ``enc.json`` (``architecture``);
``load_encoder`` reads both back. ``official_to_timm`` converts official I-JEPA and MAE checkpoints.

``pos_embed`` is always stored and always loaded from the file, never recomputed: the official
I-JEPA / MAE sin-cos tables put the column in the first half of the channels, ours the row.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from pjepa.atomic import atomic_path
from pjepa.errors import WeightsError
from pjepa.models.vit import Block, VisionTransformer

FORMAT = "timm.VisionTransformer(class_token=False, global_pool='avg', fc_norm=False)"
ARCH_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")

# (key pattern, replacement) our -> timm and back: the only renames; every other key is the same in both layouts.
_RENAMES = (
    (r"patch_embed\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"blocks\.(\d+)\.mlp\.0\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"blocks\.(\d+)\.mlp\.2\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
)
_RENAMES_BACK = (
    (r"patch_embed\.proj\.(weight|bias)", r"patch_embed.\1"),
    (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", r"blocks.\1.mlp.0.\2"),
    (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", r"blocks.\1.mlp.2.\2"),
)
_SAME = (
    r"pos_embed",
    r"blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj)\.(weight|bias)",
    r"norm\.(weight|bias)",
)
# Width -> heads of the standard ViT sizes (Ti, S, B, L, H, g): H and g break the 64-wide-head rule.
STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}


def _rename(state: dict[str, torch.Tensor], renames: tuple[tuple[str, str], ...], same: tuple[str, ...],
            layout: str) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for src, dst in renames:
            if re.fullmatch(src, key):
                out[re.sub(src, dst, key)] = value
                break
        else:
            if not any(re.fullmatch(p, key) for p in same):
                raise WeightsError(
                    f"key {key!r} is not part of the {layout} ViT layout (see pjepa.models.timm_format)"
                )
            out[key] = value
    return out


def to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our ``VisionTransformer`` state dict -> timm keys (same tensors, not copied; shapes unchanged).

    ``patch_embed.{weight,bias}`` -> ``patch_embed.proj.*``; ``blocks.{i}.mlp.{0,2}.*`` -> ``mlp.{fc1,fc2}.*``.
    Raises ``WeightsError`` naming any key that is not an encoder key.
    """
    return _rename(state, _RENAMES, _SAME, "pjepa")


def from_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm keys (see the module docstring) -> our ``VisionTransformer`` keys; the inverse of ``to_timm``.

    Raises ``WeightsError`` naming any key outside the layout (``cls_token``, ``fc_norm.*``, ``head.*``,
    layer scale ``ls1.gamma``, ...).
    """
    return _rename(state, _RENAMES_BACK, _SAME, "timm (" + FORMAT + ")")


def mlp_ratio_for(hidden: int, dim: int) -> float:
    """The float ``r`` closest to hidden / dim with ``int(dim * r) == hidden`` (what ``Block`` computes):
    hidden / dim itself can fall a rounding error short (e.g. 120 / 88)."""
    ratio = hidden / dim
    while int(dim * ratio) < hidden:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def architecture(encoder: VisionTransformer) -> dict[str, Any]:
    """The sizes that rebuild ``encoder`` (``build_encoder_from``), plus ``num_patches`` and ``format``."""
    block = cast(Block, encoder.blocks[0]) if len(encoder.blocks) else None
    dim = encoder.embed_dim
    patch = encoder.patch_embed.kernel_size[0]
    return {
        "img_size": encoder.grid_size * patch,
        "patch_size": patch,
        "embed_dim": dim,
        "depth": len(encoder.blocks),
        "num_heads": block.attn.num_heads if block is not None else 1,
        "mlp_ratio": mlp_ratio_for(cast(torch.nn.Linear, block.mlp[0]).out_features, dim) if block is not None else 4.0,
        "num_patches": encoder.num_patches,
        "format": FORMAT,
    }


def timm_shapes(arch: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the timm-form state of ``arch`` (the table in the module docstring), in timm's order."""
    dim, patch = arch["embed_dim"], arch["patch_size"]
    hidden = int(dim * arch["mlp_ratio"])
    n = (arch["img_size"] // patch) ** 2
    shapes: dict[str, tuple[int, ...]] = {
        "pos_embed": (1, n, dim), "patch_embed.proj.weight": (dim, 3, patch, patch), "patch_embed.proj.bias": (dim,),
    }
    for i in range(arch["depth"]):
        for name, (out, inp) in (("norm1", (dim, 0)), ("attn.qkv", (3 * dim, dim)), ("attn.proj", (dim, dim)),
                                 ("norm2", (dim, 0)), ("mlp.fc1", (hidden, dim)), ("mlp.fc2", (dim, hidden))):
            shapes[f"blocks.{i}.{name}.weight"] = (out, inp) if inp else (out,)
            shapes[f"blocks.{i}.{name}.bias"] = (out,)
    shapes["norm.weight"] = shapes["norm.bias"] = (dim,)
    return shapes


def describe(arch: dict[str, Any]) -> str:
    """One line: 'ViT img 32 / patch 4 (64 patches), width 64, depth 2, 4 heads, mlp x4'."""
    return (f"ViT img {arch['img_size']} / patch {arch['patch_size']} ({arch.get('num_patches', '?')} patches), "
            f"width {arch['embed_dim']}, depth {arch['depth']}, {arch['num_heads']} heads, "
            f"mlp x{round(float(arch['mlp_ratio']), 4):g}")


def build_encoder_from(arch: dict[str, Any], where: str = "architecture") -> VisionTransformer:
    """A freshly initialised ``VisionTransformer`` of the sizes in ``arch`` (as ``architecture`` writes).

    ``where`` names the source in errors (e.g. the JSON file). Raises ``WeightsError`` naming a missing or
    bad key.
    """
    if not isinstance(arch, dict):
        raise WeightsError(f"{where}: expected a JSON object with keys {list(ARCH_KEYS)}, got {type(arch).__name__}")
    fmt = arch.get("format", FORMAT)
    if fmt != FORMAT:
        raise WeightsError(f"{where}: format {fmt!r} is not {FORMAT!r}")
    missing = [k for k in ARCH_KEYS if k not in arch]
    if missing:
        raise WeightsError(f"{where}: missing key(s) {missing} (needs {list(ARCH_KEYS)})")
    for key in ARCH_KEYS[:-1]:
        value = arch[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise WeightsError(f"{where}: {key} must be a positive integer, got {value!r}")
    ratio = arch["mlp_ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
        raise WeightsError(f"{where}: mlp_ratio must be a positive number, got {ratio!r}")
    grid = arch["img_size"] // arch["patch_size"]
    if "num_patches" in arch and arch["num_patches"] != grid * grid:
        raise WeightsError(
            f"{where}: num_patches {arch['num_patches']!r} does not match img_size {arch['img_size']} / "
            f"patch_size {arch['patch_size']} ({grid * grid} patches)"
        )
    try:
        return VisionTransformer(arch["img_size"], arch["patch_size"], arch["embed_dim"], arch["depth"],
                                 arch["num_heads"], mlp_ratio=float(ratio))
    except ValueError as e:
        raise WeightsError(f"{where}: {e}") from None


def _json_path(path: Path) -> Path:
    if path.suffix == ".json":
        raise WeightsError(f"{path}: name the weights file (e.g. encoder.safetensors); {path.name} is where "
                           "the architecture goes")
    return path.with_suffix(".json")


def save_timm_state(state: dict[str, torch.Tensor], arch: dict[str, Any], path: str | Path) -> Path:
    """Write timm-form ``state`` to ``path`` (safetensors: CPU, contiguous, own storage) and ``arch`` to
    ``path.with_suffix('.json')``. Returns ``path``."""
    path = Path(path)
    json_path = _json_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "layout": FORMAT})
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(arch, indent=2) + "\n")
    return path


def save_encoder(encoder: VisionTransformer, path: str | Path) -> Path:
    """``encoder`` -> ``path`` (safetensors, timm keys) + ``path.with_suffix('.json')`` (``architecture``)."""
    return save_timm_state(to_timm(encoder.state_dict()), architecture(encoder), path)


def read_timm_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (timm keys), with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None


def read_architecture(path: str | Path) -> dict[str, Any]:
    """The architecture JSON next to weights file ``path`` (``path.with_suffix('.json')``)."""
    json_path = _json_path(Path(path))
    if not json_path.is_file():
        raise WeightsError(
            f"{json_path}: missing; the architecture of {path} is read from it (written by `pjepa export` / "
            "`pjepa import` next to the weights)"
        )
    try:
        return json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{json_path}: not valid JSON ({e})") from None


def _load_into(encoder: VisionTransformer, state: dict[str, torch.Tensor], where: str) -> None:
    expected = encoder.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise WeightsError(f"{where}: missing {key!r} (timm {next(iter(to_timm({key: value})))!r}); "
                               f"the file does not fit this encoder ({describe(architecture(encoder))})")
        if state[key].shape != value.shape:
            raise WeightsError(f"{where}: {key!r} has shape {tuple(state[key].shape)}, the encoder expects "
                               f"{tuple(value.shape)} ({describe(architecture(encoder))})")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise WeightsError(f"{where}: unexpected key {extra[0]!r} ({len(extra)} in all); the file does not fit "
                           f"this encoder ({describe(architecture(encoder))})")
    encoder.load_state_dict(state, strict=True)


def load_encoder_weights(encoder: VisionTransformer, path: str | Path) -> None:
    """Load a file written by ``save_encoder`` (or ``pjepa import``) into ``encoder``, strictly.

    ``pos_embed`` comes from the file too. Raises ``WeightsError`` naming the file and the first
    missing / unexpected key or mismatching shape.
    """
    state = read_timm_file(path)
    check_finite(state, str(path))
    try:
        ours = from_timm(state)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
    _load_into(encoder, ours, str(path))


def file_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor of a safetensors file, read from its header alone (no tensor data)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118  (safe_open is not iterable)
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None


def check_architecture(path: str | Path, arch: dict[str, Any]) -> None:
    """The architecture JSON of ``path`` against the tensor shapes in the weights' own header, before anything
    is built: a lying or absurd JSON (a million blocks, a huge image) is a named error in milliseconds."""
    where = str(_json_path(Path(path)))
    shapes = file_shapes(path)
    meta = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    try:
        found = infer_architecture(meta, num_heads=1)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
    for key in ("img_size", "patch_size", "embed_dim", "depth", "mlp_ratio"):
        if key in arch and arch[key] != found[key]:
            raise WeightsError(f"{where}: {key} is {arch[key]!r} but the weights in {Path(path).name} hold "
                               f"{found[key]!r} ({describe({**found, 'num_heads': '?'})}); the JSON does not "
                               "describe this file: write it again with pjepa export / pjepa import")


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """A WeightsError naming the first tensor holding NaN or inf (a weight file is checked as checkpoints are)."""
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise WeightsError(f"{where}: {key!r} holds {bad} non-finite value(s) (NaN or inf): the file is "
                               "corrupt or its training diverged; use another file or checkpoint")


def load_encoder(path: str | Path) -> VisionTransformer:
    """The encoder saved at ``path`` (safetensors + ``path.with_suffix('.json')``), in eval mode; the JSON is
    checked against the weights' shapes before the model is built, and the weights for finite values."""
    arch = read_architecture(path)
    check_architecture(path, arch)
    encoder = build_encoder_from(arch, where=str(_json_path(Path(path))))
    load_encoder_weights(encoder, path)
    return encoder.eval()


# --------------------------------------------------------------------------------------------------
# Official checkpoints
# --------------------------------------------------------------------------------------------------

_MAE_DROP = ("decoder_", "mask_token", "head.", "cls_token", "dist_token")


def recorded_num_heads(checkpoint: dict[str, Any]) -> int | None:
    """The number of attention heads a checkpoint records, if it does: a top-level ``num_heads``, or one in an
    ``args`` / ``config`` mapping (the official I-JEPA and MAE checkpoints record none)."""
    for holder in (checkpoint, checkpoint.get("args"), checkpoint.get("config")):
        if isinstance(holder, dict):
            value = holder.get("num_heads")
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def heads_hint(dim: int) -> str:
    """What the usual ViT of width ``dim`` uses, for the error that asks for --num-heads."""
    usual = f" (the standard ViT of width {dim} uses {STANDARD_HEADS[dim]})" if dim in STANDARD_HEADS else ""
    return f"pass the number of attention heads with --num-heads N{usual}"


def detect_kind(checkpoint: dict[str, Any]) -> str:
    """'ijepa' (``target_encoder`` / ``encoder`` entries) or 'mae' (``model``); error naming the keys found."""
    if not isinstance(checkpoint, dict):
        raise WeightsError(f"expected a checkpoint dict, got {type(checkpoint).__name__}")
    if "target_encoder" in checkpoint or "encoder" in checkpoint:
        return "ijepa"
    if "model" in checkpoint:
        return "mae"
    keys = sorted(map(str, checkpoint))
    shown = ", ".join(keys[:12]) + (f", ... ({len(keys)} in all)" if len(keys) > 12 else "")
    raise WeightsError(
        f"unknown checkpoint layout (top-level keys: {shown or 'none'}): expected I-JEPA "
        "('target_encoder' / 'encoder') or MAE ('model'); pass --kind to say which"
    )


def _strip_module(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Drop DDP's ``module.`` prefix; keep tensors only."""
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _ijepa_state(checkpoint: dict[str, Any], which: str) -> dict[str, torch.Tensor]:
    entry = {"target": "target_encoder", "context": "encoder"}.get(which)
    if entry is None:
        raise WeightsError(f"encoder {which!r}: choose target or context")
    if not isinstance(checkpoint.get(entry), dict):
        raise WeightsError(f"I-JEPA checkpoint has no {entry!r} entry (top-level keys: {sorted(map(str, checkpoint))})")
    return _strip_module(checkpoint[entry])


def _mae_state(checkpoint: dict[str, Any], which: str) -> dict[str, torch.Tensor]:
    if which != "target":
        raise WeightsError(f"encoder {which!r}: an MAE checkpoint holds one encoder (leave the encoder choice "
                           "at 'target')")
    if not isinstance(checkpoint.get("model"), dict):
        raise WeightsError(f"MAE checkpoint has no 'model' entry (top-level keys: {sorted(map(str, checkpoint))})")
    model = _strip_module(checkpoint["model"])
    if "pos_embed" not in model:
        raise WeightsError("MAE checkpoint: 'model' has no 'pos_embed'")
    state = {k: v for k, v in model.items() if not k.startswith(_MAE_DROP)}
    n_prefix = 1 if "cls_token" in model else 0
    n_prefix += 1 if "dist_token" in model else 0
    state["pos_embed"] = model["pos_embed"][:, n_prefix:]  # drop the class token's row(s)
    if "norm.weight" not in state and "fc_norm.weight" in state:
        # Fine-tuned with global_pool: MAE pools, then applies fc_norm; we norm each token, then pool.
        state["norm.weight"], state["norm.bias"] = state.pop("fc_norm.weight"), state.pop("fc_norm.bias")
    return state


def infer_architecture(state: dict[str, torch.Tensor], num_heads: int | None = None) -> dict[str, Any]:
    """Sizes of a timm-form encoder state from its shapes: width and N from ``pos_embed`` (1, N, D), patch
    from ``patch_embed.proj.weight`` (D, 3, p, p), depth from the block indices, mlp_ratio from
    ``mlp.fc1`` (H, D), img_size = sqrt(N) * p. ``num_heads`` is not in the weights and no shape tells
    it: it must be given (a guess would build a different model without a word)."""
    for key in ("pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"):
        if key not in state:
            raise WeightsError(f"encoder weights lack {key!r} (keys: {sorted(state)[:8]} ...)")
    pos, proj = state["pos_embed"], state["patch_embed.proj.weight"]
    if pos.dim() != 3 or pos.shape[0] != 1:
        raise WeightsError(f"pos_embed has shape {tuple(pos.shape)}, expected (1, N, D)")
    _, n, dim = pos.shape
    grid = math.isqrt(n)
    if grid * grid != n:
        raise WeightsError(f"pos_embed holds {n} positions, not a square grid")
    if proj.dim() != 4 or proj.shape[0] != dim or proj.shape[1] != 3 or proj.shape[2] != proj.shape[3]:
        raise WeightsError(f"patch_embed.proj.weight has shape {tuple(proj.shape)}, expected ({dim}, 3, p, p)")
    patch = int(proj.shape[2])
    indices = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    depth = len(indices)
    if indices != set(range(depth)):
        raise WeightsError(f"block indices {sorted(indices)} are not 0..{depth - 1}")
    if num_heads is None:
        raise WeightsError(f"the checkpoint does not record its number of attention heads: {heads_hint(int(dim))}")
    heads = num_heads
    if heads < 1 or dim % heads != 0:
        raise WeightsError(f"num_heads {heads} does not divide the width {dim}")
    return {
        "img_size": grid * patch,
        "patch_size": patch,
        "embed_dim": int(dim),
        "depth": depth,
        "num_heads": heads,
        "mlp_ratio": mlp_ratio_for(int(state["blocks.0.mlp.fc1.weight"].shape[0]), int(dim)),
        "num_patches": int(n),
        "format": FORMAT,
    }


def official_to_timm(checkpoint: dict[str, Any], kind: str = "auto", which: str = "target",
                     num_heads: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(timm-form encoder state, architecture) from an official checkpoint loaded with
    ``torch.load(path, map_location="cpu", weights_only=True)``.

    kind: 'ijepa' (facebookresearch/ijepa: ``target_encoder`` / ``encoder`` module dicts, keys possibly
        ``module.``-prefixed by DDP, already in timm's names), 'mae' (facebookresearch/mae: ``model`` with
        ``cls_token`` (1, 1, D) and ``pos_embed`` (1, N + 1, D); the class token, its position row and the
        ``decoder_*`` / ``mask_token`` / ``head.*`` keys are dropped), or 'auto' (``detect_kind``).
    which: I-JEPA's 'target' (EMA, ``target_encoder``) or 'context' (``encoder``) encoder.
    num_heads: not stored in the weights; taken from the checkpoint when it records one
        (``recorded_num_heads``), else required (a named error asks for it).

    MAE caveats: MAE's encoder attends over its class token too, so dropping it changes the patch tokens
    (the features are those of the same weights without the class token, not MAE's own). A fine-tuned MAE
    (``global_pool``) has ``fc_norm`` instead of ``norm``: it is used as ``norm``, and features then differ
    slightly from MAE's, which pools first and normalises the mean.
    """
    kind = detect_kind(checkpoint) if kind == "auto" else kind
    if kind == "ijepa":
        state = _ijepa_state(checkpoint, which)
    elif kind == "mae":
        state = _mae_state(checkpoint, which)
    else:
        raise WeightsError(f"kind {kind!r}: choose auto, ijepa or mae")
    arch = infer_architecture(state, num_heads if num_heads is not None else recorded_num_heads(checkpoint))
    expected = timm_shapes(arch)
    extra = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if extra or missing:
        raise WeightsError(
            f"{kind} encoder does not fit {FORMAT}: "
            + (f"unexpected {extra[:6]}{' ...' if len(extra) > 6 else ''}" if extra else "")
            + ("; " if extra and missing else "")
            + (f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}" if missing else "")
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise WeightsError(f"{kind} encoder: {key!r} has shape {tuple(state[key].shape)}, expected "
                               f"{shape} for {describe(arch)}")
    return {k: state[k] for k in expected}, arch
