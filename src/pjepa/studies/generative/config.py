"""The generative study's options: one typed dataclass per stage, read from a YAML preset and dotted overrides.

    cfg = load_study_config("cifar10_cpu", ["diffusion.steps=2000", "sample.n=1000"])

Presets live in ``pjepa/studies/generative/presets/*.yaml`` (package data; not ``pjepa/configs``, which holds
training configs only). A preset sets any subset of the keys below (and may name a ``base:`` YAML, as training
configs do); the rest keep these defaults. Loading, overrides and the errors for an unknown key or a wrong
type are ``pjepa.config``'s, the preset look-up ``pjepa.presets``'; the ranges are checked here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pjepa.config import build_dataclass, load_yaml, merge, parse_overrides
from pjepa.errors import ConfigError
from pjepa.presets import PresetFolder

#: The study's presets: ``pjepa gen study --preset NAME``.
PRESETS = PresetFolder(Path(__file__).resolve().parent / "presets", option="--preset",
                       listing="`pjepa gen study --help`")
#: Options that were removed: key -> why. A config may still set them to 0 (their old default, which changed
#: nothing); anything else is a ConfigError.
REMOVED = {"decoder.adversarial_weight": "the adversarial (PatchGAN) decoder loss was removed: no preset used it"}


@dataclass
class TokensOptions:
    """Step 0: the frozen encoder's patch tokens of a train subset and of the real reference images."""

    train_n: int = 10_000  # train images encoded (seeded random subset; 0 = all): what VAE, diffusion, decoder see
    ref_split: Literal["eval", "val"] = "eval"  # the real reference: the run's reported split, or its validation part
    ref_n: int = 2_000  # real reference images (seeded subset; 0 = all); the metrics compare samples to these
    encoder: Literal["target", "context"] = "target"
    checkpoint: Literal["last", "best"] = "last"
    dtype: Literal["float16", "float32"] = "float16"
    shard_size: int = 4096
    batch_size: int = 256


@dataclass
class VAEOptions:
    """Step i (document sec. 3): K x K x D embeddings -> K x K x d latents, 1 x 1 convolutions."""

    latent_channels: int = 16  # d (the document's 16 for D = 1280)
    hidden: int = 0  # hidden width of encoder and decoder; 0 = D
    kl_weight: float = 0.05  # the document's
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1.0e-3


@dataclass
class DecoderOptions:
    """The pixel decoder from VAE latents to images (L1 + perceptual loss on the separate SmallVGG)."""

    width: int = 64
    num_res_blocks: int = 1
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2.0e-4
    perceptual_weight: float = 1.0
    snapshot_steps: list[int] = field(default_factory=lambda: [64, 256, 1000, 2000])  # the rows of Fig. 10
    snapshot_size: int = 8  # images per reconstruction row


@dataclass
class UNetOptions:
    """The time-conditional UNet (``unet.UNet``) of both diffusion models."""

    base_channels: int = 64
    channel_mults: list[int] = field(default_factory=lambda: [1, 2])
    num_res_blocks: int = 1
    attention: bool = True
    num_heads: int = 4
    dropout: float = 0.0


@dataclass
class DiffusionOptions:
    """Step ii: latent diffusion training (one unconditional and one class-conditional model)."""

    schedule: Literal["linear", "cosine"] = "linear"
    timesteps: int = 1000
    prediction: Literal["eps", "x0", "v"] = "eps"  # the document's is eps
    p_uncond: float = 0.1  # label dropout of the class-conditional model (classifier-free guidance)
    steps: int = 5000
    batch_size: int = 128
    lr: float = 2.0e-4
    warmup: int = 100  # linear warm-up steps, then constant (latent diffusion's LambdaLinearScheduler)
    ema: float = 0.999  # EMA of the weights that sampling uses; 0 = the raw weights


@dataclass
class SampleOptions:
    """Sampling: N samples per (run, mode), the same N for every run."""

    n: int = 2_000
    steps: int = 50
    sampler: Literal["ddim", "dpmpp_2m"] = "ddim"
    guidance: float = 0.0  # classifier-free guidance w of the class-conditional model (0 = unguided)
    batch_size: int = 500  # fixed: a sample's starting noise depends on its batch (seeded per batch)
    grid_cols: int = 8
    grid_rows: int = 8  # unconditional grid: rows x cols samples; class-conditional: one row per class
    grid_classes: int = 10  # at most this many class rows (the first classes)


@dataclass
class ClassifierOptions:
    """The two networks trained here from scratch, once for all runs: metric (SmallResNet), perceptual (SmallVGG)."""

    train_n: int = 0  # training images of both (seeded subset of the train split; 0 = all)
    image_size: int = 0  # the metric network's input side (images are resized to it); 0 = data.image_size
    epochs: int = 10
    width: int = 32
    blocks: int = 1
    batch_size: int = 128
    lr: float = 2.0e-3
    holdout: float = 0.1  # held out of training: the accuracy in the table's header
    perceptual_epochs: int = 5
    perceptual_width: int = 32
    perceptual_stages: int = 3


