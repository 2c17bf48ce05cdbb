"""Which features a protocol rates, extracted once per run and cached.

A ``Source`` names them: the run's encoder at a checkpoint (target or context), the same
architecture untrained (``random-init``, built from the run's seed), an encoder file written
by ``pjepa export`` / ``pjepa import`` (``weights``), or raw pixels. ``split_features`` gives
the (features, labels) of the three splits every protocol uses: ``bank`` (the labelled
training split minus validation: probes train here), ``val`` (choices) and ``eval`` (the
reported split). Encoder features (mean-pooled last ``layers`` layers, concatenated) are
cached in ``RUN/eval/cache/`` under a name holding the checkpoint's step, so the linear and
low-shot protocols extract them once; the cache also holds what the protocols record about the
splits (``SplitInfo``), so a cached extraction is read without loading or decoding any image.

Precision: features are extracted in the precision the run trained in (``run_info.json``) when
evaluated on the same device type, in fp32 otherwise and for runs older than ``train.precision=auto``
(``feature_amp``); a bf16 extraction is cached under its own name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pjepa.atomic import atomic_path
from pjepa.data import ImageDataset, splits_for
from pjepa.errors import ConfigError
from pjepa.eval.features import extract_features, pixel_features
from pjepa.eval.knn import require_labels
from pjepa.methods.load import load_run_method
from pjepa.models import VisionTransformer
from pjepa.models.timm_format import load_encoder, read_architecture
from pjepa.runs import Run

SPLITS = ("bank", "val", "eval")
Features = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Source:
    """encoder: "target" | "context"; baseline: None | "random-init" | "pixels"; weights: an encoder file."""

    encoder: str = "target"
    checkpoint: str = "last"
    baseline: str | None = None
    weights: Path | None = None

    def __post_init__(self) -> None:
        if self.baseline not in (None, "random-init", "pixels"):
            raise ConfigError(f"baseline {self.baseline!r}: choose random-init or pixels")
        if self.weights is not None and self.baseline is not None:
            raise ConfigError("--weights and a baseline (--random-init / --pixels) exclude each other")

    @property
    def suffix(self) -> str:
        """The result-file suffix: '' for the run's own target encoder, else what differs."""
        s = f"_{self.baseline.replace('-', '_')}" if self.baseline else ""
        s += f"_weights-{self.weights.stem}" if self.weights is not None else ""
        s += "_context" if self.encoder == "context" and self.baseline != "pixels" else ""
        return s

    def describe(self, run: Run | None = None) -> str:
        """What is rated, in words; given the run, a target that is the context encoder itself says so."""
        if self.baseline == "pixels":
            return "raw pixels"
        if self.weights is not None:
            return f"encoder file {self.weights}"
        what = f"{self.encoder} encoder" + (", untrained" if self.baseline else f" ({self.checkpoint})")
        if run is not None and self.encoder == "target" and online_target(run):
            what += " = the context encoder (online target: no EMA teacher)"
        return what


def online_target(run: Run) -> bool:
    """True when the run trained without an EMA teacher (``method.options.target`` online*): its
    "target" encoder is its context encoder."""
    return str(run.config.method.options.get("target", "ema")) != "ema"


def load_encoder_for(run: Run, source: Source) -> tuple[VisionTransformer, int, str]:
    """(encoder, step, cache tag) of a non-pixel source."""
    if source.weights is not None:
        encoder = load_encoder(source.weights)
        if encoder.grid_size * encoder.patch_embed.kernel_size[0] != run.config.data.image_size:
            raise ConfigError(f"{source.weights} encodes {encoder.grid_size * encoder.patch_embed.kernel_size[0]} px "
                              f"images but {run.path} uses data.image_size={run.config.data.image_size}")
        return encoder, 0, f"weights-{source.weights.stem}"
    method, step = load_run_method(run, source.checkpoint, source.baseline == "random-init")
    encoder = method.feature_encoder(source.encoder)
    tag = "random_init" if source.baseline else f"{source.encoder}-{source.checkpoint}-step{step}"
    return encoder, step, tag


def feature_amp(run: Run, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of feature extraction for ``run`` on ``device`` (None = fp32): the run's stored
    training precision on the device type it was chosen for, else fp32 (``pjepa.runs.precision``)."""
    return run.amp_dtype(device)


def precision_name(amp: torch.dtype | None) -> str:
    """None -> "fp32", bfloat16 -> "bf16", float16 -> "fp16" (recorded with each result)."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]


def labelled_splits(run: Run) -> dict[str, ImageDataset]:
    splits = splits_for(run.config)
    out = {"bank": splits.bank, "val": splits.val, "eval": splits.eval}
    for name, ds in out.items():
        require_labels(ds, {"bank": "data.bank_split", "val": "data.val_fraction", "eval": "data.eval_split"}[name])
    return out


@dataclass(frozen=True)
class SplitInfo:
    """What the protocols record about the splits beside their features: the number of classes and each
    split's name ({"bank": "train", "val": "val(train, 0.1)", "eval": "test"})."""

    num_classes: int
    names: dict[str, str]

    @classmethod
    def of(cls, data: dict[str, ImageDataset]) -> SplitInfo:
        return cls(int(data["bank"].num_classes), {k: str(ds.split) for k, ds in data.items()})


def split_features(run: Run, source: Source, device: torch.device, layers: int = 1,
                   progress: bool = True) -> tuple[Features, int, SplitInfo]:
    """({split: (features (N, F), labels (N,))}, step, split info) for bank, val and eval; encoder features
    cached with the split info, so a second protocol on the same features reads no image."""
    cfg = run.config
    mean, std = run.stats()
    if source.baseline == "pixels":
        data = labelled_splits(run)
        feats = {k: (pixel_features(ds.images, cfg.data.image_size, mean, std), ds.labels) for k, ds in data.items()}
        return feats, 0, SplitInfo.of(data)
    encoder, step, tag = load_encoder_for(run, source)
    amp = feature_amp(run, device)
    suffix = "" if amp is None else f"_{precision_name(amp)}"
    path = run.path / "eval" / "cache" / f"features_{tag}_last{layers}{suffix}.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
        if "features" in saved:
            return saved["features"], step, SplitInfo(**saved["info"])
        return saved, step, SplitInfo.of(labelled_splits(run))  # cached before the info was: features alone
    data = labelled_splits(run)
    encoder.to(device)
    feats = {k: (extract_features(encoder, ds.images, cfg.data.image_size, mean, std, device, cfg.eval.batch_size,
                                  amp, progress=progress, desc=f"features ({k})", layers=layers), ds.labels)
             for k, ds in data.items()}
    info = SplitInfo.of(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"features": feats, "info": asdict(info)}, tmp)
    return feats, step, info


def encoder_depth(run: Run, source: Source) -> int:
    """The number of blocks of a non-pixel source's encoder (from the config or the weights' JSON, no loading)."""
    return int(run.config.model.encoder.depth if source.weights is None else read_architecture(source.weights)["depth"])


def probe_layers(run: Run, source: Source) -> int:
    """The last 4 layers, or all of a shallower encoder."""
    if source.baseline == "pixels":
        return 1
    return min(4, encoder_depth(run, source))
