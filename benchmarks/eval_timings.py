"""Wall time and peak memory of every evaluation protocol on one run: one table.

    python benchmarks/eval_timings.py RUN_DIR [--threads N] [--only knn,linear,...] [--finetune-epochs 1]
                                              [--csv FILE] [--keep DIR]

Each protocol runs as its own ``python -m pjepa eval ...`` process with ``--threads N`` (default: every
core), on a copy of the run directory (its checkpoints and config, without ``eval/``), so the run's own
results are never overwritten (a one-epoch fine-tune would replace ``finetune.json``) and the first
protocol starts without cached features. The protocols run in the order below and share the copy's
feature cache, as they would in one session: the ``cache`` column says whether ``eval/cache/`` held
features when the protocol started (the first encoder protocol pays for extracting them).

Seconds are the process's wall time (imports and data loading included), CPU seconds its user + system
time (less sensitive to other jobs on the machine); max RSS is the peak resident memory of that process
(``os.wait4``), as ``/usr/bin/time -v`` reports it. The processor is ``lscpu``'s
model name. Use on a quiet machine and record the table with the date and the command; a protocol that
fails (e.g. ``head`` on a run without a probabilistic head) keeps its row with the error's last line.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (row name, ``pjepa eval`` arguments); ``{epochs}`` is --finetune-epochs
PROTOCOLS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("knn", ("knn",)),
    ("knn --whiten", ("knn", "--whiten")),
    ("knn --pixels --whiten", ("knn", "--pixels", "--whiten")),
    ("linear", ("linear",)),
    ("lowshot", ("lowshot",)),
    ("finetune --epochs {epochs}", ("finetune", "--epochs", "{epochs}")),
    ("calibration", ("calibration",)),
    ("head", ("head",)),
)


@dataclass
class Timing:
    protocol: str
    seconds: float
    cpu_seconds: float
    max_rss_mb: float
    threads: int
    cache: str
    status: str


def processor() -> str:
    """``lscpu``'s model name (the platform's processor string where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def copy_run(run: Path, into: Path) -> Path:
    """A copy of ``run`` without its evaluations, TensorBoard logs and figures."""
    dest = into / run.name
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("eval", "tb", "figures"))
    return dest


def time_protocol(name: str, args: list[str], run: Path, threads: int) -> Timing:
    """Run ``python -m pjepa eval ARGS --run RUN --threads N`` and measure it."""
    cache = run / "eval" / "cache"
    cached = "hit" if cache.is_dir() and any(cache.iterdir()) else "miss"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "pjepa", "eval", *args, "--run", str(run), "--threads", str(threads)]
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
        log.seek(0)
        lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    ok = proc.returncode == 0
    note = "ok" if ok else f"exit {proc.returncode}: {lines[-1][:120] if lines else ''}"
    # ru_maxrss is in KiB on Linux, bytes on macOS
    rss_mb = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    return Timing(name, seconds, usage.ru_utime + usage.ru_stime, rss_mb, threads, cached, note)


def table(rows: list[Timing], cpu: str) -> str:
    """A Markdown table, one row per protocol."""
    head = "| protocol | seconds | CPU seconds | max RSS MB | threads | processor | cache | status |"
    lines = [head, "|" + "---|" * 8]
    lines += [f"| `{r.protocol}` | {r.seconds:.1f} | {r.cpu_seconds:.1f} | {r.max_rss_mb:.0f} | {r.threads} | {cpu} | "
              f"{r.cache} | {r.status} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a run directory written by pjepa train")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="--threads of every protocol")
    p.add_argument("--only", default="", help="comma-separated first words of the rows to run (e.g. knn,linear)")
    p.add_argument("--finetune-epochs", type=int, default=1, help="epochs of the (short) fine-tune row")
    p.add_argument("--csv", type=Path, help="also write the rows to this CSV file")
    p.add_argument("--keep", type=Path, help="copy the run into this folder and keep it (default: a temporary one)")
    args = p.parse_args(argv)
    if not (args.run / "config.yaml").is_file():
        p.error(f"{args.run} is not a run directory (no config.yaml)")
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    chosen = [(name.format(epochs=args.finetune_epochs), [a.format(epochs=args.finetune_epochs) for a in cmd])
              for name, cmd in PROTOCOLS if not wanted or name.split()[0] in wanted]
    cpu = processor()
    work = Path(tempfile.mkdtemp(prefix="eval_timings_")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        run = copy_run(args.run.resolve(), work)
        for name, cmd in chosen:
            rows.append(time_protocol(name, cmd, run, args.threads))
            r = rows[-1]
            print(f"{r.protocol}: {r.seconds:.1f} s, {r.max_rss_mb:.0f} MB, {r.status}", file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"run {args.run}, python {platform.python_version()}, {cpu}, {args.threads} threads, "
          f"{time.strftime('%Y-%m-%d')}")
    print(table(rows, cpu))
    if args.csv is not None:
        with args.csv.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["protocol", "seconds", "cpu_seconds", "max_rss_mb", "threads", "processor", "cache", "status"])
            w.writerows([r.protocol, f"{r.seconds:.2f}", f"{r.cpu_seconds:.2f}", f"{r.max_rss_mb:.0f}", r.threads, cpu,
                         r.cache, r.status] for r in rows)
    return 0 if all(r.status == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
