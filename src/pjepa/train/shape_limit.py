"""The shape-aware limit of a training step: its matrix products and attention calls timed alone.

A large square matmul (``pjepa.profiling.matmul_peak``) runs near the processor's best rate, but a
ViT of width 128-384 over a few thousand token rows multiplies much smaller, thinner matrices, and no
step of it can reach that rate. The limit measured here is one the step could reach:

1. ``record_products(fn)`` runs ``fn()`` (one training step) under a ``TorchDispatchMode`` and records
   every matrix product and attention kernel it calls, forward and backward, as the dispatcher sees
   it (after autocast, so in the step's precision): ``mm``/``addmm``/``bmm``/``baddbmm`` (a linear
   layer is one forward and two backward products: dX and dW), convolutions and their backward, and
   the fused ``scaled_dot_product`` attention kernels and their backward. Each call is keyed by its
   operator, argument shapes, strides, dtypes and other arguments; equal calls are counted together.
2. ``time_products`` replays each distinct call alone on fresh tensors of the same layout (no
   autograd): warm-up, then the median of several repeats.
3. The limit is the sum over distinct calls of (count x median time): the seconds one step would take
   if only those kernels ran, each at the speed it reaches at its own shape.
   ``fraction_of_shape_limit`` = limit / measured step time; the rest of the step is the elementwise
   work (norms, activations, softmax outside fused kernels, the optimizer, EMA), copies, and the
   framework's overhead between kernels.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from pjepa.profiling import count_flops

_aten = torch.ops.aten
#: matrix products and convolutions by operator packet; attention kernels are matched by name below
_PRODUCTS = {_aten.mm: "matmul", _aten.addmm: "matmul", _aten.bmm: "matmul", _aten.baddbmm: "matmul",
             _aten._addmm_activation: "matmul", _aten.convolution: "convolution",
             _aten.convolution_backward: "convolution"}
KINDS = ("matmul", "attention", "convolution")


def product_kind(func: Any) -> str | None:
    """'matmul', 'attention' or 'convolution' for an ATen overload the limit times; None for any other."""
    kind = _PRODUCTS.get(func.overloadpacket)
    if kind is not None:
        return kind
    name = func.overloadpacket.__name__
    if name.startswith("_scaled_dot_product_") and name != "_fused_sdp_choice":
        return "attention"
    return None


@dataclass(frozen=True)
class _TensorSpec:
    """A tensor argument's layout: a fresh tensor of it is made for the replay."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: str


@dataclass
class ProductCall:
    """One distinct product / attention call of the step and how often the step made it."""

    op: Any  # the ATen overload
    kind: str
    args: tuple[Any, ...]  # tensors replaced by _TensorSpec, or kept (non-floating: masks, seeds)
    kwargs: dict[str, Any]
    count: int = 0
    seconds: float = float("nan")  # median time of one call alone
    flops: int = 0  # of one call (pjepa.profiling.count_flops)

    def describe(self) -> str:
        shapes = [tuple(a.shape) for a in (*self.args, *self.kwargs.values()) if isinstance(a, _TensorSpec | torch.Tensor)]
        return f"{self.op} {' '.join(str(list(s)) for s in shapes)} x{self.count}"


def _key_of(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ("T", tuple(value.shape), tuple(value.stride()), value.dtype, str(value.device))
    if isinstance(value, torch.dtype | torch.device | torch.layout | torch.memory_format):
        return str(value)
    return value


def _spec_of(value: Any) -> Any:
    """Floating tensors -> their layout (fresh values at replay); other tensors (boolean masks, seeds,
    offsets: small, and their values can choose the kernel's path) are copied as they are."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            return _TensorSpec(tuple(value.shape), tuple(value.stride()), value.dtype, str(value.device))
        return value.detach().clone()
    return value


class _ProductRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[Any, ProductCall] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        kind = product_kind(func)
        if kind is not None:
            key = (str(func), repr(tree_map(_key_of, (args, kwargs))))
            call = self.calls.get(key)
            if call is None:
                call = self.calls[key] = ProductCall(func, kind, tree_map(_spec_of, args), tree_map(_spec_of, kwargs))
            call.count += 1
        return func(*args, **kwargs)


def record_products(fn: Callable[[], Any]) -> tuple[list[ProductCall], Any]:
    """(the distinct product / attention calls ``fn()`` made, in order of first call, with counts; its result)."""
    recorder = _ProductRecorder()
    with recorder:
        result = fn()
    return list(recorder.calls.values()), result


def _materialise(value: Any) -> Any:
    if isinstance(value, _TensorSpec):  # random values under the same strides (expanded ones included)
        extent = 1 + sum((n - 1) * s for n, s in zip(value.shape, value.stride, strict=True)) if all(value.shape) else 0
        base = torch.randn(extent, device=value.device).to(value.dtype)
        return base.as_strided(value.shape, value.stride)
    return value


def _time_call(fn: Callable[[], Any], sync: Callable[[], None], repeats: int, sample_s: float) -> float:
    """Median seconds of one ``fn()``: one warm-up call, one to size the samples (a sample runs the call
    enough times to last about ``sample_s``, so microsecond kernels are not lost in timer noise), then
    ``repeats`` samples."""
    fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    once = time.perf_counter() - t0
    inner = max(1, min(100, int(sample_s / max(once, 1e-7))))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


@dataclass
class ShapeLimit:
    """The step's products timed alone: ``seconds`` per step (the limit), their FLOPs per step."""

    seconds: float
    flops: int
    calls: list[ProductCall] = field(default_factory=list)

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else float("nan")

    def seconds_by_kind(self) -> dict[str, float]:
        return {k: sum((c.count * c.seconds for c in self.calls if c.kind == k), 0.0) for k in KINDS}


def time_products(calls: list[ProductCall], sync: Callable[[], None] = lambda: None, repeats: int = 5,
                  sample_s: float = 2e-3) -> ShapeLimit:
    """Time each call alone (see the module docstring) and sum: fills each call's ``seconds`` and ``flops``."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    with torch.no_grad():
        for call in calls:
            run = functools.partial(call.op, *tree_map(_materialise, call.args), **tree_map(_materialise, call.kwargs))
            call.seconds = _time_call(run, sync, repeats, sample_s)
            call.flops, _ = count_flops(run)
    return ShapeLimit(seconds=sum((c.count * c.seconds for c in calls), 0.0), flops=sum(c.count * c.flops for c in calls),
                      calls=calls)
