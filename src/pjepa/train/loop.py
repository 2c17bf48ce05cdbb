"""One training loop for every method (I-JEPA now; N-JEPA and MAE later).

Per step: fetch a batch of uint8 images already on the device, augment it on
the device (random resized crop + flip), ``loss = method(x, generator)``,
AdamW step with warmup + cosine lr and cosine weight decay, gradient clipping,
then the EMA pairs the method declares (one ``_foreach`` call).

Reproducibility and exact resume: the data order of an epoch, the
augmentation and the masks of a step come from generators re-seeded from
``(seed, epoch)`` / ``(seed, step, rank)``, and the schedules are pure
functions of the step, so a resumed run needs only the weights, the optimiser
state and the step to continue exactly where an uninterrupted run would be.

No host syncs in the step: metrics accumulate on the device and are read every
``log_every`` steps, which is also when a non-finite loss is detected; a
checkpoint is only written after that check, so a bad step can never
overwrite the last good checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pjepa.config import Config, dump_config
from pjepa.data import ImageDataset, channel_stats, load_dataset, random_resized_crop_flip
from pjepa.errors import ConfigError, PJepaError
from pjepa.eval.features import extract_features
from pjepa.eval.head_metrics import collect_pairs, head_metrics
from pjepa.eval.knn import knn_evaluate, require_labels
from pjepa.methods import Method, build_method
from pjepa.models import ema_update
from pjepa.train import schedules
from pjepa.train.checkpoint import load_checkpoint, load_weights_into, save_checkpoint
from pjepa.train.distributed import DistInfo, barrier, broadcast_flag, cleanup, init_distributed
from pjepa.train.logging import MetricsLogger
from pjepa.utils import git_commit, seed_everything, stream_seed


class NonFiniteLossError(PJepaError, RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""


@dataclass
class RunState:
    """What a checkpoint must restore besides weights and optimiser."""

    step: int = 0
    best_knn: float = -1.0
    history: list[dict[str, float]] = field(default_factory=list)  # periodic kNN results
    wall_seconds: float = 0.0  # training wall time so far (periodic evaluation included), across resumes


# --------------------------------------------------------------------------- set-up helpers


def load_data(cfg: Config) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """(pretraining split, kNN bank split, kNN query split); the bank is the train split by default."""
    d = cfg.data
    train = load_dataset(d.name, d.train_split, d.path, **d.options)
    bank = train if d.bank_split in (None, d.train_split) else load_dataset(d.name, d.bank_split, d.path, **d.options)
    val = load_dataset(d.name, d.val_split, d.path, **d.options)
    return train, bank, val


def data_stats(cfg: Config, train: ImageDataset, run_dir: Path, resume: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean/std from ``stats_samples`` train images, stored in the run dir."""
    path = run_dir / "data_stats.json"
    if resume and path.exists():
        s = json.loads(path.read_text())
        return torch.tensor(s["mean"]), torch.tensor(s["std"])
    g = torch.Generator().manual_seed(stream_seed(cfg.train.seed, 0, 0, "stats"))
    mean, std = channel_stats(train.images, cfg.data.stats_samples, generator=g)
    return mean, std


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Weight decay on matrices and convolutions only (not biases, norms, tokens)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "token" not in name else no_decay).append(p)
    return [{"params": decay, "wd_scale": 1.0}, {"params": no_decay, "wd_scale": 0.0}]


