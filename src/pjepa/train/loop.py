"""One training loop for every method (I-JEPA now; N-JEPA, MAE and fine-tunes plug into the same contract).

Read top to bottom:
  set-up   data splits (validation carved out of train), channel stats, the method, the optimiser over
           ``method.param_groups()``, compile ``method.compile_modules()``, DDP, resume;
  step     ``train_step(step)``: schedules -> ``Batch`` (device-side crop/flip, seeded mask and noise
           generators) -> ``method.training_step(batch)`` -> backward, clip, AdamW -> EMA of
           ``method.ema_pairs()`` (one ``_foreach`` call);
  window   every ``train.log_every`` steps: the step monitor's means and non-finite check (the only host
           syncs), a log row, periodic evaluation of ``method.monitors()`` on the validation split,
           checkpoints (``best`` by the first monitored encoder's kNN@1 on validation).

Exact resume: a step's batch, masks and noise come from generators seeded from (seed, step, rank), and the
schedules are pure functions of the step, so weights + optimiser + step continue exactly where an
uninterrupted run would be.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pjepa import schedules
from pjepa.checks import check_config
from pjepa.config import Config, config_to_dict
from pjepa.data import channel_stats, splits_for
from pjepa.errors import CheckpointError, ConfigError
from pjepa.methods import Batch, Method, StepOutput, build_method
from pjepa.models import ema_update
from pjepa.profiling import part
from pjepa.runs import MetricsLogger, RunDirectory, keep_history, load_checkpoint, load_weights_into, save_checkpoint
from pjepa.runs.checkpoint import checkpoint_step
from pjepa.train.batches import Batcher, BatchMaker
from pjepa.train.compile import compile_modules
from pjepa.train.distributed import barrier, broadcast_flag, cleanup, init_distributed
from pjepa.train.monitor import NonFiniteLossError, StepMonitor, params_finite
from pjepa.train.optim import apply_schedules, build_optimizer, run_precision
from pjepa.train.periodic import PeriodicEvaluator
from pjepa.train.signals import EXIT_CODES, StopSignals
from pjepa.utils import git_commit, seed_everything, stream_seed

__all__ = ["NonFiniteLossError", "RunState", "Trainer", "train"]


@dataclass
class RunState:
    """What a checkpoint must restore besides weights and optimiser."""

    step: int = 0
    best_knn: float = -1.0
    history: list[dict[str, float]] = field(default_factory=list)  # periodic evaluation results
    wall_seconds: float = 0.0  # training wall time so far (periodic evaluation included), across resumes


def total_steps(cfg: Config, steps_per_epoch: int) -> int:
    if cfg.train.max_steps > 0:
        return cfg.train.max_steps
    return max(1, int(round(cfg.train.epochs * steps_per_epoch)))


def check_budget(cfg: Config, total: int, warmup: int, steps_per_epoch: int) -> None:
    """Start-up checks that need the dataset's size (the config alone cannot say).

    A warm-up as long as the run is an error for a run budgeted in epochs; a run cut short by
    ``train.max_steps`` (a smoke test, a debugging run) only gets a warning.
    """
    if warmup < total:
        return
    msg = (f"optim.warmup_epochs={cfg.optim.warmup_epochs} is {warmup} steps but the run has only {total} steps "
           f"({steps_per_epoch} per epoch)")
    if cfg.train.max_steps > 0:
        print(f"[pjepa] warning: {msg}; the learning rate never reaches its peak", flush=True)
        return
    raise ConfigError(f"{msg}: lower optim.warmup_epochs or raise train.epochs")


class Trainer:
    """Holds everything one run needs; ``train_step`` is one step, ``fit`` the loop."""

    def __init__(self, cfg: Config, run_dir: Path, resume: bool = False) -> None:
        self.cfg, self.run_dir = check_config(cfg, build=False), Path(run_dir)
        self.info, self.device = init_distributed(cfg.train.device)
        self.directory = RunDirectory(self.run_dir, main=self.info.is_main)  # writes the run files
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)
        seed_everything(cfg.train.seed + self.info.rank)
        self.splits = splits_for(cfg)
        self.mean, self.std = self._data_stats(resume)
        self.method: Method = build_method(cfg).to(self.device)
        self.optimizer = build_optimizer(cfg, self.method, self.device)
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.precision, line = run_precision(cfg, self.device, self.run_dir, resume, self.info.is_main)
        self.amp_dtype = self.precision.amp_dtype  # autocast in the step and in periodic evaluation; None = fp32
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.use_scaler)
        if self.info.is_main:
            print(line, flush=True)
        self.batcher = Batcher(len(self.splits.train), cfg.optim.batch_size, self.info, cfg.train.seed, self.device)
        self.total = total_steps(cfg, self.batcher.steps_per_epoch)
        self.warmup = int(round(cfg.optim.warmup_epochs * self.batcher.steps_per_epoch))
        check_budget(cfg, self.total, self.warmup, self.batcher.steps_per_epoch)
        self.peak_lr = schedules.scaled_lr(cfg.optim.lr, cfg.optim.batch_size, cfg.optim.ref_batch_size,
                                           cfg.optim.lr_scaling)
        self.batches = BatchMaker(self.splits.train, cfg.data, self.batcher, self.mean, self.std, cfg.train.seed,
                                  self.device)
        self.evaluator = PeriodicEvaluator(cfg, self.splits, self.mean, self.std, self.device, self.amp_dtype)
        self.evaluator.check(self.method)
        self.state = RunState()
        self.monitor: StepMonitor | None = None
        self._window: dict[str, Any] = {}
        self._saved_at = time.perf_counter()  # perf_counter of the last save of ``last`` (``train.ckpt_every_min``)
        if resume:
            self._restore()
        self.model = self._wrap(self.method)
        self.logger = MetricsLogger(self.run_dir, self.info.is_main, self.state.step if resume else None,
                                    cfg.train.wandb, config_to_dict(cfg))
        if self.info.is_main:
            self.directory.write_run_files(self.cfg, self.mean, self.std, self._run_info(), keep_config=resume)

    # -- set-up

    def _data_stats(self, resume: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean/std from ``stats_samples`` training images (read back on resume)."""
        stored = self.directory.data_stats() if resume else None
        if stored is not None:
            return stored
        g = torch.Generator().manual_seed(stream_seed(self.cfg.train.seed, 0, 0, "stats"))
        return channel_stats(self.splits.train.images, self.cfg.data.stats_samples, generator=g)

    def _wrap(self, method: Method) -> nn.Module:
        if self.cfg.train.compile:
            # each transformer block, in place, with symbolic sizes (token counts vary between batches):
            # why blocks and not whole modules, see pjepa.train.compile
            compile_modules(method.compile_modules())
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(method, device_ids=ids)
        return method

    def _run_info(self) -> dict[str, Any]:
        """What run_info.json records about this run (the run directory writes it)."""
        s = self.splits
        return {
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
            "precision": self.precision.record(),  # a resume reuses it (``train.optim.run_precision``)
            "num_train": len(s.train),
            "num_bank": len(s.bank),
            "num_val": len(s.val),
            "val_split": s.val.split,
            "num_eval": len(s.eval),
            "eval_split": s.eval.split,
        }

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
            "window": self.monitor.state() if self.monitor is not None else {},
        }

    def _kept(self) -> str | None:
        """'checkpoints/last at step N' when the run has a checkpoint on disk, else None."""
        step = checkpoint_step(self.run_dir / "checkpoints", "last")
        return None if step is None else f"checkpoints/last at step {step}"

    def _save(self, name: str) -> None:
        if not params_finite(self._all_params()):  # never a checkpoint with NaN/inf weights
            kept = self._kept()
            survives = f"the last good checkpoint ({kept}) is kept" if kept else "no checkpoint had been saved yet"
            raise NonFiniteLossError(f"non-finite weights at step {self.state.step}: checkpoints/{name} not written; "
                                     f"{survives}. "
                                     "Try a lower optim.lr, train.precision=fp32 or a smaller optim.grad_clip.")
        if self.info.is_main:
            save_checkpoint(self.run_dir / "checkpoints", name, self.method.state_dict(), self._train_state())

    def _all_params(self) -> list[torch.Tensor]:
        """Trained and EMA parameters: a teacher can turn non-finite through its update too."""
        return [p for p in self.method.parameters() if p.is_floating_point()]

    def _restore(self) -> None:
        weights, st = load_checkpoint(self.run_dir / "checkpoints", "last", map_location=self.device)
        load_weights_into(self.method, weights, self.run_dir)
        try:
            self._restore_state(st)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
            raise CheckpointError(f"{self.run_dir}/checkpoints/last/state.safetensors does not hold a pjepa training "
                                  f"state ({type(e).__name__}: {str(e)[:160]}); restore the checkpoint or start the "
                                  "run again with --force") from None

    def _restore_state(self, st: Any) -> None:
        """Optimiser, scaler, RNG and counters from a loaded state tree (a KeyError/TypeError if it is not one)."""
        self.optimizer.load_state_dict(st["optimizer"])
        if st["scaler"]:
            self.scaler.load_state_dict(st["scaler"])
        torch.set_rng_state(st["rng"]["torch"].cpu())
        if "cuda" in st["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(st["rng"]["cuda"].cpu(), self.device)
        self.state = RunState(step=st["step"], best_knn=st["best_knn"], history=list(st["history"]),
                              wall_seconds=float(st.get("wall_seconds", 0.0)))
        self._window = st.get("window") or {}  # a window a stop signal cut: continued, then logged whole

    # -- one step

    def train_step(self, step: int, diagnostics: bool = False) -> tuple[Batch, StepOutput, dict[str, float]]:
        """Train step ``step``: (its batch, the method's output with lr/grad-norm metrics added, schedules)."""
        sched = apply_schedules(self.optimizer, self.cfg, step, self.total, self.warmup, self.peak_lr)
        with part("augment"):
            batch = self.batches(step, diagnostics)
        # ``part``s name where the time goes for `pjepa bench`; they cost nothing when no timer is active
        with part("forward"), torch.autocast(self.device.type, dtype=self.amp_dtype,
                                             enabled=self.amp_dtype is not None):
            out: StepOutput = self.model(batch)  # the method's own parts inside (encoders, predictor, head)
        with part("backward"):
            self.scaler.scale(out.loss).backward()
        with part("optimizer"):
            self.scaler.unscale_(self.optimizer)
            clip = self.cfg.optim.grad_clip
            grad_norm = torch.nn.utils.clip_grad_norm_(self._params, clip if clip > 0 else math.inf)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        with part("ema"):
            ema_update(*self.method.ema_pairs(), sched["ema"])
        out.metrics.update({"train/loss": out.loss.detach().float(), "train/grad_norm": grad_norm.detach()})
        return batch, out, sched

    # -- the loop

    def fit(self) -> dict[str, Any]:
        """Train to the end, the time limit or a SIGTERM / SIGINT (then ``last`` is saved at a step boundary
        and the result's ``exit_code`` is 128 + the signal). A second Ctrl-C raises at once, saving nothing."""
        with StopSignals() as signals:
            self.signals = signals
            try:
                return self._fit()
            except KeyboardInterrupt:
                if self.info.is_main:
                    print(f"\n[pjepa] interrupted again: stopped without saving; checkpoints/last (if any) is kept. "
                          f"Continue with: pjepa train --resume {self.run_dir}", flush=True)
                raise

    def _fit(self) -> dict[str, float]:
        c, info = self.cfg, self.info
        if info.is_main:
            s = self.splits
            print(f"[pjepa] run {self.run_dir}: {self.total} steps, global batch {c.optim.batch_size} "
                  f"({info.world_size} x {self.batcher.local_batch}), peak lr {self.peak_lr:.3g} "
                  f"(lr_scaling={c.optim.lr_scaling}), device {self.device}; {len(s.train)} training images, "
                  f"validation {s.val.split} ({len(s.val)})", flush=True)
        monitor = self.monitor = StepMonitor(self.device, check_grads=not self.scaler.is_enabled())
        monitor.load_state(self._window)
        t_start, wall0 = time.perf_counter(), self.state.wall_seconds
        self._saved_at = t_start
        bar = tqdm(total=self.total, initial=self.state.step, disable=not (info.is_main and c.train.progress),
                   desc="train", dynamic_ncols=True, mininterval=1.0)
        step, last, signalled = self.state.step, {}, False
        if step == 0 and c.train.eval_every > 0 and info.is_main:
            self._evaluate(0)  # the curve starts at the random-initialisation value
        barrier()
        while step < self.total:
            log_now = (step + 1) % c.train.log_every == 0 or step + 1 == self.total
            batch, out, sched = self.train_step(step, diagnostics=log_now)
            monitor.add(batch, out)
            step = self.state.step = step + 1
            bar.update(1)
            now = time.perf_counter()
            time_up = c.train.time_limit_min > 0 and now - t_start > 60 * c.train.time_limit_min
            signalled = self.signals.received is not None
            # checked at log steps only: a save there needs no half-logged window in the checkpoint
            save_due = log_now and c.train.ckpt_every_min > 0 and now - self._saved_at > 60 * c.train.ckpt_every_min
            if info.enabled:  # every rank stops (and saves) at the same step: rank 0's view, every 10 steps
                sync_now = log_now or step % 10 == 0
                time_up = broadcast_flag(time_up, self.device) if sync_now else False
                signalled = broadcast_flag(signalled, self.device) if sync_now else False
                save_due = broadcast_flag(save_due, self.device) if log_now else False
            time_up = time_up or signalled
            if not (log_now or time_up):
                continue
            bad = monitor.check_finite(self.batcher.local_batch, str(self.run_dir / "checkpoints"), self._kept)
            if bad is not None:
                self.logger.log(int(monitor.first_bad), {"error": bad})
                raise NonFiniteLossError(bad)
            self.state.wall_seconds = wall0 + time.perf_counter() - t_start
            if log_now or not signalled:
                row = monitor.flush(c.optim.batch_size)
                last = {k: v for k, v in row.items() if k.startswith(("train/", "head/"))}
                row.update(sched, epoch=step / self.batcher.steps_per_epoch, wall_seconds=self.state.wall_seconds)
                self.logger.log(step, row)
                bar.set_postfix(loss=f"{row['train/loss']:.4f}", img_s=f"{row['images_per_s']:.0f}")
            # else: a signal mid-window: the window's sums go into the checkpoint (``_train_state``) and the
            # resumed run logs the whole window at its end, as an uninterrupted run does
            # on a signal: save only (a scheduler's grace period is short), no periodic evaluation
            self._maybe_eval_and_save(step, force=time_up or step == self.total, evaluate=not signalled,
                                      save=save_due)
            if signalled:
                if info.is_main:
                    print(f"\n[pjepa] {self.signals.name or 'stop signal'} at step {step}: saved checkpoints/last. "
                          f"Continue with: pjepa train --resume {self.run_dir}", flush=True)
                break
            if time_up:
                if info.is_main:
                    print(f"\n[pjepa] time limit of {c.train.time_limit_min} min reached at step {step}", flush=True)
                break
        bar.close()
        self.logger.close()
        barrier()
        received = self.signals.received  # set when signalled, never cleared
        code = EXIT_CODES.get(received, 143) if signalled and received is not None else 0
        return {"step": step, **last, "best_knn": self.state.best_knn, "exit_code": code}

    def _evaluate(self, step: int) -> dict[str, float]:
        res = self.evaluator(self.method)
        if not res:
            return res
        self.state.history.append({"step": step, **res})
        self.logger.log(step, res)
        if "knn/top1_weighted" in res:
            print(f"\n[pjepa] step {step}: validation kNN@1 weighted {res['knn/top1_weighted']:.2f}% "
                  f"majority {res['knn/top1_majority']:.2f}% ({len(self.evaluator.bank_idx)} bank, "
                  f"{len(self.evaluator.query_idx)} queries of {self.splits.val.split})", flush=True)
        return res

    def _maybe_eval_and_save(self, step: int, force: bool, evaluate: bool = True, save: bool = False) -> None:
        """Evaluate every ``train.eval_every`` steps (and at ``force``); save ``last`` every ``train.ckpt_every``
        steps, at ``force``, and when ``save`` (``train.ckpt_every_min`` passed since the last save)."""
        c = self.cfg
        do_eval = evaluate and c.train.eval_every > 0 and (step % c.train.eval_every == 0 or force)
        if do_eval and self.info.is_main:
            res = self._evaluate(step)
            if res.get("knn/top1_weighted", -math.inf) > self.state.best_knn:
                self.state.best_knn = res["knn/top1_weighted"]
                self._save("best")
        if force or save or step % c.train.ckpt_every == 0:
            self._save("last")
            self._saved_at = time.perf_counter()
            if self.info.is_main:
                keep_history(self.run_dir / "checkpoints", step, c.train.keep_last)
        barrier()


def train(cfg: Config, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (continuing its ``last`` checkpoint if ``resume``), holding the run
    directory's lock (rank 0; a second writer gets a named error)."""
    trainer = None
    try:
        with RunDirectory(run_dir).lock():
            trainer = Trainer(cfg, run_dir, resume)
            return trainer.fit()
    finally:
        # The lock is released by now. The DDP reducer must go before its process group: freed later (when this
        # frame is), its destructor joins gloo's worker thread while holding the GIL, and that thread may need
        # the GIL to free a finished barrier's tensors: a deadlock that left a rank hanging after a finished run.
        trainer = None
        gc.collect()
        cleanup()