@dataclass
class MetricOptions:
    """Sample metrics (``metrics``)."""

    k: int = 3  # precision / recall neighbourhood (Kynkaanniemi et al.)
    is_splits: int = 10  # Inception-style score splits (fewer when N is smaller)
    batch_size: int = 250  # feature-network batch


@dataclass
class StudyConfig:
    """Every size of the study. ``seed`` drives every random choice (subsets, training, sampling)."""

    seed: int = 0
    tokens: TokensOptions = field(default_factory=TokensOptions)
    vae: VAEOptions = field(default_factory=VAEOptions)
    decoder: DecoderOptions = field(default_factory=DecoderOptions)
    unet: UNetOptions = field(default_factory=UNetOptions)
    diffusion: DiffusionOptions = field(default_factory=DiffusionOptions)
    sample: SampleOptions = field(default_factory=SampleOptions)
    classifier: ClassifierOptions = field(default_factory=ClassifierOptions)
    metrics: MetricOptions = field(default_factory=MetricOptions)


def check_study_config(cfg: StudyConfig) -> StudyConfig:
    """Ranges that the dataclass types cannot say; returns ``cfg``."""
    positive = {
        "tokens.shard_size": cfg.tokens.shard_size, "tokens.batch_size": cfg.tokens.batch_size,
        "vae.latent_channels": cfg.vae.latent_channels, "vae.epochs": cfg.vae.epochs,
        "vae.batch_size": cfg.vae.batch_size, "decoder.width": cfg.decoder.width, "decoder.steps": cfg.decoder.steps,
        "decoder.batch_size": cfg.decoder.batch_size, "decoder.snapshot_size": cfg.decoder.snapshot_size,
        "unet.base_channels": cfg.unet.base_channels, "diffusion.timesteps": cfg.diffusion.timesteps,
        "diffusion.steps": cfg.diffusion.steps, "diffusion.batch_size": cfg.diffusion.batch_size,
        "sample.n": cfg.sample.n, "sample.steps": cfg.sample.steps, "sample.batch_size": cfg.sample.batch_size,
        "sample.grid_cols": cfg.sample.grid_cols, "sample.grid_rows": cfg.sample.grid_rows,
        "sample.grid_classes": cfg.sample.grid_classes, "classifier.epochs": cfg.classifier.epochs,
        "classifier.width": cfg.classifier.width, "classifier.perceptual_epochs": cfg.classifier.perceptual_epochs,
        "classifier.perceptual_width": cfg.classifier.perceptual_width, "metrics.k": cfg.metrics.k,
        "metrics.is_splits": cfg.metrics.is_splits, "metrics.batch_size": cfg.metrics.batch_size,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}={value}: must be a positive integer")
    for key, value in (("tokens.train_n", cfg.tokens.train_n), ("tokens.ref_n", cfg.tokens.ref_n),
                       ("classifier.train_n", cfg.classifier.train_n), ("vae.hidden", cfg.vae.hidden),
                       ("classifier.image_size", cfg.classifier.image_size)):
        if value < 0:
            raise ConfigError(f"{key}={value}: must be >= 0 (0 = all / the default)")
    for key, lr in (("vae.lr", cfg.vae.lr), ("decoder.lr", cfg.decoder.lr), ("diffusion.lr", cfg.diffusion.lr),
                    ("classifier.lr", cfg.classifier.lr)):
        if not lr > 0:
            raise ConfigError(f"{key}={lr}: must be a positive learning rate")
    if not 0 <= cfg.diffusion.ema < 1:
        raise ConfigError(f"diffusion.ema={cfg.diffusion.ema}: choose a decay in [0, 1) (0: no EMA)")
    if not 0 < cfg.classifier.holdout < 1:
        raise ConfigError(f"classifier.holdout={cfg.classifier.holdout}: choose a fraction in (0, 1)")
    if any(s < 1 for s in cfg.decoder.snapshot_steps):
        raise ConfigError(f"decoder.snapshot_steps={cfg.decoder.snapshot_steps}: steps count from 1")
    return cfg


def study_presets() -> list[str]:
    """The built-in study presets, by name."""
    return PRESETS.names()


def _drop_removed(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the removed options set to 0; a ConfigError naming one set to anything else."""
    out = dict(data)
    for key, why in REMOVED.items():
        section, name = key.split(".")
        options = out.get(section)
        if not isinstance(options, dict) or name not in options:
            continue
        if options[name] not in (0, 0.0, None):
            raise ConfigError(f"{key}={options[name]!r}: {why}; delete the key (or set it to 0)")
        out[section] = {k: v for k, v in options.items() if k != name}
    return out


def load_study_config(preset: str | Path | None = "cifar10_cpu", overrides: list[str] | None = None) -> StudyConfig:
    """Defaults <- preset YAML (a name or a path; None: defaults only) <- dotted ``key=value`` overrides."""
    data = load_yaml(PRESETS.resolve(preset)) if preset is not None else {}
    merged = _drop_removed(merge(data, parse_overrides(overrides or [])))
    return check_study_config(build_dataclass(StudyConfig, merged, what="study"))

