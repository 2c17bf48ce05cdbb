"""``Run(path)``: the one reader of a run directory.

    runs/00000-smoke/
      config.yaml        resolved config          -> Run.config (with the resumes' overrides applied)
      resumes.jsonl      one line per resume with overrides (duration, evaluation, logging)
      run_info.json      commit, world size, ...  -> Run.info, Run.precision (what train.precision resolved to)
      data_stats.json    channel mean/std         -> Run.stats()
      metrics.jsonl      one row per logged step  -> Run.metrics()
      checkpoints/NAME/  weights + state          -> Run.checkpoint(NAME), Run.load_checkpoint(NAME)
      eval/*.json        evaluation results       -> Run.eval_results(), Run.write_eval(NAME, result)
      figures/           figures (viz)            -> Run.figures_dir

Evaluation, tables and figures read runs only through this class; what happens to a run
directory (new, resume, auto-resume, force, the lock, the run files) is ``RunDirectory``'s
(``runs/directory.py``), which calls the few writers here (``record_resume``, ``move_aside``, ``clear``). Runs
written by earlier releases (pjepa 0.1's ``train.method``, flat model keys and ``data.val_split``; VICReg
weights among the method's options; flow matching as ``head.name: flow`` with ``objective: flow_matching``)
load: their config is migrated on read (see ``pjepa.config.migrate_legacy``).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import yaml

from pjepa.atomic import atomic_write_json, move
from pjepa.config import MOVED_KEYS, Config, build_config, has_legacy_flow_head, has_method_vicreg, migrate_legacy
from pjepa.errors import CheckpointError, ConfigError
from pjepa.runs.checkpoint import checkpoint_path, load_checkpoint
from pjepa.runs.metrics import append_line, read_metrics
from pjepa.runs.precision import eval_amp_dtype, valid_record

#: What a resume may change: how long, how often to log / evaluate / save, and where it runs; anything
#: else (model, data, method, head, optimiser, masks, seed) would make the run a different experiment.
RESUMABLE = ("train.epochs", "train.max_steps", "train.time_limit_min", "train.eval_every", "train.log_every",
             "train.ckpt_every", "train.ckpt_every_min", "train.keep_last", "train.progress", "train.num_threads",
             "train.device", "train.compile", "train.wandb", "eval.")
RUN_FILES = ("config.yaml", "resumes.jsonl", "run_info.json", "data_stats.json", "metrics.jsonl")
RUN_DIRS = ("checkpoints", "tb", "eval", "figures")


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of the run directory, or a CheckpointError naming it."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); delete it and write it again "
                              "(eval/*.json: run that pjepa eval protocol again)") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a JSON object; delete it and write it again")
    return data


def resumable(key: str) -> bool:
    """Whether a resume may change the dotted config ``key`` (see ``RESUMABLE``)."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE)


def check_resume_overrides(overrides: list[str]) -> None:
    """ConfigError for an override a resume may not make (see ``RESUMABLE``)."""
    for item in overrides:
        key = item.split("=", 1)[0]
        if not resumable(key):
            raise ConfigError(
                f"--resume with {item!r}: a resume may change only duration, time limit, evaluation and logging "
                f"({', '.join(k + '*' if k.endswith('.') else k for k in RESUMABLE)}); {key} would make it another "
                "experiment: start a new run with --config and --out"
            )


def is_legacy(data: dict[str, Any]) -> bool:
    """True for a config mapping in the layout of an earlier release (see ``pjepa.config.migrate_legacy``)."""
    return (any(key.split(".")[1] in (data.get(key.split(".")[0]) or {}) for key in MOVED_KEYS)
            or has_method_vicreg(data) or has_legacy_flow_head(data))


