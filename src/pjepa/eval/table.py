"""``pjepa table RUN...``: the comparison table of run directories, runs that differ only in seed grouped.

Reads artefacts only (config.yaml, metrics.jsonl, eval/*.json), never trains or evaluates.
One row per group of runs whose configs are equal but for ``train.seed`` (and how they were executed:
``train.num_threads``, ``train.progress``, a ``train.time_limit_min`` they finished within): every number is
the mean over the group, with its sample standard deviation (``*_std``) and the group's
size ``n`` (and ``seeds``). A run still training, or interrupted before the end of its schedule, is a
row of its own named so (``run (running, step 100/1053)``), never part of a group. Columns: the
budget (epochs, steps, global batch, peak lr, training wall time), then the columns every registered
evaluation protocol declares (``pjepa.eval.protocols``: kNN@1 with both votes, the linear probe,
low-shot, fine-tune, the head metrics, the calibration protocol's energy score and mean coverage
error, ...), read from the result files it declares. Then the baselines found in the runs' eval
folders (untrained encoder, raw pixels), grouped the same way.
Markdown shows "mean ± std"; CSV has one column per number and one per spread.

A directory without config.yaml whose subdirectories are runs (a ``pjepa sweep`` folder)
stands for those runs. The last column, ``vs_best``, says whether a row's gap to the best
row is more than seed noise: Welch's two-sided t-test on kNN@1 (weighted vote; else the
first accuracy column every row has), ``< best`` at p < 0.05, ``≈ best`` otherwise, and
``n<2: no spread`` where either row has a single seed. ``pairs_markdown`` gives the test
for every pair of rows.

Testing the best row against many others is a family of tests: by default (``correct="auto"``)
the p-values are Holm-corrected over that family (the rows tested against the best; every pair
in the pairs matrix) whenever it holds more than one test, and the verdicts read the corrected
p. The shown p is the corrected one; the CSV also has the raw p (``vs_best_p_raw``), the
correction (``vs_best_correction``) and the family's size (``vs_best_tests``).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import statistics
from pathlib import Path
from typing import Any

from pjepa.checks import check_config
from pjepa.config import Config, config_to_dict
from pjepa.errors import PJepaError
from pjepa.eval.protocols import BASELINES, Baseline, rated_columns, result_files, table_columns
from pjepa.eval.stats import ALPHA, holm, welch_from_stats
from pjepa.methods import capabilities, method_label
from pjepa.runs import Run, seed_lane, seed_named, writer

BUDGET = ["method", "head", "epochs", "steps", "batch", "lr", "precision", "wall_min"]
#: ``correct=``: Holm over the family of tests, none (raw p), or auto (Holm when the family has more than one test).
CORRECTIONS = ("auto", "holm", "none")


def score_columns() -> list[str]:
    """The protocols' columns, in table order (read from the protocol registry on each call: a protocol
    registered later has its columns too)."""
    return [c.name for _, c in table_columns()]


def all_columns() -> list[str]:
    """Every column of the grouped table: the row's name and group, the budget, the scores, ``vs_best``."""
    return ["run", "n", "seeds", *BUDGET, *score_columns(), "vs_best"]


def noise_scores() -> list[str]:
    """Columns the noise test may compare on, in order of preference (all: higher is better)."""
    return rated_columns()


