"""Run grid points: each one ``pjepa train --auto-resume`` then its evaluations, as child processes.

``run_point`` is the one per-run function: the local launcher calls it for each point in
turn, a SLURM job (``pjepa.sweep.slurm``) calls it for its own point. Each step is a
``python -m pjepa`` child whose output streams through; a run that has finished training
is not retrained, an evaluation newer than its checkpoint is not redone, so running the
same point again continues where it stopped.

Stopping: the local launcher starts each child in its own session and passes SIGINT /
SIGTERM on to it (a terminal's Ctrl-C thus reaches ``pjepa train`` once: it saves
``checkpoints/last`` and exits 130 / 143), then the sweep stops with that code. A child that
fails otherwise is reported and the sweep goes on with the next run.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pjepa.sweep.state import (
    RunState,
    eval_commands,
    eval_current,
    mark_done,
    recorded_seconds,
    run_state,
    train_command,
)

#: Exit codes of a child stopped by a signal (``pjepa train`` returns these after saving ``last``).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOPPED = {128 + int(s) for s in STOP_SIGNALS}


def _ignore_signals(signums: tuple[int, ...]) -> None:
    """In a child before exec: ignore these signals (an ignored disposition survives exec)."""
    for s in signums:
        signal.signal(s, signal.SIG_IGN)


class Children:
    """Runs one child process at a time.

    ``forward``: while active (a context manager, in the main thread), SIGINT / SIGTERM sent to
    this process are recorded and sent on to the running child, which runs in its own session
    so that a terminal's Ctrl-C reaches it only through here (twice would make ``pjepa train``
    stop without saving). ``ignore``: signals the children ignore (a SLURM job's pre-emption
    warning, which ``pjepa train`` does not handle and would die of).
    """

    def __init__(self, forward: bool = True, ignore: tuple[int, ...] = ()) -> None:
        self.forward, self.ignore = forward, ignore
        self.received: int | None = None
        self._proc: subprocess.Popen | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Children:
        if self.forward and threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signum
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signum)

    def run(self, argv: list[str]) -> int:
        """The exit status of ``argv``; 128 + the signal when this process was told to stop (before the
        child started, or while it ran and it did not finish cleanly)."""
        if self.received is not None:
            return 128 + self.received
        sys.stdout.flush()
        sys.stderr.flush()
        extra: dict[str, Any] = {"start_new_session": True} if self.forward else {}
        if self.ignore:
            extra["preexec_fn"] = lambda: _ignore_signals(self.ignore)
        self._proc = subprocess.Popen(argv, **extra)
        if self.received is not None:  # the signal came while the child was starting
            self._proc.send_signal(self.received)
        code = self._proc.wait()
        self._proc = None
        if code == 0:
            return 0  # finished before it saw the signal: keep the result (the next run() stops)
        if self.received is not None:
            return 128 + self.received
        return 128 - code if -code in STOP_SIGNALS else code  # killed by the signal itself: as a shell reports it


def describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with {code}"


@dataclass(frozen=True)
class PointJob:
    """Everything one grid point needs to run anywhere (plain data: a SLURM job receives it pickled)."""

    name: str
    run_dir: Path
    config_path: Path
    overrides: tuple[str, ...]
    protocols: tuple[str, ...] = ()
    baselines: bool = False

    def train_command(self) -> list[str]:
        return train_command(self.config_path, self.run_dir, self.overrides)

    def eval_commands(self) -> list[tuple[str, list[str]]]:
        return eval_commands(self.run_dir, self.protocols, self.baselines)

    def pending_evals(self) -> list[str]:
        return [stem for stem, _ in self.eval_commands() if not eval_current(self.run_dir, stem)]

    def complete(self) -> bool:
        """Trained to its end and every evaluation asked for is current: nothing to do."""
        return run_state(self.run_dir).kind == "finished" and not self.pending_evals()


@dataclass
class Outcome:
    """What ``run_point`` did. ``status``: trained | resumed | skipped (training was finished) | failed
    (training failed) | interrupted (stopped by a signal; ``code`` 130 / 143)."""

    name: str
    status: str
    seconds: float
    code: int = 0
    evals: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status not in ("failed", "interrupted") and not self.failures


def run_point(job: PointJob, children: Children) -> Outcome:
    """Train ``job`` (start, or continue from ``checkpoints/last``) unless finished, then run each
    evaluation that is missing or older than the checkpoint. Stops at the first interrupted child."""
    t0 = time.perf_counter()
    state = run_state(job.run_dir)
    status = {"new": "trained", "unfinished": "resumed", "finished": "skipped"}[state.kind]
    if state.kind != "finished":
        code = children.run(job.train_command())
        if code in STOPPED:
            return Outcome(job.name, "interrupted", time.perf_counter() - t0, code)
        if code != 0:
            return Outcome(job.name, "failed", time.perf_counter() - t0, code,
                           failures=[f"pjepa train {describe_exit(code)}"])
        mark_done(job.run_dir)
    out = Outcome(job.name, status, 0.0)
    for stem, argv in job.eval_commands():
        if eval_current(job.run_dir, stem):
            continue
        code = children.run(argv)
        if code in STOPPED:
            return Outcome(job.name, "interrupted", time.perf_counter() - t0, code, out.evals)
        out.evals.append(stem)
        if code != 0:
            out.failures.append(f"pjepa {' '.join(argv[3:])} {describe_exit(code)}")
    out.seconds = time.perf_counter() - t0
    return out


def _duration(seconds: float) -> str:
    """12.3 -> '12s', 125 -> '2m05s', 7260 -> '2h01m'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def time_left(run_seconds: list[float], left: list[float]) -> str:
    """The estimate printed at the start and after each run: the mean cost of a whole run (``run_seconds``:
    the sweep's finished runs) x the share of each remaining run still to do (``left``: 1 for a run to
    start, 1 - step / total for one to continue)."""
    if not left:
        return "no run left to train"
    runs = f"{len(left)} run{'s' if len(left) > 1 else ''} to train"
    if not run_seconds:
        return f"{runs}; time left known after the first one"
    return f"about {_duration(sum(run_seconds) / len(run_seconds) * sum(left))} left ({runs})"


