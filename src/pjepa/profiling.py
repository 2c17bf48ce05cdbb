"""Where a training step's time and arithmetic go: named parts, matmul FLOPs and the matmul peak.

    with part("target_encoder"):   # anywhere in the step; free unless a PartTimer is active
        y = target_encoder(x)

    with PartTimer(sync) as timer:  # `pjepa bench`: seconds per part, exclusive of nested parts
        trainer.train_step(step)
    timer.seconds  -> {"augment": ..., "forward": ..., "target_encoder": ..., ...}

A part's time is *exclusive*: a part opened inside another (the encoders inside ``forward``) is not
counted again in the outer one, so the parts of a step add up to the step. On a GPU the timer
synchronises the device at every part boundary (so parts are only timed in a separate pass, never
in training); with no timer active, ``part`` does nothing and never synchronises.

``count_flops`` counts the matmul / convolution / attention FLOPs of a call with
``torch.utils.flop_counter``, including the CPU's fused attention kernel that the stock counter
misses. ``matmul_peak`` measures the device's dense matmul rate in a dtype: the yardstick the
step's achieved GFLOP/s is read against.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

_ACTIVE: PartTimer | None = None


class PartTimer:
    """Seconds spent in each named ``part`` (exclusive of nested parts) while the timer is active.

    ``sync`` is called at every boundary (``torch.cuda.synchronize`` on a GPU, nothing on a CPU) so that
    asynchronous device work is charged to the part that queued it.
    """

    def __init__(self, sync: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.perf_counter):
        self.sync, self.clock = sync, clock
        self.seconds: dict[str, float] = {}  # insertion order = the order parts first ran
        self._stack: list[list[Any]] = []  # [name, start of its current exclusive stretch]

    def push(self, name: str) -> None:
        self.sync()
        now = self.clock()
        if self._stack:  # the outer part pauses
            outer = self._stack[-1]
            self.seconds[outer[0]] = self.seconds.get(outer[0], 0.0) + now - outer[1]
        self._stack.append([name, now])

    def pop(self) -> None:
        self.sync()
        now = self.clock()
        name, start = self._stack.pop()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - start
        if self._stack:  # the outer part resumes
            self._stack[-1][1] = now

    def __enter__(self) -> PartTimer:
        global _ACTIVE
        if _ACTIVE is not None:
            raise RuntimeError("a PartTimer is already active; parts cannot be timed by two timers at once")
        _ACTIVE = self
        return self

    def __exit__(self, *exc: object) -> None:
        global _ACTIVE
        _ACTIVE = None
        self._stack.clear()


@contextlib.contextmanager
def part(name: str) -> Iterator[None]:
    """Charge the enclosed work to ``name`` when a ``PartTimer`` is active; otherwise do nothing."""
    timer = _ACTIVE
    if timer is None:
        yield
        return
    timer.push(name)
    try:
        yield
    finally:
        timer.pop()


# -- FLOPs


def _cpu_sdpa_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)  # shapes: FlopCounterMode passes tensors' shapes


def _cpu_sdpa_backward_flops(grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None,
                             **kwargs: Any) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _custom_flops() -> dict[Any, Callable[..., int]]:
    """Attention kernels the stock counter does not know (it counts 0 for them)."""
    ops = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {}
    if hasattr(ops, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[ops._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops
        mapping[ops._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward_flops
    return mapping


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """(FLOPs of ``fn()``: matmuls, convolutions, attention, forward and backward; its result).

    One multiply-add counts 2. Elementwise work (norms, activations, the optimizer) is not counted:
    the figure is the arithmetic a matmul peak can be compared with.
    """
    with FlopCounterMode(display=False, custom_mapping=_custom_flops()) as counter:
        result = fn()
    return int(counter.get_total_flops()), result


# -- the yardstick


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int | None = None, seconds: float = 1.0) -> float:
    """GFLOP/s of the best of repeated n x n @ n x n matmuls in ``dtype`` on ``device``.

    n defaults to 2048 on a CPU (at 1024 a 2-thread fp32 matmul read below what a training step reached:
    a fraction of peak above 1) and 8192 on a GPU; the best of about ``seconds`` of repeats, since a
    shared machine only ever slows a matmul down. Uses the threads torch is set to.
    """
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):  # warm-up: kernel selection, page faults
        a @ b
    sync()
    best, spent = float("inf"), 0.0
    while spent < seconds or best == float("inf"):
        t0 = time.perf_counter()
        a @ b
        sync()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return 2 * n**3 / best / 1e9