def expand_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Run directories, with a folder of runs (a sweep: no config.yaml of its own, runs inside) replaced by
    its runs, in sweep.json's order where it has one, else by name. A path that is neither stays, so
    ``Run`` names it in its error. Repeats are dropped."""
    out: list[Path] = []
    for path in map(Path, paths):
        runs = [path]
        if path.is_dir() and not (path / "config.yaml").is_file():
            order = _sweep_order(path)
            inside = [c for c in path.iterdir() if c.is_dir() and (c / "config.yaml").is_file()]
            runs = sorted(inside, key=lambda c: (order.get(c.name, len(order)), c.name)) or runs
        out += [r for r in runs if r not in out]
    return out


def _sweep_order(folder: Path) -> dict[str, int]:
    """{run name: position} from ``folder/sweep.json`` (written by pjepa sweep); {} without a readable one."""
    try:
        runs = json.loads((folder / "sweep.json").read_text()).get("runs", [])
        return {r["name"]: i for i, r in enumerate(runs)}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def resolved_precision(run: Run) -> str:
    """The precision the run trained in: what ``train.precision`` resolved to (run_info.json), or for a run
    written before ``auto`` existed the old rule: fp32 on a CPU, the configured dtype on CUDA."""
    record = run.precision
    if record is not None:
        return str(record["name"])
    return "fp32" if str(run.info.get("device", "cpu")).startswith("cpu") else run.config.train.precision


def _budget(run: Run) -> dict[str, Any]:
    cfg = run.config
    rows = [r for r in run.metrics() if "train/loss" in r]
    last = rows[-1] if rows else {}
    return {
        "method": method_label(cfg), "head": cfg.head.name if capabilities(cfg).has_head else "-",
        "epochs": round(last.get("epoch", 0.0), 2), "steps": last.get("step", 0),
        "batch": cfg.optim.batch_size, "lr": cfg.optim.lr, "precision": resolved_precision(run),
        "wall_min": round(last["wall_seconds"] / 60, 1) if "wall_seconds" in last else None,
    }


def _scores(run: Run, baseline: Baseline | None = None) -> dict[str, Any]:
    """The protocol numbers of one run: its own encoder's (``baseline`` None), or a baseline's from the
    protocols that rate baselines. Each column is read from the result file its protocol declares."""
    results: dict[str, Any] = {}  # a file read once however many columns it feeds
    cells: dict[str, Any] = {}
    for protocol, col in table_columns():
        if baseline is not None and not protocol.baselines:
            continue
        stem = protocol.stem(col.result, baseline)
        if stem not in results:
            results[stem] = run.eval_result(stem)
        result = results[stem]
        cells[col.name] = col.read(result) if isinstance(result, dict) else None
    return cells


def _completed(run: Run) -> Config:
    """The run's config with every plug-in's options completed by its defaults, as training saw them: a run
    written before an option existed (no ``mask.options.size_rule``) groups with one that spells out the
    default. A config today's checks refuse is compared as written."""
    cfg = run.config
    try:
        return check_config(copy.deepcopy(cfg), build=False)
    except PJepaError:
        return cfg


def _finished(run: Run) -> bool:
    """Whether the run trained its whole schedule (``run_info.json``'s ``total_steps``)."""
    total = run.info.get("total_steps")
    steps = [r["step"] for r in run.metrics() if "train/loss" in r or "wall_seconds" in r]
    return total is not None and bool(steps) and max(steps) >= total


def _unfinished(run: Run) -> str | None:
    """Why a run's numbers are not a result yet: ``"running, step 100/1053"`` (a live process holds its
    lock) or ``"stopped at step 100/1053"`` (interrupted; resume it); None for a run that trained its
    schedule or that its own ``train.time_limit_min`` ended (that early end is the run's budget)."""
    if _finished(run) or run.info.get("total_steps") is None:  # (no run_info.json: nothing to tell it by)
        return None
    steps = [r["step"] for r in run.metrics() if "step" in r]
    at = f"step {max(steps) if steps else 0}/{run.info['total_steps']}"
    if writer(run.path) is not None:
        return f"running, {at}"
    return None if run.config.train.time_limit_min > 0 else f"stopped at {at}"


def _stale(run: Run) -> str | None:
    """A note when some of the run's results rate an earlier step than the one it trained to (evaluated,
    then resumed for longer): ``"knn rated at step 500 of 3510"``; such a row is not averaged with others."""
    steps = [r["step"] for r in run.metrics() if "train/loss" in r]
    if not steps:
        return None
    last = max(steps)
    rated = [stem for stem, _, _ in result_files()]  # every result file a protocol declares, in table order
    old = [(name, res["step"]) for name in rated if isinstance(res := run.eval_result(name), dict)
           and isinstance(res.get("step"), int) and 0 < res["step"] < last
           and res.get("checkpoint", "last") in ("last", None)]  # a --checkpoint best result is meant to be earlier
    if not old:
        return None
    shown = ", ".join(f"{name} rated at step {step}" for name, step in old[:3])
    return f"{shown} of {last}: evaluate again"


def _check_no_copies(rows: list[dict[str, Any]]) -> None:
    """Two rows of one group with the same seed are one run copied, not two seeds: refuse to average them."""
    seen: dict[tuple[str, Any], str | None] = {}
    for r in rows:
        key = (r["_key"], r.get("seed"))
        if key in seen and r.get("_path") != seen[key]:
            raise PJepaError(f"{seen[key]} and {r.get('_path')} are the same run (same config, seed "
                             f"{r.get('seed')}): copies would count as two seeds; pass one of them")
        seen[key] = r.get("_path")


