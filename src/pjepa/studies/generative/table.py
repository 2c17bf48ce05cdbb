"""The study's comparison table: ``OUT/table.md`` and ``OUT/table.json`` from each run's metrics files.

One row per run and mode (unconditional, class-conditional): run, encoder, pretraining method, mode, N
samples, sampler and steps, then every metric, its column named by the feature network that computed it
(SmallResNet: the metric network trained in the study; InceptionV3: only with local weights). The first
line names the feature networks and the metric network's held-out accuracy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

from pjepa.runs import atomic_write_bytes
from pjepa.studies.generative.config import StudyConfig
from pjepa.studies.generative.stages import read_json, write_json

#: Generation modes, and how the table names them.
MODES = {"uncond": "unconditional", "cond": "class-conditional"}
COLUMNS = (  # (key in metrics_{mode}.json, markdown header, format)
    ("fd_resnet", "FD (SmallResNet)", ".2f"), ("resnet_score", "ResNet score", ".3f"),
    ("precision_resnet", "precision (SmallResNet)", ".3f"), ("recall_resnet", "recall (SmallResNet)", ".3f"),
    ("class_tv", "class TV", ".3f"), ("class_accuracy", "class accuracy", ".3f"),
    ("memorisation_ratio", "memorisation ratio", ".3f"),
    ("fd_inception", "FD (InceptionV3)", ".2f"), ("inception_score", "IS (InceptionV3)", ".3f"),
    ("precision_inception", "precision (InceptionV3)", ".3f"), ("recall_inception", "recall (InceptionV3)", ".3f"),
)


class TableEntry(NamedTuple):
    """What the table says of one run: its name, encoder, pretraining method and output folder."""

    name: str
    encoder: str
    method: str
    folder: Path


def table_rows(cfg: StudyConfig, entries: list[TableEntry]) -> list[dict[str, Any]]:
    s = cfg.sample
    rows = []
    for e in entries:
        for mode, mode_name in MODES.items():
            metrics = read_json(e.folder / f"metrics_{mode}.json")
            guided = f", w={s.guidance:g}" if mode == "cond" and s.guidance else ""
            rows.append({"run": e.name, "encoder": e.encoder, "method": e.method, "mode": mode_name,
                         "n_samples": metrics["n_samples"], "sampler": f"{s.sampler} {s.steps} steps{guided}",
                         **{k: metrics[k] for k, _, _ in COLUMNS if k in metrics}})
    return rows


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, fmt)


def _header(out: Path, inception_weights: Path | None) -> tuple[str, dict[str, Any]]:
    meta = read_json(out / "shared" / "metric.json")
    networks: dict[str, Any] = {"SmallResNet": {k: meta.get(k) for k in ("heldout_accuracy", "dataset", "split",
                                                                        "n_images", "width", "image_size")}}
    networks["SmallResNet"]["role"] = "metric"
    line = (f"Feature networks: SmallResNet (metric; trained here from scratch on {meta.get('dataset')} "
            f"{meta.get('split')}, {meta.get('n_images')} images; held-out accuracy "
            f"{_cell(meta.get('heldout_accuracy'), '.3f')})")
    if inception_weights is not None:
        networks["InceptionV3"] = {"weights": str(inception_weights), "heldout_accuracy": None}
        line += f"; InceptionV3 (FID weights {inception_weights.name}; its accuracy not measured here)"
    return line + ".", networks


def write_table(out: Path, cfg: StudyConfig, entries: list[TableEntry], inception_weights: Path | None) -> Path:
    """``out/table.md`` and ``out/table.json`` (deterministic: a rerun writes the same bytes); returns the .md."""
    rows = table_rows(cfg, entries)
    header, networks = _header(out, inception_weights)
    first = read_json(entries[0].folder / "metrics_uncond.json")
    ref = (f"Real reference: {first['n_ref']} images of the {cfg.tokens.ref_split} split (ResNet score of the real "
           f"images {first['real_resnet_score']:.3f}); memorisation against each run's {first['n_train']} training "
           f"images. Same N = {cfg.sample.n} samples per run and mode.")
    cols = [c for c in COLUMNS if any(c[0] in row for row in rows)]
    lines = [header, "", ref, "",
             "| run | encoder | method | mode | N | sampler | " + " | ".join(h for _, h, _ in cols) + " |",
             "|---" * (6 + len(cols)) + "|"]
    for row in rows:
        cells = [row["run"], row["encoder"], row["method"], row["mode"], str(row["n_samples"]), row["sampler"]]
        lines.append("| " + " | ".join(cells + [_cell(row.get(k), f) for k, _, f in cols]) + " |")
    md = out / "table.md"
    atomic_write_bytes(md, ("\n".join(lines) + "\n").encode())
    write_json(out / "table.json", {"feature_networks": networks, "ref_split": cfg.tokens.ref_split,
                                    "n_samples": cfg.sample.n, "rows": rows})
    return md
