"""The generative study, end to end: ``run_study([JEPA_RUN, MAE_RUN], OUT, cfg)``.

jepa-embeddings-generative-study asks whether a JEPA encoder keeps high-level content and drops pixel detail,
by modelling the distribution of its patch embeddings and looking at what comes out. For each run (a run
directory, or a folder holding an encoder brought in with ``pjepa import``: ``pjepa.generative.imported``),
in ``OUT/<run name>/``:

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
Then ``OUT/table.md`` and ``OUT/table.json``. Every stage is resumable (``pjepa.generative.stages``).

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
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from tqdm import tqdm

from pjepa.data import channel_stats, resize_normalize, splits_for
from pjepa.errors import ConfigError, DataError
from pjepa.eval.table import method_label
from pjepa.generative.classifier import SmallResNet, SmallVGG, load_classifier, save_classifier, train_classifier
from pjepa.generative.decoder import PixelDecoder, to_uint8, train_decoder
from pjepa.generative.grids import class_rows, image_grid, row_grid, save_png
from pjepa.generative.imported import imported_run, is_imported
from pjepa.generative.inception import load_fid_inception
from pjepa.generative.latent_diffusion import LatentDiffusion
from pjepa.generative.metrics import (class_histogram_tv, frechet_distance, inception_score, memorisation,
                                      precision_recall)
from pjepa.generative.stages import Marker, Stages, read_json, write_json
from pjepa.generative.study_config import StudyConfig, load_study_config, study_config_to_dict
from pjepa.generative.study_table import MODES, TableEntry, write_table
from pjepa.generative.tokens import TokenShards, extract_tokens
from pjepa.generative.unet import UNet
from pjepa.generative.vae import EmbeddingVAE, LatentNorm
from pjepa.models.diffusion import DiffusionSchedule
from pjepa.runs import Run, atomic_write_bytes, checkpoint_step, resolve_device
from pjepa.utils import stream_seed

__all__ = ["MODES", "StudyConfig", "load_study_config", "run_study"]

#: What must agree between runs: one dataset, split and image size for every compared encoder.
SHARED_DATA = ("name", "path", "options", "train_split", "eval_split", "val_fraction", "bank_split", "image_size")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save_safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_safetensors_bytes(path.read_bytes())


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
    """The state one ``run_study`` call shares between stages: options, device, caches of data and networks."""

    def __init__(self, cfg: StudyConfig, out: Path, device: str, progress: bool, echo: Callable[[str], None],
                 inception_weights: Path | None) -> None:
        self.cfg, self.out, self.progress, self.echo = cfg, out, progress, echo
        self.device = resolve_device(device)
        self.inception_weights = inception_weights
        self.shared = Stages(out / "shared", "shared", echo)
        self._splits: dict[str, Any] = {}
        self._nets: dict[str, Any] = {}
        self._features: dict[tuple[str, str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ helpers

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
        if key not in self._splits:
            self._splits[key] = splits_for(run.config)
        return self._splits[key]

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

    # ------------------------------------------------------------------ set-up

    def study_runs(self, sources: Sequence[str | Path]) -> list[StudyRun]:
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
            r = StudyRun(name, src, self.out / name, Stages(self.out / name, name, self.echo))
            if is_imported(src):
                run_dir = r.path("run")
                options = {"source": str(src.resolve()), "mtime": (src / "encoder.safetensors").stat().st_mtime_ns}
                r.stages.run("import", options, [], [run_dir], lambda s=src, d=run_dir: imported_run(s, d))
                r.run = Run(run_dir)
            else:
                r.run = Run(src)
            out.append(r)
        return out

    def check_same_data(self, runs: list[StudyRun]) -> None:
        """Every run on one dataset, split and image size (the metric network and the reference are shared)."""
        first = runs[0]
        keys = [f"data.{k}" for k in SHARED_DATA]
        if self.cfg.tokens.ref_split == "val":  # the validation part is carved with the run's seed
            keys.append("train.seed")
        for r in runs[1:]:
            for key in keys:
                section, name = key.split(".")
                a, b = (getattr(getattr(x.run.config, section), name) for x in (first, r))
                if a != b:
                    raise ConfigError(f"runs {first.name} and {r.name} differ in {key} ({a!r} vs {b!r}): the "
                                      "study compares encoders on one dataset, split and image size")

    # ------------------------------------------------------------------ shared stages

    def classifier_images(self, run: Run) -> tuple[torch.Tensor, torch.Tensor]:
        train = self.splits(run).train
        n = self.cfg.classifier.train_n
        if 0 < n < len(train):
            g = torch.Generator().manual_seed(stream_seed(self.cfg.seed, 0, 0, "classifier-subset"))
            idx = torch.randperm(len(train), generator=g)[:n].sort().values
            return train.images[idx], train.labels[idx]
        return train.images, train.labels

    def train_shared_net(self, run: Run, role: str) -> None:
        c = self.cfg.classifier
        images, labels = self.classifier_images(run)
        size, classes = run.config.data.image_size, self.num_classes(run)
        self.seed_init(role)
        if role == "metric":
            net, epochs = SmallResNet(classes, c.image_size or size, c.width, c.blocks), c.epochs
        else:
            net, epochs = SmallVGG(classes, size, c.perceptual_width, c.perceptual_stages), c.perceptual_epochs
        mean, std = channel_stats(images, generator=torch.Generator().manual_seed(self.cfg.seed))
        train_classifier(net, images, labels, mean, std, epochs=epochs, batch_size=c.batch_size, lr=c.lr,
                         holdout=c.holdout, seed=stream_seed(self.cfg.seed, 0, 0, role), device=str(self.device),
                         progress=self.progress)
        save_classifier(net.cpu(), self.out / "shared" / f"{role}.safetensors", role, dataset=run.config.data.name,
                        split=self.splits(run).train.split, n_images=len(labels))

    def real_grid(self, run: Run) -> None:
        s = self.cfg.sample
        data = getattr(self.splits(run), self.cfg.tokens.ref_split)
        images = resize_uint8(data.images, run.config.data.image_size)
        save_png(row_grid(class_rows(images, data.labels, s.grid_classes, s.grid_cols), s.grid_cols),
                 self.out / "real.png")

    def shared_stages(self, first: StudyRun) -> dict[str, Marker]:
        data = {"data": dataclasses.asdict(first.run.config.data), "seed": first.run.config.train.seed}
        c = dataclasses.asdict(self.cfg.classifier)
        common = {k: c[k] for k in ("train_n", "batch_size", "lr", "holdout")}
        own = {"metric": {k: c[k] for k in ("image_size", "epochs", "width", "blocks")},
               "perceptual": {k: c[k] for k in ("perceptual_epochs", "perceptual_width", "perceptual_stages")}}
        markers = {}
        for role in ("metric", "perceptual"):
            outputs = [self.out / "shared" / f"{role}.safetensors", self.out / "shared" / f"{role}.json"]
            options = {**data, **common, **own[role], "study_seed": self.cfg.seed}
            markers[role] = self.shared.run(role, options, [], outputs,
                                            lambda role=role: self.train_shared_net(first.run, role))
        grid = {**data, "ref_split": self.cfg.tokens.ref_split, "cols": self.cfg.sample.grid_cols,
                "classes": self.cfg.sample.grid_classes}
        self.shared.run("real_grid", grid, [], [self.out / "real.png"], lambda: self.real_grid(first.run))
        self.shared.write_timings()
        return markers

    def net(self, role: str):
        if role not in self._nets:
            self._nets[role] = load_classifier(self.out / "shared" / f"{role}.safetensors", role=role,
                                               device=str(self.device))
        return self._nets[role]

    # ------------------------------------------------------------------ per-run stages

    def tokens(self, r: StudyRun) -> None:
        t = self.cfg.tokens
        for which, split, limit in (("train", "train", t.train_n), ("ref", t.ref_split, t.ref_n)):
            extract_tokens(r.run.path, r.path("tokens", which), split=split, encoder=t.encoder,
                           checkpoint=t.checkpoint, limit=limit, shard_size=t.shard_size, device=str(self.device),
                           progress=self.progress, batch_size=t.batch_size, dtype=t.dtype, seed=self.cfg.seed)

    def shard_batches(self, shards: TokenShards, batch_size: int, g: torch.Generator | None):
        """(maps, labels) batches, one shard in memory at a time: shards and rows shuffled by ``g`` (or in order)."""
        specs = shards.manifest["shards"]
        order = torch.randperm(len(specs), generator=g).tolist() if g is not None else range(len(specs))
        for i in order:
            maps, labels = shards.load(torch.arange(specs[i]["start"], specs[i]["stop"]))
            rows = torch.randperm(len(labels), generator=g) if g is not None else torch.arange(len(labels))
            for b in rows.split(batch_size):
                yield maps[b].to(self.device), labels[b]

    def vae(self, r: StudyRun) -> None:
        v = self.cfg.vae
        shards, ref = TokenShards(r.path("tokens", "train")), TokenShards(r.path("tokens", "ref"))
        self.seed_init("vae")
        vae = EmbeddingVAE(shards.D, v.latent_channels, v.hidden or None, v.kl_weight).to(self.device)
        opt = torch.optim.Adam(vae.parameters(), lr=v.lr)
        g_cpu, g = torch.Generator().manual_seed(stream_seed(self.cfg.seed, 0, 0, "vae-order")), self.generator("vae")
        history: dict[str, list[float]] = {"loss": [], "recon": [], "kl": []}
        for _ in tqdm(range(v.epochs), desc=f"vae ({r.name})", disable=not self.progress):
            sums = torch.zeros(3, device=self.device)
            count = 0
            for x, _ in self.shard_batches(shards, v.batch_size, g_cpu):
                loss, parts = vae.loss(x, generator=g)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums += torch.stack([loss.detach(), parts["recon"], parts["kl"]]) * len(x)
                count += len(x)
            for k, s in zip(history, (sums / max(count, 1)).tolist()):
                history[k].append(s)
        vae.eval()
        with torch.no_grad():
            err = [((vae.decode(vae.encode(x, sample=False)) - x) ** 2).mean(dim=(1, 2, 3)).cpu()
                   for x, _ in self.shard_batches(ref, v.batch_size, None)]
            var = [x.var(dim=(0, 2, 3)).mean().cpu() for x, _ in self.shard_batches(ref, 4096, None)]
        save_tensors(r.path("vae.safetensors"), vae.state_dict())
        write_json(r.path("vae.json"), {"D": shards.D, "K": shards.K, **dataclasses.asdict(v), "history": history,
                                        "ref_mse": float(torch.cat(err).mean()),  # held-out reconstruction error
                                        "ref_token_var": float(torch.stack(var).mean())})  # ... and its scale

    def load_vae(self, r: StudyRun) -> EmbeddingVAE:
        meta, v = read_json(r.path("vae.json")), self.cfg.vae
        vae = EmbeddingVAE(meta["D"], v.latent_channels, v.hidden or None, v.kl_weight)
        vae.load_state_dict(load_tensors(r.path("vae.safetensors")))
        return vae.to(self.device).eval()

    @torch.no_grad()
    def latents(self, r: StudyRun) -> None:
        shards, vae, g = TokenShards(r.path("tokens", "train")), self.load_vae(r), self.generator("latents")
        means, logvars, zs, labels = [], [], [], []
        for x, y in self.shard_batches(shards, 1024, None):
            mean, logvar = vae.moments(x)
            means.append(mean.cpu())
            logvars.append(logvar.cpu())
            zs.append(EmbeddingVAE.reparameterise(mean, logvar, g).cpu())
            labels.append(y)
        z = torch.cat(zs)
        save_tensors(r.path("latents.safetensors"), {
            "mean": torch.cat(means), "logvar": torch.cat(logvars), "z": z, "labels": torch.cat(labels),
            "norm_mean": z.mean(dim=(0, 2, 3)), "norm_std": z.std(dim=(0, 2, 3))})

    def decoder(self, r: StudyRun) -> None:
        d, lat = self.cfg.decoder, load_tensors(r.path("latents.safetensors"))
        images, _ = self.token_images(r, "train")
        k = lat["z"].shape[-1]
        self.seed_init("decoder")
        dec = PixelDecoder(lat["z"].shape[1], r.run.config.data.image_size, k, d.width, d.num_res_blocks)
        mean, std = r.run.stats()
        snaps = sorted({s for s in d.snapshot_steps if s <= d.steps} | {d.steps})
        hist = train_decoder(dec, lat["z"], images, self.net("perceptual"), mean, std, steps=d.steps,
                             batch_size=d.batch_size, lr=d.lr, perceptual_weight=d.perceptual_weight,
                             adversarial_weight=d.adversarial_weight, snapshot_every=snaps,
                             snapshot_size=d.snapshot_size, log_every=max(1, d.steps // 100),
                             seed=stream_seed(self.cfg.seed, 0, 0, "decoder"), device=str(self.device),
                             progress=self.progress)
        save_tensors(r.path("decoder.safetensors"), dec.state_dict())
        write_json(r.path("decoder.json"), {"in_channels": dec.in_channels, "grid_size": k, **dataclasses.asdict(d),
                                            "log_steps": hist.steps, "losses": hist.losses,
                                            "snapshot_rows": ["real"] + [f"step {s}" for s in hist.snapshot_steps]})
        save_png(row_grid([hist.targets] + hist.snapshots, d.snapshot_size), r.path("reconstructions.png"))

    def load_decoder(self, r: StudyRun) -> PixelDecoder:
        meta = read_json(r.path("decoder.json"))
        dec = PixelDecoder(meta["in_channels"], r.run.config.data.image_size, meta["grid_size"], meta["width"],
                           meta["num_res_blocks"])
        dec.load_state_dict(load_tensors(r.path("decoder.safetensors")))
        return dec.to(self.device).eval()

    def latent_diffusion(self, r: StudyRun, mode: str, channels: int, size: int) -> LatentDiffusion:
        u, dcfg = self.cfg.unet, self.cfg.diffusion
        classes = self.num_classes(r.run) if mode == "cond" else 0
        unet = UNet(channels, size, u.base_channels, tuple(u.channel_mults), u.num_res_blocks, u.attention,
                    u.num_heads, classes, u.dropout)
        schedule = DiffusionSchedule.from_options(dcfg.schedule, dcfg.timesteps)
        return LatentDiffusion(unet, schedule, dcfg.prediction, dcfg.p_uncond).to(self.device)

    def diffusion(self, r: StudyRun, mode: str) -> None:
        dcfg, lat = self.cfg.diffusion, load_tensors(r.path("latents.safetensors"))
        mean, logvar = lat["mean"].to(self.device), lat["logvar"].to(self.device)
        labels = lat["labels"].to(self.device)
        norm = LatentNorm(lat["norm_mean"], lat["norm_std"]).to(self.device)
        self.seed_init(f"diffusion-{mode}")
        ld = self.latent_diffusion(r, mode, mean.shape[1], mean.shape[-1])
        params = list(ld.unet.parameters())
        ema = [p.detach().clone() for p in params]
        opt = torch.optim.AdamW(params, lr=dcfg.lr, weight_decay=0.0)
        g, losses, total = self.generator(f"diffusion-{mode}"), [], torch.zeros((), device=self.device)
        log_every = max(1, dcfg.steps // 100)
        for step in tqdm(range(dcfg.steps), desc=f"diffusion {mode} ({r.name})", disable=not self.progress):
            for group in opt.param_groups:  # linear warm-up, then constant
                group["lr"] = dcfg.lr * min(1.0, (step + 1) / max(dcfg.warmup, 1))
            idx = torch.randint(mean.shape[0], (dcfg.batch_size,), generator=g, device=self.device)
            z0 = norm.normalize(EmbeddingVAE.reparameterise(mean[idx], logvar[idx], g))  # (B, d, K, K), unit scale
            loss = ld.loss(z0, labels[idx] if mode == "cond" else None, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if dcfg.ema > 0:  # LDM's LitEma warm-up: decay min(ema, (1 + n) / (10 + n))
                with torch.no_grad():
                    torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - min(dcfg.ema, (step + 1) / (step + 10)))
            total += loss.detach()
            if (step + 1) % log_every == 0:
                losses.append(float(total) / log_every)  # one host sync per log_every steps
                total.zero_()
        if dcfg.ema > 0:
            with torch.no_grad():
                torch._foreach_copy_(params, ema)
        save_tensors(r.path(f"diffusion_{mode}.safetensors"), ld.unet.state_dict())
        write_json(r.path(f"diffusion_{mode}.json"), {"num_classes": ld.num_classes, **dataclasses.asdict(dcfg),
                                                       "unet": dataclasses.asdict(self.cfg.unet),
                                                       "loss_every": log_every, "loss": losses})

    @torch.no_grad()
    def samples(self, r: StudyRun, mode: str) -> None:
        s, lat = self.cfg.sample, load_tensors(r.path("latents.safetensors"))
        shape = tuple(lat["z"].shape[1:])  # (d, K, K)
        ld = self.latent_diffusion(r, mode, shape[0], shape[-1])
        ld.unet.load_state_dict(load_tensors(r.path(f"diffusion_{mode}.safetensors")))
        ld.eval()
        norm, dec = LatentNorm(lat["norm_mean"], lat["norm_std"]).to(self.device), self.load_decoder(r)
        mean, std = r.run.stats()
        labels = torch.arange(s.n) % ld.num_classes if mode == "cond" else None
        images = []
        for b, start in enumerate(tqdm(range(0, s.n, s.batch_size), desc=f"samples {mode} ({r.name})",
                                       disable=not self.progress)):
            n = min(s.batch_size, s.n - start)
            what = labels[start : start + n].to(self.device) if labels is not None else n
            z = ld.sample(what, shape, steps=s.steps, sampler=s.sampler, guidance=s.guidance if labels is not None
                          else 0.0, generator=self.generator(f"sample-{mode}", b))
            images.append(to_uint8(dec(norm.denormalize(z)), mean, std))
        images = torch.cat(images)
        tensors = {"images": images} if labels is None else {"images": images, "labels": labels}
        save_tensors(r.path(f"samples_{mode}.safetensors"), tensors)
        if labels is None:
            grid = image_grid(images[: s.grid_rows * s.grid_cols], s.grid_cols)
        else:
            grid = row_grid(class_rows(images, labels, s.grid_classes, s.grid_cols), s.grid_cols)
        save_png(grid, r.path(f"samples_{mode}.png"))

    # ------------------------------------------------------------------ metrics

    @torch.no_grad()
    def features(self, images: torch.Tensor, network: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits) of uint8 images: the metric SmallResNet's, or InceptionV3's pool and unbiased logits."""
        bs, feats, logits = self.cfg.metrics.batch_size, [], []
        for start in range(0, images.shape[0], bs):
            x = images[start : start + bs]
            if network == "resnet":
                net = self.net("metric")
                f, lg = net.features_and_logits(net.prepare(x))
            else:
                out = self.inception()(x.to(self.device).float() / 255.0)
                f, lg = out.pool, out.logits_unbiased
            feats.append(f.float().cpu())
            logits.append(lg.float().cpu())
        return torch.cat(feats), torch.cat(logits)

    def real_features(self, r: StudyRun, which: str, network: str) -> tuple[torch.Tensor, torch.Tensor]:
        key = (r.name, which, network)
        if key not in self._features:
            self._features[key] = self.features(self.token_images(r, which)[0], network)
        return self._features[key]

    def inception(self):
        if "inception" not in self._nets:
            self._nets["inception"] = load_fid_inception(self.inception_weights).to(self.device)
        return self._nets["inception"]

    def metrics(self, r: StudyRun, mode: str) -> None:
        m, samples = self.cfg.metrics, load_tensors(r.path(f"samples_{mode}.safetensors"))
        fake_f, fake_l = self.features(samples["images"], "resnet")
        ref_f, ref_l = self.real_features(r, "ref", "resnet")
        train_f, _ = self.real_features(r, "train", "resnet")
        splits = min(m.is_splits, fake_l.shape[0])
        precision, recall = precision_recall(ref_f, fake_f, k=m.k)
        out: dict[str, Any] = {
            "fd_resnet": frechet_distance(ref_f, fake_f),
            "resnet_score": inception_score(fake_l, splits)[0],
            "precision_resnet": precision, "recall_resnet": recall,
            "class_tv": class_histogram_tv(fake_l.argmax(1), ref_l.argmax(1), fake_l.shape[1]),
            "class_accuracy": (float((fake_l.argmax(1) == samples["labels"]).double().mean())
                               if "labels" in samples else None),
            "memorisation_ratio": memorisation(fake_f, train_f, ref_f).ratio,
            "real_resnet_score": inception_score(ref_l, min(m.is_splits, ref_l.shape[0]))[0],
            "n_samples": int(fake_f.shape[0]), "n_ref": int(ref_f.shape[0]), "n_train": int(train_f.shape[0]),
        }
        if self.inception_weights is not None:
            fake_f, fake_l = self.features(samples["images"], "inception")
            ref_f, _ = self.real_features(r, "ref", "inception")
            p, rc = precision_recall(ref_f, fake_f, k=m.k)
            out.update({"fd_inception": frechet_distance(ref_f, fake_f),
                        "inception_score": inception_score(fake_l, splits)[0],
                        "precision_inception": p, "recall_inception": rc})
        write_json(r.path(f"metrics_{mode}.json"), out)

    # ------------------------------------------------------------------ one run

    def run_stages(self, r: StudyRun, shared: dict[str, Marker]) -> None:
        c, st = self.cfg, r.stages
        ckpt = {"run": str(r.run.path.resolve()), "step": checkpoint_step(r.run.checkpoints_dir, c.tokens.checkpoint)}
        tok = st.run("tokens", {**dataclasses.asdict(c.tokens), **ckpt, "seed": c.seed}, [], [r.path("tokens")],
                     lambda: self.tokens(r))
        vae = st.run("vae", {**dataclasses.asdict(c.vae), "seed": c.seed}, [tok],
                     [r.path("vae.safetensors"), r.path("vae.json")], lambda: self.vae(r))
        lat = st.run("latents", {"seed": c.seed}, [vae], [r.path("latents.safetensors")], lambda: self.latents(r))
        dec = st.run("decoder", {**dataclasses.asdict(c.decoder), "seed": c.seed}, [lat, shared["perceptual"]],
                     [r.path(f) for f in ("decoder.safetensors", "decoder.json", "reconstructions.png")],
                     lambda: self.decoder(r))
        inception = None
        if self.inception_weights is not None:
            inception = {"path": str(self.inception_weights.resolve()), "bytes": self.inception_weights.stat().st_size}
        for mode in MODES:
            diff = st.run(f"diffusion_{mode}", {**dataclasses.asdict(c.diffusion), "unet": dataclasses.asdict(c.unet),
                                                "seed": c.seed}, [lat],
                          [r.path(f"diffusion_{mode}.safetensors"), r.path(f"diffusion_{mode}.json")],
                          lambda mode=mode: self.diffusion(r, mode))
            smp = st.run(f"samples_{mode}", {**dataclasses.asdict(c.sample), "seed": c.seed}, [diff, dec],
                         [r.path(f"samples_{mode}.safetensors"), r.path(f"samples_{mode}.png")],
                         lambda mode=mode: self.samples(r, mode))
            st.run(f"metrics_{mode}", {**dataclasses.asdict(c.metrics), "inception": inception},
                   [smp, tok, shared["metric"]], [r.path(f"metrics_{mode}.json")],
                   lambda mode=mode: self.metrics(r, mode))
        st.write_timings()


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, size, size), as the models see them (bilinear, antialiased)."""
    x = resize_normalize(images, size, torch.zeros(3), torch.ones(3))
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


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

    ``runs``: run directories of ``pjepa train`` or imported-encoder folders (``pjepa.generative.imported``),
    all on one dataset, split and image size. ``cfg``: a ``StudyConfig`` (default: the cifar10_cpu
    preset). ``inception_weights``: a local FID InceptionV3 file, for InceptionV3 columns too. ``echo``
    gets one line per stage (done / skipped, with its time).
    """
    cfg = cfg if cfg is not None else load_study_config("cifar10_cpu")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if inception_weights is not None and not Path(inception_weights).is_file():
        raise ConfigError(f"--inception-weights {inception_weights}: no such file")
    atomic_write_bytes(out / "study.yaml", yaml.safe_dump(study_config_to_dict(cfg), sort_keys=False).encode())
    study = Study(cfg, out, device, progress, echo,
                  Path(inception_weights) if inception_weights is not None else None)
    items = study.study_runs(runs)
    study.check_same_data(items)
    shared = study.shared_stages(items[0])
    for r in items:
        study.run_stages(r, shared)
    entries = [TableEntry(r.name, describe_encoder(r), method_label(r.run.config), r.folder) for r in items]
    return write_table(out, cfg, entries, study.inception_weights)
