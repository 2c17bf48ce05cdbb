"""What every figure shares: the matplotlib import with a helpful error, colours, saving."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pjepa.errors import ConfigError

#: One colour per run or block, in order (matplotlib's tab10, colour-blind friendlier than the default).
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or a ConfigError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("figures need matplotlib: pip install 'pjepa[viz]' (or pip install matplotlib)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG atomically (a reader never sees half a file) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    os.replace(tmp, path)
    pyplot().close(fig)
    return path


def run_label(run: Any) -> str:
    """A short label: the folder name, with method and head where the name does not say them."""
    cfg = run.config
    what = cfg.method.name if cfg.method.name == "mae" else f"{cfg.method.name}/{cfg.head.name}"
    return run.name if what.split("/")[-1] in run.name else f"{run.name} ({what})"
