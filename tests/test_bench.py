"""`pjepa bench` and its parts: exclusive part timing, FLOP counting (CPU attention included), the
matmul peak, and the bench run end to end on the tiny configuration."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, run_cli

from pjepa.errors import ConfigError
from pjepa.profiling import PartTimer, count_flops, matmul_peak, part


class FakeClock:
    """Each call returns the next of the given instants."""

    def __init__(self, *ticks: float) -> None:
        self.ticks = list(ticks)

    def __call__(self) -> float:
        return self.ticks.pop(0)


def test_parts_are_exclusive_worked_example():
    """outer 0..10 with inner 2..7 inside: outer 5 s, inner 5 s; a second inner visit adds up."""
    syncs = []
    with PartTimer(sync=lambda: syncs.append(1), clock=FakeClock(0, 2, 7, 8, 9, 10)) as timer, part("outer"):
        with part("inner"):
            pass
        with part("inner"):
            pass
    assert timer.seconds == {"outer": 0 - 0 + 2 + (8 - 7) + (10 - 9), "inner": 5 + 1}
    assert list(timer.seconds) == ["outer", "inner"]  # the order parts first ran
    assert len(syncs) == 6  # one per boundary


def test_part_is_free_without_a_timer():
    calls = []
    with part("anything"):
        calls.append(1)
    assert calls == [1]
    with PartTimer() as timer:
        pass
    with part("after"):  # the timer is gone: nothing recorded
        pass
    assert timer.seconds == {}


def test_a_part_that_raises_is_still_closed():
    with PartTimer(clock=FakeClock(0, 1, 3, 4)) as timer, part("outer"), pytest.raises(ValueError), part("inner"):
        raise ValueError
    assert timer.seconds == {"outer": 1 + 1, "inner": 2}


def test_two_timers_at_once_are_refused():
    with PartTimer(), pytest.raises(RuntimeError, match="already active"), PartTimer():
        pass


def test_count_flops_linear_forward_backward():
    """y = x W^T: forward 2*B*I*O; backward dX and dW, 2*B*I*O each."""
    B, I, O = 8, 16, 4
    layer = torch.nn.Linear(I, O, bias=False)
    x = torch.randn(B, I, requires_grad=True)
    flops, _ = count_flops(lambda: layer(x).sum().backward())
    assert flops == 3 * 2 * B * I * O


@pytest.mark.parametrize("masked", [False, True])
def test_count_flops_sees_cpu_attention(masked):
    """The CPU's fused attention kernel, which the stock counter reads as 0: QK^T and AV forward
    (2 matmuls of 2*B*H*N*N*d); backward 5 (the fused kernel recomputes QK^T, then dV, dP, dQ, dK)."""
    B, H, N, d = 2, 3, 10, 8
    q = torch.randn(B, H, N, d, requires_grad=True)
    mask = torch.ones(N, N, dtype=torch.bool) if masked else None
    fwd, _ = count_flops(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=mask))
    assert fwd == 2 * (2 * B * H * N * N * d)
    both, _ = count_flops(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=mask).sum().backward())
    assert both == fwd + 5 * (2 * B * H * N * N * d)


def test_matmul_peak_is_a_rate(one_thread):
    peak = matmul_peak(torch.device("cpu"), torch.float32, n=128, seconds=0.01)
    assert math.isfinite(peak) and peak > 0.01


@pytest.mark.slow
def test_bench_tiny_end_to_end(one_thread):
    from pjepa.train.bench import format_bench, run_bench

    overrides = [o for o in TINY if not o.startswith(("data.options", "train.max_steps"))]
    r = run_bench("smoke", overrides, ["fp32"], steps=2, warmup=1, flop_steps=1, part_steps=1, progress=False)
    (x,) = r.results
    assert r.batch_size == 16 and r.image_size == 24 and r.data == "synthetic 24 px"
    assert set(r.matmul_peak_gflops) == {"fp32"} and "auto ->" in r.auto  # the peak of each precision timed
    assert x.images_per_s > 0 and x.ms_per_step > 0 and x.peak_memory_mib > 0
    # forward + backward arithmetic of the tiny model: more than its encoder's forward alone on 36 tokens
    assert x.gflop_per_image > 3 * 2 * 36 * 2 * (12 * 32 * 32) / 1e9
    assert x.fraction_of_peak == pytest.approx(x.achieved_gflops / x.peak_gflops)
    assert 0 < x.context_tokens < 36 and 0 < x.target_tokens < 36
    assert {"augment", "masks", "target_encoder", "context_encoder", "predictor", "head", "backward",
            "optimizer", "ema"} <= set(x.parts_ms)
    assert all(v >= 0 for v in x.parts_ms.values())
    # the shape-aware limit: the step's own products timed alone; not a performance goal, only a positive
    # fraction (above 1 only by timing noise)
    assert x.shape_limit_calls > 0 and x.shape_limit_ms > 0 and x.shape_limit_gflops > 0
    assert x.fraction_of_shape_limit == pytest.approx(x.shape_limit_ms / x.ms_per_step)
    assert x.fraction_of_shape_limit > 0
    assert set(x.shape_limit_ms_by_kind) == {"matmul", "attention", "convolution"}
    assert sum(x.shape_limit_ms_by_kind.values()) == pytest.approx(x.shape_limit_ms)
    json.dumps(r.to_dict())  # --json can print it
    table = format_bench(r)
    assert "fraction_of_peak" in table and "target_encoder" in table and "fraction_of_shape_limit" in table


def test_bench_rejects_a_bad_precision():
    from pjepa.train.bench import run_bench

    with pytest.raises(ConfigError, match="fp64.*choose from fp32, bf16, fp16 or auto"):
        run_bench("smoke", [], ["fp64"])


@pytest.mark.slow
def test_bench_cli_json_and_a_typo():
    overrides = [o for o in TINY if not o.startswith(("data.options", "train.max_steps"))]
    ok = run_cli("bench", "--config", "smoke", "--precision", "fp32", "--steps", "1", "--warmup", "0",
                 "--flop-steps", "1", "--part-steps", "1", "--json", *overrides)
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["results"][0]["precision"] == "fp32" and out["results"][0]["gflop_per_image"] > 0
    assert out["results"][0]["fraction_of_shape_limit"] > 0 and out["results"][0]["shape_limit_ms"] > 0
    bad = run_cli("bench", "--config", "smoke", "--precision", "fp33")
    assert bad.returncode == 2 and "fp33" in bad.stderr and "choose from" in bad.stderr


# -- the shape-aware limit


def test_record_products_of_a_tiny_vit_worked_example(one_thread):
    """ViT 8 px, patch 4 (L = 4 tokens), width 8, depth 2, batch 2, forward + backward, counted by hand.

    Each block has 4 linears (qkv 8->24, proj 8->8, MLP 8->32 and 32->8): forward one addmm each on the
    (B*L, in) = (8, in) rows, backward two mm each (dX and dW): 12 products a block, 24 for depth 2, in 12
    distinct (operator, shapes) since both blocks have the same shapes. Attention: one fused call forward
    and one backward per block. The patch embedding: one convolution and one convolution backward."""
    from pjepa.models.vit import VisionTransformer
    from pjepa.train.shape_limit import record_products

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=8, patch_size=4, embed_dim=8, depth=2, num_heads=2)
    images = torch.randn(2, 3, 8, 8)
    calls, _ = record_products(lambda: vit(images).sum().backward())
    count = {k: sum(c.count for c in calls if c.kind == k) for k in ("matmul", "attention", "convolution")}
    assert count == {"matmul": 2 * 4 * 3, "attention": 2 * 2, "convolution": 2}
    matmuls = [c for c in calls if c.kind == "matmul"]
    assert len(matmuls) == 4 * 3 and all(c.count == 2 for c in matmuls)
    forward = sorted(tuple(c.args[2].shape) for c in matmuls if "addmm" in str(c.op))  # (in, out) of each linear
    assert forward == [(8, 8), (8, 24), (8, 32), (32, 8)]
    assert all(c.args[1].shape[0] == 2 * 4 for c in matmuls if "addmm" in str(c.op))  # B*L rows
    # nothing the FLOP counter sees is missed: the replayed calls add up to the step's FLOPs
    from pjepa.train.shape_limit import time_products

    step_flops, _ = count_flops(lambda: vit(images).sum().backward())
    assert time_products(calls, repeats=1, sample_s=0).flops == step_flops


def test_record_products_sees_the_autocast_precision(one_thread):
    from pjepa.train.shape_limit import record_products

    layer = torch.nn.Linear(16, 4)
    x = torch.randn(8, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        calls, _ = record_products(lambda: layer(x).float().sum().backward())
    assert sum(c.count for c in calls) == 3
    assert {a.dtype for c in calls for a in c.args if hasattr(a, "dtype")} == {torch.bfloat16}


def test_time_products_sums_count_times_time(one_thread):
    """The limit of a linear's forward + backward: 3 products of 2*B*I*O FLOPs, each timed alone."""
    from pjepa.train.shape_limit import record_products, time_products

    B, I, O = 64, 32, 16
    layer = torch.nn.Linear(I, O, bias=False)
    x = torch.randn(B, I, requires_grad=True)
    calls, _ = record_products(lambda: layer(x).sum().backward())
    limit = time_products(calls, repeats=3, sample_s=1e-4)
    assert limit.flops == 3 * 2 * B * I * O
    assert all(c.seconds > 0 for c in calls)
    assert limit.seconds == pytest.approx(sum(c.count * c.seconds for c in calls))
    assert limit.seconds_by_kind()["matmul"] == pytest.approx(limit.seconds)
    assert limit.gflops == pytest.approx(limit.flops / limit.seconds / 1e9)


