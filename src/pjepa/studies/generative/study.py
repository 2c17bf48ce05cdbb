"""The generative study, end to end: ``run_study([JEPA_RUN, MAE_RUN], OUT, cfg)``.

jepa-embeddings-generative-study asks whether a JEPA encoder keeps high-level content and drops pixel detail,
by modelling the distribution of its patch embeddings and looking at what comes out. For each run (a run
directory, or a folder holding an encoder brought in with ``pjepa import``: ``imported``), in ``OUT/<run name>/``:

    import            (imported encoders only) the folder as a run directory, OUT/<run>/run/
    tokens            frozen patch tokens of a seeded train subset and of the real reference images
    vae               step i: K x K x D tokens -> K x K x d latents (sec. 3, KL weight 0.05)
    latents           posterior moments of every train token map, one posterior draw, LatentNorm statistics
    decoder           latents -> images (L1 + perceptual on the separate SmallVGG), snapshots: Fig. 10
    diffusion_uncond  step ii: latent diffusion, unconditional
    diffusion_cond    ... class-conditional (label dropout for classifier-free guidance)
    samples_{mode}    N samples each, DDIM, decoded to uint8 images; grids
    metrics_{mode}    sample metrics against the real reference images

once for all runs, in ``OUT/shared/``: the metric network (SmallResNet, role "metric") and the perceptual
network (SmallVGG, role "perceptual"), trained from scratch on the runs' common dataset, and ``OUT/real.png``.
Then ``OUT/table.md`` and ``OUT/table.json``. The stages are plain functions declared in order in
``pipeline`` (``SHARED_STAGES``, ``RUN_STAGES``); every one is resumable (``stages``). ``Study`` holds what
they share: the options, the device and the data and networks loaded once.

Metrics (sec. 4.1), per run and mode, on the metric network's penultimate features and logits, against
the real reference images: Frechet distance, the "ResNet score" (Inception-style score of its logits),
improved precision / recall (k = 3), total-variation distance between the histograms of predicted classes
of samples and of real images (eq. 4 with the real histogram in place of the uniform), the memorisation
ratio (median feature distance of samples to their nearest training image over that of real held-out
images; well below 1 hints at copying) and, class-conditional only, the fraction of samples the metric
network assigns to their conditioning class. With InceptionV3 weights on disk, FD / IS / precision /
recall on its pool features and logits too. The metric network never trains the decoder (its perceptual
loss uses the SmallVGG), so the decoder cannot be tuned to the scorer.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from pjepa.config import config_to_dict
from pjepa.data import splits_for
from pjepa.errors import ConfigError, DataError
from pjepa.methods import method_label
from pjepa.runs import Run, atomic_write_bytes, resolve_device
from pjepa.studies.generative.classifier import load_classifier
from pjepa.studies.generative.config import StudyConfig, load_study_config
from pjepa.studies.generative.imported import imported_run, is_imported
from pjepa.studies.generative.inception import load_fid_inception
from pjepa.studies.generative.pipeline import RUN_STAGES, SHARED_STAGES
from pjepa.studies.generative.stages import Stages, run_stages
from pjepa.studies.generative.table import MODES, TableEntry, write_table
from pjepa.studies.generative.tokens import TokenShards
from pjepa.utils import stream_seed

__all__ = ["MODES", "Study", "StudyConfig", "StudyRun", "load_study_config", "run_study"]

#: What must agree between runs: one dataset, split and image size for every compared encoder.
SHARED_DATA = ("name", "path", "options", "train_split", "eval_split", "val_fraction", "bank_split", "image_size")


@dataclasses.dataclass
class StudyRun:
    """One compared encoder: its name (the row), where it came from, its output folder and its run directory."""

    name: str
    source: Path
    folder: Path
    stages: Stages
    run: Run | None = None

    def path(self, *parts: str) -> Path:
        return self.folder.joinpath(*parts)


class Study:
    """What one ``run_study`` call shares between stages: options, device, and what is loaded once (splits,
    networks, real-image features)."""

    def __init__(self, cfg: StudyConfig, out: Path, device: str, progress: bool, echo: Callable[[str], None],
                 inception_weights: Path | None) -> None:
        self.cfg, self.out, self.progress, self.echo = cfg, out, progress, echo
        self.device = resolve_device(device)
        self.inception_weights = inception_weights
        self.shared = Stages(out / "shared", "shared", echo)
        self._cache: dict[Any, Any] = {}

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()``, computed once per ``key`` for the whole study."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def generator(self, stream: str, a: int = 0) -> torch.Generator:
        """A generator on the study's device for one named random stream."""
        return torch.Generator(device=self.device).manual_seed(stream_seed(self.cfg.seed, a, 0, stream))

    def seed_init(self, stream: str) -> None:
        """Seed the global RNG that initialises a stage's networks: a stage's result does not depend on which
        stages ran before it in this process (a resumed study equals an uninterrupted one)."""
        torch.manual_seed(stream_seed(self.cfg.seed, 0, 0, f"init-{stream}"))

    def splits(self, run: Run):
        """The run's splits, loaded (decoded) once per dataset for the whole study."""
        key = json.dumps([dataclasses.asdict(run.config.data), run.config.train.seed], sort_keys=True, default=str)
        return self.cached(("splits", key), lambda: splits_for(run.config))

    def token_images(self, r: StudyRun, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images, labels) of the images encoded in ``tokens/<which>`` ("train" / "ref")."""
        shards = TokenShards(r.path("tokens", which))
        data = getattr(self.splits(r.run), shards.manifest["split"])
        idx = shards.split_indices()
        return data.images[idx], data.labels[idx]

    def num_classes(self, run: Run) -> int:
        train = self.splits(run).train
        if len(train) == 0 or int(train.labels.min()) < 0:
            raise DataError(f"{run.path}: the train split {train.split!r} has unlabelled images; the study's "
                            "class-conditional model and metric classifier need labels (set data.train_split)")
        return max(train.num_classes, int(train.labels.max()) + 1)

    def net(self, role: str):
        """The shared network of ``role`` ("metric" / "perceptual"), once its stage has written it."""
        return self.cached(("net", role), lambda: load_classifier(self.out / "shared" / f"{role}.safetensors",
                                                                  role=role, device=str(self.device)))

    def inception(self):
        return self.cached(("net", "inception"), lambda: load_fid_inception(self.inception_weights).to(self.device))


# ---------------------------------------------------------------------- set-up


def study_runs(study: Study, sources: Sequence[str | Path]) -> list[StudyRun]:
    """One ``StudyRun`` per source, named by its folder; imported encoders become run directories."""
    if not sources:
        raise ConfigError("the study needs at least one run (--runs JEPA_RUN MAE_RUN)")
    out: list[StudyRun] = []
    for src in map(Path, sources):
        name = src.resolve().name
        if name in [r.name for r in out] or name == "shared":
            raise ConfigError(f"two runs named {name!r} (or the reserved name 'shared'): the study names each "
                              "run's folder and row by its directory name; rename or link one")
        if not src.is_dir():
            raise ConfigError(f"run {src}: no such directory (pass run directories of pjepa train, or "
                              "folders of imported encoders)")
        r = StudyRun(name, src, study.out / name, Stages(study.out / name, name, study.echo))
        if is_imported(src):
            run_dir = r.path("run")
            options = {"source": str(src.resolve()), "mtime": (src / "encoder.safetensors").stat().st_mtime_ns}
            r.stages.run("import", options, [], [run_dir], lambda s=src, d=run_dir: imported_run(s, d))
            r.run = Run(run_dir)
        else:
            r.run = Run(src)
        out.append(r)
    return out


def check_same_data(cfg: StudyConfig, runs: list[StudyRun]) -> None:
    """Every run on one dataset, split and image size (the metric network and the reference are shared)."""
    first = runs[0]
    keys = [f"data.{k}" for k in SHARED_DATA]
    if cfg.tokens.ref_split == "val":  # the validation part is carved with the run's seed
        keys.append("train.seed")
    for r in runs[1:]:
        for key in keys:
            section, name = key.split(".")
            a, b = (getattr(getattr(x.run.config, section), name) for x in (first, r))
            if a != b:
                raise ConfigError(f"runs {first.name} and {r.name} differ in {key} ({a!r} vs {b!r}): the "
                                  "study compares encoders on one dataset, split and image size")


def describe_encoder(r: StudyRun) -> str:
    """'target ViT 128x4 p4, step 3000' (or '..., imported NAME/encoder.safetensors')."""
    m = TokenShards(r.path("tokens", "train")).manifest
    e = r.run.config.model.encoder
    where = f"imported {r.source.name}/encoder.safetensors" if is_imported(r.source) else f"step {m['step']}"
    return f"{m['encoder']} ViT {e.embed_dim}x{e.depth} p{e.patch_size}, {where}"


# ---------------------------------------------------------------------- entry point


def run_study(runs: Sequence[str | Path], out: str | Path, cfg: StudyConfig | None = None,
              inception_weights: str | Path | None = None, progress: bool = True, device: str = "auto",
              echo: Callable[[str], None] = print) -> Path:
    """Run every stage of the study for ``runs`` into ``out`` (skipping what is done); returns ``out/table.md``.

    ``runs``: run directories of ``pjepa train`` or imported-encoder folders (``imported``), all on one
    dataset, split and image size. ``cfg``: a ``StudyConfig`` (default: the cifar10_cpu preset).
    ``inception_weights``: a local FID InceptionV3 file, for InceptionV3 columns too. ``echo`` gets one
    line per stage (done / skipped, with its time).
    """
    cfg = cfg if cfg is not None else load_study_config("cifar10_cpu")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if inception_weights is not None and not Path(inception_weights).is_file():
        raise ConfigError(f"--inception-weights {inception_weights}: no such file")
    atomic_write_bytes(out / "study.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False).encode())
    study = Study(cfg, out, device, progress, echo, Path(inception_weights) if inception_weights is not None else None)
    items = study_runs(study, runs)
    check_same_data(cfg, items)
    shared = run_stages(SHARED_STAGES, study, items[0], study.shared, out, prefix="shared/")
    for r in items:
        run_stages(RUN_STAGES, study, r, r.stages, r.folder, shared)
    entries = [TableEntry(r.name, describe_encoder(r), method_label(r.run.config), r.folder) for r in items]
    return write_table(out, cfg, entries, study.inception_weights)
