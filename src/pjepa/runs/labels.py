"""How tables name what a run trained: ``method_label(run.config)`` -> "I-JEPA + SIGReg (image), 2 mask sets".

Public: ``pjepa table``, the report and the generative study's table all name a run's method with it, so
one run reads the same in every table.
"""

from __future__ import annotations

from pjepa.config import Config

#: How a table names methods and regularisers.
METHOD_NAMES = {"ijepa": "I-JEPA", "njepa": "N-JEPA", "mae": "MAE", "finetune": "fine-tune"}
REG_NAMES = {"vicreg": "VICReg", "sigreg": "SIGReg"}


def method_label(cfg: Config) -> str:
    """What a row trained, in words: the method, its regulariser and level, and the choices that change
    what is learned ("I-JEPA + SIGReg (image), online target, 2 mask sets")."""
    label = METHOD_NAMES.get(cfg.method.name, cfg.method.name)
    if cfg.reg.name != "none":
        level = cfg.reg.options.get("level")
        label += f" + {REG_NAMES.get(cfg.reg.name, cfg.reg.name)}" + (f" ({level})" if level else "")
    target = cfg.method.options.get("target", "ema")
    if target != "ema":
        label += f", {target.replace('_', ' ')} target"
    sets = cfg.mask.options.get("sets_per_image", 1)
    if sets > 1:
        label += f", {sets} mask sets"
    return label
