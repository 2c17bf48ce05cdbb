"""Training throughput, predictor layouts and kNN cost on the current device: one table.

    python benchmarks/train_throughput.py                  # CPU: short budgets
    python benchmarks/train_throughput.py --steps 50 --precision bf16 --compile   # GPU

Rows:
  - train images/s of the smoke and reference presets (the real training step of
    `pjepa.train.loop.Trainer`: device augmentation, masks, forward, backward,
    AdamW, EMA) on synthetic images of each preset's resolution;
  - the same step with the official per-block predictor layout (context repeated
    for every target block) beside the project's one-pass layout, alternated
    A/B/A/B in one process, and their ratio (medians);
  - feature extraction images/s and the time of a 50,000 x 10,000 kNN (D = width).
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
from pjepa.eval.features import extract_features  # noqa: E402
from pjepa.eval.knn import knn_evaluate  # noqa: E402
from pjepa.train.loop import Trainer  # noqa: E402

PRESETS = {"smoke": "configs/smoke.yaml", "reference": "configs/tin100/deterministic.yaml"}


def make_trainer(preset: str, batch: int, args: argparse.Namespace, layout: str, tmp: Path) -> Trainer:
    cfg = load_config(ROOT / PRESETS[preset])
    size = cfg.data.image_size
    overrides = [
        "data.name=synthetic", "data.path=null", "data.eval_split=val", "data.val_fraction=0",
        f"data.options={{image_size: {size}, num_train: {max(4 * batch, 512)}, num_val: 64}}",
        f"optim.batch_size={batch}", "train.progress=false", "train.eval_every=0",
        f"train.precision={args.precision}", f"train.compile={str(args.compile).lower()}",
        f"model.predictor.layout={layout}", f"train.device={args.device}", "train.max_steps=100000",
    ]
    return Trainer(load_config(ROOT / PRESETS[preset], overrides), tmp / f"{preset}-{layout}")


def time_steps(trainer: Trainer, start: int, steps: int) -> float:
    """Seconds per step over ``steps`` real training steps (synchronised at the ends)."""
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for s in range(start, start + steps):
        trainer.train_step(s)
    sync()
    return (time.perf_counter() - t0) / steps


def bench_preset(preset: str, batch: int, args: argparse.Namespace, tmp: Path) -> list[tuple[str, str]]:
    trainers = {lay: make_trainer(preset, batch, args, lay, tmp) for lay in ("joint", "per_block")}
    for t in trainers.values():
        time_steps(t, 0, args.warmup)
    per = {lay: [] for lay in trainers}
    for r in range(args.repeats):  # alternate A/B so drift on a shared machine hits both
        for lay, t in trainers.items():
            per[lay].append(time_steps(t, args.warmup + r * args.steps, args.steps))
    med = {lay: statistics.median(v) for lay, v in per.items()}
    rows = [(f"{preset}: train images/s (batch {batch}, joint predictor)", f"{batch / med['joint']:.1f}"),
            (f"{preset}: train images/s (official per-block predictor)", f"{batch / med['per_block']:.1f}"),
            (f"{preset}: step time per-block / joint", f"{med['per_block'] / med['joint']:.2f}x")]
    return rows


def bench_eval(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str]]:
    t = make_trainer("reference", 32, args, "joint", tmp)
    enc = t.method.feature_encoder("target")
    images = torch.randint(0, 256, (args.feature_images, 3, 64, 64), dtype=torch.uint8)
    amp = torch.bfloat16 if t.device.type == "cuda" else None
    extract_features(enc, images[:64], 64, t.mean, t.std, t.device, 64, amp)  # warm-up
    t0 = time.perf_counter()
    extract_features(enc, images, 64, t.mean, t.std, t.device, 256, amp)
    feat_s = args.feature_images / (time.perf_counter() - t0)
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(50_000, 384, generator=g).to(t.device)
    queries = torch.randn(10_000, 384, generator=g).to(t.device)
    yb = torch.randint(0, 100, (50_000,), generator=g).to(t.device)
    yq = torch.randint(0, 100, (10_000,), generator=g).to(t.device)
    t0 = time.perf_counter()
    knn_evaluate(bank, yb, queries, yq, 100)
    if t.device.type == "cuda":
        torch.cuda.synchronize()
    return [("reference: feature extraction images/s", f"{feat_s:.1f}"),
            ("kNN 50,000 bank x 10,000 queries, D=384, both votes", f"{time.perf_counter() - t0:.2f} s")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--smoke-batch", type=int, default=64)
    p.add_argument("--reference-batch", type=int, default=32)
    p.add_argument("--feature-images", type=int, default=1024)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = bench_preset("smoke", args.smoke_batch, args, tmp)
        rows += bench_preset("reference", args.reference_batch, args, tmp)
        rows += bench_eval(args, tmp)
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    print(f"\n| measurement ({dev}, torch {torch.__version__}, {args.precision}, "
          f"compile={args.compile}, threads={torch.get_num_threads()}) | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