def _share_left(state: RunState) -> float:
    """How much of a run is still to train: 0 finished, 1 new, the steps left of the planned ones else."""
    if state.kind == "finished":
        return 0.0
    if state.kind == "unfinished" and state.step is not None and state.total:
        return max(0.0, 1.0 - state.step / state.total)
    return 1.0


def _run_cost(job: PointJob, out: Outcome | None) -> float | None:
    """A finished run's whole cost: timed here if this sweep trained all of it, else as its directory
    records it (a resumed run's earlier segments, a run trained by an earlier sweep command)."""
    if out is not None and out.status == "trained":
        return out.seconds
    return recorded_seconds(job.run_dir)


def _start_line(job: PointJob, state_kind: str, step: int | None, total: int | None) -> str:
    if state_kind == "new":
        return "training"
    if state_kind == "unfinished":
        return f"resuming from step {step}" + (f" of {total}" if total else "")
    evals = job.pending_evals()
    return "trained already; " + (f"evaluating: {', '.join(evals)}" if evals else "nothing to do")


def _end_line(out: Outcome) -> str:
    if out.status == "failed":
        return f"FAILED in {_duration(out.seconds)}: {'; '.join(out.failures)}"
    line = f"{out.status} in {_duration(out.seconds)}"
    line += f" (evaluated: {', '.join(out.evals)})" if out.evals else ""
    return line + "".join(f"; FAILED: {f}" for f in out.failures)


def run_local(jobs: list[PointJob], echo: Callable[[str], None] = print) -> int:
    """Run ``jobs`` one after another here; one line per run as it starts and ends, a summary at the end.
    Returns 0, 1 (some run or evaluation failed; the others ran) or 130 / 143 (stopped by a signal)."""
    n, t0 = len(jobs), time.perf_counter()
    states = [run_state(j.run_dir) for j in jobs]
    kinds = [s.kind for s in states]
    costs = {j.name: c for j, s in zip(jobs, states) if s.kind == "finished" and (c := _run_cost(j, None)) is not None}
    shares = [_share_left(s) for s in states]
    head = (f"[sweep] {n} runs: {kinds.count('new')} to start, {kinds.count('unfinished')} to continue, "
            f"{kinds.count('finished')} trained already")
    to_train = [x for x in shares if x > 0]
    echo(head + (f"; {time_left(list(costs.values()), to_train)}" if costs and to_train else ""))
    outcomes: list[Outcome] = []
    with Children(forward=True) as children:
        for i, (job, state) in enumerate(zip(jobs, states)):
            tag = f"[sweep] {i + 1}/{n} {job.name}"
            echo(f"{tag}: {_start_line(job, state.kind, state.step, state.total)}")
            out = run_point(job, children)
            outcomes.append(out)
            if out.status == "interrupted":
                echo(f"{tag}: stopped by {signal.Signals(out.code - 128).name} (checkpoints/last is kept); "
                     "run the same command again to continue")
                return out.code
            if out.status != "failed" and (cost := _run_cost(job, out)) is not None:
                costs[job.name] = cost
            left = [x for x in shares[i + 1 :] if x > 0]
            echo(f"{tag}: {_end_line(out)}; {time_left(list(costs.values()), left)}")
    return _summary(outcomes, time.perf_counter() - t0, echo)


def _summary(outcomes: list[Outcome], seconds: float, echo: Callable[[str], None]) -> int:
    count = {s: sum(o.status == s for o in outcomes) for s in ("trained", "resumed", "skipped", "failed")}
    failed = [o for o in outcomes if not o.ok]
    echo(f"[sweep] done in {_duration(seconds)}: " + ", ".join(f"{v} {k}" for k, v in count.items())
         + f"; {len(failed)} of {len(outcomes)} runs with failures")
    for o in failed:
        echo(f"[sweep] FAILED {o.name}: {'; '.join(o.failures)}")
    return 1 if failed else 0