def _key(run: Run, *drop: tuple[str, ...]) -> str:
    """The run's config without its seed, thread count, progress bar, a wall-time cap it finished
    within (and any ``drop``ped sections): equal keys = one group. The
    requested ``train.precision`` is replaced by the resolved one: ``auto`` and a pre-``auto`` run that both
    trained in fp32 on a CPU belong together, ``auto`` runs that resolved differently do not."""
    cfg = config_to_dict(_completed(run))
    cfg["train"].pop("seed")
    cfg["train"]["precision"] = resolved_precision(run)
    for how_it_ran in ("num_threads", "progress", "wandb"):  # the wall time, the console, a logger: not what is learned
        cfg["train"].pop(how_it_ran, None)
    if _finished(run):  # a wall-time cap that did not stop the run changed nothing
        cfg["train"].pop("time_limit_min", None)
    for section, *keys in drop:
        target = cfg[section]
        for k in keys[:-1]:
            target = target[k]
        target.pop(keys[-1]) if keys else cfg.pop(section)
    return json.dumps(cfg, sort_keys=True, default=str)


def _seed_order(row: dict[str, Any]) -> tuple[int, int, str]:
    """Integer seeds in numeric order, anything else after them."""
    seed = row.get("seed")
    return (0, seed, "") if isinstance(seed, int) else (1, 0, str(seed))


def _group(rows: list[dict[str, Any]], keep_key: bool = False) -> list[dict[str, Any]]:
    """Rows with equal ``_key`` -> one row: numbers averaged (+ ``<col>_std``), ``n`` and ``seeds``
    (and the ``_key`` with ``keep_key``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["_key"], []).append(r)
    out = []
    for members in groups.values():
        members = sorted(members, key=_seed_order)  # "seeds 0,1,2" and the row named after the lowest
        row = {c: members[0].get(c) for c in ("run", *BUDGET)}
        if members[0].get("_group"):  # read back from a per-run CSV: the name it was written under
            row["run"] = members[0]["_group"]
        elif len(members) > 1 and row["method"] != "baseline":  # "ijepa_s0" + "ijepa_s1" -> "ijepa_s*"
            row["run"] = re.sub(r"(?<=[_/-]s)(eed)?\d+$", "*", members[0]["run"])
        row["n"], row["seeds"] = len(members), ",".join(str(m["seed"]) for m in members)
        if keep_key:
            row["_key"] = members[0]["_key"]
        for col in ("epochs", "steps", "wall_min", *score_columns()):
            values = [m[col] for m in members if isinstance(m.get(col), (int, float))]
            mean: float | None = statistics.fmean(values) if values else None
            if col == "steps" and mean is not None and mean.is_integer():
                mean = int(mean)
            row[col] = mean
            row[f"{col}_std"] = statistics.stdev(values) if len(values) > 1 else None
            row[f"{col}_n"] = len(values)  # the noise test's sample size (a member may lack this column)
        out.append(row)
    return out


def table_rows(runs: list[str | Path], by: str | None = None, correct: str = "auto") -> list[dict[str, Any]]:
    """One row per seed group of runs, then one per baseline kind (grouped over the runs that have it);
    a sweep folder stands for its runs, a per-run CSV (``per_run_csv``) for the runs it lists; ``vs_best``
    filled in (``add_noise_column``, on ``by`` if given, p-values corrected as ``correct`` says: one of
    ``CORRECTIONS``)."""
    check_correction(correct)  # before any run is read
    rows, baselines = per_run_rows(runs)
    _check_no_copies(rows)
    out = _group(rows) + _group(baselines)
    add_noise_column(out, by, correct)
    return out


def per_run_rows(runs: list[str | Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(run rows, baseline rows), one per run (or per baseline and seed), before grouping; each with
    ``_key``, the group it joins. Paths ending in ``.csv`` are per-run CSVs read back."""
    rows: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    for path in [Path(r) for r in runs if str(r).endswith(".csv")]:
        for row in read_per_run_csv(path):
            (baselines if row["method"] == "baseline" else rows).append(row)
    paths = expand_run_dirs([r for r in runs if not str(r).endswith(".csv")])
    names, parents = [p.name for p in paths], [p.parent for p in paths]
    for run in map(Run, paths):
        seed = run.config.train.seed
        parent, shown, lane = run.path.parent, run.name, seed_lane(run.path)
        if lane is not None and parents.count(parent) == 1:  # a seed folder holding this run alone
            shown = lane
        # every sweep names its runs cpu_seed0, budget_rows.sh names them seed0: the folder names the row
        elif names.count(run.name) > 1 or seed_named(run.name, bare=True):
            shown = f"{parent.name}/{run.name}"
        note = _unfinished(run) or _stale(run)  # such a run is a row of its own, never averaged into a group
        rows.append({"run": f"{shown} ({note})" if note else shown, "seed": seed, "_path": str(run.path),
                     "_key": _key(run) + (f"|{run.path}" if note else ""), **_budget(run), **_scores(run)})
        for baseline in BASELINES:
            name, label = baseline.name, baseline.label
            cells = _scores(run, baseline)
            if any(v is not None for v in cells.values()):
                # a baseline depends on the data and the encoder's architecture, not on the method trained
                key = _key(run, ("method",), ("head",), ("mask",), ("optim",), ("train",), ("model", "predictor"))
                same = [b for b in baselines if b["_key"] == name + key and b["seed"] == seed]
                if same:  # another run rated the same baseline (same data, ViT, seed): count it once, and
                    for col, v in cells.items():  # take the protocols only this run rated (its linear probe)
                        if same[0].get(col) is None:
                            same[0][col] = v
                    continue
                baselines.append({"run": f"({label})", "seed": seed, "_key": name + key, "method": "baseline",
                                  "head": "-", **cells})
    return rows, baselines


