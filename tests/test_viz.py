"""Figures and the report from tiny real run directories: each test checks what a figure shows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SMOKE, TINY, run_cli

from pjepa.config import load_config
from pjepa.errors import ConfigError
from pjepa.masking import build_mask_sampler
from pjepa.runs import Run
from pjepa.utils import stream_seed
from pjepa.viz import confusion, curves, imagination, masks, reliability, samples
from pjepa.viz.figures import FIGURES, make_figure
from pjepa.viz.report import write_report

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three 8-step runs on the tiny synthetic data: deterministic head (trained 4 + resumed 4 steps),
    MDN head, MAE; periodic kNN every 4 steps."""
    from pjepa.train.loop import train

    root = tmp_path_factory.mktemp("viz")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(SMOKE, TINY + ["train.max_steps=4"]), root / "deterministic")
        train(load_config(SMOKE, TINY), root / "deterministic", resume=True)
        train(load_config(SMOKE, TINY + ["head.name=mdn", "head.options={components: 3}"]), root / "mdn")
        train(load_config(SMOKE.parent / "smoke" / "mae.yaml", TINY), root / "mae")
    finally:
        torch.set_num_threads(before)
    return {name: Run(root / name) for name in ("deterministic", "mdn", "mae")}


def test_series_keeps_the_latest_segment_and_never_steps_back():
    rows = [{"step": s, "loss": 1.0} for s in (0, 2, 4, 6)] + [{"step": s, "loss": 2.0} for s in (4, 6, 8)]
    rows.insert(2, {"step": 3, "knn": 5.0})  # another key: ignored
    steps, values = curves.series(rows, "loss")
    assert steps == [0, 2, 4, 6, 8]
    assert values == [1.0, 1.0, 2.0, 2.0, 2.0]  # the resumed segment replaces steps 4 and 6


def test_loss_figure_has_one_increasing_curve_per_run(runs, tmp_path):
    dup = tmp_path / "dup"  # a log with a re-run segment appended (a crash before the first checkpoint)
    dup.mkdir()
    for name in ("config.yaml", "data_stats.json"):
        (dup / name).write_bytes((runs["mdn"].path / name).read_bytes())
    lines = (runs["mdn"].path / "metrics.jsonl").read_text().splitlines()
    (dup / "metrics.jsonl").write_text("\n".join(lines + lines) + "\n")
    fig = curves.plot_loss([*runs.values(), Run(dup)])
    drawn = fig.axes[0].get_lines()
    assert len(drawn) == 4
    for line in drawn:
        x = np.asarray(line.get_xdata())
        assert (np.diff(x) > 0).all()
    assert list(drawn[3].get_xdata()) == list(drawn[1].get_xdata())  # duplicates collapsed


def test_knn_figure_draws_a_single_value_run_as_a_marker(runs, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    for name in ("config.yaml", "data_stats.json"):
        (one / name).write_bytes((runs["mdn"].path / name).read_bytes())
    (one / "metrics.jsonl").write_text(json.dumps({"step": 8, "knn/top1_weighted": 40.0}) + "\n")
    fig = curves.plot_knn([runs["deterministic"], Run(one)])
    line, marker = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == [0, 4, 8]  # periodic kNN every 4 steps, the resume not repeated
    assert marker.get_linestyle() == "None" and list(marker.get_ydata()) == [40.0]


@pytest.mark.parametrize("name", ["deterministic", "mae"])
def test_mask_layout_is_the_run_samplers_draw(runs, name):
    run = runs[name]
    fig, layout = masks.plot_mask_layout(run, index=1)
    cfg = run.config
    grid = cfg.data.image_size // cfg.model.encoder.patch_size
    sampler = build_mask_sampler(cfg.mask.name, grid, dict(cfg.mask.options))
    drawn = sampler(cfg.optim.batch_size, torch.Generator().manual_seed(stream_seed(cfg.train.seed, 0, 0, "figure-masks")))
    ctx = torch.zeros(grid * grid, dtype=torch.bool)
    ctx[drawn.ctx_idx[1]] = True
    assert torch.equal(layout.context.flatten(), ctx)
    M = drawn.tgt_idx.shape[1]
    assert len(fig.axes) == M + 3
    for m in range(M):
        tgt = torch.zeros(grid * grid, dtype=torch.bool)
        tgt[drawn.tgt_idx[1, m]] = True
        assert torch.equal(layout.targets[m].flatten(), tgt)
        # the panel's overlay is opaque exactly on that block's pixels
        alpha = np.asarray(fig.axes[2 + m].images[1].get_array())[..., 3] > 0
        p = cfg.model.encoder.patch_size
        assert np.array_equal(alpha, tgt.view(grid, grid).repeat_interleave(p, 0).repeat_interleave(p, 1).numpy())
    assert not (layout.context & layout.targets.any(0)).any()  # context never holds a target patch


def test_samples_figure_has_a_row_per_head_and_every_draw(runs):
    fig = samples.plot_samples(list(runs.values()), n=300)  # MAE has no head: two rows
    density = [ax for ax in fig.axes if "draws, spread" in ax.get_title()]
    views = [ax for ax in fig.axes if ax.name == "3d"]
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "draws per cell"]
    assert len(density) == len(views) == len(bars) == 2  # a row per head: density, its colour bar, a 3-D view
    counts = [np.asarray(ax.collections[0].get_array()).sum() for ax in density]
    assert counts == [300, 300]  # hexbin cells hold every draw
    assert "spread 0.000" in density[0].get_title()  # the deterministic head: a point mass
    assert all((v.get_xlabel(), v.get_ylabel(), v.get_zlabel()) == ("PC 1", "PC 2", "PC 3") for v in views)
    legend = density[0].get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().y0 < density[0].get_window_extent().y0  # below
    means = density[1].collections[1].get_offsets()  # MDN component means
    assert len(means) == 3


