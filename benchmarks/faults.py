"""Fault injection: kill training at random points, resume, and check nothing was lost.

    python benchmarks/faults.py --scenarios 50 --seed 0 [--out runs/faults] [--bad-inputs]

Each scenario trains the tiny smoke run (24 steps, checkpoint every 4, log every 2) in a subprocess and
delivers one signal (SIGKILL, SIGTERM or SIGINT) at a random point: before a random step, or inside a
checkpoint or metrics write (before or after one of its files, or, for SIGKILL into the metrics log, after
half a line: a torn write). The run is then continued the way a user or a cluster would (``--resume``
where a checkpoint exists, else ``--auto-resume``) until it finishes, and compared with an uninterrupted
reference: every logged loss and every final weight bit-identical, each step logged once. With
``--bad-inputs`` it also feeds a corpus of bad configs, checkpoints and run directories (made here) to the
CLI and counts named errors (exit 2, one ``pjepa: error:`` line) against raw tracebacks. Prints the
figures docs/reliability.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
TINY = ["data.options={num_classes: 4, image_size: 24, num_train: 128, num_val: 64, seed: 0}", "data.image_size=24",
        "data.stats_samples=64", "model.encoder.patch_size=4", "model.encoder.embed_dim=32", "model.encoder.depth=2",
        "model.encoder.num_heads=2", "model.predictor.embed_dim=16", "model.predictor.depth=1",
        "model.predictor.num_heads=2", "optim.batch_size=16", "train.num_threads=1", "train.progress=false",
        "train.log_every=2", "train.eval_every=0", "train.ckpt_every=4", "train.max_steps=24"]
STEPS = 24

# Runs inside the training subprocess: wraps one code path to deliver the scenario's signal there.
INJECT = r"""
import os, signal, sys
kind, at, sig, where = os.environ["FAULT_KIND"], int(os.environ["FAULT_AT"]), int(os.environ["FAULT_SIGNAL"]), os.environ["FAULT_WHERE"]
count = {"n": 0}
def fire():
    os.kill(os.getpid(), sig)
if kind == "step":
    import pjepa.train.loop as loop
    original = loop.Trainer.train_step
    def step(self, s, *a, **k):
        if s == at:
            fire()
        return original(self, s, *a, **k)
    loop.Trainer.train_step = step
elif kind == "ckpt":
    import pjepa.runs.state_io as io, pjepa.runs.checkpoint as ck
    original = io.atomic_write_bytes
    def write(path, data):
        if "checkpoints" in str(path):
            count["n"] += 1
            if count["n"] == at and where == "before":
                fire()
            original(path, data)
            if count["n"] == at and where == "after":
                fire()
            return
        original(path, data)
    io.atomic_write_bytes = write
    ck.atomic_write_bytes = write