def per_run_columns() -> list[str]:
    """The per-run CSV: the group a run belongs to (the grouped table's row name), then its own numbers."""
    return ["group", "run", "seed", *BUDGET, *score_columns()]


def per_run_csv(runs: list[str | Path]) -> str:
    """One CSV row per run (and per baseline and seed): what the grouped table and its statistics are
    computed from, so a kept table needs no run folders (``pjepa table FILE.csv`` groups it again)."""
    rows, baselines = per_run_rows(runs)
    columns = per_run_columns()
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for members in (rows, baselines):
        names = {g["_key"]: g["run"] for g in _group([dict(m) for m in members], keep_key=True)}
        for r in sorted(members, key=lambda m: (list(names).index(m["_key"]), _seed_order(m))):
            w.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns} | {"group": names[r["_key"]]})
    return buf.getvalue()


def _csv_value(text: str) -> Any:
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def read_per_run_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a per-run CSV (``per_run_csv``), typed, each joining the group its ``group`` cell names."""
    columns = per_run_columns()
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("group", "run", "seed", "method") if c not in (reader.fieldnames or [])]
            if missing:
                raise PJepaError(f"{path}: not a per-run table (no {', '.join(missing)} column); write one with "
                                 "pjepa table RUN... --per-run --csv FILE")
            rows = [{k: _csv_value(v) for k, v in r.items() if k in columns} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PJepaError(f"{path}: cannot read it as a CSV ({e})") from None
    for r in rows:  # each keeps its own name (a kept CSV written again lists its runs, not its groups)
        r["_key"], r["_group"] = f"csv|{path}|{r['group']}", r.pop("group")
    return rows




# --------------------------------------------------------------------------- seed noise


def noise_metric(rows: list[dict[str, Any]], by: str | None = None) -> str | None:
    """The column the noise test compares on: ``by`` when given (``pjepa table --by knn_val``: a choice
    reads the validation split), else kNN@1 (weighted), else the first accuracy column every row with a
    score has."""
    rated = noise_scores()
    if by is not None:
        if by not in rated:
            raise PJepaError(f"--by {by}: not an accuracy column; choose one of {', '.join(rated)}")
        if not any(isinstance(r.get(by), (int, float)) for r in rows):
            have = [c for c in rated if any(isinstance(r.get(c), (int, float)) for r in rows)]
            raise PJepaError(f"--by {by}: no row has it (run its protocol, e.g. pjepa sweep --eval {by}); "
                             f"these rows have {', '.join(have) or 'no accuracy column'}")
        return by
    # rows with no score at all (a run still training) do not decide the column; they show "no <col>"
    scored = [r for r in rows if any(isinstance(r.get(c), (int, float)) for c in rated)]
    for col in rated:
        if scored and all(isinstance(r.get(col), (int, float)) for r in scored):
            return col
    return None


def welch_p(a: dict[str, Any], b: dict[str, Any], col: str) -> float | None:
    """Welch's two-sided p of row ``a`` against row ``b`` on ``col`` over their seeds; None when either row
    has fewer than two values (no spread to test against)."""
    n_a, n_b = a.get(f"{col}_n") or 0, b.get(f"{col}_n") or 0
    if n_a < 2 or n_b < 2:
        return None
    return welch_from_stats(a[col], a[f"{col}_std"], n_a, b[col], b[f"{col}_std"], n_b).p


def verdict(a: dict[str, Any], b: dict[str, Any], col: str, p: float) -> str:
    """">" / "<" (row ``a`` above / below row ``b`` on ``col``) when ``p`` < ALPHA, "≈" otherwise. ``p`` is
    passed in, not recomputed, so a corrected p decides the same way as a raw one."""
    if p >= ALPHA:
        return "≈"
    return ">" if a[col] > b[col] else "<"


def compare(a: dict[str, Any], b: dict[str, Any], col: str) -> tuple[str, float | None]:
    """(verdict, p) of row ``a`` against row ``b`` on ``col``, uncorrected: ">" / "<" when Welch's two-sided
    p < ALPHA, "≈" otherwise, "n<2" (p None) when either row has fewer than two values."""
    p = welch_p(a, b, col)
    return ("n<2", None) if p is None else (verdict(a, b, col, p), p)


def check_correction(correct: str) -> str:
    """``correct`` itself if it is one of ``CORRECTIONS``; a PJepaError naming it otherwise."""
    if correct not in CORRECTIONS:
        raise PJepaError(f"correct={correct!r}: choose one of {', '.join(CORRECTIONS)}")
    return correct


def resolve_correction(correct: str, tests: int) -> str:
    """"holm" or "none": what ``correct`` does to a family of ``tests`` tests. "auto" is Holm when the family
    holds more than one test: a single test has nothing to be corrected against (Holm leaves it as is)."""
    if check_correction(correct) == "auto":
        return "holm" if tests > 1 else "none"
    return correct


def adjust(p_values: list[float], method: str) -> list[float]:
    """The family's p-values as the verdicts read them under ``method`` ("holm" or "none")."""
    return holm(p_values) if method == "holm" else list(p_values)


