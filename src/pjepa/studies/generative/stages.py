"""Resumable stages: each writes its outputs atomically, then a done marker; a rerun skips what is done.

A stage (``Stage``) is declared once: its name, the options its key hashes, the stages it depends on, the
files it writes and the plain function that writes them; ``run_stages`` runs a tuple of them in the declared
order. A stage is done when ``FOLDER/done/<stage>.json`` exists, every output it declared exists, and the
marker's ``key`` equals the stage's current key: a hash of its options and of the ``id`` of every marker it
depends on. A stage that runs gets a fresh ``id``, so everything downstream of it runs again too; a changed
option (``sample.n=...``) reruns that stage and what depends on it, nothing upstream. The marker is written
last, so a stage interrupted half-way has none and runs again (stages that can resume, such as token
extraction, continue where they stopped).

Markers also hold each stage's wall time; ``timings.json`` is collected from them, so a rerun that skips
every stage rewrites it byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from pjepa.runs import atomic_write_bytes

Marker = dict[str, Any]


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``, atomically (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """``tensors`` (moved to the CPU) as one safetensors file, atomically (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save_safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_safetensors_bytes(path.read_bytes())


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class Stages:
    """The markers of one folder (a run's, or the shared one); ``label`` starts every printed line."""

    def __init__(self, folder: Path, label: str, echo: Callable[[str], None] = print) -> None:
        self.folder, self.label, self.echo = Path(folder), label, echo
        self.times: dict[str, float] = {}  # stage -> seconds, in the order this call met them

    def marker_path(self, name: str) -> Path:
        return self.folder / "done" / f"{name}.json"

    def marker(self, name: str) -> Marker | None:
        path = self.marker_path(name)
        try:
            return read_json(path) if path.is_file() else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # a torn marker: the stage runs again

    @staticmethod
    def key(options: Any, deps: Sequence[Marker]) -> str:
        text = json.dumps({"options": options, "deps": [d["id"] for d in deps]}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def run(self, name: str, options: Any, deps: Sequence[Marker], outputs: Sequence[Path],
            fn: Callable[[], Any]) -> Marker:
        """Run ``fn`` (which writes ``outputs``) unless stage ``name`` is done; returns its marker.

        When an older marker of other options or inputs exists, its outputs are deleted first (a stale
        token folder would refuse the new extraction); without a marker they are kept, so a stage
        that stopped half-way may resume.
        """
        key, old = self.key(options, deps), self.marker(name)
        if old is not None and old.get("key") == key and all(Path(p).exists() for p in outputs):
            self.times[name] = float(old.get("seconds", 0.0))
            self.echo(f"[gen study] {self.label:<14} {name:<18} skipped (done, {self.times[name]:.1f} s)")
            return old
        if old is not None:
            self.marker_path(name).unlink(missing_ok=True)
            for path in outputs:
                _remove(Path(path))
        start = time.perf_counter()
        fn()
        seconds = round(time.perf_counter() - start, 3)
        marker = {"stage": name, "key": key, "id": uuid.uuid4().hex, "seconds": seconds}
        write_json(self.marker_path(name), marker)
        self.times[name] = seconds
        self.echo(f"[gen study] {self.label:<14} {name:<18} done in {seconds:.1f} s")
        return marker

    def write_timings(self) -> Path:
        """``FOLDER/timings.json``: seconds per stage (as measured when each last ran) and their sum."""
        path = self.folder / "timings.json"
        write_json(path, {"stages": self.times, "total": round(sum(self.times.values()), 3)})
        return path


@dataclass(frozen=True)
class Stage:
    """One declared stage. ``options(study, r)``: what its key hashes besides its dependencies; ``deps``: the
    names of earlier stages whose markers it depends on (of the same tuple, or of ``run_stages``'s ``done``);
    ``outputs``: the paths it writes, relative to the folder ``run_stages`` is given; ``fn(study, r)`` writes
    them. ``r`` is the compared run the stage works on (for the shared stages: the first one)."""

    name: str
    options: Callable[[Any, Any], dict[str, Any]]
    deps: tuple[str, ...]
    outputs: tuple[str, ...]
    fn: Callable[[Any, Any], None]


def run_stages(stages: Sequence[Stage], study: Any, r: Any, markers: Stages, base: Path,
               done: Mapping[str, Marker] | None = None, prefix: str = "") -> dict[str, Marker]:
    """Run ``stages`` in their declared order into the folder of ``markers`` (skipping what is done), then write
    its ``timings.json``; returns ``done`` with each stage's marker added under ``prefix + name``."""
    out = dict(done or {})
    for s in stages:
        out[prefix + s.name] = markers.run(s.name, s.options(study, r), [out[d] for d in s.deps],
                                           [base / p for p in s.outputs], partial(s.fn, study, r))
    markers.write_timings()
    return out
