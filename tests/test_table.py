"""pjepa table over sweep folders, and its noise column: Welch's t-test of every row against the best one."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import SMOKE

from pjepa.cli.main import main
from pjepa.config import dump_config, load_config
from pjepa.errors import PJepaError
from pjepa.eval.stats import welch
from pjepa.eval.table import (
    add_noise_column,
    against_markdown,
    cell,
    expand_run_dirs,
    noise_metric,
    pairs_markdown,
    per_run_rows,
    table_rows,
    to_csv,
    to_markdown,
)

KNN = {"deterministic": [40.0, 41.0, 42.0], "mdn": [37.5, 38.5, 36.0], "flow": [41.5, 39.5, 40.5]}


def _run(path: Path, head: str, seed: int, knn: float) -> None:
    """A run directory as pjepa train and pjepa eval knn leave it (no checkpoint: the table reads none)."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(dump_config(load_config(SMOKE, [f"head.name={head}", f"train.seed={seed}"])))
    rows = [{"step": s, "epoch": s / 10, "train/loss": 1.0 / s, "wall_seconds": 6.0 * s} for s in (10, 20)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "eval").mkdir()
    (path / "eval" / "knn.json").write_text(json.dumps({"top1": knn, "top1_weighted": knn, "top1_majority": knn - 2}))


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A pjepa sweep folder: head.name x train.seed, sweep.json in grid order, a slurm/ folder of logs."""
    out = tmp_path / "sweep"
    names = []
    for head, values in KNN.items():
        for seed, knn in enumerate(values):
            names.append(f"head.name-{head}_seed{seed}")
            _run(out / names[-1], head, seed, knn)
    (out / "sweep.json").write_text(json.dumps({"runs": [{"name": n, "overrides": []} for n in names]}))
    (out / "slurm").mkdir()
    (out / "slurm" / "1_0_log.out").write_text("")
    return out


def test_a_sweep_folder_stands_for_its_runs_in_grid_order(sweep, tmp_path):
    runs = expand_run_dirs([sweep])
    assert [r.name for r in runs][:4] == ["head.name-deterministic_seed0", "head.name-deterministic_seed1",
                                          "head.name-deterministic_seed2", "head.name-mdn_seed0"]  # not by name
    assert len(runs) == 9 and all((r / "config.yaml").is_file() for r in runs)
    assert expand_run_dirs([sweep / "head.name-mdn_seed0", sweep]) == [runs[3]] + runs[:3] + runs[4:]  # once each
    (sweep / "sweep.json").unlink()
    assert [r.name for r in expand_run_dirs([sweep])][:3] == [f"head.name-deterministic_seed{i}" for i in range(3)]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert expand_run_dirs([empty]) == [empty]  # Run() then says it is not a run directory


def test_noise_column_compares_every_row_with_the_best(sweep, tmp_path):
    _run(tmp_path / "solo", "deterministic", 0, 50.0)  # another config (lr) with one seed
    cfg = load_config(SMOKE, ["head.name=deterministic", "train.seed=0", "optim.lr=0.5"])
    (tmp_path / "solo" / "config.yaml").write_text(dump_config(cfg))
    rows = table_rows([sweep, tmp_path / "solo"])
    by = {r["run"]: r for r in rows}
    assert list(by) == ["head.name-deterministic_s*", "head.name-mdn_s*", "head.name-flow_s*", "solo"]
    assert by["head.name-deterministic_s*"]["knn"] == 41.0 and by["head.name-deterministic_s*"]["knn_n"] == 3
    # the solo run has the highest mean but one seed: it is "best", and nothing can be tested against it
    assert by["solo"]["vs_best"] == "best"
    assert {r["vs_best"] for r in rows if r["run"] != "solo"} == {"n<2: no spread"}
    rows = table_rows([sweep], correct="none")
    by = {r["run"]: r for r in rows}
    p_mdn, p_flow = welch(KNN["mdn"], KNN["deterministic"]).p, welch(KNN["flow"], KNN["deterministic"]).p
    assert p_mdn < 0.05 < p_flow
    assert by["head.name-deterministic_s*"]["vs_best"] == "best"
    mdn = by["head.name-mdn_s*"]
    assert mdn["vs_best"] == f"< best (p={p_mdn:.2g})" and mdn["vs_best_p"] == p_mdn
    assert by["head.name-flow_s*"]["vs_best"] == f"≈ best (p={p_flow:.2g})"
    md = to_markdown(rows)
    assert md.splitlines()[0].endswith("| vs_best |") and f"| < best (p={p_mdn:.2g}) |" in md
    assert md.rstrip().splitlines()[-1].startswith("vs_best: Welch's two-sided t-test over seeds on knn against")
    header, *lines = to_csv(rows).splitlines()
    assert header.endswith(",vs_best,vs_best_p,vs_best_p_raw,vs_best_correction,vs_best_tests")
    assert lines[1].endswith(f",< best (p={p_mdn:.2g}),{p_mdn},{p_mdn},none,2")


def test_noise_metric_falls_back_to_a_column_every_row_has():
    rows = [{"run": "a", "knn": 40.0, "linear": 50.0, "linear_std": 1.0, "linear_n": 2},
            {"run": "b", "knn": None, "linear": 45.0, "linear_std": 1.0, "linear_n": 2}]
    assert noise_metric(rows) == "linear"
    assert add_noise_column(rows) == "linear" and rows[0]["vs_best"] == "best"
    assert rows[1]["vs_best"].startswith("< best (p=")
    assert noise_metric([{"run": "a", "nll": 1.0}]) is None and add_noise_column([{"run": "a"}]) is None
    assert "vs_best:" not in to_markdown([{"run": "a"}])


def test_by_compares_on_the_validation_column_even_where_the_test_column_disagrees():
    """A choice reads the validation split: with by="knn_val" the best row is the best on val, whatever knn
    (the reported split) says; a row without the column is marked, and a bad column name is an error."""
    rows = [{"run": "a", "knn": 50.0, "knn_std": 0.1, "knn_n": 2, "knn_val": 40.0, "knn_val_std": 0.1, "knn_val_n": 2},
            {"run": "b", "knn": 45.0, "knn_std": 0.1, "knn_n": 2, "knn_val": 44.0, "knn_val_std": 0.1, "knn_val_n": 2},
            {"run": "(raw pixels)", "knn": 46.0, "knn_std": 0.1, "knn_n": 2}]
    assert add_noise_column(copy.deepcopy(rows)) == "knn"
    assert add_noise_column(rows, by="knn_val") == "knn_val"
    assert [r["vs_best"] for r in rows] == [rows[0]["vs_best"], "best", "no knn_val"]
    assert rows[0]["vs_best"] == "< best (p<0.001)"
    assert "on knn_val against" in to_markdown(rows, by="knn_val")
    assert "(raw pixels)" not in pairs_markdown(rows, by="knn_val")
    with pytest.raises(PJepaError, match="not an accuracy column; choose one of"):
        noise_metric(rows, by="knn_vall")
    with pytest.raises(PJepaError, match="no row has it"):
        noise_metric(rows, by="linear")


def test_pairs_matrix(sweep, capsys):
    rows = table_rows([sweep])
    text = pairs_markdown(rows, correct="none")
    lines = text.splitlines()
    assert lines[0] == ("| knn: row vs column | 1: head.name-deterministic_s* | 2: head.name-mdn_s* | "
                        "3: head.name-flow_s* |")
    p = welch(KNN["mdn"], KNN["deterministic"]).p
    assert lines[2].startswith("| 1: head.name-deterministic_s* (41.00, n=3) | · | > (p=")
    assert f"| < (p={p:.2g}) | · |" in lines[3]
    assert "≈ (p=" in lines[4] and lines[-1].startswith("Welch's two-sided t-test over seeds on knn")
    assert main(["table", str(sweep), "--format", "md", "--pairs"]) == 0
    out = capsys.readouterr().out
    assert "| vs_best |" in out and "| knn: row vs column |" in out


def test_the_validation_knn_has_its_own_column(tmp_path):
    """``--eval knn_val`` writes eval/knn_val.json: the number a choice reads, shown beside the reported one."""
    _run(tmp_path / "a", "deterministic", 0, 40.0)
    (tmp_path / "a" / "eval" / "knn_val.json").write_text(json.dumps({"top1_weighted": 43.5, "top1_majority": 42.0}))
    _run(tmp_path / "b", "deterministic", 1, 41.0)
    row, = table_rows([tmp_path / "a", tmp_path / "b"])
    assert row["knn"] == 40.5 and row["knn_val"] == 43.5 and row["n"] == 2
    assert "knn_val" in to_markdown([row]).splitlines()[0]


def test_the_context_encoders_knn_has_its_own_columns_both_votes(tmp_path):
    """``pjepa eval knn --encoder context`` writes eval/knn_context.json: the report's protocol (student encoder),
    shown with both votes beside the target encoder's; a run without it leaves the cell empty, not zero."""
    for name, seed, knn, ctx in [("a", 0, 40.0, (44.0, 42.0)), ("b", 1, 41.0, (46.0, 43.0)), ("c", 2, 42.0, None)]:
        _run(tmp_path / name, "deterministic", seed, knn)
        if ctx:
            (tmp_path / name / "eval" / "knn_context.json").write_text(
                json.dumps({"top1_weighted": ctx[0], "top1_majority": ctx[1], "encoder": "context"}))
    row, = table_rows([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    assert (row["knn_context"], row["knn_context_majority"], row["knn_context_n"]) == (45.0, 42.5, 2)
    assert cell(row, "knn_context") == "45.00 ± 1.41 (n=2)"
    header = to_markdown([row]).splitlines()[0]
    assert "knn_context" in header and "knn_context_majority" in header


def test_runs_group_by_the_precision_they_resolved_to_not_the_one_requested(tmp_path):
    """A run from before ``train.precision=auto`` (config says bf16, trained on a CPU: fp32) and an ``auto`` run
    that resolved to fp32 are one group; an ``auto`` run that resolved to bf16 is another."""
    for name, seed, requested, stored in (("old", 0, "bf16", None), ("auto32", 1, "auto", "fp32"),
                                          ("auto16", 2, "auto", "bf16")):
        _run(tmp_path / name, "deterministic", seed, 40.0 + seed)
        cfg = load_config(SMOKE, ["head.name=deterministic", f"train.seed={seed}", f"train.precision={requested}"])
        (tmp_path / name / "config.yaml").write_text(dump_config(cfg))
        info = {"device": "cpu"}
        if stored:
            info["precision"] = {"requested": requested, "name": stored, "reason": "test", "device_type": "cpu"}
        (tmp_path / name / "run_info.json").write_text(json.dumps(info))
    rows = table_rows([tmp_path / "old", tmp_path / "auto32", tmp_path / "auto16"])
    assert [(r["n"], r["precision"]) for r in rows] == [(2, "fp32"), (1, "bf16")]
    assert "precision" in to_markdown(rows).splitlines()[0]


def test_a_run_older_than_a_plugin_option_groups_with_one_that_spells_out_its_default(tmp_path):
    """mask.options.size_rule came later: a config without it trained with its default ('pjepa'), so it
    groups with a run whose config names that default, and not with one that chose 'official'."""
    import yaml

    for name, seed, rule in (("old", 0, None), ("new", 1, "pjepa"), ("other", 2, "official")):
        _run(tmp_path / name, "deterministic", seed, 40.0 + seed)
        raw = yaml.safe_load((tmp_path / name / "config.yaml").read_text())
        raw["mask"]["options"].pop("size_rule", None)
        if rule:
            raw["mask"]["options"]["size_rule"] = rule
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(raw))
    rows = table_rows([tmp_path / "old", tmp_path / "new", tmp_path / "other"])
    assert [(r["n"], r["seeds"]) for r in rows] == [(2, "0,1"), (1, "2")]


def test_a_baseline_rated_by_two_runs_of_one_seed_counts_once(tmp_path):
    """Every run of a sweep rates the untrained encoder of its seed: two heads at seed 0 are one baseline value."""
    for name, head, seed, untrained in (("a", "deterministic", 0, 28.0), ("b", "mdn", 0, 28.0), ("c", "mdn", 1, 30.0)):
        _run(tmp_path / name, head, seed, 40.0)
        (tmp_path / name / "eval" / "knn_random_init.json").write_text(
            json.dumps({"top1_weighted": untrained, "top1_majority": untrained}))
    rows = table_rows([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    base, = [r for r in rows if r["method"] == "baseline"]
    assert base["n"] == 2 and base["seeds"] == "0,1" and base["knn"] == 29.0
    base, = [r for r in table_rows([tmp_path / "c", tmp_path / "a"]) if r["method"] == "baseline"]
    assert base["seeds"] == "0,1"  # listed in seed order, not the order the runs were given in
    # a protocol only the second run of seed 0 rated (its linear probe) is kept, not dropped with the repeat
    (tmp_path / "b" / "eval" / "linear_random_init.json").write_text(json.dumps({"top1": 38.0}))
    base, = [r for r in table_rows([tmp_path / "a", tmp_path / "b"]) if r["method"] == "baseline"]
    assert base["n"] == 1 and base["knn"] == 28.0 and base["linear"] == 38.0
    base, = [r for r in table_rows([tmp_path / "a", tmp_path / "b", tmp_path / "c"]) if r["method"] == "baseline"]
    assert (cell(base, "knn"), cell(base, "linear")) == ("29.00 ± 1.41", "38.00 (n=1)")  # 1 of the 2 seeds has it


def test_markdown_drops_columns_no_row_fills_and_csv_keeps_them(sweep):
    rows = table_rows([sweep])
    header = to_markdown(rows).splitlines()[0]
    assert "| knn |" in header and "finetune" not in header and "lowshot_1" not in header
    assert header.startswith("| run | n | seeds |") and header.endswith("| vs_best |")
    assert "finetune" in to_csv(rows).splitlines()[0]


def test_a_run_still_training_or_interrupted_is_a_row_of_its_own_named_so(sweep):
    import os
    import socket

    for seed, total in enumerate((20, 40, 40)):  # seeds 1 and 2 trained 20 steps of 40
        (sweep / f"head.name-deterministic_seed{seed}" / "run_info.json").write_text(json.dumps({"total_steps": total}))
    lock = {"pid": os.getpid(), "host": socket.gethostname(), "started": 0.0}  # a live writer: this process
    (sweep / "head.name-deterministic_seed1" / ".lock").write_text(json.dumps(lock))
    rows = {r["run"]: r for r in table_rows([sweep])}
    assert rows["head.name-deterministic_seed1 (running, step 20/40)"]["n"] == 1
    assert rows["head.name-deterministic_seed2 (stopped at step 20/40)"]["n"] == 1
    assert rows["head.name-deterministic_seed0"]["knn"] == KNN["deterministic"][0]  # alone: not averaged with them
    (sweep / "head.name-deterministic_seed2" / "run_info.json").write_text(json.dumps({"total_steps": 20}))
    lock["pid"] = 2 ** 22 + 1  # above pid_max: no such process, a stale lock
    (sweep / "head.name-deterministic_seed1" / ".lock").write_text(json.dumps(lock))
    rows = {r["run"]: r for r in table_rows([sweep])}
    assert rows["head.name-deterministic_s*"]["seeds"] == "0,2"  # finished: back in its group
    assert "head.name-deterministic_seed1 (stopped at step 20/40)" in rows


def test_a_row_not_rated_yet_does_not_stop_the_others_being_compared(tmp_path):
    for name, seed, knn in (("a0", 0, 50.0), ("a1", 1, 51.0), ("b0", 0, 40.0), ("b1", 1, 41.0), ("c0", 0, 0.0)):
        _run(tmp_path / name, {"a": "deterministic", "b": "mdn", "c": "flow"}[name[0]], seed, knn)
    (tmp_path / "c0" / "eval" / "knn.json").unlink()  # a run training (or not evaluated yet): no score at all
    rows = {r["head"]: r for r in table_rows(sorted(tmp_path.iterdir()))}
    assert rows["deterministic"]["vs_best"] == "best" and rows["mdn"]["vs_best"].startswith("< best (p=")
    assert rows["flow"]["vs_best"] == "no knn"


def test_runs_of_one_name_in_different_sweeps_are_named_by_their_folder(tmp_path):
    _run(tmp_path / "mdn" / "cpu_seed0", "mdn", 0, 40.0)  # pjepa sweep names both runs after the preset
    _run(tmp_path / "flow" / "cpu_seed0", "flow", 0, 41.0)
    _run(tmp_path / "flow" / "other", "flow", 1, 42.0)
    rows = table_rows([tmp_path / "mdn", tmp_path / "flow"])
    assert [r["run"] for r in rows] == ["mdn/cpu_seed0", "flow/cpu_s*"]  # a group keeps its first member's name


def test_one_lane_per_seed_names_its_rows_by_head_and_seed(tmp_path):
    """HEAD/seedN/RUN (a one-seed lane of benchmarks/heads_budget.sh): the row is HEAD/seedN, a group HEAD/s*."""
    for head, knn in (("mdn", (40.0, 41.0)), ("deterministic", (42.0, 43.0))):
        for seed, value in enumerate(knn):
            _run(tmp_path / head / f"seed{seed}" / head.replace("deterministic", "cpu"), head, seed, value)
    rows = table_rows([tmp_path / "mdn" / "seed0", tmp_path / "mdn" / "seed1", tmp_path / "deterministic" / "seed0"])
    assert [r["run"] for r in rows] == ["mdn/s*", "deterministic/seed0"]
    assert [r["run"] for r in per_run_rows([tmp_path / "mdn" / "seed1", tmp_path / "mdn" / "seed0"])[0]] == [
        "mdn/seed1", "mdn/seed0"]
    _run(tmp_path / "mdn" / "seed0" / "other", "mdn", 2, 39.0)  # a seed folder of two runs: named as before
    assert [r["run"] for r in per_run_rows([tmp_path / "mdn" / "seed0"])[0]] == ["mdn", "other"]


def test_a_run_folder_named_for_its_seed_is_named_with_its_row(tmp_path):
    """ROW/seedN run folders (benchmarks/budget_rows.sh): the row is ROW/seedN, a group ROW/s*, even when
    only one row's seeds are given (its folder names alone, seed0 and seed1, would not collide)."""
    for seed, value in enumerate((44.0, 46.0)):
        _run(tmp_path / "wide256x2" / f"seed{seed}", "deterministic", seed, value)
    paths = [tmp_path / "wide256x2" / "seed0", tmp_path / "wide256x2" / "seed1"]
    assert [r["run"] for r in per_run_rows(paths)[0]] == ["wide256x2/seed0", "wide256x2/seed1"]
    assert [r["run"] for r in table_rows(paths)] == ["wide256x2/s*"]


def test_a_spread_is_written_at_its_means_precision():
    # a percentage's spread to 2 decimals like the mean; a small score (a loss) keeps 3 significant digits
    assert cell({"knn": 45.14, "knn_std": 0.0473}, "knn") == "45.14 ± 0.05"
    assert cell({"knn": 0.0095, "knn_std": 0.00123}, "knn") == "0.0095 ± 0.00123"


def _rows(*knn: tuple[float, float, int]) -> list[dict]:
    """Table rows "r0", "r1", ... with kNN (mean, std, n) each, as ``_group`` leaves them."""
    return [{"run": f"r{i}", "n": n, "knn": mean, "knn_std": std, "knn_n": n} for i, (mean, std, n) in enumerate(knn)]


def test_vs_best_is_holm_corrected_by_default_over_the_rows_tested_against_the_best(sweep):
    """Two rows tested against the best: each p is Holm-adjusted over the two (the smaller one doubled, the
    larger one at least that), the verdict reads the adjusted p, and the raw p stays in the row and the CSV."""
    rows = table_rows([sweep])
    by = {r["run"]: r for r in rows}
    p_mdn, p_flow = welch(KNN["mdn"], KNN["deterministic"]).p, welch(KNN["flow"], KNN["deterministic"]).p
    mdn, flow = by["head.name-mdn_s*"], by["head.name-flow_s*"]
    assert p_mdn < p_flow and (mdn["vs_best_p"], flow["vs_best_p"]) == (2 * p_mdn, max(2 * p_mdn, p_flow))
    assert (mdn["vs_best_p_raw"], flow["vs_best_p_raw"]) == (p_mdn, p_flow)
    assert mdn["vs_best"] == f"< best (p={2 * p_mdn:.2g})" and 2 * p_mdn < 0.05
    assert all((r["vs_best_correction"], r["vs_best_tests"]) == ("holm", 2) for r in rows)
    rule = to_markdown(rows).rstrip().splitlines()[-1]
    assert "; p-values Holm-corrected over the 2 rows compared with the best;" in rule
    assert to_csv(rows).splitlines()[2].endswith(f",< best (p={2 * p_mdn:.2g}),{2 * p_mdn},{p_mdn},holm,2")
    assert "p-values uncorrected over the 2 rows" in to_markdown(table_rows([sweep], correct="none"))


def test_a_gap_below_alpha_alone_is_not_one_after_holm():
    """Raw p 0.033 and 0.038 against the best: both '< best' uncorrected, both '≈ best' once the two tests
    are a family (Holm: 2 x 0.033 = 0.067, and the second at least that)."""
    rows = _rows((50.0, 1.0, 3), (47.4, 1.0, 3), (47.5, 1.0, 3))
    raw = copy.deepcopy(rows)
    add_noise_column(raw, correct="none")
    assert [r["vs_best"][:6] for r in raw[1:]] == ["< best", "< best"]
    assert add_noise_column(rows) == "knn"  # auto: two tests -> Holm
    assert [r["vs_best"][:6] for r in rows[1:]] == ["≈ best", "≈ best"]
    assert rows[1]["vs_best_p"] == rows[2]["vs_best_p"] == pytest.approx(2 * raw[1]["vs_best_p"])
    assert rows[1]["vs_best"] == f"≈ best (p={2 * raw[1]['vs_best_p']:.2g})"


def test_a_single_test_is_not_corrected_and_rows_without_spread_are_not_tests():
    """One row with two seeds or more against the best: auto means no correction, and Holm would change
    nothing; a single-seed row ('n<2') is no test, so it does not enlarge the family."""
    rows = _rows((50.0, 1.0, 3), (47.4, 1.0, 3), (40.0, None, 1))
    add_noise_column(rows)
    assert (rows[1]["vs_best_correction"], rows[1]["vs_best_tests"]) == ("none", 1)
    assert rows[2]["vs_best"] == "n<2: no spread" and rows[2]["vs_best_p"] is None
    assert "p-value of the single row compared with the best, uncorrected" in to_markdown(rows)
    held = _rows((50.0, 1.0, 3), (47.4, 1.0, 3), (40.0, None, 1))
    add_noise_column(held, correct="holm")
    assert held[1]["vs_best_p"] == rows[1]["vs_best_p"] == rows[1]["vs_best_p_raw"]
    with pytest.raises(PJepaError, match="correct='bonferroni'"):
        add_noise_column(rows, correct="bonferroni")


def test_pairs_matrix_is_holm_corrected_over_every_pair(sweep):
    """The pairs matrix is a family of its own: the 3 pairs of 3 rows, each tested once whichever way round."""
    from pjepa.eval.stats import holm

    text = pairs_markdown(table_rows([sweep]))
    det, mdn, flow = KNN["deterministic"], KNN["mdn"], KNN["flow"]
    adjusted = holm([welch(det, mdn).p, welch(det, flow).p, welch(mdn, flow).p])
    lines = text.splitlines()
    assert lines[2].endswith(f"| · | ≈ (p={adjusted[0]:.2g}) | ≈ (p={adjusted[1]:.2g}) |")
    assert f"| ≈ (p={adjusted[0]:.2g}) | · |" in lines[3]  # raw p 0.018 '<' is inside the family's noise
    assert lines[-1].startswith("Welch's two-sided t-test over seeds on knn, p-values Holm-corrected over the 3 pairs:")
    assert "p-values uncorrected over the 3 pairs" in pairs_markdown(table_rows([sweep]), correct="none")


def test_the_correct_flag(sweep, capsys):
    assert main(["table", str(sweep), "--format", "both", "--pairs"]) == 0
    out = capsys.readouterr().out
    assert "Holm-corrected over the 2 rows compared with the best" in out and "Holm-corrected over the 3 pairs" in out
    assert main(["table", str(sweep), "--format", "both", "--pairs", "--correct", "none"]) == 0
    out = capsys.readouterr().out
    assert "uncorrected over the 2 rows compared with the best" in out and "uncorrected over the 3 pairs" in out
    assert ",none,2" in out and ",holm," not in out
    with pytest.raises(SystemExit):
        main(["table", str(sweep), "--correct", "bonferroni"])
    with pytest.raises(PJepaError, match="bonferroni"):
        table_rows([sweep], correct="bonferroni")


def test_copies_of_one_run_are_not_two_seeds_and_old_scores_are_named(tiny_run, tmp_path):
    import json
    import shutil

    from pjepa.errors import CheckpointError, PJepaError
    from pjepa.eval.protocols.knn import evaluate_knn

    evaluate_knn(tiny_run, progress=False)
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_run, a)
    shutil.copytree(tiny_run, b)
    with pytest.raises(PJepaError, match="are the same run .*copies would count as two seeds"):
        table_rows([a, b])
    knn = json.loads((b / "eval" / "knn.json").read_text())
    (b / "eval" / "knn.json").write_text(json.dumps({**knn, "step": 1}))  # rated before the run was resumed
    row = table_rows([b])[0]  # (then the baselines other tests may have rated on this run)
    assert row["run"] == "b (knn rated at step 1 of 2: evaluate again)"
    (a / "config.yaml").write_text("")
    with pytest.raises(CheckpointError, match="config.yaml is empty"):
        table_rows([a])


def test_against_tests_every_trained_row_against_the_named_one_holm_over_those_tests(sweep):
    """Many-to-one: "does any head beat this one?" is a family of the rows tested against it (2 here), smaller
    than every pair (3); the verdicts read the Holm-adjusted p, the raw p is printed beside it."""
    from pjepa.eval.stats import holm

    text = against_markdown(table_rows([sweep]), "head.name-flow_s*")
    det, mdn, flow = KNN["deterministic"], KNN["mdn"], KNN["flow"]
    raw = [welch(det, flow).p, welch(mdn, flow).p]
    adjusted = holm(raw)
    lines = text.splitlines()
    assert lines[0].startswith("| knn: row vs head.name-flow_s* (40.50, n=3) |")
    assert lines[2].startswith("| head.name-deterministic_s* | 3 | 41.00 ± 1.00 | +0.50 |")
    assert lines[2].endswith(f"| p={adjusted[0]:.2g} | p={raw[0]:.2g} | ≈ head.name-flow_s* |")
    assert lines[3].endswith(f"| p={adjusted[1]:.2g} | p={raw[1]:.2g} | ≈ head.name-flow_s* |")
    assert raw[1] < 0.05 <= adjusted[1]  # mdn's raw p is below 0.05; over the family it is inside the noise
    assert len(lines) == 6 and not any(line.startswith("| head.name-flow_s* |") for line in lines)  # not itself
    assert lines[-1].startswith("Welch's two-sided t-test over seeds on knn against head.name-flow_s*, "
                                "p-values Holm-corrected over the 2 rows compared with head.name-flow_s*:")


def test_against_lists_the_baselines_without_testing_them():
    rows = _rows((50.0, 1.0, 3), (47.4, 1.0, 3), (40.0, 0.5, 3))
    rows[2].update(run="(raw pixels)", method="baseline")
    text = against_markdown(rows, "r0")
    assert "| (raw pixels) | 3 | 40.00 ± 0.50 | -10.00 | - | - | (baseline: not tested) |" in text
    assert "p-value of the single row compared with r0, uncorrected" in text  # r1 alone is tested


def test_against_a_row_the_table_lacks_names_the_rows_and_prints_nothing(sweep, capsys):
    assert main(["table", str(sweep), "--format", "md", "--against", "head.name-flows_s*"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--against 'head.name-flows_s*': no such row" in err and "head.name-flow_s*" in err
    assert main(["table", str(sweep), "--format", "md", "--against", "head.name-mdn_s*", "--correct", "none"]) == 0
    assert "p-values uncorrected over the 2 rows compared with head.name-mdn_s*" in capsys.readouterr().out


def test_a_per_run_csv_read_back_gives_the_same_table_and_writes_itself_again(sweep, tmp_path, capsys):
    """A kept per-run CSV stands for its runs: the same grouped table, and written again (alone or beside
    new runs) the same lines, each run under its own name, not its group's."""
    kept, again = tmp_path / "kept.csv", tmp_path / "again.csv"
    assert main(["table", str(sweep), "--format", "md", "--per-run", "--csv", str(kept)]) == 0
    from_runs = capsys.readouterr().out.replace(f"wrote {kept}\n", "")
    lines = kept.read_text().splitlines()
    assert lines[1].startswith("head.name-deterministic_s*,head.name-deterministic_seed0,0,")
    assert main(["table", str(kept), "--format", "md"]) == 0
    assert capsys.readouterr().out == from_runs
    assert main(["table", str(kept), "--format", "csv", "--per-run", "--csv", str(again)]) == 0
    assert again.read_text() == kept.read_text()
    _run(tmp_path / "diffusion" / "seed0" / "diffusion", "diffusion", 0, 39.0)  # a head run after the CSV was kept
    assert main(["table", str(kept), str(tmp_path / "diffusion" / "seed0"), "--format", "csv", "--per-run",
                 "--csv", str(again)]) == 0
    *before, new = again.read_text().splitlines()
    assert before == lines and new.startswith("diffusion/seed0,diffusion/seed0,0,I-JEPA,diffusion,")
