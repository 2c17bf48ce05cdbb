"""Where a sweep's run stands, read from its run directory, and the commands that move it on.

Training is finished when ``checkpoints/last`` holds the planned number of steps
(``run_info.json``'s ``total_steps``), or when the sweep saw ``pjepa train`` exit 0 at the
step ``checkpoints/last`` still holds (a run cut by ``train.time_limit_min`` ends early and
is done: the sweep writes ``sweep_done.json`` after a zero exit; the loop writes nothing
for it). An evaluation is current when ``eval/NAME.json`` is newer than the checkpoint it
rated (a resumed, longer run is rated again).

A run folder kept without its checkpoints (results only, weights dropped to save space)
counts as finished when its ``sweep_done.json`` is there, and its evaluation files as current: the
same sweep command run over a copy of it trains only the runs that are missing.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pjepa.atomic import atomic_write_json
from pjepa.runs import Run, checkpoint_path, checkpoint_step, read_metrics
from pjepa.runs.checkpoint import MODEL_FILE

DONE_FILE = "sweep_done.json"


# What ``--eval`` accepts and runs comes from the protocol registry: every result file a protocol declares,
# by its stem. ``--eval knn_val`` runs ``pjepa eval knn --split val`` (result ``eval/knn_val.json``: the
# validation split, for choices); ``knn_white`` whitens the features, ``knn_context`` rates the context
# (student) encoder. Imported where used: reading a run's state needs no protocol.


def eval_names() -> list[str]:
    """What ``--eval`` accepts: every protocol's name, then the other result files the protocols declare."""
    from pjepa.eval.protocols import PROTOCOLS, result_files

    names = PROTOCOLS.names()
    return names + [stem for stem, _, _ in result_files() if stem not in names]


def eval_explanations() -> list[str]:
    """"knn_val = kNN on the validation split", ...: the declared result files that say what they are."""
    from pjepa.eval.protocols import result_files

    return [f"{stem} = {f.help}" for stem, _, f in result_files() if f.variant and f.help]


def eval_args(stem: str) -> tuple[str, ...]:
    """``pjepa eval`` arguments (protocol, flags) that write ``eval/<stem>.json``."""
    from pjepa.eval.protocols import find_result

    found = find_result(stem)
    if found is None:  # a protocol that declares no file of its own name: run it plainly
        return (stem,)
    protocol, result = found
    return (protocol.name, *result.args)


def baseline_evals(protocols: tuple[str, ...] | list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(result file stem, protocol arguments) of the baselines: for each result file a protocol declares
    with ``sweep_baselines`` "always" (kNN), or "asked" and asked for (whitened kNN, the linear probe).
    Stems follow ``pjepa eval``'s file names (``knn_pixels_white``)."""
    from pjepa.eval.protocols import BASELINES, result_files

    jobs = []
    for stem, protocol, result in result_files():
        if result.sweep_baselines == "always" or (result.sweep_baselines == "asked" and stem in protocols):
            for baseline in BASELINES:
                jobs.append((protocol.stem(result.variant, baseline), (protocol.name, baseline.flag, *result.args)))
    return jobs


@dataclass(frozen=True)
class RunState:
    """``kind``: "new" (nothing to continue: start it), "unfinished" (continue from ``step``) or "finished"."""

    kind: str
    step: int | None = None
    total: int | None = None


def run_state(run_dir: Path) -> RunState:
    """Where training of ``run_dir`` stands (see the module docstring)."""
    if not (run_dir / "config.yaml").is_file():
        return RunState("new")
    step, done = checkpoint_step(run_dir / "checkpoints", "last"), _done_at(run_dir)
    if step is None and done is not None and not (run_dir / "checkpoints").exists():
        return RunState("finished", done)  # results kept, weights dropped
    if step is None:
        return RunState("new")  # died before its first checkpoint: --auto-resume starts it again
    total = Run(run_dir).info.get("total_steps")
    finished = done == step or (isinstance(total, int) and step >= total)
    return RunState("finished" if finished else "unfinished", step, total)


def recorded_seconds(run_dir: Path) -> float | None:
    """What a run cost as its directory records it: training wall time (every resumed segment and the
    periodic validation included: ``metrics.jsonl``'s last ``wall_seconds``) plus the ``seconds`` of each
    evaluation in ``eval/``. None when no training time is recorded (the sweep then estimates from the
    runs it trains itself)."""
    rows = [r for r in read_metrics(run_dir) if isinstance(r.get("wall_seconds"), (int, float))]
    if not rows:
        return None
    seconds = float(rows[-1]["wall_seconds"])
    for result in sorted((run_dir / "eval").glob("*.json")):
        try:
            value = json.loads(result.read_text()).get("seconds")
        except (OSError, ValueError, AttributeError):
            continue
        seconds += float(value) if isinstance(value, (int, float)) else 0.0
    return seconds


def _done_at(run_dir: Path) -> int | None:
    """The step ``sweep_done.json`` records (None: no such file, or an unreadable one: train again)."""
    try:
        step = json.loads((run_dir / DONE_FILE).read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def mark_done(run_dir: Path) -> None:
    """Record that ``pjepa train`` exited 0 at the step ``checkpoints/last`` now holds (nothing to record
    without a checkpoint)."""
    step = checkpoint_step(run_dir / "checkpoints", "last")
    if step is None:
        return
    body = {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(run_dir / DONE_FILE, body, indent=None)


def eval_current(run_dir: Path, name: str) -> bool:
    """True when ``eval/NAME.json`` exists and is newer than the checkpoint it rated (``last``)."""
    result, ckpt = run_dir / "eval" / f"{name}.json", checkpoint_path(run_dir / "checkpoints", "last")
    if not result.is_file():
        return False
    if ckpt is None:  # results kept, weights dropped (see the module docstring): nothing to rate again
        return not (run_dir / "checkpoints").exists() and _done_at(run_dir) is not None
    return result.stat().st_mtime >= (ckpt / MODEL_FILE).stat().st_mtime


def pjepa_command(*args: str, python: str | None = None) -> list[str]:
    """``python -m pjepa ARGS`` with this interpreter (works wherever the package imports)."""
    return [python or sys.executable, "-m", "pjepa", *args]


def train_command(config_path: Path, run_dir: Path, overrides: tuple[str, ...] | list[str]) -> list[str]:
    """Start the run, or continue it from ``checkpoints/last`` (``--auto-resume``; its overrides then
    apply only if it starts)."""
    return pjepa_command("train", "--config", str(config_path), "--out", str(run_dir), "--auto-resume", *overrides)


def eval_commands(run_dir: Path, protocols: tuple[str, ...] | list[str],
                  baselines: bool) -> list[tuple[str, list[str]]]:
    """(result file stem, command) of every evaluation asked for; ``baselines`` adds kNN (and the linear
    probe, when asked for) of the untrained encoder and of raw pixels."""
    jobs = []
    for name in protocols:
        protocol, *extra = eval_args(name)
        jobs.append((name, pjepa_command("eval", protocol, "--run", str(run_dir), *extra)))
    if baselines:
        jobs += [(stem, pjepa_command("eval", *args[:1], "--run", str(run_dir), *args[1:]))
                 for stem, args in baseline_evals(protocols)]
    return jobs