def correction_phrase(method: str, tests: int, noun: tuple[str, str]) -> str:
    """How a family's p-values were treated, for a rule line: ``noun`` is (singular, plural) of what was
    tested, e.g. ("pair", "pairs") -> "p-values Holm-corrected over the 3 pairs"."""
    one, many = noun
    if tests == 0:
        return f"no p-values (no {one} with two seeds or more on both sides)"
    if tests == 1:
        return f"p-value of the single {one}, uncorrected (one test: Holm changes nothing)"
    if method == "holm":
        return f"p-values Holm-corrected over the {tests} {many}"
    return f"p-values uncorrected over the {tests} {many}"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def add_noise_column(rows: list[dict[str, Any]], by: str | None = None, correct: str = "auto") -> str | None:
    """Fill ``vs_best`` of every row: the row with the highest mean on ``noise_metric`` is ``best``; each
    other row is ``≈ best (p=..)`` or ``< best (p=..)``, or ``n<2: no spread``; with ``by``, a row without
    that column says so (``no knn_val``). The tests against the best are one family: their p-values are
    corrected as ``correct`` says (``resolve_correction``) and the verdict reads the corrected p.
    Also filled: ``vs_best_p`` (the p shown: corrected), ``vs_best_p_raw``, ``vs_best_correction`` ("holm"
    or "none") and ``vs_best_tests`` (the family's size).
    Returns the column compared on (None: no column every row has; the cells stay empty)."""
    check_correction(correct)
    col = noise_metric(rows, by)
    if col is None:
        return None
    have = [r for r in rows if isinstance(r.get(col), (int, float))]
    best = max(have, key=lambda r: r[col])  # the first of equal means
    raw = {id(r): welch_p(r, best, col) for r in have if r is not best}
    tested = {id(r): p for r in have if r is not best and (p := raw[id(r)]) is not None}  # p of each tested row
    method = resolve_correction(correct, len(tested))
    shown = dict(zip(tested, adjust(list(tested.values()), method)))
    for r in rows:
        r["vs_best_correction"], r["vs_best_tests"] = method, len(tested)
        r["vs_best_p_raw"], r["vs_best_p"] = raw.get(id(r)), shown.get(id(r))
        if not any(r is h for h in have):
            r["vs_best"] = f"no {col}"
        elif r is best:
            r["vs_best"] = "best"
        elif id(r) not in shown:
            r["vs_best"] = "n<2: no spread"
        else:
            r["vs_best"] = f"{verdict(r, best, col, shown[id(r)])} best ({_p(shown[id(r)])})"
    return col


