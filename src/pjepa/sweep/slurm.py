"""``pjepa sweep --launcher submitit``: one SLURM job per grid point that still has work, via submitit.

Each job runs ``run_point`` (train with ``--auto-resume``, then the evaluations) for its point,
so submitting the same sweep again continues every unfinished run; points with nothing left
to do are not submitted. Jobs' logs go to ``SWEEP_DIR/slurm/``, and every submission is
appended to ``SWEEP_DIR/slurm/submissions.jsonl``. When SLURM warns a job before its time limit
(submitit's SIGUSR2), submitit requeues it (``SweepJob.checkpoint``); the training child ignores
that warning and saves ``checkpoints/last`` on the SIGTERM that follows, so the requeued job
continues from there.

submitit is optional (``pip install 'pjepa[cluster]'``); ``--cluster local`` runs the jobs on
this machine through submitit's local executor (trying the launcher, tests).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pjepa.atomic import atomic_write_bytes
from pjepa.errors import ConfigError
from pjepa.sweep.runner import Children, PointJob, run_point

CLUSTERS = ("slurm", "local")


@dataclass(frozen=True)
class SlurmOptions:
    """The job's resources (one node, one task) and where it runs; ``wait``: block until the jobs end."""

    partition: str | None = None
    time_min: int = 240
    gpus: int = 1
    cpus: int = 8
    cluster: str = "slurm"
    wait: bool = False

    def parameters(self) -> dict[str, Any]:
        """submitit's AutoExecutor parameters (``slurm_*`` ones are dropped by the other executors)."""
        params: dict[str, Any] = {"timeout_min": self.time_min, "gpus_per_node": self.gpus,
                                  "cpus_per_task": self.cpus, "tasks_per_node": 1, "nodes": 1}
        if self.partition:
            params["slurm_partition"] = self.partition
        return params


class SweepJob:
    """The callable a job runs: ``run_point`` for one grid point. ``checkpoint`` lets submitit requeue it
    when pre-empted or near its time limit (the requeued job continues from ``checkpoints/last``)."""

    def __init__(self, job: PointJob) -> None:
        self.job = job

    def __call__(self) -> dict[str, Any]:
        # No forwarding: SLURM signals every process of the job itself. The children ignore the
        # pre-emption warning (pjepa train has no handler for it, and would die without saving).
        ignore = (signal.SIGUSR2,) if hasattr(signal, "SIGUSR2") else ()
        with Children(forward=False, ignore=ignore) as children:
            out = run_point(self.job, children)
        if not out.ok:
            raise RuntimeError(f"{self.job.name}: {out.status}; " + "; ".join(out.failures or [f"code {out.code}"]))
        return dataclasses.asdict(out)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(SweepJob(self.job))


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher submitit needs the submitit package: pip install 'pjepa[cluster]' "
                          "(or pip install submitit), or use --launcher local") from None
    return submitit


def make_executor(folder: Path, options: SlurmOptions, name: str) -> Any:
    """A submitit executor for ``options.cluster`` writing its logs under ``folder``."""
    submitit = _submitit()
    if options.cluster not in CLUSTERS:
        raise ConfigError(f"--cluster {options.cluster!r}: choose one of {', '.join(CLUSTERS)}")
    if options.cluster == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("--launcher submitit: no sbatch on this machine (SLURM is not installed here); "
                          "submit from a SLURM login node, or run here with --launcher local or --cluster local")
    executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster)
    executor.update_parameters(name=name, **options.parameters())
    return executor


def submit_jobs(jobs: list[PointJob], out: Path, options: SlurmOptions,
                echo: Callable[[str], None] = print) -> int:
    """Submit a job for every point of ``jobs`` with work left; with ``options.wait``, wait for them.
    Returns 0, or 1 when waiting and some job failed."""
    pending = [j for j in jobs if not j.complete()]
    if not pending:
        echo(f"[sweep] all {len(jobs)} runs are trained and evaluated: nothing to submit")
        return 0
    folder = out / "slurm"
    executor = make_executor(folder, options, f"pjepa-sweep-{out.resolve().name}")
    with executor.batch():  # one job array
        submitted = [executor.submit(SweepJob(j)) for j in pending]
    for j, s in zip(pending, submitted):
        echo(f"[sweep] submitted {j.name} as job {s.job_id} (log: {s.paths.stdout})")
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "cluster": options.cluster,
              "jobs": {j.name: str(s.job_id) for j, s in zip(pending, submitted)}, **dataclasses.asdict(options)}
    log = folder / "submissions.jsonl"
    old = log.read_text() if log.is_file() else ""
    atomic_write_bytes(log, (old + json.dumps(record) + "\n").encode())
    echo(f"[sweep] {len(pending)} jobs submitted ({len(jobs) - len(pending)} runs complete); "
         "submit the same command again to continue any that stop")
    return _wait(pending, submitted, echo) if options.wait else 0


def _wait(pending: list[PointJob], submitted: list[Any], echo: Callable[[str], None]) -> int:
    failed = 0
    for j, s in zip(pending, submitted):
        try:
            res = s.result()
            echo(f"[sweep] job {s.job_id} {j.name}: {res['status']} in {res['seconds']:.0f}s")
        except Exception as e:  # noqa: BLE001  (submitit re-raises the job's error; report it and go on)
            failed += 1
            first = str(e).strip().splitlines()
            echo(f"[sweep] job {s.job_id} {j.name}: FAILED ({first[-1] if first else type(e).__name__}); "
                 f"log: {s.paths.stderr}")
    return 1 if failed else 0