def test_token_draws_of_the_deterministic_head_all_equal_its_point(runs):
    t = samples.token_draws(runs["deterministic"], n=5)
    assert torch.allclose(t.draws, t.point.expand(5, -1))


def test_mdn_statistics_histograms_count_every_token(runs):
    fig = samples.plot_mdn_statistics(runs["mdn"], images=4)
    assert len(fig.axes) == 3
    weights = sum(p.get_height() for p in fig.axes[1].patches)
    _, h, _ = samples.conditions(runs["mdn"], samples.figure_images(runs["mdn"], 4)[0])
    assert weights == h.shape[0] * h.shape[1] * 3
    with pytest.raises(ConfigError, match="head.name=mdn"):
        samples.plot_mdn_statistics(runs["deterministic"])


def test_nearest_patches_returns_the_patch_whose_embedding_was_predicted():
    g = torch.Generator().manual_seed(0)
    feats, patches = torch.randn(50, 8, generator=g), torch.randint(0, 255, (50, 3, 2, 2), generator=g)
    pick = torch.tensor([7, 3, 3, 41])
    assert torch.equal(imagination.nearest_patches(feats[pick] + 1e-3, feats, patches), patches[pick])


def test_patches_round_trip():
    img = torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(imagination.from_patches(imagination.to_patches(img, 4)[1]), img[1])


def test_imagination_keeps_the_context_and_fills_each_block(runs):
    rows = imagination.imagine(runs["mdn"], count=2, gallery_size=6)
    p = runs["mdn"].config.model.encoder.patch_size
    for row in rows:
        orig = imagination.to_patches(row["original"][None], p)[0]
        ctx = imagination.to_patches(row["context"][None], p)[0]
        keep = torch.zeros(len(orig), dtype=torch.bool)
        keep[row["ctx_idx"]] = True
        assert torch.equal(ctx[keep], orig[keep])
        assert (ctx[~keep] == imagination.GREY).all()
        together = imagination.to_patches(row["all"][None], p)[0]
        masked = row["tgt_idx"].flatten().unique()
        assert not (together[masked] == imagination.GREY).all()  # filled from the gallery
    fig = imagination.plot_imagination(runs["mdn"], count=2, gallery_size=6)
    assert len(fig.axes) == 2 * (len(rows[0]["blocks"]) + 3)
    with pytest.raises(ConfigError, match="no predictor head"):
        imagination.imagine(runs["mae"])


def test_class_map_has_one_point_per_image(runs):
    from pjepa.data import splits_for

    fig = FIGURES["tsne"].make(runs["deterministic"])
    val = splits_for(runs["deterministic"].config).val
    points = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    assert points == len(val)


def test_confusion_figure_shows_the_saved_matrix(runs):
    from pjepa.eval.protocols.linear import evaluate_linear

    run = runs["deterministic"]
    r = evaluate_linear(run.path, epochs=2, progress=False)
    fig = confusion.plot_confusion(run)
    shown = np.asarray(fig.axes[0].images[0].get_array())
    cm = np.asarray(r["probes"]["last"]["confusion"], dtype=float)
    assert np.allclose(shown, cm / np.clip(cm.sum(1, keepdims=True), 1, None))
    assert len(fig.axes[1].patches) == cm.shape[0]  # one accuracy bar per class (axes[2]: the colour bar)
    with pytest.raises(ConfigError, match="pjepa eval linear"):
        confusion.plot_confusion(runs["mae"])


def test_reliability_draws_one_curve_per_calibrated_run(runs, tmp_path):
    with pytest.raises(ConfigError, match="eval calibration"):
        reliability.plot_reliability([runs["mae"]])
    levels = [0.1, 0.5, 0.9]
    runs["mdn"].write_eval("calibration", {"levels": levels, "coverage": [0.08, 0.45, 0.85]})
    try:
        fig = reliability.plot_reliability(list(runs.values()))
        diagonal, curve = fig.axes[0].get_lines()
        assert list(curve.get_xdata()) == levels and list(curve.get_ydata()) == [0.08, 0.45, 0.85]
    finally:
        (runs["mdn"].eval_dir / "calibration.json").unlink()


