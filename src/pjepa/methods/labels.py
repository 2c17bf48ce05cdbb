"""How tables name what a run trained: ``method_label(run.config)`` -> "I-JEPA + SIGReg (image), 2 mask sets".

Public: ``pjepa table``, the report and the generative study's table all name a run's method with it, so
one run reads the same in every table. The words come from the plug-ins themselves (a method's and a
regulariser's declared ``label``), so a new method or regulariser is named without editing this file.
"""

from __future__ import annotations

from pjepa.config import Config
from pjepa.methods.registry import METHODS
from pjepa.registry import Registry
from pjepa.regularisers import REGULARISERS


def _label(registry: Registry, name: str) -> tuple[str, bool]:
    """(how tables name plug-in ``name``: its declared ``label`` or its name, whether it is ``active``); a
    name no longer registered (a run of an older pjepa) shows as written."""
    plugin = registry.get(name) if name in registry else None
    return getattr(plugin, "label", "") or name, bool(getattr(plugin, "active", True))


def method_label(cfg: Config) -> str:
    """What a row trained, in words: the method, its regulariser and level, and the choices that change
    what is learned ("I-JEPA + SIGReg (image), online target, 2 mask sets")."""
    label, _ = _label(METHODS, cfg.method.name)
    reg, active = _label(REGULARISERS, cfg.reg.name)
    if active:
        level = cfg.reg.options.get("level")
        label += f" + {reg}" + (f" ({level})" if level else "")
    target = cfg.method.options.get("target", "ema")
    if target != "ema":
        label += f", {target.replace('_', ' ')} target"
    sets = cfg.mask.options.get("sets_per_image", 1)
    if sets > 1:
        label += f", {sets} mask sets"
    return label
