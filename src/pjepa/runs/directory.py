"""``RunDirectory(path)``: the one writer of a run directory's life, as ``Run`` is its one reader.

Every decision about what happens to a run directory is taken here, and nowhere else:

    RunDirectory.for_new_run(out, name, auto_resume)   where a new run goes (runs/NNNNN-name by default)
    resume_config(overrides)   --resume: the stored config, the resumes' overrides, then these
    check_writable()           the folder can be written (nothing created yet)
    lock()                     one writer at a time (``runs/lock.py``); the main rank only
    open(cfg, check, ...)      under the lock, ``settle``: new, resume, auto-resume, force
    write_run_files(...)       config.yaml (kept on resume), data_stats.json, run_info.json
    data_stats()               the channel statistics a resumed run reads back

``pjepa train`` and the training loop call these; neither decides run-directory policy itself.
The policy (``settle``): a new run refuses a folder that holds one, unless ``force`` (which clears
pjepa's own files there) or ``auto_resume``, which continues a run that has a checkpoint (refusing
a preset or overrides that would make it another experiment; those a resume may change are applied
and recorded), starts one that does not exist, restarts one that died before its first checkpoint
after moving what it left into ``previous/N``, and refuses a folder with results but no checkpoint
(a kept or finished run). A resume's overrides are recorded in ``resumes.jsonl``.

Only the main rank (rank 0 of a torchrun job, or the only process) decides and writes; the other
ranks work out the same answer without writing.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
import yaml

from pjepa.config import Config, build_config, config_to_dict, dump_config
from pjepa.errors import ConfigError
from pjepa.runs.lock import RunLock
from pjepa.runs.run import Run, check_resume_overrides, resumable
from pjepa.runs.state_io import atomic_write_bytes
from pjepa.runs.writable import writable_dir
from pjepa.utils import next_run_dir


def is_main_rank() -> bool:
    """Whether this process decides and writes: rank 0 of a torchrun job, or a process on its own."""
    return int(os.environ.get("RANK", "0")) == 0


class ConfigCheck(Protocol):
    """What completes and checks a config (``pjepa.checks.check_config``, which sits above this layer)."""

    def __call__(self, cfg: Config, build: bool = True) -> Config: ...


class Start(NamedTuple):
    """How a run starts in its directory: continuing its ``last`` checkpoint or not, and with which config."""

    resume: bool
    config: Config


class RunDirectory:
    """The writer's side of ``path``: its policy (new, resume, auto-resume, force), its lock and its run files."""

    def __init__(self, path: str | Path, main: bool | None = None) -> None:
        self.path = Path(path)
        self.main = is_main_rank() if main is None else main

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    @classmethod
    def for_new_run(cls, out: Path | None, name: str, auto_resume: bool = False) -> RunDirectory:
        """``out``, or ``runs/NNNNN-name`` (the next free number) when none is given; a ConfigError where a
        numbered folder cannot be the answer (torchrun: every process must write the same run; auto-resume:
        the run to continue must be named)."""
        if out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("under torchrun pass --out DIR so that every process writes to the same run")
        if auto_resume and out is None:
            raise ConfigError("--auto-resume needs --out DIR: the run directory to continue or start")
        return cls(out or next_run_dir(Path("runs"), name))

    # -- policy

    def resume_config(self, overrides: Sequence[str]) -> Config:
        """The config ``--resume`` continues with: config.yaml, every earlier resume's overrides, then
        ``overrides`` (a ConfigError for one a resume may not make; a CheckpointError if no run is here)."""
        run = Run(self.path)
        check_resume_overrides(list(overrides))
        return build_config(run.raw_config, run.resume_overrides() + list(overrides))

    def check_writable(self) -> None:
        """A named error now, before any work, if the folder cannot be written (the main rank checks)."""
        if self.main:
            writable_dir(self.path, "run directory (--out)")

    def lock(self) -> AbstractContextManager[Any]:
        """The directory's write lock on the main rank (a second writer gets a named error); nothing elsewhere."""
        return RunLock(self.path) if self.main else contextlib.nullcontext()

    def open(self, cfg: Config, check: ConfigCheck, *, resume: bool, auto_resume: bool = False,
             force: bool = False, overrides: Sequence[str] = ()) -> Start:
        """``settle`` under the lock: refused now if another process writes here (training takes the
        lock again until it ends)."""
        with self.lock():
            return self.settle(cfg, check, resume=resume, auto_resume=auto_resume, force=force, overrides=overrides)

    def settle(self, cfg: Config, check: ConfigCheck, *, resume: bool, auto_resume: bool = False,
               force: bool = False, overrides: Sequence[str] = ()) -> Start:
        """How the run starts here (the policy in this module's docstring). ``cfg`` is the checked config
        asked for, ``overrides`` the overrides a ``resume`` was given, ``check`` completes a config."""
        if not self.main:  # rank 0 decides and writes; another rank may already see rank 0's new config.yaml
            if not resume and auto_resume and Run(self.path).checkpoint("last") is not None:
                run = Run(self.path)
                return Start(True, check(build_config(run.raw_config,
                                                      run.resume_overrides() + _changed(run, cfg, check))))
            return Start(resume, cfg)
        if not resume and (self.path / "config.yaml").is_file():
            run = Run(self.path)
            if auto_resume and run.checkpoint("last") is not None:
                changed = _changed(run, cfg, check)  # the preempted run: continue it, with its own config
                if changed:
                    run.record_resume(run.load_checkpoint("last")[1]["step"], changed)
                    print(f"[pjepa] {self.path}: continuing it with {' '.join(changed)}", flush=True)
                return Start(True, check(build_config(run.raw_config, run.resume_overrides())))
            if auto_resume and not force and run.results():
                raise ConfigError(f"{self.path} holds results ({', '.join(run.results()[:4])}) but no checkpoint "
                                  "to continue: a kept or finished run, which --auto-resume would train again over "
                                  "them. Rate it with pjepa eval / pjepa table as it is, or move it away (or pass "
                                  "--force to replace it) to train it again")
            if auto_resume and not force:  # it died before its first checkpoint: start it again
                moved = run.move_aside()
                if moved is not None:
                    print(f"[pjepa] {self.path} had no checkpoint (the run died before its first one): what it "
                          f"left is in {moved}; starting it again", flush=True)
            elif force:
                run.clear()
            else:
                raise ConfigError(f"{self.path} already holds a run; continue it with --resume {self.path}, "
                                  "replace it with --force, or pick another --out")
        elif resume and overrides:
            run = Run(self.path)
            run.record_resume(run.load_checkpoint("last")[1]["step"], list(overrides))
        return Start(resume, cfg)

    # -- the run files a training start writes

    def write_run_files(self, cfg: Config, mean: torch.Tensor, std: torch.Tensor, info: dict[str, Any],
                        keep_config: bool = False) -> None:
        """config.yaml (kept on resume: a resume's overrides go to resumes.jsonl), data_stats.json (the channel
        statistics and how many images gave them), run_info.json (``info``: commit, batch, precision, ...)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not (keep_config and (self.path / "config.yaml").is_file()):
            atomic_write_bytes(self.path / "config.yaml", dump_config(cfg).encode())
        stats = {"mean": mean.tolist(), "std": std.tolist(), "samples": cfg.data.stats_samples}
        atomic_write_bytes(self.path / "data_stats.json", json.dumps(stats, indent=2).encode())
        atomic_write_bytes(self.path / "run_info.json", json.dumps(info, indent=2).encode())

    def data_stats(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, std) from data_stats.json, or None when the run has not written it."""
        path = self.path / "data_stats.json"
        if not path.exists():
            return None
        s = json.loads(path.read_text())
        return torch.tensor(s["mean"]), torch.tensor(s["std"])