class Run:
    """A run directory written by ``pjepa train`` (read-only, except ``write_eval``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "config.yaml").is_file():
            raise CheckpointError(
                f"{self.path} is not a pjepa run directory (no config.yaml); pass the folder `pjepa train` wrote"
            )

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def raw_config(self) -> dict[str, Any]:
        """config.yaml as written (migrated to today's layout if the run is older)."""
        try:
            data = yaml.safe_load((self.path / "config.yaml").read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{self.path}/config.yaml is not valid YAML ({str(e).splitlines()[0]}); "
                                  "restore it (pjepa train wrote it) or train the run again") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{self.path}/config.yaml holds a {type(data).__name__}, not a config mapping")
        if not data:  # not even the schema's sections: its numbers would be read against defaults it never used
            raise CheckpointError(f"{self.path}/config.yaml is empty: the run's config is lost; restore it (pjepa "
                                  "train wrote it) or train the run again")
        return migrate_legacy(data) if is_legacy(data) else data

    def resume_overrides(self) -> list[str]:
        """The overrides of every resume so far, in order (``resumes.jsonl``)."""
        path = self.path / "resumes.jsonl"
        if not path.is_file():
            return []
        out: list[str] = []
        for line in path.read_text().splitlines():
            try:
                out += list(json.loads(line).get("overrides", []))
            except (json.JSONDecodeError, AttributeError):
                continue  # a torn last line: that resume never started
        return out

    def record_resume(self, step: int, overrides: list[str]) -> None:
        """Append this resume's overrides (config.yaml stays what the run started with)."""
        check_resume_overrides(overrides)
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": step, "overrides": list(overrides)}
        append_line(self.path / "resumes.jsonl", json.dumps(entry))

    @cached_property
    def config(self) -> Config:
        """The run's resolved config: config.yaml, then each resume's overrides."""
        try:
            return build_config(self.raw_config, self.resume_overrides())
        except ConfigError as e:
            raise CheckpointError(
                f"{self.path}/config.yaml does not fit this pjepa version ({e}); "
                "fix that key in config.yaml, or train the run again"
            ) from None

    @cached_property
    def info(self) -> dict[str, Any]:
        path = self.path / "run_info.json"
        return _read_json(path) if path.is_file() else {}

    @property
    def precision(self) -> dict[str, Any] | None:
        """What ``train.precision`` resolved to at the run's start (``run_info.json["precision"]``: requested,
        name, reason, device_type), or None for a run written before ``train.precision=auto``."""
        return valid_record(self.info.get("precision"))

    def amp_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype for extracting this run's features on ``device`` (None = fp32): the stored
        precision on the device type it was resolved for, fp32 otherwise (see ``runs.precision.eval_amp_dtype``)."""
        return eval_amp_dtype(self.precision, device)

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (3,), std (3,)) the run normalised its images with."""
        path = self.path / "data_stats.json"
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the run directory is incomplete (did training start?)")
        s = _read_json(path)
        if not isinstance(s.get("mean"), list) or not isinstance(s.get("std"), list):
            raise CheckpointError(f"{path} lacks the channel mean/std lists; restore it or train the run again")
        return torch.tensor(s["mean"]), torch.tensor(s["std"])

    def metrics(self) -> list[dict[str, Any]]:
        """Every row of metrics.jsonl (training rows, periodic evaluation rows)."""
        return read_metrics(self.path)

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, name: str = "last") -> Path | None:
        """The folder of checkpoint ``name`` ("last", "best"), or None."""
        return checkpoint_path(self.checkpoints_dir, name)

    def load_checkpoint(self, name: str = "last", map_location: str | torch.device = "cpu") -> tuple[dict, Any]:
        """(weights, training state) of checkpoint ``name``, with an error that says what to do."""
        if self.checkpoint(name) is None:
            have = [n for n in ("last", "best") if self.checkpoint(n) is not None]
            hint = f"it has: {', '.join(have)}" if have else "train first (no checkpoint yet)"
            raise CheckpointError(f"no checkpoint {name!r} in {self.checkpoints_dir}; {hint}")
        return load_checkpoint(self.checkpoints_dir, name, map_location=map_location)

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    def eval_result(self, name: str) -> dict[str, Any] | None:
        """``eval/NAME.json`` or None."""
        path = self.eval_dir / f"{name}.json"
        return _read_json(path) if path.is_file() else None

    def eval_results(self) -> dict[str, dict[str, Any]]:
        """Every ``eval/*.json``, by file stem."""
        if not self.eval_dir.is_dir():
            return {}
        return {p.stem: _read_json(p) for p in sorted(self.eval_dir.glob("*.json"))}

    def results(self) -> list[str]:
        """The evaluation results and completion marks this folder holds (``eval/*.json``, ``sweep_done.json``):
        what a kept or finished run has and a run that died before its first checkpoint does not."""
        found = sorted(f"eval/{p.name}" for p in self.eval_dir.glob("*.json")) if self.eval_dir.is_dir() else []
        return found + (["sweep_done.json"] if (self.path / "sweep_done.json").is_file() else [])

    def move_aside(self) -> Path | None:
        """Move pjepa's own files and folders into ``previous/N`` (never deleted: a run restarted by
        ``--auto-resume`` keeps what it replaces); returns that folder, or None when there was nothing."""
        present = [n for n in (*RUN_FILES, *RUN_DIRS) if (self.path / n).exists()]
        if not present:
            return None
        parent = self.path / "previous"
        n = 1 + max((int(p.name) for p in parent.glob("*") if p.name.isdigit()), default=0) if parent.is_dir() else 1
        dest = parent / str(n)
        dest.mkdir(parents=True)
        for name in present:
            move(self.path / name, dest / name)
        return dest

    def clear(self) -> None:
        """Delete what training and evaluation wrote here (``--force``): only pjepa's own files and folders."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for name in RUN_DIRS:
            shutil.rmtree(self.path / name, ignore_errors=True)

    def write_eval(self, name: str, result: dict[str, Any]) -> Path:
        """Write ``eval/NAME.json`` atomically; returns its path. A result already there is never replaced
        silently: it is kept as ``eval/previous/NAME.N.json`` and a printed line says so, with both scores."""
        self.eval_dir.mkdir(parents=True, exist_ok=True)
        path = self.eval_dir / f"{name}.json"
        if path.is_file():
            self._keep_previous(path, result)
        atomic_write_json(path, result)
        return path

    def _keep_previous(self, path: Path, result: dict[str, Any]) -> None:
        previous = self.eval_dir / "previous"
        previous.mkdir(exist_ok=True)
        n = 1 + sum(1 for _ in previous.glob(f"{path.stem}.*.json"))
        kept = previous / f"{path.stem}.{n}.json"
        move(path, kept)
        try:
            old = json.loads(kept.read_text())
        except (OSError, ValueError):
            old = {}

        def score(r: Any) -> str:
            top1 = r.get("top1_weighted", r.get("top1")) if isinstance(r, dict) else None
            return f"top-1 {top1:.2f} %" if isinstance(top1, (int, float)) else "no top-1"

        print(f"[pjepa] eval/{path.name}: the previous result ({score(old)}, step {old.get('step', '?')}) is kept as "
              f"{kept.relative_to(self.path)}; the new one has {score(result)}", flush=True)


def seed_named(name: str, *, bare: bool = False) -> bool:
    """A run folder named for its seed (``cpu_seed1``; with ``bare``, the seed alone: ``seed0``, the
    ``ROW/seedN`` of ``benchmarks/budget_rows.sh``), which its parent folder must name where the name
    alone does not tell runs apart (``bare``: never does)."""
    return re.fullmatch(r"seed\d+" if bare else r"(.*[_-])?seed\d+", name) is not None


def seed_lane(path: Path) -> str | None:
    """``HEAD/seedN`` for a run directory inside a seed folder (one lane per seed, ``HEAD/seedN/RUN``, as
    ``benchmarks/heads_budget.sh`` lays them out): every lane's run has the same name, the lane tells them
    apart. None elsewhere."""
    parent = path.parent
    return f"{parent.parent.name}/{parent.name}" if seed_named(parent.name, bare=True) else None
