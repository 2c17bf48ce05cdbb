"""The fixed-compute ablation scripts (``benchmarks/budget_rows.sh``, ``benchmarks/budget_confirm.sh``,
``benchmarks/heads_budget.sh``) run against a stand-in ``pjepa`` that records its command lines: each
row trains its own measured step count (scaled for a confirmation), quoted overrides from the budgets file
arrive as single arguments, a rated run is skipped when the script is run again, and lanes of one seed each
keep out of each other's sweep folders."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BUDGETS = """name,config,overrides,processor,threads,precision,ms_per_step,minutes,steps,date
base,cifar10/cpu,,AMD EPYC,2,fp32,863.4,10.0,694,2026-12-07
ema,cifar10/cpu,"train.ema=[0.996,1.0] optim.lr=4e-3",AMD EPYC,2,fp32,863.4,10.0,694,2026-12-07
wide,cifar10/cpu,model.encoder.embed_dim=192,AMD EPYC,2,fp32,960.9,10.0,624,2026-12-07
"""

# a stand-in for pjepa: logs each command line (one argument per field) and writes the result files an
# eval would, so the scripts' skip logic can be seen
FAKE = r"""#!/usr/bin/env bash
printf '%s\t' "$@" >> "$LOG"; echo >> "$LOG"
if [ "$1" = eval ]; then
  proto=$2; run=""; split=""; pixels=""; white=""
  while [ $# -gt 0 ]; do case "$1" in --run) run=$2; shift;; --split) split=_val;; --pixels) pixels=_pixels;;
    --whiten) white=_white;; esac; shift; done
  mkdir -p "$run/eval"; echo '{}' > "$run/eval/$proto${pixels}${split}${white}.json"