def noise_rule(col: str, correction: str = "holm", tests: int | None = None) -> str:
    """The rule behind ``vs_best``, one line for the markdown output: which test, on which column, and how
    the p-values were corrected (``correction`` "holm" or "none" over ``tests`` rows compared with the best,
    as ``add_noise_column`` left them in the rows; ``tests`` None: the default's rule, count unknown)."""
    if tests is None:
        family = "p-values Holm-corrected over the rows compared with the best (where there are two or more)"
    else:
        family = correction_phrase(correction, tests, ("row compared with the best", "rows compared with the best"))
    return (f"vs_best: Welch's two-sided t-test over seeds on {col} against the row with the highest mean; "
            f"{family}; '< best' if p < {ALPHA:g}, '≈ best' otherwise (the gap is inside seed noise); "
            "'n<2: no spread' if either row has a single seed.")


def pairs_markdown(rows: list[dict[str, Any]], by: str | None = None, correct: str = "auto") -> str:
    """Every pair of rows under Welch's test: cell (i, j) says how row i compares with row j (">", "<", "≈"
    with p, or "n<2"), then the rule. The tested pairs (each once: (i, j) and (j, i) are one test) are one
    family, corrected as ``correct`` says; verdicts and the shown p are the corrected ones."""
    check_correction(correct)
    col = noise_metric(rows, by)
    if col is None:
        return "(no accuracy column that every row has: nothing to compare)\n"
    rows = [r for r in rows if isinstance(r.get(col), (int, float))]
    pairs = [(i, j) for i in range(len(rows)) for j in range(i + 1, len(rows))]
    raw = {ij: welch_p(rows[ij[0]], rows[ij[1]], col) for ij in pairs}
    tested = {ij: p for ij in pairs if (p := raw[ij]) is not None}  # p of each tested pair
    method = resolve_correction(correct, len(tested))
    shown = dict(zip(tested, adjust(list(tested.values()), method)))
    labels = [f"{i + 1}: {r['run']}" for i, r in enumerate(rows)]
    lines = [f"| {col}: row vs column | " + " | ".join(labels) + " |", "|" + "---|" * (len(rows) + 1)]
    for i, a in enumerate(rows):
        cells = []
        for j, b in enumerate(rows):
            p = shown.get((min(i, j), max(i, j)))
            cells.append("·" if i == j else "n<2" if p is None else f"{verdict(a, b, col, p)} ({_p(p)})")
        lines.append(f"| {labels[i]} ({_fmt(a[col])}, n={a.get(f'{col}_n')}) | " + " | ".join(cells) + " |")
    family = correction_phrase(method, len(tested), ("pair", "pairs"))
    rule = (f"Welch's two-sided t-test over seeds on {col}, {family}: "
            f"'>' / '<' if p < {ALPHA:g}, '≈' otherwise; 'n<2' if either row has a single seed.")
    return "\n".join(lines) + "\n\n" + rule + "\n"


