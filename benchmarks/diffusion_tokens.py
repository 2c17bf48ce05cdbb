"""Diffusion head fidelity on real target tokens: a fresh diffusion head per parametrisation
(eps | x0 | v), trained on a finished run's frozen (h, y) pairs, then rated on validation tokens
under each sampler setting (coverage, calibration error, CRPS, energy score, spread-error
correlation, spread against the point error).

    python benchmarks/diffusion_tokens.py RUN_DIR [--train-images 4000] [--steps 1500]

The trunk (h) and the targets (y) are the run's own, frozen; only the head is trained, on
(h, y) pairs of training images, and rated on pairs of the validation split (held out of the
training images), never the reported split. The head's options are the CIFAR-10 diffusion
preset's. Comparing heads end to end (kNN) needs full runs: see docs/results.md.
"""

from __future__ import annotations

import argparse
import time

import torch

from pjepa.data import splits_for
from pjepa.eval.calibration import calibration_metrics
from pjepa.eval.protocols.head import head_pairs
from pjepa.eval.protocols.knn import subset
from pjepa.heads import build_head
from pjepa.runs import Run, resolve_device

SETTINGS = (("ddim", 50), ("dpmpp_2m", 50), ("dpmpp_2m", 25))
OPTIONS = {"timesteps": 1000, "width": 128, "blocks": 3}  # configs/cifar10/diffusion.yaml
TOKENS_PER_STEP = 2048  # about 64 images' target tokens (4 blocks of ~8 on the 8 x 8 grid)


def train_head(pairs: list[tuple[torch.Tensor, torch.Tensor]], prediction: str, steps: int, seed: int):
    h0, y0 = pairs[0]
    torch.manual_seed(seed)
    head = build_head("diffusion", h0.shape[-1], y0.shape[-1], prediction=prediction, **OPTIONS)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    # Batches differ in their number of target tokens T (the masks vary), and the head treats tokens
    # independently: pool every token and draw TOKENS_PER_STEP of them a step.
    h_all = torch.cat([h.reshape(-1, h.shape[-1]) for h, _ in pairs])  # (N tokens, Dp)
    y_all = torch.cat([y.reshape(-1, y.shape[-1]) for _, y in pairs])  # (N tokens, D)
    for _ in range(steps):
        idx = torch.randint(0, h_all.shape[0], (TOKENS_PER_STEP,), generator=g)
        loss, _ = head.loss(h_all[idx, None], y_all[idx, None], generator=g)  # (n, 1, Dp), (n, 1, D)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return head.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--train-images", type=int, default=4000)
    ap.add_argument("--val-images", type=int, default=300)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    run = Run(args.run)
    dev = resolve_device("cpu")
    splits = splits_for(run.config)
    train_imgs, _ = subset(splits.train, args.train_images, args.seed, "diffusion-tokens-train")
    val_imgs, _ = subset(splits.val, args.val_images, args.seed, "diffusion-tokens-val")
    _, train_pairs, step = head_pairs(run, "last", train_imgs, dev, "diffusion-tokens-train-masks")
    _, val_pairs, _ = head_pairs(run, "last", val_imgs, dev, "diffusion-tokens-val-masks")
    print(f"run {run.path} at step {step}: {sum(h.shape[0] * h.shape[1] for h, _ in train_pairs)} training tokens, "
          f"{sum(h.shape[0] * h.shape[1] for h, _ in val_pairs)} validation tokens; head {OPTIONS}")
    print("| prediction | sampler | cov@0.5 | cov@0.9 | calib. err | CRPS (point) | energy (point) "
          "| spread-err r | diversity | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for prediction in ("eps", "x0", "v"):
        t0 = time.perf_counter()
        head = train_head(train_pairs, prediction, args.steps, args.seed)
        secs = time.perf_counter() - t0
        for sampler, k in SETTINGS:
            head.sampler, head.spacing, head.sample_steps = sampler, "uniform" if sampler == "ddim" else "logsnr", k
            m = calibration_metrics(head, val_pairs, torch.Generator().manual_seed(args.seed), num_samples=32,
                                    sample_tokens=2048)
            cov = dict(zip(m["levels"], m["coverage"]))
            print(f"| {prediction} | {sampler} {k} | {cov.get(0.5, float('nan')):.3f} | {cov.get(0.9, float('nan')):.3f} "
                  f"| {m['calibration_error']:.3f} | {m['crps']:.4f} ({m['point_crps']:.4f}) "
                  f"| {m['energy_score']:.3f} ({m['point_energy_score']:.3f}) | {m['spread_error_pearson']:.3f} "
                  f"| {m['diversity']:.3f} | {secs:.0f} |", flush=True)


if __name__ == "__main__":
    main()
