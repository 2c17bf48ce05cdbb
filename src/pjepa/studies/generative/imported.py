"""Encoders brought in with ``pjepa import``: a folder that the study turns into a run directory.

The study reads run directories (``pjepa train``'s). An encoder converted from an official checkpoint has
no run, so its folder holds what one needs::

    MY_ENCODER/                 the folder's name is the study's row name
      encoder.safetensors       pjepa import --from IN1K-vit.h.14-300e.pth.tar --num-heads 16 --out MY_ENCODER/encoder.safetensors
      encoder.json              (written beside it by pjepa import: the ViT's sizes)
      config.yaml               a pjepa training config: the data (data.name, data.path, data.image_size,
                                splits), method.name (ijepa | mae: labels the row), train.seed
      data_stats.json           optional {"mean": [r, g, b], "std": [r, g, b]}: the normalisation the encoder
                                was trained with; default ImageNet's, which official I-JEPA and MAE use

``imported_run`` writes ``OUT`` as a run directory: config.yaml with ``model.encoder`` taken from
encoder.json and ``model.init`` naming the file, data_stats.json, and ``checkpoints/last`` (step 0) whose
context and target encoders hold the imported weights. Everything downstream then treats it as a run.
"""

from __future__ import annotations

import json
from pathlib import Path

from pjepa.api import encoder_architecture
from pjepa.checks import check_config
from pjepa.config import build_config, dump_config, load_yaml, merge
from pjepa.errors import ConfigError
from pjepa.methods.load import build_run_method
from pjepa.runs import atomic_write_bytes, save_checkpoint

ENCODER_FILE = "encoder.safetensors"
#: The channel statistics official I-JEPA and MAE checkpoints were trained with.
IMAGENET_STATS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def is_imported(folder: Path) -> bool:
    """True for an imported-encoder folder (an encoder file and no checkpoints of its own)."""
    return (folder / ENCODER_FILE).is_file() and not (folder / "checkpoints").is_dir()


def imported_config(folder: Path) -> dict:
    """The folder's config.yaml with the encoder's sizes and ``model.init`` filled in (a raw mapping)."""
    if not (folder / "config.yaml").is_file():
        raise ConfigError(f"{folder} holds {ENCODER_FILE} but no config.yaml: add a pjepa config naming the data "
                          "(data.name, data.path, data.image_size) and method.name (README: Generative study)")
    arch = encoder_architecture(folder / ENCODER_FILE)
    raw = load_yaml(folder / "config.yaml")
    size = raw.get("data", {}).get("image_size", arch["img_size"])
    if size != arch["img_size"]:
        raise ConfigError(f"{folder}/config.yaml sets data.image_size={size} but {ENCODER_FILE} encodes "
                          f"{arch['img_size']} px images; set data.image_size={arch['img_size']}")
    encoder = {k: arch[k] for k in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")}
    update = {"data": {"image_size": arch["img_size"]},
              "model": {"encoder": encoder, "init": str((folder / ENCODER_FILE).resolve())}}
    return merge(raw, update)


def imported_run(folder: str | Path, out: str | Path) -> Path:
    """Write the run directory ``out`` for the imported-encoder ``folder`` (module docstring); returns ``out``."""
    folder, out = Path(folder), Path(out)
    cfg = check_config(build_config(imported_config(folder)), build=False)  # built right below
    stats_path = folder / "data_stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else IMAGENET_STATS
    method = build_run_method(cfg)  # model.init: the file's weights in the context and target encoders
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "config.yaml", dump_config(cfg).encode())
    atomic_write_bytes(out / "data_stats.json", (json.dumps(stats, indent=2) + "\n").encode())
    save_checkpoint(out / "checkpoints", "last", method.state_dict(), {"step": 0, "imported_from": str(folder)})
    return out
