"""What a run trains in, as recorded in its directory, and what evaluation makes of that record.

Training resolves ``train.precision`` (``pjepa.train.precision``) to a ``ResolvedPrecision`` and stores
``ResolvedPrecision.record()`` as ``run_info.json["precision"]``. Readers of the run take it from there:
a resume reuses it without probing (``from_record``), a run written before the record existed keeps the
old rule (``legacy_precision``), and feature extraction follows it on the same device type
(``eval_amp_dtype``). Nothing here probes or imports train / eval / methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pjepa.errors import ConfigError

NAMES = ("fp32", "bf16", "fp16")
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ResolvedPrecision:
    """What a run trains in: ``name`` (fp32 | bf16 | fp16), its autocast dtype (None = no autocast),
    whether a GradScaler is needed (fp16), and why (printed, and stored in the run directory)."""

    name: str
    amp_dtype: torch.dtype | None
    use_scaler: bool
    reason: str
    requested: str = ""
    device_type: str = "cpu"

    def record(self) -> dict[str, str]:
        """The JSON form stored as ``run_info.json["precision"]``."""
        return {"requested": self.requested, "name": self.name, "reason": self.reason,
                "device_type": self.device_type}

    def describe(self) -> str:
        """The start-up line: ``auto -> bf16 (why)``."""
        return f"{self.requested} -> {self.name} ({self.reason})"


def resolved(name: str, device: torch.device, reason: str, requested: str) -> ResolvedPrecision:
    """Precision ``name`` (one of ``NAMES``) on ``device``; fp16 on a CPU is a ConfigError naming ``requested``."""
    if name == "fp16" and device.type == "cpu":
        raise ConfigError(f"train.precision={requested!r}: fp16 needs a CUDA device and this run trains on the CPU; "
                          "choose auto, fp32 or bf16")
    return ResolvedPrecision(name, DTYPES[name], name == "fp16", reason, requested, device.type)


def legacy_precision(configured: str, device: torch.device) -> ResolvedPrecision:
    """A run written before precision was stored: pjepa's old rule, fp32 on a CPU and ``train.precision``
    (autocast) on CUDA."""
    name = configured if device.type == "cuda" and configured in NAMES else "fp32"
    return resolved(name, device, f"run written before train.precision=auto: the old rule (fp32 on CPU, "
                                  f"train.precision={configured} on CUDA)", configured)


def from_record(record: dict[str, Any], device: torch.device) -> ResolvedPrecision:
    """A stored ``PrecisionRecord`` (``run_info.json["precision"]``) on ``device`` (a resume: no probe)."""
    name = record.get("name")
    if name not in NAMES:
        raise ConfigError(f"run_info.json precision {record!r}: name must be one of {', '.join(NAMES)}")
    if name == "fp16" and device.type == "cpu":
        raise ConfigError("this run trains in fp16 (stored in its run_info.json when it started on a GPU), which "
                          "needs a CUDA device: resume it on a GPU")
    return resolved(name, device, str(record.get("reason", "")), str(record.get("requested", name)))


def valid_record(record: Any) -> dict[str, Any] | None:
    """``record`` if it is a stored precision (a mapping with a known ``name``), else None."""
    return record if isinstance(record, dict) and record.get("name") in NAMES else None


def eval_amp_dtype(record: dict[str, Any] | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype feature extraction uses for a run: its stored precision when evaluated on the
    device type it was resolved for (and, for bf16 on CUDA, if this GPU supports it); fp32 (None) when
    nothing is stored (runs older than ``auto``) or the device type differs."""
    record = valid_record(record)
    if record is None or record.get("device_type") != device.type:
        return None
    if device.type == "cpu" and record["name"] == "fp16":
        return None
    if device.type == "cuda" and record["name"] == "bf16" and not torch.cuda.is_bf16_supported():
        return None
    return DTYPES[record["name"]]
