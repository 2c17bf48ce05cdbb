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

from pjepa.errors import WeightsError
from pjepa.methods.load import load_run_method
from pjepa.models import VisionTransformer
from pjepa.models.timm_format import official_to_timm, save_encoder, save_timm_state
from pjepa.runs import Run


def export_run_encoder(run_dir: str | Path, out: str | Path, encoder: str = "target",
                       checkpoint: str = "last") -> Path:
    """Write the ``encoder`` ('target' | 'context') of checkpoint ``checkpoint`` ('last' | 'best') of the run
    in ``run_dir`` to ``out`` (safetensors, timm keys) and ``out.with_suffix('.json')``. Returns ``out``."""
    method, _ = load_run_method(Run(run_dir), checkpoint)
    module = method.feature_encoder(encoder)
    if not isinstance(module, VisionTransformer):
        raise WeightsError(
            f"{run_dir}: the {encoder} encoder is a {type(module).__name__}, not a VisionTransformer; "
            "only ViT encoders export to the timm layout"
        )
    return save_encoder(module, out)


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
