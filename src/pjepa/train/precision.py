"""Resolve ``train.precision`` (auto | fp32 | bf16 | fp16) to what a new run trains in.

Processors of one machine kind differ (a bf16 matmul ran from 0.6x to several times fp32: see
``docs/speed.md``), so ``auto`` on a CPU measures the processor (``probe_cpu_bf16``) at the configuration's
shape: one forward + backward of a ViT block of the encoder's width k (MLP width n = 4 k) over m = 1,024
token rows (16 sequences of 64 tokens), in fp32 and under bf16 autocast. A block, not one matmul: the
casts autocast adds, layer norms, GELU and attention (the encoder's own ``models.vit.attention``) take part
of a bare matmul's gain, and the probe should see what the step sees. bf16 is chosen when the ratio
fp32 time / bf16 time is at least ``BF16_MIN_RATIO`` = 1.3, a margin for what the block leaves out (the
optimiser, EMA and augmentation stay fp32).

The ratio is the median of alternating fp32 / bf16 rounds. With one thread they are timed in CPU time,
which other processes on the core do not move; with more, in wall time, which they do. So the probe also
measures the CPU share it got (process CPU time / (wall time x threads), over the fp32 rounds only: a
processor without bf16 instructions may run its emulated bf16 matmul on one thread, which would read as a
busy machine on a quiet one): below ``BUSY_SHARE`` = 0.8 the machine was busy, the ratio comes from a 1-thread probe instead and is not cached (a later run on a quiet
machine measures again). An explicit ``train.precision`` decides for certain.

The rule, for ``resolve_precision(requested, device, width, threads)``:

    requested   CUDA                                   CPU
    auto        bf16 if torch.cuda.is_bf16_supported() bf16 if probe ratio >= 1.3 (and bf16 matmul runs)
                else fp16 (with a GradScaler)          else fp32
    fp32        fp32                                   fp32
    bf16        bf16 autocast                          bf16 autocast (explicit: honoured, not probed)
    fp16        fp16 autocast + GradScaler             ConfigError

Probe results are cached per machine in ``$PJEPA_CACHE_DIR/precision.json`` (default
``~/.cache/pjepa/precision.json``), keyed by the CPU model (name and bf16 instruction flags), the torch
version, the thread count and the shape; a corrupt cache file is ignored and written again. Delete the
file to measure again (e.g. after a probe on a machine that was busier than usual).

A run stores what it resolved in ``run_info.json``; reading that record (a resume, evaluation) is
``pjepa.runs.precision``, which never probes.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pjepa.atomic import atomic_write_bytes
from pjepa.errors import ConfigError
from pjepa.models.vit import attention
from pjepa.runs.precision import NAMES, ResolvedPrecision, resolved

#: Choose bf16 on a CPU only when its probe ratio (fp32 time / bf16 time) is at least this.
BF16_MIN_RATIO = 1.3
#: Token rows of the probe block (a realistic batch has several thousand; 1,024 keeps the probe short).
PROBE_ROWS = 1024
PROBE_TOKENS = 64  # tokens per sequence (a 32 px image at patch 4, a 64 px image at patch 8)
PROBE_ROUNDS = 3  # at least this many alternating fp32 / bf16 pairs
PROBE_SECONDS = 1.0  # more pairs (up to 3 x PROBE_ROUNDS) while the probe has taken less than this
ROUND_SECONDS = 0.01  # each round repeats the step for about this long
#: A multi-thread probe that got less than this share of its threads' CPU time ran on a busy machine.
BUSY_SHARE = 0.8
# 2: the probe block attends through models.vit.attention (bf16 on CPU without the fused kernel);
# 3: busy multi-thread probes are measured on one thread and not cached (drops entries a busy probe wrote)
CACHE_VERSION = 3
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx_ne_convert")


@dataclass(frozen=True)
class ProbeResult:
    """One CPU probe: milliseconds per probe-block step (shape (m, k, n)) in each dtype and their ratio."""

    supported: bool  # bf16 matmul runs at all (and gives finite numbers)
    ratio: float  # fp32 seconds / bf16 seconds (> 1: bf16 faster); 0.0 when unsupported
    fp32_ms: float
    bf16_ms: float
    shape: tuple[int, int, int]
    threads: int
    cpu_share: float = 1.0  # process CPU time / (wall time x threads) over the multi-thread fp32 rounds
    busy: bool = False  # cpu_share < BUSY_SHARE: ratio, fp32_ms, bf16_ms are a 1-thread probe's


def device_type(name: str) -> str:
    """The device type ``train.device=name`` trains on (``auto``: cuda if available, else cpu), without
    checking that the device exists."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name.split(":", 1)[0]


