"""The study's stages as plain functions, and the order they run in: ``SHARED_STAGES``, then ``RUN_STAGES`` per run.

Every function takes the ``Study`` (options, device, what is loaded once) and the ``StudyRun`` it works on
(for the shared stages: the first run, whose dataset every run shares) and writes the files its ``Stage``
declares; ``stages.run_stages`` skips those that are done. A stage's options are what its key hashes: change
one and that stage and every stage after it that depends on it run again.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from pjepa.data import channel_stats, resize_normalize
from pjepa.models.diffusion import DiffusionSchedule
from pjepa.runs import checkpoint_step
from pjepa.studies.generative.classifier import SmallResNet, SmallVGG, save_classifier, train_classifier
from pjepa.studies.generative.decoder import PixelDecoder, to_uint8, train_decoder
from pjepa.studies.generative.grids import class_rows, image_grid, row_grid, save_png
from pjepa.studies.generative.latent_diffusion import LatentDiffusion
from pjepa.studies.generative.metrics import (
    class_histogram_tv,
    frechet_distance,
    inception_score,
    memorisation,
    precision_recall,
)
from pjepa.studies.generative.stages import Stage, load_tensors, read_json, save_tensors, write_json
from pjepa.studies.generative.table import MODES
from pjepa.studies.generative.tokens import TokenShards, extract_tokens
from pjepa.studies.generative.unet import UNet
from pjepa.studies.generative.vae import EmbeddingVAE, LatentNorm
from pjepa.utils import stream_seed

if TYPE_CHECKING:  # the study imports this module: its types only, for annotations
    from pjepa.studies.generative.study import Study, StudyRun


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, size, size), as the models see them (bilinear, antialiased)."""
    x = resize_normalize(images, size, torch.zeros(3), torch.ones(3))
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


# ---------------------------------------------------------------------- shared stages (OUT/shared, OUT/real.png)


def classifier_images(study: Study, r: StudyRun) -> tuple[torch.Tensor, torch.Tensor]:
    train = study.splits(r.run).train
    n = study.cfg.classifier.train_n
    if 0 < n < len(train):
        g = torch.Generator().manual_seed(stream_seed(study.cfg.seed, 0, 0, "classifier-subset"))
        idx = torch.randperm(len(train), generator=g)[:n].sort().values
        return train.images[idx], train.labels[idx]
    return train.images, train.labels


def shared_net(study: Study, r: StudyRun, role: str) -> None:
    """Train the metric SmallResNet or the perceptual SmallVGG from scratch on the runs' train split."""
    c, run = study.cfg.classifier, r.run
    images, labels = classifier_images(study, r)
    size, classes = run.config.data.image_size, study.num_classes(run)
    study.seed_init(role)
    if role == "metric":
        net, epochs = SmallResNet(classes, c.image_size or size, c.width, c.blocks), c.epochs
    else:
        net, epochs = SmallVGG(classes, size, c.perceptual_width, c.perceptual_stages), c.perceptual_epochs
    mean, std = channel_stats(images, generator=torch.Generator().manual_seed(study.cfg.seed))
    train_classifier(net, images, labels, mean, std, epochs=epochs, batch_size=c.batch_size, lr=c.lr,
                     holdout=c.holdout, seed=stream_seed(study.cfg.seed, 0, 0, role), device=str(study.device),
                     progress=study.progress)
    save_classifier(net.cpu(), study.out / "shared" / f"{role}.safetensors", role, dataset=run.config.data.name,
                    split=study.splits(run).train.split, n_images=len(labels))


def real_grid(study: Study, r: StudyRun) -> None:
    s = study.cfg.sample
    data = getattr(study.splits(r.run), study.cfg.tokens.ref_split)
    images = resize_uint8(data.images, r.run.config.data.image_size)
    save_png(row_grid(class_rows(images, data.labels, s.grid_classes, s.grid_cols), s.grid_cols),
             study.out / "real.png")


def _data_options(r: StudyRun) -> dict[str, Any]:
    return {"data": dataclasses.asdict(r.run.config.data), "seed": r.run.config.train.seed}