elif kind == "metrics":
    import pjepa.runs.metrics as m
    original = m.append_line
    def append(path, line):
        count["n"] += 1
        if count["n"] == at:
            if where == "torn" and sig == signal.SIGKILL:
                with open(path, "a") as f:
                    f.write(line[: len(line) // 2])
                fire()
            if where == "before":
                fire()
            original(path, line)
            if where == "after":
                fire()
            return
        original(path, line)
    m.append_line = append
from pjepa.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")


def pjepa(*args: str, extra_env: dict[str, str] | None = None, inject: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", INJECT, *args] if inject else [sys.executable, "-m", "pjepa", *args]
    return subprocess.run(cmd, env={**env(), **(extra_env or {})}, capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


def train_args(out: Path) -> list[str]:
    return ["train", "--config", str(SMOKE), *TINY, "--out", str(out)]


def read_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def outcome(run: Path, ref: Path) -> dict[str, bool]:
    """Compare a finished run with the reference: losses, weights, each step once."""
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from pjepa.runs.checkpoint import load_checkpoint

    def losses(r: Path) -> list[tuple[int, float]]:
        return [(row["step"], row["train/loss"]) for row in read_rows(r) if "train/loss" in row]

    got, want = losses(run), losses(ref)
    wa, sa = load_checkpoint(ref / "checkpoints", "last")
    wb, sb = load_checkpoint(run / "checkpoints", "last")
    same_weights = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    return {"identical": got == want and same_weights and sa["step"] == sb["step"] == STEPS,
            "no_duplicates": len({s for s, _ in got}) == len(got)}


def scenario(i: int, rng: random.Random, out: Path, ref: Path) -> dict:
    sig = rng.choice([signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
    kind = ["step", "ckpt", "metrics"][i % 3] if i < 30 else rng.choice(["step", "ckpt", "metrics"])
    at = {"step": rng.randrange(0, STEPS), "ckpt": rng.randrange(1, 2 * (STEPS // 4) + 1),
          "metrics": rng.randrange(1, STEPS // 2 + 1)}[kind]
    torn = ["torn"] if kind == "metrics" and sig == signal.SIGKILL else []  # a half line: only a kill leaves one
    where = rng.choice(["before", "after", *torn])
    run = out / f"s{i:03d}"
    shutil.rmtree(run, ignore_errors=True)
    first = pjepa(*train_args(run), inject=True, extra_env={"FAULT_KIND": kind, "FAULT_AT": str(at),
                                                              "FAULT_SIGNAL": str(int(sig)), "FAULT_WHERE": where})
    record = {"i": i, "signal": signal.Signals(sig).name, "kind": kind, "at": at, "where": where,
              "first_exit": first.returncode, "traceback": "Traceback" in first.stderr and sig != signal.SIGINT}
    attempts = 0
    proc = first
    while proc.returncode != 0 and attempts < 3:
        attempts += 1
        has_ckpt = (run / "checkpoints" / "last").is_dir() or (run / "checkpoints" / ".last.old").is_dir()
        proc = pjepa("train", "--resume", str(run)) if has_ckpt else pjepa(*train_args(run), "--auto-resume")
        record["traceback"] |= "Traceback" in proc.stderr
    record["resumes"] = attempts
    record["finished"] = proc.returncode == 0
    record.update(outcome(run, ref) if record["finished"] else {"identical": False, "no_duplicates": False})
    if not record["finished"]:
        record["error"] = proc.stderr.strip().splitlines()[-1:] if proc.stderr else []
    shutil.rmtree(run, ignore_errors=True)
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "faults")
    p.add_argument("--bad-inputs", action="store_true", help="also run the bad-input corpus")
    p.add_argument("--only-bad-inputs", action="store_true", help="the bad-input corpus alone (0 kill scenarios)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ref = args.out / "reference"
    if not (ref / "checkpoints" / "last").is_dir():
        shutil.rmtree(ref, ignore_errors=True)
        r = pjepa(*train_args(ref))
        if r.returncode != 0:
            raise SystemExit(f"the reference run failed:\n{r.stderr}")
    if args.only_bad_inputs:
        args.scenarios, args.bad_inputs = 0, True
    rng = random.Random(args.seed)
    records = []
    for i in range(args.scenarios):
        rec = scenario(i, rng, args.out, ref)
        records.append(rec)
        print(json.dumps(rec), flush=True)
    (args.out / "scenarios.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    writes = sum(r["kind"] in ("ckpt", "metrics") for r in records)
    print(f"\nkill scenarios: {len(records)} ({writes} inside checkpoint or metrics writes); "
          f"finished after resume: {sum(r['finished'] for r in records)}; bit-identical to the uninterrupted run: "
          f"{sum(r['identical'] for r in records)}; a step logged twice: {sum(not r['no_duplicates'] for r in records)}; "
          f"data lost: {sum(not r['identical'] for r in records)}; raw tracebacks: {sum(r['traceback'] for r in records)}")
    if args.bad_inputs:
        sys.path.insert(0, str(Path(__file__).parent))
        from bad_inputs import run_corpus  # benchmarks/bad_inputs.py

        run_corpus(args.out / "bad", pjepa, train_args)


if __name__ == "__main__":
    main()