def against_markdown(rows: list[dict[str, Any]], against: str, by: str | None = None, correct: str = "auto") -> str:
    """Every trained row against one reference row ``against`` (its ``run`` label, e.g. ``deterministic/s*``):
    mean, difference, Welch's two-sided p over seeds, corrected and raw, and the verdict, then the rule. The
    many-to-one tests are one family, corrected as ``correct`` says: the question "does any row beat the
    reference?" is answered by these tests alone, a smaller family than every pair (``pairs_markdown``).
    The baseline rows (untrained encoder, pixels) are listed but not tested: they are not candidates."""
    check_correction(correct)
    col = noise_metric(rows, by)
    if col is None:
        return "(no accuracy column that every row has: nothing to compare)\n"
    ref = next((r for r in rows if r["run"] == against), None)
    if ref is None:
        raise PJepaError(f"--against {against!r}: no such row; the rows are: {', '.join(r['run'] for r in rows)}")
    if not isinstance(ref.get(col), (int, float)):
        raise PJepaError(f"--against {against!r}: the row has no {col} to compare on")
    others = [r for r in rows if r is not ref and isinstance(r.get(col), (int, float))]
    raw = {id(r): welch_p(r, ref, col) for r in others if r.get("method") != "baseline"}
    tested = {k: p for k, p in raw.items() if p is not None}
    method = resolve_correction(correct, len(tested))
    shown = dict(zip(tested, adjust(list(tested.values()), method)))
    lines = [f"| {col}: row vs {against} ({_fmt(ref[col])}, n={ref.get(f'{col}_n')}) | n | {col} | difference | p | "
             "p uncorrected | verdict |", "|---|---|---|---|---|---|---|"]
    for r in others:
        p, p_raw = shown.get(id(r)), raw.get(id(r))
        if r.get("method") == "baseline":
            what = "(baseline: not tested)"
        elif p is None:
            what = "n<2: no spread"
        else:
            what = f"{verdict(r, ref, col, p)} {against}"
        lines.append(f"| {r['run']} | {r.get(f'{col}_n')} | {cell(r, col)} | {r[col] - ref[col]:+.2f} | "
                     f"{'-' if p is None else _p(p)} | {'-' if p_raw is None else _p(p_raw)} | {what} |")
    family = correction_phrase(method, len(tested), (f"row compared with {against}", f"rows compared with {against}"))
    rule = (f"Welch's two-sided t-test over seeds on {col} against {against}, {family}: "
            f"'>' / '<' if p < {ALPHA:g}, '≈' otherwise; 'n<2' if either row has a single seed.")
    return "\n".join(lines) + "\n\n" + rule + "\n"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if 0 < abs(v) < 0.1 else f"{v:.2f}"
    return str(v)


def cell(row: dict[str, Any], col: str) -> str:
    """``mean ± std``; ``(n=k)`` after it when fewer of the group's runs than ``n`` have this score."""
    std, k = row.get(f"{col}_std"), row.get(f"{col}_n")
    mean = row.get(col)
    # the spread at the mean's precision (`45.14 ± 0.05`, not `± 0.0473`); small means keep 3 significant digits
    spread = f"{std:.2f}" if isinstance(std, float) and isinstance(mean, float) and abs(mean) >= 0.1 else _fmt(std)
    text = _fmt(mean) + (f" ± {spread}" if std is not None and col in score_columns() else "")
    partial = row.get(col) is not None and isinstance(k, int) and isinstance(row.get("n"), int) and k < row["n"]
    return text + (f" (n={k})" if partial else "")


def shown_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown table's columns: ``run``, ``n``, ``seeds``, ``vs_best`` and every other column some row
    fills (a kNN-only table does not print empty low-shot, fine-tune and head columns; the CSV keeps all)."""
    always = {"run", "n", "seeds", "vs_best"}
    return [c for c in all_columns() if c in always or any(r.get(c) not in (None, "") for r in rows)]


def to_markdown(rows: list[dict[str, Any]], by: str | None = None) -> str:
    """The table, then one line stating the noise rule of ``vs_best`` (when a column could be compared),
    with the correction ``add_noise_column`` applied to the rows."""
    cols = shown_columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r, c) for c in cols) + " |" for r in rows]
    col = noise_metric(rows, by)
    if col is None:
        return "\n".join(lines) + "\n"
    family = next((r for r in rows if r.get("vs_best_correction") is not None), None)  # add_noise_column's
    rule = noise_rule(col) if family is None else noise_rule(col, family["vs_best_correction"], family["vs_best_tests"])
    return "\n".join(lines) + "\n\n" + rule + "\n"


def csv_columns() -> list[str]:
    """CSV columns: every number with its spread, then the noise test: verdict, the p it read (corrected
    under Holm), the raw p, the correction ("holm" / "none") and the family's size."""
    noise = ["vs_best", "vs_best_p", "vs_best_p_raw", "vs_best_correction", "vs_best_tests"]
    return all_columns()[:3] + BUDGET + [c for s in score_columns() for c in (s, f"{s}_std")] + noise


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols = csv_columns()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})
    return buf.getvalue()