def _changed(run: Run, cfg: Config, check: ConfigCheck) -> list[str]:
    """The overrides that turn the stored run's config into ``cfg`` (what --auto-resume was given), as
    key=value; a ConfigError naming the keys when a resume may not change them (another preset, another
    learning rate: another experiment, not a continuation)."""
    stored = config_to_dict(check(build_config(run.raw_config, run.resume_overrides()), build=False))
    given = config_to_dict(check(cfg, build=False))
    diffs = _diff(stored, given)
    refused = [k for k in diffs if not resumable(k)]
    if refused:
        shown = "; ".join(f"{k}: {_get(stored, k)!r} in the run, {_get(given, k)!r} given" for k in refused[:4])
        raise ConfigError(f"{run.path} is another experiment than the one asked for ({shown}); --auto-resume "
                          "continues a run only with its own preset and overrides. Pick another --out, or pass "
                          "--force to replace it")
    return [f"{k}={yaml.safe_dump(_get(given, k), default_flow_style=True).strip().removesuffix('...').strip()}"
            for k in diffs]


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between ``a`` and ``b`` (a plug-in's options compare whole)."""
    out = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict) and not key.endswith("options"):
            out += _diff(a[k], b[k], key + ".")
        elif a.get(k) != b.get(k):
            out.append(key)
    return out


def _get(d: dict, key: str) -> Any:
    value: Any = d
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value
