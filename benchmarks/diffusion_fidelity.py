"""Diffusion head fidelity on known distributions: what it samples against the truth, by what the
network predicts (eps | x0 | v), the ODE sampler (ddim | dpmpp_2m) and the number of steps.

Two targets, independent of the condition h (so the head must put its spread into the samples):
- ``gauss``: y ~ N(0, 0.5^2) per coordinate (D = 4). Reported: sample std / 0.5 (1 = exact).
- ``two-mode``: the tests' toy, y = +-2 on every coordinate + N(0, 0.1^2). Reported: the fraction of
  samples within 0.75 of a mode and the std of the mean coordinate around its mode (truth 0.05).
The ``oracle`` rows use the exact noise predictor of the Gaussian (no training): the sampler's own error.

    python benchmarks/diffusion_fidelity.py [--steps 1500] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import torch

from pjepa.heads import build_head
from pjepa.models.diffusion import DiffusionSchedule, sample_ode, split_prediction

STD, D, COND, TOKENS, NOISE = 0.5, 4, 8, 256, 0.1
SAMPLERS = (("ddim", 50), ("ddim", 200), ("dpmpp_2m", 10), ("dpmpp_2m", 25), ("dpmpp_2m", 50))


def batch(task: str, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, TOKENS, COND) conditions and (1, TOKENS, D) targets of one task."""
    h = torch.randn(1, TOKENS, COND, generator=g)
    if task == "gauss":
        return h, STD * torch.randn(1, TOKENS, D, generator=g)
    sign = torch.randint(0, 2, (1, TOKENS, 1), generator=g).float() * 2 - 1
    return h, 2.0 * sign.expand(1, TOKENS, D) + NOISE * torch.randn(1, TOKENS, D, generator=g)


def train(task: str, prediction: str, steps: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    head = build_head("diffusion", COND, D, width=64, blocks=2, prediction=prediction)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss, _ = head.loss(*batch(task, g), generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return head.eval()


def score(task: str, samples: torch.Tensor) -> str:
    """Gaussian: std / truth; two-mode: fraction near a mode and the within-mode std of the mean coordinate."""
    if task == "gauss":
        return f"{samples.std().item() / STD:.3f}"
    m = samples.mean(-1).reshape(-1)
    near = (m.abs() - 2).abs() < 0.75
    spread = (m[near].abs() - 2).std().item() if near.any() else float("nan")
    return f"{near.float().mean().item():.3f} / {spread:.3f}"


def oracle_row(n: int) -> list[str]:
    sched = DiffusionSchedule.from_options("linear", 1000)
    sched = DiffusionSchedule(sched.name, sched.abar.float())

    def denoise(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ab = sched.abar[t].unsqueeze(-1)
        return split_prediction((1 - ab).sqrt() * x / (ab * STD ** 2 + 1 - ab), x, ab, "eps")

    x = torch.randn(n, TOKENS, D, generator=torch.Generator().manual_seed(1))
    return [score("gauss", sample_ode(denoise, sched, x, k, s, "uniform" if s == "ddim" else "logsnr"))
            for s, k in SAMPLERS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500, help="training steps per head")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=16, help="samples per token")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cols = [f"{s} {k}" for s, k in SAMPLERS]
    print(f"| task | prediction | {' | '.join(cols)} | train s |")
    print("|---|---|" + "---|" * (len(cols) + 1))
    print(f"| gauss | oracle | {' | '.join(oracle_row(args.draws))} | 0 |")
    for task in ("gauss", "two-mode"):
        for prediction in ("eps", "x0", "v"):
            t0 = time.perf_counter()
            head = train(task, prediction, args.steps, args.seed)
            secs = time.perf_counter() - t0
            h = batch(task, torch.Generator().manual_seed(args.seed + 1))[0]
            row = []
            for sampler, k in SAMPLERS:
                head.sampler, head.spacing = sampler, "uniform" if sampler == "ddim" else "logsnr"
                row.append(score(task, head.sample(h, args.draws, torch.Generator().manual_seed(2), steps=k)))
            print(f"| {task} | {prediction} | {' | '.join(row)} | {secs:.0f} |", flush=True)


if __name__ == "__main__":
    main()
