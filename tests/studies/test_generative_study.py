"""The generative study end to end (pjepa.studies.generative): two tiny runs, the tiny preset, resumable stages."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from conftest import ROOT, SMOKE, TINY
from PIL import Image

from pjepa.cli.main import build_parser, main
from pjepa.config import dump_config, load_config
from pjepa.errors import ConfigError
from pjepa.methods import build_method
from pjepa.models.timm_format import save_encoder
from pjepa.runs import save_checkpoint
from pjepa.studies.generative import study as study_module
from pjepa.studies.generative.grids import grid_size
from pjepa.studies.generative.inception import InceptionFeatures
from pjepa.studies.generative.study import MODES, load_study_config, run_study
from pjepa.utils import seed_everything

STAGES = ["tokens", "vae", "latents", "decoder"] + [f"{s}_{m}" for m in MODES for s in ("diffusion", "samples", "metrics")]
CLASSES, SIZE = 4, 24  # the TINY synthetic data: 4 classes, 24 px


class FakeInception(nn.Module):
    """Stands in for the FID InceptionV3 (no weights here, and the real one is slow on CPU): 9 pool features."""

    def forward(self, x: torch.Tensor) -> InceptionFeatures:
        pool = torch.cat([x.mean((2, 3)), x.std((2, 3)), x.amax((2, 3))], 1)  # (B, 9)
        logits = pool @ torch.linspace(-1, 1, 9 * 5).view(9, 5)
        return InceptionFeatures(pool, logits, logits)


def make_run(path: Path, overrides: list[str] = ()) -> Path:
    """An I-JEPA run directory without training: the tiny config, data stats, an untrained checkpoint."""
    path.mkdir(parents=True)
    cfg = load_config(SMOKE, TINY + list(overrides))
    (path / "config.yaml").write_text(dump_config(cfg))
    (path / "data_stats.json").write_text(json.dumps({"mean": [0.4, 0.45, 0.5], "std": [0.25, 0.2, 0.3]}))
    seed_everything(cfg.train.seed)
    save_checkpoint(path / "checkpoints", "last", build_method(cfg).state_dict(), {"step": 3})
    return path


def make_imported_mae(path: Path) -> Path:
    """An imported-encoder folder (README: Generative study): encoder.safetensors/.json as pjepa import
    writes them, a config naming the data and method.name mae; no data_stats.json (ImageNet's are used)."""
    path.mkdir(parents=True)
    cfg = load_config(ROOT / "configs" / "smoke" / "mae.yaml", TINY)
    seed_everything(1)
    save_encoder(build_method(cfg).feature_encoder("target"), path / "encoder.safetensors")
    (path / "config.yaml").write_text(dump_config(cfg))
    return path


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def fresh_stages(lines: list[str]) -> list[tuple[str, str]]:
    """(run, stage) of every printed line that says the stage ran."""
    return [(ln.split()[2], ln.split()[3]) for ln in lines if " done in " in ln]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(out, runs, printed lines, inception file) of one tiny study over an I-JEPA run and an imported MAE encoder."""
    root = tmp_path_factory.mktemp("study")
    runs = [make_run(root / "ijepa"), make_imported_mae(root / "mae")]
    weights = root / "inception.pth"
    weights.write_bytes(b"stand-in")
    lines: list[str] = []
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(study_module, "load_fid_inception", lambda path: FakeInception())
        run_study(runs, root / "out", load_study_config("tiny"), weights, progress=False, device="cpu", echo=lines.append)
    torch.set_num_threads(before)
    return root / "out", runs, lines, weights


def test_the_table_has_a_finite_row_per_run_and_mode(study):
    out, _, lines, _ = study
    assert sorted(fresh_stages(lines)) == sorted([("shared", s) for s in ("metric", "perceptual", "real_grid")]
                                                 + [("mae", "import")] + [(r, s) for r in ("ijepa", "mae") for s in STAGES])
    table = json.loads((out / "table.json").read_text())
    assert [(r["run"], r["mode"]) for r in table["rows"]] == [(r, m) for r in ("ijepa", "mae") for m in MODES.values()]
    assert [r["method"] for r in table["rows"]] == ["I-JEPA", "I-JEPA", "MAE", "MAE"]  # named as the table names them
    assert "imported" in table["rows"][2]["encoder"] and "step 3" in table["rows"][0]["encoder"]
    for row in table["rows"]:
        assert row["n_samples"] == 12 and row["sampler"] == "ddim 3 steps"
        numbers = [v for k, v in row.items() if k not in ("run", "encoder", "method", "mode", "sampler")]
        assert all(v is None or math.isfinite(v) for v in numbers), row
        assert {"fd_resnet", "resnet_score", "precision_resnet", "recall_resnet", "class_tv", "memorisation_ratio",
                "fd_inception", "inception_score", "precision_inception", "recall_inception"} <= set(row)
        assert (row["class_accuracy"] is None) == (row["mode"] == "unconditional")
    assert 0 <= table["feature_networks"]["SmallResNet"]["heldout_accuracy"] <= 1
    md = (out / "table.md").read_text().splitlines()
    assert md[0].startswith("Feature networks: SmallResNet") and "InceptionV3" in md[0] and "held-out accuracy" in md[0]
    assert "FD (SmallResNet)" in md[4] and "IS (InceptionV3)" in md[4] and "| N |" in md[4]
    assert len([ln for ln in md if ln.startswith("| ijepa") or ln.startswith("| mae")]) == 4
    timings = json.loads((out / "mae" / "timings.json").read_text())
    assert list(timings["stages"]) == ["import"] + STAGES and timings["total"] > 0


def test_the_grids_have_the_expected_sizes(study):
    out, *_ = study
    sizes = {"real.png": grid_size(CLASSES, 3, SIZE, SIZE),  # one row per class, grid_cols 3
             "ijepa/samples_uncond.png": grid_size(2, 3, SIZE, SIZE),  # grid_rows 2 x grid_cols 3
             "ijepa/samples_cond.png": grid_size(CLASSES, 3, SIZE, SIZE),
             "mae/reconstructions.png": grid_size(1 + 3, 4, SIZE, SIZE)}  # real + snapshots at steps 1, 2, 4
    for name, size in sizes.items():
        assert Image.open(out / name).size == size, name


def test_the_study_page_inlines_its_table_and_grids(study, tmp_path):
    """``pjepa gen study`` ends with OUT/report.html; ``pjepa report --study OUT`` puts the same section on a
    report page. Both hold every row of the table and the real, sample and reconstruction grids."""
    from pjepa.viz.report import write_report, write_study_report

    out, *_ = study
    table = json.loads((out / "table.json").read_text())
    for page in (write_study_report(out), write_report([], tmp_path / "report", studies=[out])[0]):
        text = page.read_text()
        assert text.count("<img") == 1 + 3 * 2  # real.png, then 2 runs x (uncond, cond, reconstructions)
        assert text.count("data:image/png;base64,") == 7
        for row in table["rows"]:
            assert f"<td>{row['mode']}</td>" in text and f"<td>{row['fd_resnet']:.4g}</td>" in text
        assert "Feature networks: SmallResNet" in text
    (out / "mae" / "samples_cond.png").rename(tmp_path / "moved.png")
    try:
        assert "mae: no samples_cond.png (stage not run yet)" in write_study_report(out).read_text()
    finally:
        (tmp_path / "moved.png").rename(out / "mae" / "samples_cond.png")
    with pytest.raises(ConfigError, match="not a finished `pjepa gen study` folder"):
        write_study_report(tmp_path)


def test_a_rerun_skips_every_stage_and_a_deleted_marker_reruns_what_depends_on_it(study, monkeypatch):
    out, runs, _, weights = study
    monkeypatch.setattr(study_module, "load_fid_inception", lambda path: FakeInception())
    torch.set_num_threads(1)
    before, lines = digests(out), []
    run_study(runs, out, load_study_config("tiny"), weights, progress=False, device="cpu", echo=lines.append)
    assert lines and all("skipped" in ln for ln in lines) and digests(out) == before
    (out / "mae" / "done" / "diffusion_cond.json").unlink()
    lines.clear()
    run_study(runs, out, load_study_config("tiny"), weights, progress=False, device="cpu", echo=lines.append)
    assert fresh_stages(lines) == [("mae", "diffusion_cond"), ("mae", "samples_cond"), ("mae", "metrics_cond")]
    after = digests(out)
    assert after["mae/samples_uncond.safetensors"] == before["mae/samples_uncond.safetensors"]
    assert after["ijepa/metrics_cond.json"] == before["ijepa/metrics_cond.json"]
    lines.clear()
    run_study(runs, out, load_study_config("tiny", ["sample.n=8"]), weights, progress=False, device="cpu",
              echo=lines.append)  # a changed option reruns its stage and what follows, nothing upstream
    assert sorted(fresh_stages(lines)) == sorted((r, f"{s}_{m}") for r in ("ijepa", "mae") for m in MODES
                                                 for s in ("samples", "metrics"))
    assert json.loads((out / "table.json").read_text())["rows"][0]["n_samples"] == 8


def test_runs_on_different_data_and_unknown_keys_are_config_errors(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "config.yaml").write_text(dump_config(load_config(SMOKE, TINY)))
    b = tmp_path / "b"
    b.mkdir()
    (b / "config.yaml").write_text(dump_config(load_config(SMOKE, TINY + ["data.image_size=32"])))
    with pytest.raises(ConfigError, match=r"runs a and b differ in data.image_size \(24 vs 32\)"):
        run_study([a, b], tmp_path / "out", load_study_config("tiny"), progress=False, device="cpu")
    with pytest.raises(ConfigError, match="unknown study key diffusion.stepz"):
        load_study_config("tiny", ["diffusion.stepz=3"])
    with pytest.raises(ConfigError, match="sample.n=0"):
        load_study_config("tiny", ["sample.n=0"])
    for preset in ("cifar10_cpu", "tin100", "afhq", "tiny"):
        assert load_study_config(preset).sample.n > 0


def test_the_removed_adversarial_option_loads_at_zero_and_is_named_otherwise(tmp_path):
    """Configs written before the PatchGAN decoder loss was removed (study.yaml holds decoder.adversarial_weight: 0)
    still load; a weight above 0 is a ConfigError saying the option is gone."""
    old = tmp_path / "study.yaml"
    old.write_text("seed: 0\ndecoder: {width: 8, steps: 4, adversarial_weight: 0.0}\n")
    assert load_study_config(old).decoder.steps == 4
    assert load_study_config("tiny", ["decoder.adversarial_weight=0"]) == load_study_config("tiny")
    with pytest.raises(ConfigError, match=r"decoder.adversarial_weight=0.1: the adversarial \(PatchGAN\) decoder loss "
                                          "was removed"):
        load_study_config("tiny", ["decoder.adversarial_weight=0.1"])
    with pytest.raises(ConfigError, match="no preset of that name"):
        load_study_config("tinyy")


def test_the_stages_run_in_their_declared_order():
    """One declared tuple per folder: the shared stages, then each run's, in the order the timings list them."""
    from pjepa.studies.generative.pipeline import RUN_STAGES, SHARED_STAGES

    assert [s.name for s in SHARED_STAGES] == ["metric", "perceptual", "real_grid"]
    assert [s.name for s in RUN_STAGES] == STAGES
    names = {f"shared/{s.name}" for s in SHARED_STAGES}
    for stage in RUN_STAGES:  # every dependency is declared before the stage that needs it
        assert set(stage.deps) <= names, (stage.name, stage.deps)
        names.add(stage.name)


def test_the_cli_parses_and_rejects_a_missing_runs(tmp_path, capsys):
    args = build_parser().parse_args(["gen", "study", "--runs", "a", "b", "--out", "o", "--preset", "tiny"])
    assert (args.command, args.gen_command, [str(r) for r in args.runs], args.preset) == ("gen", "study", ["a", "b"], "tiny")
    with pytest.raises(SystemExit) as e:
        main(["gen", "study", "--out", str(tmp_path)])
    assert e.value.code == 2 and "--runs" in capsys.readouterr().err
    assert main(["gen", "study", "--runs", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "diffusion.stepz=1"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["pjepa: error: unknown study key diffusion.stepz "
                                                            "(valid keys at diffusion: schedule, timesteps, prediction, "
                                                            "p_uncond, steps, batch_size, lr, warmup, ema)"]
    assert main(["gen", "study", "--runs", str(tmp_path / "none"), "sample.n=4", "--out", str(tmp_path / "o")]) == 2
    assert "no such directory" in capsys.readouterr().err
