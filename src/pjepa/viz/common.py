"""What every figure shares: the matplotlib import with a helpful error, colours, saving."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pjepa.atomic import atomic_path
from pjepa.errors import ConfigError
from pjepa.methods import capabilities
from pjepa.runs import seed_lane, seed_named

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


#: The file formats figures are written in (``pjepa plot --format``, ``pjepa report --format``).
FORMATS = ("png", "pdf", "svg")
DEFAULT_DPI = 200


def save_figure(fig: Any, path: str | Path, dpi: int = DEFAULT_DPI, also: Sequence[str] = ()) -> Path:
    """Write ``fig`` atomically (a reader never sees half a file) in the format ``path``'s suffix names
    (png, pdf or svg; ``dpi`` sets a PNG's resolution and a PDF's or SVG's embedded images), plus a
    copy in each format of ``also``; close it. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target in [path] + [path.with_suffix(f".{fmt}") for fmt in also if f".{fmt}" != path.suffix]:
        fmt = target.suffix.lstrip(".")
        if fmt not in FORMATS:
            raise ValueError(f"figure format {fmt!r}: choose one of {', '.join(FORMATS)}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt)
    pyplot().close(fig)
    return path


def run_name(run: Any) -> str:
    """The run's folder name, with its parent's where the name alone says only the seed (``seed0``,
    ``cpu_seed1``): runs of several sweeps stay apart in legends and contents. A run alone in a seed
    folder (one lane per seed, ``HEAD/seedN/RUN``, as ``benchmarks/heads_budget.sh`` lays them out) is
    ``HEAD/seedN``, as ``pjepa table`` names it: its own name is the same in every lane."""
    if seed_named(run.name):
        return f"{run.path.parent.name}/{run.name}"
    lane = seed_lane(run.path)
    if lane is not None:
        alone = sum((p / "config.yaml").is_file() for p in run.path.parent.iterdir()) <= 1
        return lane if alone else f"{lane}/{run.name}"
    return run.name


def run_label(run: Any) -> str:
    """A short label: the run's name, with method and head (where its method has one) where the name does
    not say them."""
    cfg = run.config
    what = f"{cfg.method.name}/{cfg.head.name}" if capabilities(cfg).has_head else cfg.method.name
    name = run_name(run)
    return name if what.split("/")[-1] in name else f"{name} ({what})"
