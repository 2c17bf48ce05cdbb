"""Per-head cost: training images/s relative to the deterministic head, and sampling time per 1,000 tokens.

    python benchmarks/head_throughput.py                         # CPU: the CIFAR-10 CPU head presets
    python benchmarks/head_throughput.py --family tin100 --precision bf16 --batch 256   # GPU: reference presets

Every head's preset (configs/<family>/<head>.yaml) is trained for a few real
steps of `pjepa.train.loop.Trainer` (augmentation, masks, encoders, trunk,
head loss, backward, AdamW, EMA) on synthetic images of the preset's
resolution, all at the same global batch; heads are timed round-robin,
``--repeats`` times, and the median is reported, so drift on a shared machine
hits every head alike. Sampling: one draw for >= 1,000 target tokens of real
trunk conditions (best of 2 after a warm-up), as in `pjepa eval head`.
Record results in docs/speed.md with date, processor and command.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_throughput import time_steps  # noqa: E402

from pjepa.config import load_config  # noqa: E402
from pjepa.eval.head_metrics import sampling_seconds, token_rows  # noqa: E402
from pjepa.train.loop import Trainer  # noqa: E402

HEADS = {
    "cifar10": {"deterministic": "cpu", "mdn": "mdn", "autoregressive": "autoregressive", "flow": "flow",
                "flow_matching": "flow_matching", "diffusion": "diffusion"},
    "tin100": {h: h for h in ("deterministic", "mdn", "autoregressive", "flow", "flow_matching", "diffusion")},
}


def make_trainer(family: str, file: str, args: argparse.Namespace, tmp: Path) -> Trainer:
    path = ROOT / "configs" / family / f"{file}.yaml"
    size = load_config(path).data.image_size
    overrides = [
        "data.name=synthetic", "data.path=null", "data.eval_split=val", "data.val_fraction=0",
        f"data.options={{image_size: {size}, num_train: {max(4 * args.batch, 512)}, num_val: 64}}",
        f"optim.batch_size={args.batch}", "train.progress=false", "train.eval_every=0",
        f"train.precision={args.precision}", f"train.compile={str(args.compile).lower()}",
        f"train.device={args.device}", "train.max_steps=100000", "train.time_limit_min=0",
    ]
    return Trainer(load_config(path, overrides), tmp / file)


@torch.no_grad()
def sample_seconds_per_1000(trainer: Trainer) -> float:
    method = trainer.method.eval()
    (monitor,) = list(method.monitors().heads.values())[:1]
    batch = trainer.batches(0)
    with torch.autocast(trainer.device.type, dtype=trainer.amp_dtype, enabled=trainer.amp_dtype is not None):
        h, _ = monitor.conditions(batch.images, batch.mask_generator)
    h = token_rows([(h.float(), None)], 1000)  # whole images, >= 1000 tokens
    g = torch.Generator(device=trainer.device).manual_seed(0)
    seconds = sampling_seconds(monitor.head, h, g)
    method.train()
    return seconds * 1000 / (h.shape[0] * h.shape[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", choices=sorted(HEADS), default="cifar10")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=4, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        trainers = {h: make_trainer(args.family, f, args, Path(d)) for h, f in HEADS[args.family].items()}
        for t in trainers.values():
            time_steps(t, 0, args.warmup)
        per = {h: [] for h in trainers}
        for r in range(args.repeats):  # round-robin: drift on a shared machine hits every head
            for h, t in trainers.items():
                per[h].append(time_steps(t, args.warmup + r * args.steps, args.steps))
        sampling = {h: sample_seconds_per_1000(t) for h, t in trainers.items()}
    img_s = {h: args.batch / statistics.median(v) for h, v in per.items()}
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    print(f"\n{args.family} presets, batch {args.batch}, {dev}, torch {torch.__version__}, {args.precision}, "
          f"compile={args.compile}, threads={torch.get_num_threads()}, median of {args.repeats} x {args.steps} steps")
    print("| head | train images/s | relative to deterministic | sampling s / 1000 tokens |\n|---|---|---|---|")
    for h in trainers:
        print(f"| {h} | {img_s[h]:.1f} | {img_s[h] / img_s['deterministic']:.2f} | {sampling[h]:.4f} |")


if __name__ == "__main__":
    main()