def _net_options(study: Study, r: StudyRun, role: str) -> dict[str, Any]:
    c = dataclasses.asdict(study.cfg.classifier)
    common = {k: c[k] for k in ("train_n", "batch_size", "lr", "holdout")}
    own = {"metric": ("image_size", "epochs", "width", "blocks"),
           "perceptual": ("perceptual_epochs", "perceptual_width", "perceptual_stages")}[role]
    return {**_data_options(r), **common, **{k: c[k] for k in own}, "study_seed": study.cfg.seed}


def _grid_options(study: Study, r: StudyRun) -> dict[str, Any]:
    return {**_data_options(r), "ref_split": study.cfg.tokens.ref_split, "cols": study.cfg.sample.grid_cols,
            "classes": study.cfg.sample.grid_classes}


# ---------------------------------------------------------------------- per-run stages (OUT/<run>)


def tokens(study: Study, r: StudyRun) -> None:
    t = study.cfg.tokens
    for which, split, limit in (("train", "train", t.train_n), ("ref", t.ref_split, t.ref_n)):
        extract_tokens(r.run.path, r.path("tokens", which), split=split, encoder=t.encoder,
                       checkpoint=t.checkpoint, limit=limit, shard_size=t.shard_size, device=str(study.device),
                       progress=study.progress, batch_size=t.batch_size, dtype=t.dtype, seed=study.cfg.seed)


def shard_batches(study: Study, shards: TokenShards, batch_size: int, g: torch.Generator | None):
    """(maps, labels) batches, one shard in memory at a time: shards and rows shuffled by ``g`` (or in order)."""
    specs = shards.manifest["shards"]
    order = torch.randperm(len(specs), generator=g).tolist() if g is not None else range(len(specs))
    for i in order:
        maps, labels = shards.load(torch.arange(specs[i]["start"], specs[i]["stop"]))
        rows = torch.randperm(len(labels), generator=g) if g is not None else torch.arange(len(labels))
        for b in rows.split(batch_size):
            yield maps[b].to(study.device), labels[b]


