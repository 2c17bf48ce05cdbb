"""`pjepa bench`: how fast a configuration's training step runs, and how close to the machine's limit.

For each precision asked for (default fp32 and bf16; ``auto`` is what ``train.precision=auto`` picks on
this machine, timed under the name it picks, once even if also named), one ``Trainer`` of the configuration runs
the real training step (device augmentation, masks, forward, backward, optimizer, EMA) on
synthetic images of the configuration's resolution (``--real-data`` for its own dataset):

1. ``warmup`` steps, untimed (allocator, kernel selection, torch.compile);
2. ``steps`` timed steps -> images/s and ms per step (median);
3. ``flop_steps`` steps under a FLOP counter -> GFLOP per image: the matmul, convolution and attention
   arithmetic of forward and backward for the token counts the masks drew (the masks differ from step
   to step, so it is a mean);
4. one step under a product recorder, then each of its matrix products and attention calls timed alone
   at its own shape and precision (``pjepa.train.shape_limit``) -> the shape-aware limit: ms per step
   if only those kernels ran, each at the speed it reaches at its shape (``shape_limit=False`` skips it);
5. ``part_steps`` steps under a ``PartTimer`` -> ms per step in each part (exclusive; the device is
   synchronised at every boundary in this pass only, so the parts may add up to a little more than 2.).

The matmul peak of each precision timed is measured in the same process (``pjepa.profiling.matmul_peak``),
and ``fraction_of_peak`` = achieved GFLOP/s / the peak of the precision in use: a large square matmul's
rate, which a model of small width cannot reach. ``fraction_of_shape_limit`` = the shape-aware limit /
the measured step time: how much of the step the products at their own shapes would take (the rest is
elementwise work, copies and overhead between kernels). Peak memory is the
CUDA allocator's peak on a GPU; on a CPU the process's peak resident set (it only grows: the later
precision's figure includes the earlier one's).
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pjepa.config import Config, load_config
from pjepa.errors import ConfigError
from pjepa.presets import resolve_config_path
from pjepa.profiling import PartTimer, count_flops, matmul_peak
from pjepa.train.loop import Trainer
from pjepa.train.precision import cpu_model, resolve_precision
from pjepa.train.shape_limit import KINDS, record_products, time_products

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class PrecisionResult:
    """One precision's measurements (per step of the configured batch on this process)."""

    precision: str
    images_per_s: float
    ms_per_step: float  # median over the timed steps
    gflop_per_image: float  # forward + backward matmul / attention arithmetic
    achieved_gflops: float
    peak_gflops: float  # the matmul peak of this precision, measured here
    fraction_of_peak: float
    peak_memory_mib: float
    context_tokens: float  # mean per image over the timed steps (method's mask/num_context)
    target_tokens: float
    parts_ms: dict[str, float] = field(default_factory=dict)
    # the shape-aware limit (NaN when skipped): the step's products timed alone at their own shapes
    shape_limit_ms: float = float("nan")  # per step
    shape_limit_gflops: float = float("nan")  # their FLOPs / their summed time
    fraction_of_shape_limit: float = float("nan")  # shape_limit_ms / ms_per_step
    shape_limit_ms_by_kind: dict[str, float] = field(default_factory=dict)  # matmul, attention, convolution
    shape_limit_calls: int = 0  # distinct (operator, shapes) timed