def test_bench_auto_is_timed_as_what_it_picks_and_only_once(one_thread, monkeypatch):
    import pjepa.train.bench as bench

    monkeypatch.setattr(bench, "matmul_peak", lambda device, dtype: 100.0)
    overrides = [o for o in TINY if not o.startswith(("data.options", "train.max_steps"))]
    r = bench.run_bench("smoke", overrides, ["auto", "fp32", "bf16"], steps=1, warmup=0, flop_steps=0,
                        part_steps=0, progress=False, shape_limit=False)
    names = [x.precision for x in r.results]
    assert sorted(names) == ["bf16", "fp32"]  # auto resolved to one of them, which is not timed twice
    assert r.auto.startswith(f"auto -> {names[0]}")  # the first row is auto's, named by its choice


def test_bench_can_skip_the_shape_limit(one_thread, monkeypatch):
    import pjepa.train.bench as bench

    monkeypatch.setattr(bench, "matmul_peak", lambda device, dtype: 100.0)  # the yardstick is not under test
    overrides = [o for o in TINY if not o.startswith(("data.options", "train.max_steps"))]
    r = bench.run_bench("smoke", overrides, ["fp32"], steps=1, warmup=0, flop_steps=0, part_steps=0,
                        progress=False, shape_limit=False)
    (x,) = r.results
    assert x.shape_limit_calls == 0 and math.isnan(x.fraction_of_shape_limit) and math.isnan(x.shape_limit_ms)
    assert "shape-aware limit" not in bench.format_bench(r)
