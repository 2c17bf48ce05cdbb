"""The training step before and after the CPU speed changes (fused AdamW, bf16 attention), in one process.

    python benchmarks/step_before_after.py [--configs smoke,cifar10/cpu,reference] [--steps 10]

"before" is today's code with the two changes undone by patching: attention through
``F.scaled_dot_product_attention`` in every precision (the fused CPU kernel) and AdamW unfused on a
CPU. "after" is the code as it is. Each configuration runs before / after / before / after in fp32
and bf16 (``pjepa.train.bench.run_bench``), and the table shows the median img/s of the two visits
and the fraction of the matmul peak (measured in the same process). Use on a quiet machine; record
the table in docs/speed.md with the date, processor and command.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pjepa.models.vit as vit  # noqa: E402
import pjepa.train.loop as loop  # noqa: E402
from pjepa.train.bench import run_bench  # noqa: E402

#: the issue's reference configuration: TIN-100 64 px, patch 8, width 384, depth 10, predictor 384 x 4
CONFIGS = {
    "smoke": ("smoke", []),
    "cifar10/cpu": ("cifar10/cpu", []),
    "reference": ("tin100/deterministic", ["model.predictor.embed_dim=384", "model.predictor.num_heads=8",
                                           "optim.batch_size=64"]),
}


@contextlib.contextmanager
def before() -> Iterator[None]:
    """Undo the changes: fused-kernel attention everywhere, unfused AdamW on a CPU."""
    attention, build = vit.attention, loop.build_optimizer

    def sdpa(q, k, v, attn_mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)

    def unfused(cfg, method, device):
        return torch.optim.AdamW(method.param_groups(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                 fused=device.type == "cuda")

    vit.attention, loop.build_optimizer = sdpa, unfused
    try:
        yield
    finally:
        vit.attention, loop.build_optimizer = attention, build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="applied to every configuration, e.g. train.num_threads=2")
    args = ap.parse_args()
    print("| config | precision | before img/s | after img/s | after / before | before fraction_of_peak | "
          "after fraction_of_peak | GFLOP/img |\n|---|---|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        config, extra = CONFIGS[name]
        runs: dict[tuple[str, str], list] = {}
        for _ in range(args.rounds):
            for variant in ("before", "after"):
                with before() if variant == "before" else contextlib.nullcontext():
                    r = run_bench(config, [*extra, *args.overrides], ["fp32", "bf16"], steps=args.steps, warmup=2,
                                  flop_steps=1, part_steps=0, progress=False)
                for x in r.results:
                    runs.setdefault((x.precision, variant), []).append(x)
        for precision in ("fp32", "bf16"):
            b, a = runs[(precision, "before")], runs[(precision, "after")]
            ib = statistics.median(x.images_per_s for x in b)
            ia = statistics.median(x.images_per_s for x in a)
            fb = statistics.median(x.fraction_of_peak for x in b)
            fa = statistics.median(x.fraction_of_peak for x in a)
            print(f"| {name} | {precision} | {ib:.1f} | {ia:.1f} | {ia / ib:.2f}x | {fb:.2f} | {fa:.2f} | "
                  f"{a[0].gflop_per_image:.3f} |", flush=True)


if __name__ == "__main__":
    main()