@dataclass
class BenchResult:
    config: str
    overrides: list[str]
    device: str
    processor: str
    threads: int
    batch_size: int
    image_size: int
    data: str
    steps: int
    warmup: int
    matmul_peak_gflops: dict[str, float]
    auto: str  # what train.precision=auto picks here, and why
    results: list[PrecisionResult]
    budget_min: float = 0.0  # > 0: ``budget_steps`` says how many steps fit in this many minutes
    budget_steps: dict[str, int] = field(default_factory=dict)  # precision -> steps in budget_min

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def budget_steps(ms_per_step: float, minutes: float) -> int:
    """The training steps that fit in ``minutes`` at ``ms_per_step`` (a compute budget as a step count:
    fixed once per configuration and processor, so runs made later, on fewer threads or beside other
    work, train the same number of steps and end their schedules when the budget ends)."""
    return int(minutes * 60_000 // ms_per_step)


def _processor(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def _sync(device: torch.device) -> Any:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def bench_config(config: str, overrides: list[str], real_data: bool) -> tuple[Path, list[str], Config]:
    """The preset / file, the overrides the bench trains with, and the resolved config (fp32 unset)."""
    path = resolve_config_path(config)
    cfg = load_config(path, overrides)
    extra = ["train.progress=false", "train.eval_every=0", "train.time_limit_min=0", "train.max_steps=1000000"]
    if not real_data:
        n = max(4 * cfg.optim.batch_size, 512)
        extra += ["data.name=synthetic", "data.path=null", "data.val_fraction=0", "data.eval_split=val",
                  f"data.options={{image_size: {cfg.data.image_size}, num_train: {n}, num_val: 64}}"]
    final = [*overrides, *extra]
    return path, final, load_config(path, final)


def _measure(trainer: Trainer, precision: str, peak: float, steps: int, warmup: int, flop_steps: int,
             part_steps: int, shape_limit: bool) -> PrecisionResult:
    device, sync = trainer.device, _sync(trainer.device)
    batch = trainer.batcher.local_batch
    step = 0
    for _ in range(warmup):
        trainer.train_step(step)
        step += 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, ctx, tgt = [], [], []
    sync()
    for _ in range(steps):
        t0 = time.perf_counter()
        _, out, _ = trainer.train_step(step)
        sync()
        times.append(time.perf_counter() - t0)
        ctx.append(float(out.metrics.get("mask/num_context", float("nan"))))
        tgt.append(float(out.metrics.get("mask/num_target", float("nan"))))
        step += 1
    memory = _peak_memory_mib(device)
    flops = []
    for _ in range(flop_steps):
        n, _ = count_flops(lambda: trainer.train_step(step))  # noqa: B023 (called at once)
        flops.append(n)
        step += 1
    limit = None
    if shape_limit:
        calls, _ = record_products(lambda: trainer.train_step(step))  # noqa: B023 (called at once)
        step += 1
        limit = time_products(calls, sync)
    with PartTimer(sync) as timer:
        for _ in range(part_steps):
            trainer.train_step(step)
            step += 1
    ms = statistics.median(times) * 1e3
    gflop_img = statistics.mean(flops) / batch / 1e9 if flops else float("nan")
    achieved = gflop_img * batch / (ms / 1e3)
    extra: dict[str, Any] = {}
    if limit is not None:
        extra = dict(shape_limit_ms=limit.seconds * 1e3, shape_limit_gflops=limit.gflops,
                     fraction_of_shape_limit=limit.seconds * 1e3 / ms, shape_limit_calls=len(limit.calls),
                     shape_limit_ms_by_kind={k: v * 1e3 for k, v in limit.seconds_by_kind().items()})
    return PrecisionResult(
        precision=precision, images_per_s=batch * steps / sum(times), ms_per_step=ms, gflop_per_image=gflop_img,
        achieved_gflops=achieved, peak_gflops=peak, fraction_of_peak=achieved / peak if peak else float("nan"),
        peak_memory_mib=memory, context_tokens=statistics.mean(ctx), target_tokens=statistics.mean(tgt),
        parts_ms={k: v / max(part_steps, 1) * 1e3 for k, v in timer.seconds.items()}, **extra,
    )


def run_bench(config: str, overrides: list[str], precisions: list[str], steps: int = 20, warmup: int = 3,
              flop_steps: int = 2, part_steps: int = 5, real_data: bool = False,
              progress: bool = True, budget_min: float = 0.0, shape_limit: bool = True) -> BenchResult:
    """Measure the configuration's training step in each precision (see the module docstring)."""
    bad = [p for p in precisions if p not in (*PRECISIONS, "auto")]
    if bad or not precisions:
        raise ConfigError(f"--precision {','.join(precisions)!r}: choose from {', '.join(PRECISIONS)} or auto "
                          "(comma-separated, e.g. fp32,bf16; auto: what train.precision=auto picks on this machine)")
    if steps < 1 or warmup < 0 or flop_steps < 0 or part_steps < 0:
        raise ConfigError(f"--steps {steps} must be >= 1 and --warmup {warmup}, --flop-steps {flop_steps}, "
                          f"--part-steps {part_steps} >= 0")
    _, final, cfg = bench_config(config, overrides, real_data)
    results: list[PrecisionResult] = []
    peaks: dict[str, float] = {}
    auto = ""
    # the trainer's own messages go to stderr: stdout carries only the table or the JSON
    with tempfile.TemporaryDirectory(prefix="pjepa-bench-") as tmp, contextlib.redirect_stdout(sys.stderr):
        for precision in precisions:
            if progress:
                print(f"[bench] {precision}: building the trainer", file=sys.stderr, flush=True)
            trainer = Trainer(load_config(resolve_config_path(config), [*final, f"train.precision={precision}"]),
                              Path(tmp) / precision)
            device = trainer.device
            if not auto:  # after the Trainer: it sets the thread count the step runs with
                auto = resolve_precision("auto", device, cfg.model.encoder.embed_dim, torch.get_num_threads()).describe()
            chosen = trainer.precision.name  # "auto" is timed as what it resolved to, and its row says so
            if any(r.precision == chosen for r in results):  # e.g. auto,fp32 where auto picks fp32
                if progress:
                    print(f"[bench] {precision}: {chosen} is timed already, skipped", file=sys.stderr, flush=True)
                del trainer
                continue
            if chosen not in peaks:  # only the precisions timed: an emulated bf16 peak takes minutes to measure
                peaks[chosen] = matmul_peak(device, DTYPES[chosen])
            if progress:
                print(f"[bench] {precision}: {warmup} warm-up + {steps} timed + {flop_steps} counted + "
                      f"{int(shape_limit)} recorded (its products then timed alone) + {part_steps} part-timed steps",
                      file=sys.stderr, flush=True)
            results.append(_measure(trainer, chosen, peaks.get(chosen, float("nan")), steps, warmup,
                                    flop_steps, part_steps, shape_limit))
            del trainer
    return BenchResult(
        config=config, overrides=overrides, device=str(device), processor=_processor(device),
        threads=torch.get_num_threads(), batch_size=cfg.optim.batch_size, image_size=cfg.data.image_size,
        data=cfg.data.name if real_data else f"synthetic {cfg.data.image_size} px", steps=steps, warmup=warmup,
        matmul_peak_gflops=peaks, auto=auto, results=results, budget_min=budget_min,
        budget_steps={x.precision: budget_steps(x.ms_per_step, budget_min) for x in results} if budget_min > 0 else {},
    )


def format_bench(r: BenchResult) -> str:
    """The human table: one row per precision, then the parts of the step in ms."""
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in r.matmul_peak_gflops.items())
    head = [
        f"pjepa bench {r.config} {' '.join(r.overrides)}".rstrip(),
        f"  {r.device}, {r.threads} threads, {r.processor}; batch {r.batch_size}, {r.data}; "
        f"{r.warmup} warm-up + {r.steps} timed steps",
        f"  matmul peak (GFLOP/s): {peaks}",
        f"  precision=auto picks: {r.auto}",
        "",
        f"{'precision':<10}{'img/s':>9}{'ms/step':>10}{'GFLOP/img':>11}{'GFLOP/s':>9}{'peak':>7}"
        f"{'fraction_of_peak':>18}{'fraction_of_shape_limit':>25}{'ctx/tgt tokens':>16}{'peak mem MiB':>14}",
    ]
    for x in r.results:
        head.append(f"{x.precision:<10}{x.images_per_s:>9.1f}{x.ms_per_step:>10.1f}{x.gflop_per_image:>11.3f}"
                    f"{x.achieved_gflops:>9.0f}{x.peak_gflops:>7.0f}{x.fraction_of_peak:>18.2f}"
                    f"{x.fraction_of_shape_limit:>25.2f}"
                    f"{x.context_tokens:>8.1f}/{x.target_tokens:<7.1f}{x.peak_memory_mib:>14.0f}")
    if any(x.shape_limit_calls for x in r.results):
        head += ["", "shape-aware limit: the step's own matmuls and attention calls, each timed alone at its shape "
                     "and precision (ms per step; GFLOP/s of those kernels):",
                 f"{'precision':<10}{'limit ms':>10}{'GFLOP/s':>9}" + "".join(f"{k + ' ms':>16}" for k in KINDS)
                 + f"{'shapes':>8}"]
        for x in r.results:
            by = x.shape_limit_ms_by_kind
            head.append(f"{x.precision:<10}{x.shape_limit_ms:>10.1f}{x.shape_limit_gflops:>9.0f}"
                        + "".join(f"{by.get(k, float('nan')):>16.1f}" for k in KINDS) + f"{x.shape_limit_calls:>8}")
    if r.budget_steps:
        head += ["", f"steps in a {r.budget_min:g}-minute budget (train.max_steps; median step time, "
                     f"{r.threads} threads): " + ", ".join(f"{k} {v}" for k, v in r.budget_steps.items())]
    names: list[str] = []
    for x in r.results:
        names += [n for n in x.parts_ms if n not in names]
    if names:
        head += ["", "ms per step in each part (exclusive; device synchronised at each boundary):",
                 f"{'part':<18}" + "".join(f"{x.precision:>10}" for x in r.results)]
        for n in names + ["(sum)"]:
            vals = [sum(x.parts_ms.values()) if n == "(sum)" else x.parts_ms.get(n, float("nan")) for x in r.results]
            head.append(f"{n:<18}" + "".join(f"{v:>10.1f}" for v in vals))
    return "\n".join(head)
