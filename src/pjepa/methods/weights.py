"""Encoder weights out of a run, and official checkpoints in, as timm-layout safetensors + JSON.

    export_run_encoder(RUN, "enc.safetensors")          -> enc.safetensors + enc.json   (`pjepa export`)
    import_official("IN1K-vit.h.14-300e.pth.tar", "enc.safetensors")                    (`pjepa import`)

The files load with ``pjepa.models.timm_format.load_encoder`` (or into timm, see that module).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from pjepa.atomic import atomic_write_text
from pjepa.errors import WeightsError
from pjepa.methods.load import load_run_method
from pjepa.models import VisionTransformer
from pjepa.models.timm_format import architecture, official_to_timm, save_timm_state, to_timm
from pjepa.runs import Run


def export_run_encoder(run_dir: str | Path, out: str | Path, encoder: str = "target",
                       checkpoint: str = "last") -> Path:
    """Write the ``encoder`` ('target' | 'context') of checkpoint ``checkpoint`` ('last' | 'best') of the run
    in ``run_dir`` to ``out`` (safetensors, timm keys), ``out.with_suffix('.json')`` (the architecture and
    the preprocessing: resolution, channel mean and std) and a model card ``out.with_suffix('.md')``.
    Returns ``out``."""
    run = Run(run_dir)
    method, step = load_run_method(run, checkpoint)
    module = method.feature_encoder(encoder)
    if not isinstance(module, VisionTransformer):
        raise WeightsError(
            f"{run_dir}: the {encoder} encoder is a {type(module).__name__}, not a VisionTransformer; "
            "only ViT encoders export to the timm layout"
        )
    mean, std = run.stats()
    arch = {**architecture(module),
            "preprocessing": {"image_size": run.config.data.image_size, "mean": mean.tolist(), "std": std.tolist()}}
    path = save_timm_state(to_timm(module.state_dict()), arch, out)
    write_model_card(run, path, arch, encoder, checkpoint, step)
    return path


def write_model_card(run: Run, path: Path, arch: dict, encoder: str, checkpoint: str, step: int) -> Path:
    """A short markdown card beside an exported file: what it is, how it was trained, what it scored,
    and how to load it (pjepa and timm)."""
    cfg = run.config
    scores = []
    for name in sorted(p.stem for p in (run.path / "eval").glob("*.json")) if (run.path / "eval").is_dir() else []:
        res = run.eval_result(name) or {}
        top1 = res.get("top1_weighted", res.get("top1"))
        if isinstance(top1, (int, float)):
            scores.append(f"| `{name}` | {top1:.2f} | {res.get('split', '')} |")
    e = arch
    card = [
        f"# {path.stem}", "",
        f"The {encoder} encoder of the pjepa run `{run.path.name}` ({checkpoint} checkpoint, step {step}): a ViT "
        f"{e['embed_dim']} wide, {e['depth']} deep, {e['num_heads']} heads, patch {e['patch_size']}, "
        f"{e['img_size']} px.", "",
        f"- method: `{cfg.method.name}` {cfg.method.options}; regulariser: `{cfg.reg.name}` {cfg.reg.options}",
        f"- head: `{cfg.head.name}`; data: `{cfg.data.name}` ({cfg.data.train_split}), seed {cfg.train.seed}",
        f"- preprocessing: resize to {e['img_size']} px, scale to [0, 1], normalise with mean "
        f"{[round(v, 4) for v in arch['preprocessing']['mean']]}, std {[round(v, 4) for v in arch['preprocessing']['std']]}; "
        "features: mean of the last layer's tokens", "",
    ]
    if scores:
        card += ["| result file | top-1 (%) | split |", "|---|---|---|", *scores, ""]
    card += ["Load it:", "", "```python", "from pjepa import load_encoder",
             f"encoder = load_encoder({path.name!r})", "features = encoder.embed(images)  # uint8 (B, 3, H, W) -> (B, D)",
             "", "import timm, safetensors.torch  # or in timm:",
             f"model = timm.models.vision_transformer.VisionTransformer(img_size={e['img_size']}, "
             f"patch_size={e['patch_size']}, embed_dim={e['embed_dim']}, depth={e['depth']}, "
             f"num_heads={e['num_heads']}, mlp_ratio={e['mlp_ratio']}, class_token=False, global_pool='avg', "
             "fc_norm=False, num_classes=0)",
             f"model.load_state_dict(safetensors.torch.load_file({path.name!r}))", "```", ""]
    card_path = path.with_suffix(".md")
    atomic_write_text(card_path, "\n".join(card))
    return card_path


def load_official(src: str | Path) -> dict:
    """``torch.load(src, map_location="cpu", weights_only=True)`` with errors naming the file."""
    src = Path(src)
    if not src.is_file():
        raise WeightsError(f"{src}: no such checkpoint file")
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f"it pickles {found.group(1)}" if found else str(e).strip().splitlines()[-1]
        raise WeightsError(
            f"{src}: refused by torch.load(weights_only=True), which reads tensors and plain containers only "
            f"({what}); from a copy you trust, re-save just the weights, e.g. torch.save({{'model': ckpt['model']}}, "
            "PATH)"
        ) from None
    except Exception as e:  # a truncated or foreign file fails deep inside the unpickler (KeyError, EOFError, ...)
        raise WeightsError(f"{src}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None


def import_official(src: str | Path, out: str | Path, kind: str = "auto", which: str = "target",
                    num_heads: int | None = None) -> Path:
    """Convert the official I-JEPA / MAE checkpoint ``src`` (see ``official_to_timm`` for ``kind``,
    ``which`` and ``num_heads``) to ``out`` (safetensors, timm keys) + ``out.with_suffix('.json')``."""
    checkpoint = load_official(src)
    try:
        state, arch = official_to_timm(checkpoint, kind=kind, which=which, num_heads=num_heads)
    except WeightsError as e:
        raise WeightsError(f"{src}: {e}") from None
    return save_timm_state(state, arch, out)