def build_optimizer(cfg: Config, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    fused = device.type == "cuda"
    return torch.optim.AdamW(param_groups(model), lr=cfg.optim.lr, betas=cfg.optim.betas, fused=fused)


def amp_settings(cfg: Config, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a GradScaler). Autocast only on GPU."""
    if device.type != "cuda" or cfg.train.precision == "fp32":
        return None, False
    if cfg.train.precision == "bf16":
        return torch.bfloat16, False
    return torch.float16, True


class Batcher:
    """Global-batch indices of a step: a seeded permutation per epoch, sharded by rank."""

    def __init__(self, n: int, global_batch: int, info: DistInfo, seed: int, device: torch.device) -> None:
        if global_batch % info.world_size != 0:
            raise ConfigError(
                f"optim.batch_size={global_batch} is not divisible by the {info.world_size} processes"
            )
        self.steps_per_epoch = n // global_batch
        if self.steps_per_epoch == 0:
            raise ConfigError(f"optim.batch_size={global_batch} is larger than the training set ({n} images)")
        self.n, self.global_batch, self.info, self.seed, self.device = n, global_batch, info, seed, device
        self.local_batch = global_batch // info.world_size
        self._epoch, self._perm = -1, torch.empty(0)

    def indices(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(stream_seed(self.seed, epoch, 0, "order"))
            self._perm, self._epoch = torch.randperm(self.n, generator=g).to(self.device), epoch
        start = pos * self.global_batch + self.info.rank * self.local_batch
        return self._perm[start : start + self.local_batch]


def check_intervals(cfg: Config) -> None:
    """Evaluation and checkpoints happen at logging steps, so their periods must be multiples."""
    t = cfg.train
    if t.log_every <= 0:
        raise ConfigError(f"train.log_every={t.log_every} must be positive")
    for key in ("eval_every", "ckpt_every"):
        value = getattr(t, key)
        if value < 0 or value % t.log_every != 0:
            raise ConfigError(
                f"train.{key}={value} must be a non-negative multiple of train.log_every={t.log_every}"
            )
    if t.ckpt_every == 0:
        raise ConfigError("train.ckpt_every=0: checkpoints cannot be disabled; set a multiple of train.log_every")


def total_steps(cfg: Config, steps_per_epoch: int) -> int:
    if cfg.train.max_steps > 0:
        return cfg.train.max_steps
    return max(1, int(round(cfg.train.epochs * steps_per_epoch)))


# --------------------------------------------------------------------------- evaluation during training


class PeriodicKNN:
    """kNN@1 on fixed random subsets of train (bank) and val (queries)."""

    def __init__(self, cfg: Config, train: ImageDataset, val: ImageDataset, mean, std, device) -> None:
        if cfg.train.eval_every > 0:
            require_labels(train, "data.bank_split")
            require_labels(val, "data.val_split")
        g = torch.Generator().manual_seed(stream_seed(cfg.train.seed, 0, 0, "knn-subset"))
        self.bank_idx = torch.randperm(len(train), generator=g)[: cfg.eval.periodic_train_subset]
        self.query_idx = torch.randperm(len(val), generator=g)[: cfg.eval.periodic_val_subset]
        self.train, self.val, self.cfg = train, val, cfg
        self.mean, self.std, self.device = mean, std, device

    def __call__(self, encoder: nn.Module, amp_dtype) -> dict[str, float]:
        c = self.cfg
        feats = [
            extract_features(encoder, ds.images[idx], c.data.image_size, self.mean, self.std, self.device,
                             c.eval.batch_size, amp_dtype)
            for ds, idx in ((self.train, self.bank_idx), (self.val, self.query_idx))
        ]
        res = knn_evaluate(feats[0], self.train.labels[self.bank_idx], feats[1], self.val.labels[self.query_idx],
                           self.train.num_classes, k=c.eval.k, temperature=c.eval.temperature)
        return {f"knn/top1_{vote}": v for vote, v in res.items()}


# --------------------------------------------------------------------------- the loop


class Trainer:
    """Holds everything one run needs; ``fit`` is the loop."""

    def __init__(self, cfg: Config, run_dir: Path, resume: bool = False) -> None:
        check_intervals(cfg)
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.info, self.device = init_distributed(cfg.train.device)
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)
        seed_everything(cfg.train.seed + self.info.rank)
        self.train_set, self.bank_set, self.val_set = load_data(cfg)
        self.mean, self.std = data_stats(cfg, self.train_set, self.run_dir, resume)
        self.images = self.train_set.images.to(self.device)  # the whole uint8 train split on the device
        self._mean_dev, self._std_dev = self.mean.to(self.device), self.std.to(self.device)
        self.method: Method = build_method(cfg).to(self.device)
        self.optimizer = build_optimizer(cfg, self.method, self.device)
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.amp_dtype, use_scaler = amp_settings(cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.batcher = Batcher(len(self.train_set), cfg.optim.batch_size, self.info, cfg.train.seed, self.device)
        self.total = total_steps(cfg, self.batcher.steps_per_epoch)
        self.warmup = int(round(cfg.optim.warmup_epochs * self.batcher.steps_per_epoch))
        self.peak_lr = schedules.scaled_lr(cfg.optim.lr, cfg.optim.batch_size, cfg.optim.ref_batch_size,
                                           cfg.optim.lr_scaling)
        self.state = RunState()
        if resume:
            self._restore()
        self.model = self._wrap(self.method)
        self.knn = PeriodicKNN(cfg, self.bank_set, self.val_set, self.mean, self.std, self.device)
        self.logger = MetricsLogger(self.run_dir, self.info.is_main, self.state.step if resume else None)
        if self.info.is_main:
            self._write_run_files()

    def _wrap(self, method: Method) -> nn.Module:
        if self.cfg.train.compile:
            # Automatic dynamic shapes: the number of context/target tokens varies between batches.
            # In-place Module.compile keeps state_dict keys free of "_orig_mod." prefixes,
            # so checkpoints load into an uncompiled model (eval, resume without compile).
            for name in ("encoder", "target_encoder", "predictor"):
                if hasattr(method, name):
                    getattr(method, name).compile(dynamic=None)
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(method, device_ids=ids)
        return method

    def _write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(dump_config(self.cfg))
        stats = {"mean": self.mean.tolist(), "std": self.std.tolist(), "samples": self.cfg.data.stats_samples}
        (self.run_dir / "data_stats.json").write_text(json.dumps(stats, indent=2))
        run_info = {
            "git_commit": git_commit(),
            "world_size": self.info.world_size,
            "global_batch": self.cfg.optim.batch_size,
            "local_batch": self.batcher.local_batch,
            "lr_scaling": self.cfg.optim.lr_scaling,
            "base_lr": self.cfg.optim.lr,
            "peak_lr": self.peak_lr,
            "steps_per_epoch": self.batcher.steps_per_epoch,
            "total_steps": self.total,
            "device": str(self.device),
            "torch": torch.__version__,
            "num_train": len(self.train_set),
            "num_val": len(self.val_set),
        }
        (self.run_dir / "run_info.json").write_text(json.dumps(run_info, indent=2))

    # -- checkpoints

    def _train_state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "step": self.state.step,
            "best_knn": self.state.best_knn,
            "history": self.state.history,
            "wall_seconds": self.state.wall_seconds,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
        }

    def _save(self, name: str) -> None:
        if self.info.is_main:
            save_checkpoint(self.run_dir / "checkpoints", name, self.method.state_dict(), self._train_state())

    def _restore(self) -> None:
        weights, st = load_checkpoint(self.run_dir / "checkpoints", "last", map_location=self.device)
        load_weights_into(self.method, weights, self.run_dir)
        self.optimizer.load_state_dict(st["optimizer"])
        if st["scaler"]:
            self.scaler.load_state_dict(st["scaler"])
        torch.set_rng_state(st["rng"]["torch"].cpu())
        if "cuda" in st["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(st["rng"]["cuda"].cpu(), self.device)
        self.state = RunState(step=st["step"], best_knn=st["best_knn"], history=list(st["history"]),
                              wall_seconds=float(st.get("wall_seconds", 0.0)))

    # -- one step

    def _set_schedules(self, step: int) -> float:
        c = self.cfg
        lr = schedules.learning_rate(step, self.total, self.peak_lr, self.warmup, c.optim.min_lr, c.optim.start_lr)
        wd = schedules.weight_decay(step, self.total, c.optim.weight_decay, c.optim.final_weight_decay)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = wd * group["wd_scale"]
        return schedules.ema_momentum(step, self.total, c.train.ema[0], c.train.ema[1], c.train.ema_schedule)

    def _batch(self, step: int, gen: torch.Generator) -> torch.Tensor:
        d = self.cfg.data
        raw = self.images[self.batcher.indices(step)]  # (b, 3, H, W) uint8
        gen.manual_seed(stream_seed(self.cfg.train.seed, step, self.info.rank, "augment"))
        return random_resized_crop_flip(
            raw, d.image_size, self._mean_dev, self._std_dev, scale=d.crop_scale,
            ratio=d.crop_ratio, flip_p=0.5 if d.flip else 0.0, generator=gen,
        )

    def _step(self, step: int, x: torch.Tensor, mask_gen: torch.Generator, diagnostics: bool):
        momentum = self._set_schedules(step)
        mask_gen.manual_seed(stream_seed(self.cfg.train.seed, step, self.info.rank, "mask"))
        # Heads draw their own noise (diffusion steps, flow-matching times) from the global RNG:
        # reseeding it per step keeps a resumed run identical to an uninterrupted one.
        torch.manual_seed(stream_seed(self.cfg.train.seed, step, self.info.rank, "head"))
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss, metrics = self.model(x, mask_gen, diagnostics)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self._params, clip if clip > 0 else math.inf)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        ema_update(*self.method.ema_pairs(), momentum)
        metrics = dict(metrics, **{"train/loss": loss.detach().float(), "train/grad_norm": grad_norm.detach()})
        return loss.detach(), metrics, {"lr": self.optimizer.param_groups[0]["lr"], "ema": momentum}

    # -- the loop

    def fit(self) -> dict[str, float]:
        """Train to the end (or the time limit); Ctrl-C saves ``last`` first, then re-raises."""
        try:
            return self._fit()
        except KeyboardInterrupt:
            finite = all(bool(torch.isfinite(p).all()) for p in self.method.parameters())
            if self.info.is_main and finite:
                self._save("last")
                print(f"\n[pjepa] interrupted at step {self.state.step}; saved checkpoints/last. "
                      f"Continue with: pjepa train --resume {self.run_dir}", flush=True)
            raise

    def _fit(self) -> dict[str, float]:
        c, info = self.cfg, self.info
        if info.is_main:
            print(f"[pjepa] run {self.run_dir}: {self.total} steps, global batch {c.optim.batch_size} "
                  f"({info.world_size} x {self.batcher.local_batch}), peak lr {self.peak_lr:.3g} "
                  f"(lr_scaling={c.optim.lr_scaling}), device {self.device}", flush=True)
        aug_gen = torch.Generator(device=self.device)
        mask_gen = torch.Generator()
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        first_bad = torch.tensor(-1, device=self.device)  # step of the first non-finite loss
        bad_stats = torch.zeros(3, device=self.device)  # (loss, image mean, image std) of that step
        window_start, window_steps = time.perf_counter(), 0
        t_start, wall0 = time.perf_counter(), self.state.wall_seconds
        bar = tqdm(total=self.total, initial=self.state.step, disable=not (info.is_main and c.train.progress),
                   desc="train", dynamic_ncols=True, mininterval=1.0)
        step, last = self.state.step, {}
        if step == 0 and c.train.eval_every > 0 and info.is_main:
            self._periodic_knn(0)  # the curve starts at the random-initialisation value
        barrier()
        while step < self.total:
            log_now = (step + 1) % c.train.log_every == 0 or step + 1 == self.total
            x = self._batch(step, aug_gen)
            loss, metrics, sched = self._step(step, x, mask_gen, diagnostics=log_now)
            new_bad = (first_bad < 0) & ~torch.isfinite(loss)  # device-side: no host sync per step
            first_bad = torch.where(new_bad, step, first_bad)
            bad_stats = torch.where(new_bad, torch.stack([loss.float(), x.mean(), x.std()]), bad_stats)
            for k, v in metrics.items():  # diagnostics appear only on logging steps: count per key
                sums[k] = sums.get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else v)
                counts[k] = counts.get(k, 0) + 1
            step, window_steps = step + 1, window_steps + 1
            self.state.step = step
            bar.update(1)
            time_up = c.train.time_limit_min > 0 and time.perf_counter() - t_start > 60 * c.train.time_limit_min
            time_up = broadcast_flag(time_up, self.device) if log_now or step % 10 == 0 else False
            if not (log_now or time_up):
                continue
            self._check_finite(first_bad, bad_stats)
            elapsed = time.perf_counter() - window_start
            img_s = window_steps * c.optim.batch_size / max(elapsed, 1e-9)
            row = {k: float(v) / counts[k] for k, v in sums.items()}
            last = {k: v for k, v in row.items() if k.startswith(("train/", "head/"))}
            self.state.wall_seconds = wall0 + time.perf_counter() - t_start
            row.update(sched, epoch=step / self.batcher.steps_per_epoch, images_per_s=img_s,
                       wall_seconds=self.state.wall_seconds)
            self.logger.log(step, row)
            bar.set_postfix(loss=f"{row['train/loss']:.4f}", img_s=f"{img_s:.0f}")
            sums, counts, window_start, window_steps = {}, {}, time.perf_counter(), 0
            self._maybe_eval_and_save(step, force=time_up or step == self.total)
            if time_up:
                if info.is_main:
                    print(f"\n[pjepa] time limit of {c.train.time_limit_min} min reached at step {step}", flush=True)
                break
        bar.close()
        self.logger.close()
        barrier()
        return {"step": step, **last, "best_knn": self.state.best_knn}

    def _check_finite(self, first_bad: torch.Tensor, bad_stats: torch.Tensor) -> None:
        bad = int(first_bad)
        if bad >= 0:
            loss, mean, std = bad_stats.tolist()
            msg = (f"non-finite loss ({loss}) at step {bad} (its batch of {self.batcher.local_batch} images: "
                   f"mean {mean:.4f}, std {std:.4f}); the last good checkpoint in {self.run_dir / 'checkpoints'} is kept. "
                   "Try a lower optim.lr, train.precision=fp32 or a smaller optim.grad_clip.")
            self.logger.log(bad, {"error": msg})
            raise NonFiniteLossError(msg)

    def _periodic_head_metrics(self) -> dict[str, float]:
        """Shared head metrics (eval/head_metrics.py) on a fixed val subset, as ``headeval/*``."""
        c = self.cfg
        n = c.eval.periodic_head_subset
        if n <= 0:
            return {}
        seed = stream_seed(c.train.seed, 0, 0, "head-eval-masks")
        was_training = self.method.training
        self.method.eval()
        pairs = collect_pairs(self.method.head_conditions, self.val_set.images[:n], c.data.image_size, self.mean,
                              self.std, self.device, seed, c.eval.batch_size, self.amp_dtype)
        gen = torch.Generator(device=self.device).manual_seed(stream_seed(c.train.seed, 0, 0, "head-eval-samples"))
        res = head_metrics(self.method.head, pairs, gen, num_samples=c.eval.head_samples,
                           sample_tokens=c.eval.head_sample_tokens)
        self.method.train(was_training)
        return {f"headeval/{k}": v for k, v in res.items() if not k.endswith("tokens")}

    def _periodic_knn(self, step: int) -> dict[str, float]:
        res = self.knn(self.method.feature_encoder("target"), self.amp_dtype)
        res.update(self._periodic_head_metrics())
        self.state.history.append({"step": step, **res})
        self.logger.log(step, res)
        print(f"\n[pjepa] step {step}: kNN@1 weighted {res['knn/top1_weighted']:.2f}% "
              f"majority {res['knn/top1_majority']:.2f}% (subset: {len(self.knn.bank_idx)} bank, "
              f"{len(self.knn.query_idx)} queries)", flush=True)
        return res

    def _maybe_eval_and_save(self, step: int, force: bool) -> None:
        c = self.cfg
        do_eval = c.train.eval_every > 0 and (step % c.train.eval_every == 0 or force)
        if do_eval and self.info.is_main:
            res = self._periodic_knn(step)
            if res["knn/top1_weighted"] > self.state.best_knn:
                self.state.best_knn = res["knn/top1_weighted"]
                self._save("best")
        if force or step % c.train.ckpt_every == 0:
            self._save("last")
        barrier()


def train(cfg: Config, run_dir: Path, resume: bool = False) -> dict[str, float]:
    """Train ``cfg`` into ``run_dir`` (continuing its ``last`` checkpoint if ``resume``)."""
    trainer = Trainer(cfg, run_dir, resume)
    try:
        return trainer.fit()
    finally:
        cleanup()