def check_requested(requested: str, device_name: str) -> None:
    """Before anything runs (``pjepa train --dry-run``): a ConfigError for fp16 on a CPU."""
    if requested == "fp16" and device_type(device_name) == "cpu":
        resolved("fp16", torch.device("cpu"), "", requested)


# -- the probe


def probe_shape(width: int) -> tuple[int, int, int]:
    """(m, k, n) of the probe for encoder width ``width``: ``PROBE_ROWS`` token rows, the width, the MLP's
    hidden width 4 x ``width``."""
    return PROBE_ROWS, int(width), 4 * int(width)


class ProbeBlock(nn.Module):
    """A pre-norm ViT block of width k with MLP width n on sequences of ``PROBE_TOKENS`` tokens: what a
    training step spends its time in (matmuls, attention, layer norms, GELU and the casts autocast adds)."""

    def __init__(self, k: int, n: int) -> None:
        super().__init__()
        self.heads = max(1, k // 64) if k % 64 == 0 else 1
        self.norm1, self.qkv, self.proj = nn.LayerNorm(k), nn.Linear(k, 3 * k), nn.Linear(k, k)
        self.norm2, self.fc1, self.fc2 = nn.LayerNorm(k), nn.Linear(k, n), nn.Linear(n, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, k)
        B, N, k = x.shape
        q, key, v = self.qkv(self.norm1(x)).view(B, N, 3, self.heads, k // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(attention(q, key, v).transpose(1, 2).reshape(B, N, k))  # the encoder's own attention
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def _bf16_works() -> bool:
    try:
        a = torch.ones(8, 8, dtype=torch.bfloat16)
        return bool(torch.isfinite((a @ a).float()).all())
    except RuntimeError:
        return False


def _seconds(step: Callable[[], None], bf16: bool, reps: int, clock: Callable[[], float]) -> float:
    t0 = clock()
    for _ in range(reps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            step()
    return (clock() - t0) / reps


def probe_cpu_bf16(m: int, k: int, n: int, threads: int) -> ProbeResult:
    """Time one forward + backward of a ``ProbeBlock`` (width k, MLP width n) over m token rows on the CPU,
    in fp32 and under bf16 autocast, with ``threads`` threads: after one warm-up each, alternating
    fp32 / bf16 rounds (each about ``ROUND_SECONDS``; at least ``PROBE_ROUNDS`` pairs, more while the
    total stays under ``PROBE_SECONDS``); the ratio is the median of the pairs' ratios, robust to a
    machine whose load changes. With one thread the rounds are timed in CPU time (other processes on a
    shared core do not count), else in wall time, and if the rounds got less than ``BUSY_SHARE`` of the
    threads' CPU time the result is a 1-thread probe's (``busy``). Also checks that a bf16 matmul runs at
    all. About 1 s at width 128 and 2-3 s at width 384 on a busy 2-core Zen 4 (once per machine: see
    ``cached_probe``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        if not _bf16_works():
            return ProbeResult(False, 0.0, 0.0, 0.0, (m, k, n), threads)
        g = torch.Generator().manual_seed(0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            block = ProbeBlock(k, n)
        x = torch.randn(max(1, m // PROBE_TOKENS), PROBE_TOKENS, k, generator=g, requires_grad=True)

        def step() -> None:
            block(x).float().square().mean().backward()

        # One thread: the process's CPU time, blind to other processes sharing the core; more: wall time.
        clock = time.process_time if threads <= 1 else time.perf_counter
        try:
            _seconds(step, True, 1, clock)
        except RuntimeError:
            return ProbeResult(False, 0.0, 0.0, 0.0, (m, k, n), threads)
        reps = max(1, min(100, round(ROUND_SECONDS / max(_seconds(step, False, 1, clock), 1e-6))))
        t32: list[float] = []
        t16: list[float] = []
        cpu32 = wall32 = 0.0  # the share is read on the fp32 rounds: an emulated bf16 matmul may use one thread
        t0 = clock()
        while len(t32) < PROBE_ROUNDS or (len(t32) < 3 * PROBE_ROUNDS and clock() - t0 < PROBE_SECONDS):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            t32.append(_seconds(step, False, reps, clock))
            cpu32, wall32 = cpu32 + time.process_time() - cpu0, wall32 + time.perf_counter() - wall0
            t16.append(_seconds(step, True, reps, clock))
        share = min(1.0, cpu32 / max(1e-9, wall32 * threads))
        if threads > 1 and share < BUSY_SHARE:  # wall times on a busy machine: ask one thread's CPU time instead
            one = probe_cpu_bf16(m, k, n, 1)
            return ProbeResult(one.supported, one.ratio, one.fp32_ms, one.bf16_ms, (m, k, n), threads, share, True)
        ratio = statistics.median(a / b for a, b in zip(t32, t16))
        return ProbeResult(True, ratio, 1e3 * statistics.median(t32), 1e3 * statistics.median(t16), (m, k, n),
                           threads, share if threads > 1 else 1.0)
    finally:
        torch.set_num_threads(before)


# -- the per-machine cache


def cache_path() -> Path:
    """``$PJEPA_CACHE_DIR/precision.json``, default ``~/.cache/pjepa/precision.json``."""
    root = os.environ.get("PJEPA_CACHE_DIR") or Path.home() / ".cache" / "pjepa"
    return Path(root).expanduser() / "precision.json"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform``), its x86 family and model numbers, and its
    bf16 instruction flags: virtual machines may report only "AMD EPYC", which covers Zen 3 (family 25
    model 1, no bf16) and Zen 4 (family 25 model 17, AVX512-BF16) alike."""
    name, family, model, flags = "", "", "", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and not name:
                name = value
            elif key == "cpu family" and not family:
                family = value
            elif key == "model" and not model:
                model = value
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    if family and model:
        name = f"{name} (family {family} model {model})"
    have = [f for f in BF16_FLAGS if f in flags]
    return f"{name} [{' '.join(have)}]" if have else name


def cache_key(m: int, k: int, n: int, threads: int) -> str:
    return f"{cpu_model()} | torch {torch.__version__} | {threads} threads | {m}x{k}x{n}"


def _read_cache(path: Path) -> dict[str, Any]:
    """The cache's entries, or {} for a missing, unreadable or corrupt file (it is written again)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def _from_entry(entry: Any) -> ProbeResult | None:
    try:
        m, k, n = (int(x) for x in entry["shape"])
        res = ProbeResult(bool(entry["supported"]), float(entry["ratio"]), float(entry["fp32_ms"]),
                          float(entry["bf16_ms"]), (m, k, n), int(entry["threads"]))
    except (TypeError, KeyError, ValueError):
        return None
    return res if len(res.shape) == 3 else None


def cached_probe(m: int, k: int, n: int, threads: int) -> tuple[ProbeResult, bool]:
    """(the probe result for this machine and shape, whether it came from the cache). Measures and writes
    the cache on a miss, unless the machine was busy (``ProbeResult.busy``: the next run measures again);
    a cache that cannot be written is only a warning."""
    path, key = cache_path(), cache_key(m, k, n, threads)
    entries = _read_cache(path)
    hit = _from_entry(entries.get(key))
    if hit is not None:
        return hit, True
    res = probe_cpu_bf16(m, k, n, threads)
    if res.busy:
        return res, False
    entries[key] = {**asdict(res), "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=2) + "\n").encode())
    except OSError as e:
        print(f"[pjepa] warning: could not write the precision cache {path} ({e}); set PJEPA_CACHE_DIR", flush=True)
    return res, False


# -- resolution


def resolve_precision(requested: str, device: torch.device, width: int, threads: int) -> ResolvedPrecision:
    """``train.precision`` -> what the run trains in (see the module docstring for the table).

    Explicit fp32 / bf16 / fp16 are honoured on every device: explicit bf16 on a CPU means bf16 autocast
    (before ``auto`` existed it meant fp32 there). fp16 on a CPU is a ConfigError. ``auto`` on a CPU probes
    (or reads the cache) at ``probe_shape(width)`` with ``threads`` threads."""
    if requested in NAMES:
        return resolved(requested, device, f"train.precision={requested}", requested)
    if requested != "auto":
        raise ConfigError(f"train.precision={requested!r}: choose auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return resolved("bf16", device, f"{torch.cuda.get_device_name(device)} supports bf16", requested)
        return resolved("fp16", device, f"{torch.cuda.get_device_name(device)} lacks bf16: fp16 with a GradScaler",
                         requested)
    if device.type != "cpu":
        return resolved("fp32", device, f"no automatic choice on {device.type}", requested)
    m, k, n = probe_shape(width)
    res, cached = cached_probe(m, k, n, threads)
    where = f"{'cached in' if cached else 'measured now, cached in'} {cache_path()}"
    if res.busy:
        where = (f"measured on 1 thread in CPU time: the machine was busy (the {threads}-thread probe got "
                 f"{100 * res.cpu_share:.0f} % of its CPU time); not cached")
    if not res.supported:
        return resolved("fp32", device, f"CPU bf16 matmul unsupported; {where}", requested)
    name = "bf16" if res.ratio >= BF16_MIN_RATIO else "fp32"
    reason = (f"CPU bf16 block {res.ratio:.2f}x fp32 (width {k}, MLP {n}, {m} tokens, {1 if res.busy else threads} "
              f"threads; "
              f"bf16 needs >= {BF16_MIN_RATIO}x); {where}")
    return resolved(name, device, reason, requested)
