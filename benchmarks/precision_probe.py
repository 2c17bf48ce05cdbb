"""What ``train.precision=auto`` picks on this CPU, and how well its probe predicts a training step: one table.

    python benchmarks/precision_probe.py --threads 1           # probes only (a few seconds)
    python benchmarks/precision_probe.py --threads 1 --steps 4 # also time real training steps, fp32 vs bf16

Rows: the smoke preset, the CIFAR-10 CPU preset (width 128) and the reference preset (Tiny ImageNet
deterministic, width 384). Columns: a bare ``a @ b`` bf16 / fp32 speed ratio at the MLP shape (4,096 rows),
the probe ``auto`` uses (one ViT block forward + backward, ``pjepa.train.precision.probe_cpu_bf16``),
the choice (ratio >= ``BF16_MIN_RATIO``), and with ``--steps`` the ratio of real training steps
(``Trainer.train_step`` on synthetic images, fp32 and bf16 alternated, medians). Nothing is cached.
Record results in docs/speed.md with date, processor and command.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pjepa.config import load_config  # noqa: E402
from pjepa.train.loop import Trainer  # noqa: E402
from pjepa.train.precision import BF16_MIN_RATIO, cpu_model, probe_cpu_bf16, probe_shape  # noqa: E402

PRESETS = {"smoke": "configs/smoke.yaml", "cifar10/cpu": "configs/cifar10/cpu.yaml",
           "tin100/deterministic": "configs/tin100/deterministic.yaml"}


def matmul_ratio(width: int, rounds: int = 5) -> float:
    """fp32 / bf16 time of (4096, width) @ (width, 4 width), median of alternating rounds."""
    a, b = torch.randn(4096, width), torch.randn(width, 4 * width)
    a16, b16 = a.bfloat16(), b.bfloat16()
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(2 * rounds + 2):
        bf16 = i % 2 == 1
        t0 = time.perf_counter()
        _ = a16 @ b16 if bf16 else a @ b
        if i >= 2:
            times[bf16].append(time.perf_counter() - t0)
    return statistics.median(times[False]) / statistics.median(times[True])


def step_ratio(path: Path, steps: int, batch: int, tmp: Path) -> float:
    """fp32 / bf16 time of real training steps (synthetic images of the preset's size), alternated."""
    size = load_config(path).data.image_size
    over = ["data.name=synthetic", "data.path=null", "data.eval_split=val", "data.val_fraction=0",
            f"data.options={{image_size: {size}, num_train: {4 * batch}, num_val: 16}}", f"optim.batch_size={batch}",
            "train.progress=false", "train.eval_every=0", "train.device=cpu", "train.max_steps=100000",
            "train.time_limit_min=0", "data.stats_samples=64"]
    trainers = {p: Trainer(load_config(path, over + [f"train.precision={p}"]), tmp / p) for p in ("fp32", "bf16")}
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(steps + 1):
        for p, trainer in trainers.items():
            t0 = time.perf_counter()
            trainer.train_step(i)
            if i > 0:  # the first step of each warms up
                times[p].append(time.perf_counter() - t0)
    return statistics.median(times["fp32"]) / statistics.median(times["bf16"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--steps", type=int, default=0, help="also time this many training steps per precision (0: skip)")
    p.add_argument("--batch", type=int, default=64, help="global batch of the timed steps")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{cpu_model()}, torch {torch.__version__}, {args.threads} threads; bf16 needs probe >= {BF16_MIN_RATIO}x\n")
    print("| preset | width | bf16 speed-up: matmul | probe (block) | auto picks | train step |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, rel in PRESETS.items():
            width = load_config(ROOT / rel).model.encoder.embed_dim
            probe = probe_cpu_bf16(*probe_shape(width), args.threads)
            pick = "bf16" if probe.supported and probe.ratio >= BF16_MIN_RATIO else "fp32"
            step = f"{step_ratio(ROOT / rel, args.steps, args.batch, Path(tmp) / name):.2f}x" if args.steps else "-"
            print(f"| {name} | {width} | {matmul_ratio(width):.2f}x | {probe.ratio:.2f}x | {pick} | {step} |", flush=True)


if __name__ == "__main__":
    main()