@pytest.mark.slow
def test_report_is_one_page_with_every_applicable_figure(runs, tmp_path):
    tb_own = sorted((runs["mdn"].path / "tb").glob("events.*"))
    before = [(p.name, p.stat().st_size) for p in tb_own]
    folder = runs["mdn"].path.parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(runs)  # a folder of runs, as a sweep writes
    page, log = write_report([folder], tmp_path / "html")  # stands for its runs
    text = page.read_text()
    assert f"{len(runs)} runs;" in text
    assert text.count("<img") == len([line for line in log if "not made" not in line])
    assert "src=\"data:image/png;base64," in text and "<script" not in text  # self-contained
    for name in runs:
        assert f"{name}" in text
    made = {line.split(":")[0] for line in log if "not made" not in line}
    assert "mdn" in made or any("mdn" in line and "mixture" in line for line in log)
    assert [(p.name, p.stat().st_size) for p in sorted((runs["mdn"].path / "tb").glob("events.*"))] == before
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    hp = EventAccumulator(str(runs["mdn"].path / "tb" / "hparams"))  # their own folders
    hp.Reload()
    assert {"final/train_loss", "final/val_knn"} <= set(hp.Tags()["scalars"])
    figs = EventAccumulator(str(runs["mdn"].path / "tb" / "figures"), size_guidance={"images": 0})
    figs.Reload()
    assert {"loss", "knn", "mdn-masks", "mdn-mdn", "mdn-imagination"} <= set(figs.Tags()["images"])


@pytest.mark.slow
def test_plot_cli_writes_into_the_run_and_names_unknown_figures(runs):
    r = run_cli("plot", "masks", str(runs["mdn"].path))
    assert r.returncode == 0, r.stderr
    assert (runs["mdn"].figures_dir / "masks.png").is_file()
    bad = run_cli("plot", "mask", str(runs["mdn"].path))
    assert bad.returncode == 2 and "invalid choice: 'mask'" in bad.stderr


def test_figures_that_do_not_apply_say_so(runs, tmp_path):
    with pytest.raises(ConfigError, match="applies to none"):
        make_figure("imagination", [runs["mae"]], tmp_path)
    with pytest.raises(ConfigError, match="unknown figure"):
        make_figure("nope", [runs["mae"]], tmp_path)


@pytest.mark.slow
def test_report_has_contents_captions_readable_tables_and_names_what_a_run_cannot_have(runs, tmp_path):
    page, _ = write_report([r.path for r in runs.values()], tmp_path / "html", tensorboard=False, formats=["pdf"],
                           dpi=120)
    text = page.read_text()
    assert "<nav><strong>Contents</strong>" in text and 'href="#s-comparison"' in text
    assert text.count("<figcaption>") == text.count("<img")  # every figure has its caption
    assert ">budget</th>" in text and "training (min)" in text and "What trained, and for how long" in text  # grouped
    assert "I-JEPA" in text and "wall_min" not in text  # full names, not raw keys
    # MAE has no predictor head: the page says which figures it cannot have, and why
    mae = text[text.index('id="s-mae"'):]
    assert "Figures this run cannot have: " in mae and "imagination (needs a predictor head" in mae
    assert sorted(p.suffix for p in (tmp_path / "html" / "figures").glob("loss.*")) == [".pdf", ".png"]


@pytest.mark.parametrize("fmt, magic", [("pdf", b"%PDF"), ("svg", b"<?xml")])
def test_plot_writes_vector_formats(runs, tmp_path, fmt, magic):
    (path,) = make_figure("loss", [runs["mdn"]], tmp_path, fmt=fmt, dpi=150)
    assert path.suffix == f".{fmt}" and path.read_bytes().startswith(magic)


def test_plot_refuses_a_run_without_the_data_a_figure_needs(runs, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(runs["mdn"].path, bare)
    (bare / "metrics.jsonl").unlink()
    with pytest.raises(ConfigError, match="has training losses .*did training start"):
        make_figure("loss", [Run(bare)], tmp_path)
    with pytest.raises(ConfigError, match="has periodic kNN values"):
        make_figure("knn", [Run(bare)], tmp_path)


def test_runs_of_one_lane_per_seed_are_told_apart_in_legends(tmp_path):
    """HEAD/seedN/RUN (one lane per seed): every lane's run has the same name, so the lane names it."""
    from types import SimpleNamespace

    from pjepa.viz.common import run_name

    def run(*parts: str) -> SimpleNamespace:
        path = tmp_path.joinpath(*parts)
        path.mkdir(parents=True)
        (path / "config.yaml").write_text("")
        return SimpleNamespace(path=path, name=path.name)

    lanes = [run("diffusion", f"seed{s}", "diffusion") for s in range(3)]
    assert [run_name(r) for r in lanes] == ["diffusion/seed0", "diffusion/seed1", "diffusion/seed2"]
    other = run("diffusion", "seed0", "other")  # a seed folder of two runs: both named in full
    assert [run_name(lanes[0]), run_name(other)] == ["diffusion/seed0/diffusion", "diffusion/seed0/other"]
    assert run_name(run("sweep", "cpu_seed1")) == "sweep/cpu_seed1"
    assert run_name(run("runs", "c10")) == "c10"