def vae(study: Study, r: StudyRun) -> None:
    v, seed = study.cfg.vae, study.cfg.seed
    shards, ref = TokenShards(r.path("tokens", "train")), TokenShards(r.path("tokens", "ref"))
    study.seed_init("vae")
    model = EmbeddingVAE(shards.D, v.latent_channels, v.hidden or None, v.kl_weight).to(study.device)
    opt = torch.optim.Adam(model.parameters(), lr=v.lr)
    g_cpu, g = torch.Generator().manual_seed(stream_seed(seed, 0, 0, "vae-order")), study.generator("vae")
    history: dict[str, list[float]] = {"loss": [], "recon": [], "kl": []}
    for _ in tqdm(range(v.epochs), desc=f"vae ({r.name})", disable=not study.progress):
        sums = torch.zeros(3, device=study.device)
        count = 0
        for x, _ in shard_batches(study, shards, v.batch_size, g_cpu):
            loss, parts = model.loss(x, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([loss.detach(), parts["recon"], parts["kl"]]) * len(x)
            count += len(x)
        for k, s in zip(history, (sums / max(count, 1)).tolist()):
            history[k].append(s)
    model.eval()
    with torch.no_grad():
        err = [((model.decode(model.encode(x, sample=False)) - x) ** 2).mean(dim=(1, 2, 3)).cpu()
               for x, _ in shard_batches(study, ref, v.batch_size, None)]
        var = [x.var(dim=(0, 2, 3)).mean().cpu() for x, _ in shard_batches(study, ref, 4096, None)]
    save_tensors(r.path("vae.safetensors"), model.state_dict())
    write_json(r.path("vae.json"), {"D": shards.D, "K": shards.K, **dataclasses.asdict(v), "history": history,
                                    "ref_mse": float(torch.cat(err).mean()),  # held-out reconstruction error
                                    "ref_token_var": float(torch.stack(var).mean())})  # ... and its scale


def load_vae(study: Study, r: StudyRun) -> EmbeddingVAE:
    meta, v = read_json(r.path("vae.json")), study.cfg.vae
    model = EmbeddingVAE(meta["D"], v.latent_channels, v.hidden or None, v.kl_weight)
    model.load_state_dict(load_tensors(r.path("vae.safetensors")))
    return model.to(study.device).eval()


@torch.no_grad()
def latents(study: Study, r: StudyRun) -> None:
    shards, model, g = TokenShards(r.path("tokens", "train")), load_vae(study, r), study.generator("latents")
    means, logvars, zs, labels = [], [], [], []
    for x, y in shard_batches(study, shards, 1024, None):
        mean, logvar = model.moments(x)
        means.append(mean.cpu())
        logvars.append(logvar.cpu())
        zs.append(EmbeddingVAE.reparameterise(mean, logvar, g).cpu())
        labels.append(y)
    z = torch.cat(zs)
    save_tensors(r.path("latents.safetensors"), {
        "mean": torch.cat(means), "logvar": torch.cat(logvars), "z": z, "labels": torch.cat(labels),
        "norm_mean": z.mean(dim=(0, 2, 3)), "norm_std": z.std(dim=(0, 2, 3))})


def decoder(study: Study, r: StudyRun) -> None:
    d, lat = study.cfg.decoder, load_tensors(r.path("latents.safetensors"))
    images, _ = study.token_images(r, "train")
    k = lat["z"].shape[-1]
    study.seed_init("decoder")
    dec = PixelDecoder(lat["z"].shape[1], r.run.config.data.image_size, k, d.width, d.num_res_blocks)
    mean, std = r.run.stats()
    snaps = sorted({s for s in d.snapshot_steps if s <= d.steps} | {d.steps})
    hist = train_decoder(dec, lat["z"], images, study.net("perceptual"), mean, std, steps=d.steps,
                         batch_size=d.batch_size, lr=d.lr, perceptual_weight=d.perceptual_weight,
                         snapshot_every=snaps, snapshot_size=d.snapshot_size, log_every=max(1, d.steps // 100),
                         seed=stream_seed(study.cfg.seed, 0, 0, "decoder"), device=str(study.device),
                         progress=study.progress)
    save_tensors(r.path("decoder.safetensors"), dec.state_dict())
    write_json(r.path("decoder.json"), {"in_channels": dec.in_channels, "grid_size": k, **dataclasses.asdict(d),
                                        "log_steps": hist.steps, "losses": hist.losses,
                                        "snapshot_rows": ["real"] + [f"step {s}" for s in hist.snapshot_steps]})
    save_png(row_grid([hist.targets] + hist.snapshots, d.snapshot_size), r.path("reconstructions.png"))


def load_decoder(study: Study, r: StudyRun) -> PixelDecoder:
    meta = read_json(r.path("decoder.json"))
    dec = PixelDecoder(meta["in_channels"], r.run.config.data.image_size, meta["grid_size"], meta["width"],
                       meta["num_res_blocks"])
    dec.load_state_dict(load_tensors(r.path("decoder.safetensors")))
    return dec.to(study.device).eval()


def latent_diffusion(study: Study, r: StudyRun, mode: str, channels: int, size: int) -> LatentDiffusion:
    u, dcfg = study.cfg.unet, study.cfg.diffusion
    classes = study.num_classes(r.run) if mode == "cond" else 0
    unet = UNet(channels, size, u.base_channels, tuple(u.channel_mults), u.num_res_blocks, u.attention,
                u.num_heads, classes, u.dropout)
    schedule = DiffusionSchedule.from_options(dcfg.schedule, dcfg.timesteps)
    return LatentDiffusion(unet, schedule, dcfg.prediction, dcfg.p_uncond).to(study.device)


def diffusion(study: Study, r: StudyRun, mode: str) -> None:
    dcfg, lat, dev = study.cfg.diffusion, load_tensors(r.path("latents.safetensors")), study.device
    mean, logvar, labels = lat["mean"].to(dev), lat["logvar"].to(dev), lat["labels"].to(dev)
    norm = LatentNorm(lat["norm_mean"], lat["norm_std"]).to(dev)
    study.seed_init(f"diffusion-{mode}")
    ld = latent_diffusion(study, r, mode, mean.shape[1], mean.shape[-1])
    params = list(ld.unet.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=dcfg.lr, weight_decay=0.0)
    g, losses, total = study.generator(f"diffusion-{mode}"), [], torch.zeros((), device=dev)
    log_every = max(1, dcfg.steps // 100)
    for step in tqdm(range(dcfg.steps), desc=f"diffusion {mode} ({r.name})", disable=not study.progress):
        for group in opt.param_groups:  # linear warm-up, then constant
            group["lr"] = dcfg.lr * min(1.0, (step + 1) / max(dcfg.warmup, 1))
        idx = torch.randint(mean.shape[0], (dcfg.batch_size,), generator=g, device=dev)
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
                                                   "unet": dataclasses.asdict(study.cfg.unet),
                                                   "loss_every": log_every, "loss": losses})


@torch.no_grad()
def samples(study: Study, r: StudyRun, mode: str) -> None:
    s, lat = study.cfg.sample, load_tensors(r.path("latents.safetensors"))
    shape = tuple(lat["z"].shape[1:])  # (d, K, K)
    ld = latent_diffusion(study, r, mode, shape[0], shape[-1])
    ld.unet.load_state_dict(load_tensors(r.path(f"diffusion_{mode}.safetensors")))
    ld.eval()
    norm, dec = LatentNorm(lat["norm_mean"], lat["norm_std"]).to(study.device), load_decoder(study, r)
    mean, std = r.run.stats()
    labels = torch.arange(s.n) % ld.num_classes if mode == "cond" else None
    images = []
    for b, start in enumerate(tqdm(range(0, s.n, s.batch_size), desc=f"samples {mode} ({r.name})",
                                   disable=not study.progress)):
        n = min(s.batch_size, s.n - start)
        what = labels[start : start + n].to(study.device) if labels is not None else n
        z = ld.sample(what, shape, steps=s.steps, sampler=s.sampler, guidance=s.guidance if labels is not None
                      else 0.0, generator=study.generator(f"sample-{mode}", b))
        images.append(to_uint8(dec(norm.denormalize(z)), mean, std))
    images = torch.cat(images)
    tensors = {"images": images} if labels is None else {"images": images, "labels": labels}
    save_tensors(r.path(f"samples_{mode}.safetensors"), tensors)
    if labels is None:
        grid = image_grid(images[: s.grid_rows * s.grid_cols], s.grid_cols)
    else:
        grid = row_grid(class_rows(images, labels, s.grid_classes, s.grid_cols), s.grid_cols)
    save_png(grid, r.path(f"samples_{mode}.png"))


@torch.no_grad()
def features(study: Study, images: torch.Tensor, network: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of uint8 images: the metric SmallResNet's, or InceptionV3's pool and unbiased logits."""
    bs, feats, logits = study.cfg.metrics.batch_size, [], []
    for start in range(0, images.shape[0], bs):
        x = images[start : start + bs]
        if network == "resnet":
            net = study.net("metric")
            f, lg = net.features_and_logits(net.prepare(x))
        else:
            out = study.inception()(x.to(study.device).float() / 255.0)
            f, lg = out.pool, out.logits_unbiased
        feats.append(f.float().cpu())
        logits.append(lg.float().cpu())
    return torch.cat(feats), torch.cat(logits)


def real_features(study: Study, r: StudyRun, which: str, network: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``features`` of the images encoded in ``tokens/<which>``, computed once per study."""
    return study.cached(("features", r.name, which, network),
                        lambda: features(study, study.token_images(r, which)[0], network))


def metrics(study: Study, r: StudyRun, mode: str) -> None:
    m, samples_ = study.cfg.metrics, load_tensors(r.path(f"samples_{mode}.safetensors"))
    fake_f, fake_l = features(study, samples_["images"], "resnet")
    ref_f, ref_l = real_features(study, r, "ref", "resnet")
    train_f, _ = real_features(study, r, "train", "resnet")
    splits = min(m.is_splits, fake_l.shape[0])
    precision, recall = precision_recall(ref_f, fake_f, k=m.k)
    out: dict[str, Any] = {
        "fd_resnet": frechet_distance(ref_f, fake_f),
        "resnet_score": inception_score(fake_l, splits)[0],
        "precision_resnet": precision, "recall_resnet": recall,
        "class_tv": class_histogram_tv(fake_l.argmax(1), ref_l.argmax(1), fake_l.shape[1]),
        "class_accuracy": (float((fake_l.argmax(1) == samples_["labels"]).double().mean())
                           if "labels" in samples_ else None),
        "memorisation_ratio": memorisation(fake_f, train_f, ref_f).ratio,
        "real_resnet_score": inception_score(ref_l, min(m.is_splits, ref_l.shape[0]))[0],
        "n_samples": int(fake_f.shape[0]), "n_ref": int(ref_f.shape[0]), "n_train": int(train_f.shape[0]),
    }
    if study.inception_weights is not None:
        fake_f, fake_l = features(study, samples_["images"], "inception")
        ref_f, _ = real_features(study, r, "ref", "inception")
        p, rc = precision_recall(ref_f, fake_f, k=m.k)
        out.update({"fd_inception": frechet_distance(ref_f, fake_f),
                    "inception_score": inception_score(fake_l, splits)[0],
                    "precision_inception": p, "recall_inception": rc})
    write_json(r.path(f"metrics_{mode}.json"), out)


# ---------------------------------------------------------------------- the options each stage's key hashes


def _tokens_options(study: Study, r: StudyRun) -> dict[str, Any]:
    t = study.cfg.tokens
    return {**dataclasses.asdict(t), "run": str(r.run.path.resolve()),
            "step": checkpoint_step(r.run.checkpoints_dir, t.checkpoint), "seed": study.cfg.seed}


def _options(section: str, **extra: Any):
    """The options of ``study.cfg.<section>`` (none for "") and the study's seed, plus ``extra``."""
    def options(study: Study, r: StudyRun) -> dict[str, Any]:
        own = dataclasses.asdict(getattr(study.cfg, section)) if section else {}
        return {**own, **extra, "seed": study.cfg.seed}
    return options


def _diffusion_options(study: Study, r: StudyRun) -> dict[str, Any]:
    return {**dataclasses.asdict(study.cfg.diffusion), "unet": dataclasses.asdict(study.cfg.unet),
            "seed": study.cfg.seed}


def _metrics_options(study: Study, r: StudyRun) -> dict[str, Any]:
    w = study.inception_weights
    inception = {"path": str(w.resolve()), "bytes": w.stat().st_size} if w is not None else None
    return {**dataclasses.asdict(study.cfg.metrics), "inception": inception}


def _mode_stages(mode: str) -> tuple[Stage, ...]:
    """diffusion, samples and metrics of one generation mode ("uncond" / "cond")."""
    return (
        Stage(f"diffusion_{mode}", _diffusion_options, ("latents",),
              (f"diffusion_{mode}.safetensors", f"diffusion_{mode}.json"), partial(diffusion, mode=mode)),
        Stage(f"samples_{mode}", _options("sample"), (f"diffusion_{mode}", "decoder"),
              (f"samples_{mode}.safetensors", f"samples_{mode}.png"), partial(samples, mode=mode)),
        Stage(f"metrics_{mode}", _metrics_options, (f"samples_{mode}", "tokens", "shared/metric"),
              (f"metrics_{mode}.json",), partial(metrics, mode=mode)),
    )


#: Once per study, in OUT (the first run's data, which every run shares).
SHARED_STAGES: tuple[Stage, ...] = (
    Stage("metric", partial(_net_options, role="metric"), (),
          ("shared/metric.safetensors", "shared/metric.json"), partial(shared_net, role="metric")),
    Stage("perceptual", partial(_net_options, role="perceptual"), (),
          ("shared/perceptual.safetensors", "shared/perceptual.json"), partial(shared_net, role="perceptual")),
    Stage("real_grid", _grid_options, (), ("real.png",), real_grid),
)

#: Per run, in OUT/<run>; the decoder and the metrics depend on the shared networks too.
RUN_STAGES: tuple[Stage, ...] = (
    Stage("tokens", _tokens_options, (), ("tokens",), tokens),
    Stage("vae", _options("vae"), ("tokens",), ("vae.safetensors", "vae.json"), vae),
    Stage("latents", _options(""), ("vae",), ("latents.safetensors",), latents),
    # adversarial_weight: the decoder option removed since (always 0 in the presets), kept in the key so that a
    # study folder written before then resumes without retraining its decoders and everything after them
    Stage("decoder", _options("decoder", adversarial_weight=0.0), ("latents", "shared/perceptual"),
          ("decoder.safetensors", "decoder.json", "reconstructions.png"), decoder),
    *(stage for mode in MODES for stage in _mode_stages(mode)),
)