fi
if [ "$1" = sweep ]; then
  while [ $# -gt 0 ]; do [ "$1" = --out ] && mkdir -p "$2"; shift; done
fi
"""


def _fake(tmp_path: Path) -> dict[str, str]:
    fake = tmp_path / "pjepa"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    (tmp_path / "budgets.csv").write_text(BUDGETS)
    return {**os.environ, "PJEPA": str(fake), "LOG": str(tmp_path / "log")}


def _calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "log"
    return [line.rstrip("\t").split("\t") for line in log.read_text().splitlines()] if log.exists() else []


def _run(script: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "benchmarks" / script), *args], env=env, capture_output=True, text=True,
                          timeout=60)


def _value(call: list[str], key: str) -> str:
    return next(a.split("=", 1)[1] for a in call if a.startswith(key + "="))


def test_budget_rows_trains_each_rows_steps_with_its_quoted_overrides(tmp_path):
    env = _fake(tmp_path)
    out = tmp_path / "runs"
    r = _run("budget_rows.sh", [str(tmp_path / "budgets.csv"), str(out), "1", "base", "ema", "--",
                                "train.num_threads=1"], env)
    assert r.returncode == 0, r.stderr
    train = [c for c in _calls(tmp_path) if c[0] == "train"]
    assert [_value(c, "train.max_steps") for c in train] == ["694", "694"]
    assert "train.ema=[0.996,1.0]" in train[1] and "optim.lr=4e-3" in train[1]  # one argument each
    assert all(_value(c, "train.seed") == "1" and "train.num_threads=1" in c for c in train)
    evals = [c for c in _calls(tmp_path) if c[0] == "eval"]
    assert [c[:2] + c[c.index("--split"):c.index("--split") + 2] for c in evals] == [["eval", "knn", "--split", "val"]] * 2
    # a second pass finds both rated and trains nothing
    before = len(_calls(tmp_path))
    r = _run("budget_rows.sh", [str(tmp_path / "budgets.csv"), str(out), "1", "base", "ema"], env)
    assert r.returncode == 0 and len(_calls(tmp_path)) == before and r.stdout.count("skipped") == 2


def test_budget_confirm_scales_the_steps_and_rates_on_the_reported_split(tmp_path):
    env = _fake(tmp_path)
    out = tmp_path / "final"
    r = _run("budget_confirm.sh", [str(tmp_path / "budgets.csv"), str(out), "2", "2", "wide"], env)
    assert r.returncode == 0, r.stderr
    calls = _calls(tmp_path)
    (train,) = [c for c in calls if c[0] == "train"]
    assert _value(train, "train.max_steps") == "1248" and "model.encoder.embed_dim=192" in train
    evals = [shlex.join(c[1:2] + [a for a in c[2:] if a in ("--pixels", "--whiten", "--split")]) for c in calls
             if c[0] == "eval"]
    assert evals == ["knn", "linear", "knn --pixels --whiten"]  # on the reported split: never --split val
    r = _run("budget_confirm.sh", [str(tmp_path / "budgets.csv"), str(out), "2", "2", "wide"], env)
    assert r.returncode == 0 and len(_calls(tmp_path)) == len(calls) and "skipped" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["0", "2"], "name the rows"),
    (["0", "-1", "base"], "SCALE -1"),
    (["0", "2", "nope"], "no row nope"),
])
def test_budget_confirm_names_what_is_wrong(tmp_path, args, message):
    env = _fake(tmp_path)
    r = _run("budget_confirm.sh", [str(tmp_path / "budgets.csv"), str(tmp_path / "o"), *args], env)
    assert r.returncode == 2 and message in r.stderr and not _calls(tmp_path)


HEAD_BUDGETS = """name,config,overrides,processor,threads,precision,ms_per_step,minutes,steps,date
deterministic,cifar10/cpu,train.time_limit_min=0,AMD EPYC,2,fp32,847.2,20.0,1416,2026-12-07
mdn,cifar10/mdn,train.time_limit_min=0,AMD EPYC,2,fp32,998.6,20.0,1201,2026-12-07
"""


def test_head_table_lanes_of_one_seed_each_keep_their_own_sweep_folders(tmp_path):
    env = _fake(tmp_path)
    (tmp_path / "heads.csv").write_text(HEAD_BUDGETS)
    root = tmp_path / "heads"
    for seed in ("0", "1"):  # one lane per seed, as the script's header suggests
        r = _run("heads_budget.sh", [str(root), "train.num_threads=1"],
                 {**env, "BUDGETS": str(tmp_path / "heads.csv"), "HEADS": "deterministic mdn", "SEEDS": seed,
                  "PJEPA_DATA": str(tmp_path)})
        assert r.returncode == 0, r.stderr
    calls = _calls(tmp_path)
    sweeps = [c for c in calls if c[0] == "sweep"]
    assert [(Path(c[c.index("--out") + 1]).relative_to(root).as_posix(), _value(c, "train.seed"),
             _value(c, "train.max_steps"), "--baselines" in c) for c in sweeps] == [
        ("deterministic/seed0", "0", "1416", True), ("mdn/seed0", "0", "1201", False),
        ("deterministic/seed1", "1", "1416", True), ("mdn/seed1", "1", "1201", False)]
    last_table = [c for c in calls if c[0] == "table"][-1]
    read = sorted(Path(a).relative_to(root).as_posix() for a in last_table[1:last_table.index("--format")])
    assert read == ["deterministic/seed0", "deterministic/seed1", "mdn/seed0", "mdn/seed1"]


def test_head_table_of_all_seeds_in_one_lane_is_one_sweep_per_head(tmp_path):
    env = _fake(tmp_path)
    (tmp_path / "heads.csv").write_text(HEAD_BUDGETS)
    root = tmp_path / "heads"
    r = _run("heads_budget.sh", [str(root)], {**env, "BUDGETS": str(tmp_path / "heads.csv"),
                                                       "HEADS": "deterministic mdn", "PJEPA_DATA": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    sweeps = [c for c in _calls(tmp_path) if c[0] == "sweep"]
    assert [(Path(c[c.index("--out") + 1]).name, _value(c, "train.seed")) for c in sweeps] == [
        ("deterministic", "0,1,2"), ("mdn", "0,1,2")]


@pytest.mark.parametrize(("key", "message"), [
    ("HEADS", "no budget for determinstic"),
    ("BASELINES", "BASELINES=determinstic: not a row"),
])
def test_head_table_names_a_misspelt_head_and_the_rows_it_has(tmp_path, key, message):
    env = _fake(tmp_path)
    (tmp_path / "heads.csv").write_text(HEAD_BUDGETS)
    r = _run("heads_budget.sh", [str(tmp_path / "heads")], {**env, "BUDGETS": str(tmp_path / "heads.csv"),
                                                           key: "determinstic", "PJEPA_DATA": str(tmp_path)})
    assert r.returncode == 2 and message in r.stderr and "deterministic, mdn" in r.stderr
    assert not _calls(tmp_path)


@pytest.mark.parametrize(("heads", "baselines", "rated"), [
    ("mdn", None, []),                    # a lane of another head: the deterministic lane rates the baselines
    ("deterministic mdn", None, ["deterministic"]),
    ("mdn", "mdn", ["mdn"]),
    ("deterministic mdn", "none", []),
])
def test_head_table_rates_the_baselines_with_one_head_only(tmp_path, heads, baselines, rated):
    env = _fake(tmp_path)
    (tmp_path / "heads.csv").write_text(HEAD_BUDGETS)
    extra = {} if baselines is None else {"BASELINES": baselines}
    r = _run("heads_budget.sh", [str(tmp_path / "heads")], {**env, "BUDGETS": str(tmp_path / "heads.csv"),
                                                           "HEADS": heads, "SEEDS": "0", "PJEPA_DATA": str(tmp_path), **extra})
    assert r.returncode == 0, r.stderr
    sweeps = [c for c in _calls(tmp_path) if c[0] == "sweep"]
    assert [Path(c[c.index("--out") + 1]).parent.name for c in sweeps if "--baselines" in c] == rated

