"""The evaluation suite: linear probe, low-shot, fine-tune, classification report, model.init."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import SMOKE, TINY

from pjepa.checks import check_config
from pjepa.cli.main import main
from pjepa.config import load_config
from pjepa.errors import ConfigError
from pjepa.eval.classification import classification_metrics, confusion_matrix, macro_f1
from pjepa.eval.linear import choose, linear_probe, train_probes
from pjepa.methods import build_method
from pjepa.methods.finetune import FineTune


def blobs(n: int, d: int, c: int, seed: int, separable: bool = True):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    x = torch.randn(n, d, generator=g)
    if separable:
        centres = torch.randn(c, d, generator=torch.Generator().manual_seed(99)) * 4
        x = x + centres[y]
    return x, y


def test_the_probe_separates_linearly_separable_features(one_thread):
    train, val, test = blobs(2000, 32, 10, 0), blobs(500, 32, 10, 1), blobs(1000, 32, 10, 2)
    r = linear_probe(train, val, test, 10, epochs=10)
    assert r["top1"] >= 99.0


def test_the_probe_stays_at_chance_on_random_labels(one_thread):
    """Labels independent of the features: top-1 within 3 standard errors of 1/C."""
    train, val = blobs(2000, 32, 10, 0, separable=False), blobs(500, 32, 10, 1, separable=False)
    n = 4000
    test = blobs(n, 32, 10, 2, separable=False)
    r = linear_probe(train, val, test, 10, epochs=10)
    p = 0.1
    assert abs(r["top1"] / 100 - p) <= 3 * math.sqrt(p * (1 - p) / n)


def test_the_grid_choice_reads_only_the_validation_split(one_thread):
    train, val = blobs(600, 16, 4, 0), blobs(200, 16, 4, 1)
    test_a, test_b = blobs(300, 16, 4, 2), blobs(300, 16, 4, 3)
    scrambled = (test_a[0], test_a[1][torch.randperm(300, generator=torch.Generator().manual_seed(0))])
    runs = [linear_probe(train, val, t, 4, epochs=3) for t in (test_a, test_b, scrambled)]
    assert len({(r["lr"], r["weight_decay"]) for r in runs}) == 1
    assert runs[0]["grid"] == runs[1]["grid"] == runs[2]["grid"]
    # and it is the validation argmax (first on ties)
    accs = [g["val_top1"] for g in runs[0]["grid"]]
    assert runs[0]["val_top1"] == max(accs)
    assert accs.index(max(accs)) == [(g["lr"], g["weight_decay"]) for g in runs[0]["grid"]].index(
        (runs[0]["lr"], runs[0]["weight_decay"]))


def test_every_grid_point_trains_independently(one_thread):
    """A probe's weights do not depend on which other settings share the pass."""
    x, y = blobs(256, 8, 3, 0)
    alone = train_probes(x, y, 3, lrs=(0.1,), wds=(1e-3,), epochs=2)
    joint = train_probes(x, y, 3, lrs=(0.01, 0.1), wds=(0.0, 1e-3), epochs=2)
    assert torch.allclose(alone.weight[:, 0], joint.weight[:, 3], atol=1e-6)  # (D, G, C)
    assert choose(alone, x, y)[0] == 0


def test_classification_report_worked_example():
    scores = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [3.0, 1.0, 2.0], [1.0, 2.0, 3.0]])
    labels = torch.tensor([0, 1, 1, 1])  # predictions 0, 1, 0, 2
    r = classification_metrics(scores, labels, 3)
    assert r["top1"] == 50.0 and r["top5"] == 100.0
    assert r["confusion"] == [[1, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert r["per_class_accuracy"] == [100.0, 33.333, 0.0]
    # F1: class 0: 2*1/(2+1+0) = 2/3; class 1: 2*1/(2+0+2) = 1/2; class 2: 0
    assert r["macro_f1"] == pytest.approx(100 * (2 / 3 + 1 / 2 + 0) / 3)
    assert r["predictions"] == [0, 1, 0, 2] and r["labels"] == [0, 1, 1, 1]
    assert macro_f1(confusion_matrix(labels, labels, 3)) == pytest.approx(100 * 2 / 3)  # class 2 absent


def test_linear_and_lowshot_protocols_write_their_reports(tiny_run, capsys, one_thread):
    assert main(["eval", "linear", "--run", str(tiny_run), "--epochs", "2"]) == 0
    r = json.loads((tiny_run / "eval" / "linear.json").read_text())
    assert set(r["probes"]) == {"last", "last2"}  # the tiny encoder has 2 layers
    assert r["chosen_on"] == "validation split" and len(r["probes"]["last"]["labels"]) == r["n_eval"]
    assert list((tiny_run / "eval" / "cache").glob("features_target-last-step2_last2.pt"))
    assert main(["eval", "lowshot", "--run", str(tiny_run), "--fractions", "0.5", "--seeds", "2"]) == 0
    low = json.loads((tiny_run / "eval" / "lowshot.json").read_text())
    f = low["fractions"]["0.5"]
    assert len(f["top1"]) == 2 and f["top1_mean"] == pytest.approx(sum(f["top1"]) / 2)
    assert "hold-out" in low["chosen_on"] and "hold-out" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["eval", "finetune", "--run", str(tiny_run), "--pixels"])  # no such flag: pixels have no fine-tune
    assert main(["eval", "lowshot", "--run", str(tiny_run), "--fractions", "0.01"]) == 2  # no hold-out left


def test_pixel_and_random_init_baselines_have_their_own_files(tiny_run, one_thread):
    assert main(["eval", "linear", "--run", str(tiny_run), "--pixels", "--epochs", "1"]) == 0
    assert main(["eval", "linear", "--run", str(tiny_run), "--random-init", "--epochs", "1"]) == 0
    r = json.loads((tiny_run / "eval" / "linear_pixels.json").read_text())
    assert set(r["probes"]) == {"pixels"} and r["features"] == "raw pixels"
    assert (tiny_run / "eval" / "linear_random_init.json").exists()


def test_whitened_knn_has_its_own_files_for_the_encoder_and_the_baselines(tiny_run, one_thread):
    for extra in ([], ["--pixels"], ["--random-init"], ["--split", "val"]):
        assert main(["eval", "knn", "--run", str(tiny_run), "--whiten", *extra]) == 0
    for stem in ("knn_white", "knn_pixels_white", "knn_random_init_white", "knn_val_white"):
        r = json.loads((tiny_run / "eval" / f"{stem}.json").read_text())
        assert r["features"].startswith("PCA-whitened") and 0 <= r["top1"] <= 100
    raw = json.loads((tiny_run / "eval" / "knn.json").read_text()) if (tiny_run / "eval" / "knn.json").exists() else None
    assert raw is None or raw.get("features", "raw") == "raw"  # the unwhitened result is a different file


def test_knn_of_several_layers_says_so_in_its_line_and_its_file(tiny_run, one_thread, capsys):
    assert main(["eval", "knn", "--run", str(tiny_run), "--layers", "2", "--whiten"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("kNN@1"))
    assert "last 2 layers, whitened," in line
    assert json.loads((tiny_run / "eval" / "knn_last2_white.json").read_text())["layers"] == 2
    assert main(["eval", "knn", "--run", str(tiny_run)]) == 0
    assert "layers" not in next(x for x in capsys.readouterr().out.splitlines() if x.startswith("kNN@1"))


def test_knn_of_the_context_encoder_is_the_file_the_sweeps_knn_context_reads(tiny_run, one_thread):
    from pjepa.sweep.state import eval_current

    assert main(["eval", "knn", "--run", str(tiny_run), "--encoder", "context"]) == 0
    r = json.loads((tiny_run / "eval" / "knn_context.json").read_text())
    assert r["encoder"] == "context" and 0 <= r["top1_majority"] <= 100
    assert eval_current(tiny_run, "knn_context")  # `pjepa sweep --eval knn_context` skips it now


def test_knn_on_both_splits_reads_the_cached_features_and_predicts_as_fresh_ones(tiny_run, tmp_path, one_thread):
    """knn_val and knn share one feature extraction (the bank is the same): cached or freshly extracted
    (a bank limit at least its size takes the fresh path), the votes are identical."""
    import shutil

    from pjepa.eval.protocols.knn import evaluate_knn

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval"))
    cache = run / "eval" / "cache"
    fresh = {split: evaluate_knn(run, split=split, train_limit=10**9, progress=False) for split in ("val", "eval")}
    assert not cache.exists()  # the fresh path caches nothing
    cached = {"val": evaluate_knn(run, split="val", progress=False)}
    assert [p.name for p in cache.iterdir()] == ["features_target-last-step2_last2.pt"]  # bank, val and eval
    cached["eval"] = evaluate_knn(run, split="eval", progress=False)  # reads them: no second extraction
    for split in ("val", "eval"):
        assert cached[split]["n_train"] == fresh[split]["n_train"] and cached[split]["n_eval"] == fresh[split]["n_eval"]
        assert (cached[split]["top1_weighted"], cached[split]["top1_majority"]) == (
            fresh[split]["top1_weighted"], fresh[split]["top1_majority"])
    assert cached["val"]["split"] != cached["eval"]["split"]


def test_protocols_on_cached_features_read_no_image_and_give_the_same_results(tiny_run, tmp_path, one_thread,
                                                                              monkeypatch):
    """Once one protocol has extracted a run's features, kNN (both splits, whitened or not), the linear probe
    and the low-shot protocol read the cache alone (no dataset is loaded), and record what they recorded
    with the images loaded; a cache written before the split info was stored still serves its features."""
    import shutil

    import pjepa.data.splits
    from pjepa.eval.protocols.knn import evaluate_knn
    from pjepa.eval.protocols.linear import evaluate_linear
    from pjepa.eval.protocols.lowshot import evaluate_lowshot

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval"))
    fresh = {split: evaluate_knn(run, split=split, train_limit=10**9, progress=False) for split in ("val", "eval")}
    first = evaluate_linear(run, epochs=2, progress=False)  # extracts and caches bank, val and eval
    (cache,) = (run / "eval" / "cache").iterdir()

    def no_images(*args, **kwargs):
        raise AssertionError("a protocol loaded the dataset although its features are cached")

    monkeypatch.setattr(pjepa.data.splits, "load_splits", no_images)
    again = evaluate_linear(run, epochs=2, progress=False)
    assert (again["top1"], again["split"], again["n_eval"]) == (first["top1"], first["split"], first["n_eval"])
    for split in ("val", "eval"):
        r = evaluate_knn(run, split=split, progress=False)
        assert {k: r[k] for k in ("top1_weighted", "top1_majority", "split", "bank_split", "n_train", "n_eval")} == {
            k: fresh[split][k] for k in ("top1_weighted", "top1_majority", "split", "bank_split", "n_train", "n_eval")}
        assert evaluate_knn(run, split=split, whiten=True, progress=False)["features"].startswith("PCA-whitened")
    assert evaluate_lowshot(run, fractions=(0.5,), seeds=1, epochs=2, progress=False)["split"] == first["split"]
    with pytest.raises(AssertionError, match="loaded the dataset"):  # the guard does guard: pixels need images
        evaluate_knn(run, baseline="pixels", progress=False)
    monkeypatch.undo()

    saved = torch.load(cache, weights_only=True)
    torch.save(saved["features"], cache)  # the format of earlier versions: features alone
    assert evaluate_linear(run, epochs=2, progress=False)["top1"] == first["top1"]


def test_finetune_protocol_trains_and_labels_from_scratch(tiny_run, one_thread):
    assert main(["eval", "finetune", "--run", str(tiny_run), "--epochs", "1", "--batch-size", "32"]) == 0
    r = json.loads((tiny_run / "eval" / "finetune.json").read_text())
    assert r["best_epoch"] == 1 and len(r["predictions"]) == r["n_eval"] and r["step"] == 2
    assert r["protocol"].startswith("fine-tune of the target encoder")
    assert main(["eval", "finetune", "--run", str(tiny_run), "--random-init", "--epochs", "1",
                 "--batch-size", "32"]) == 0
    scratch = json.loads((tiny_run / "eval" / "finetune_random_init.json").read_text())
    assert scratch["protocol"].startswith("supervised training from scratch")


def test_layerwise_lr_decay_follows_depth():
    cfg = check_config(load_config(SMOKE, TINY + ["method.name=finetune", "method.options={num_classes: 4}"]))
    m = build_method(cfg)
    assert isinstance(m, FineTune)
    depth = len(m.encoder.blocks)  # 2
    scale = {id(p): g["lr_scale"] for g in m.param_groups() for p in g["params"]}
    assert scale[id(m.classifier.weight)] == 1.0
    assert scale[id(m.encoder.blocks[depth - 1].attn.qkv.weight)] == pytest.approx(0.75)
    assert scale[id(m.encoder.blocks[0].attn.qkv.weight)] == pytest.approx(0.75**2)
    assert scale[id(m.encoder.patch_embed.weight)] == pytest.approx(0.75 ** (depth + 1))
    wd = {id(p): g["wd_scale"] for g in m.param_groups() for p in g["params"]}
    assert wd[id(m.classifier.bias)] == 0.0 and wd[id(m.classifier.weight)] == 1.0


def test_model_init_starts_the_encoders_from_a_file(tiny_run, tmp_path):
    out = tmp_path / "enc.safetensors"
    assert main(["export", "--run", str(tiny_run), "--out", str(out)]) == 0
    cfg = check_config(load_config(SMOKE, TINY + [f"model.init={out}"]))
    method = build_method(cfg)
    ref = build_method(check_config(load_config(tiny_run / "config.yaml")), init=False)
    from pjepa.runs import Run, load_weights_into

    load_weights_into(ref, Run(tiny_run).load_checkpoint("last")[0], tiny_run)
    x = torch.randn(2, 3, 24, 24)
    for enc in (method.encoder, method.target_encoder):
        assert torch.equal(enc.eval()(x), ref.target_encoder.eval()(x))
    with pytest.raises(ConfigError, match="model.init"):
        check_config(load_config(SMOKE, TINY + [f"model.init={tmp_path / 'missing.safetensors'}"]))


def test_knn_rates_an_encoder_file(tiny_run, tmp_path):
    out = tmp_path / "enc.safetensors"
    main(["export", "--run", str(tiny_run), "--out", str(out)])
    assert main(["eval", "knn", "--run", str(tiny_run), "--weights", str(out)]) == 0
    by_file = json.loads((tiny_run / "eval" / "knn_weights-enc.json").read_text())
    assert main(["eval", "knn", "--run", str(tiny_run)]) == 0
    own = json.loads((tiny_run / "eval" / "knn.json").read_text())
    assert by_file["top1"] == own["top1"]


def _copy_run(src, dst, seed: int, knn: float, **cfg_edits):
    import shutil

    import yaml

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("eval"))  # only the results written below
    cfg = yaml.safe_load((dst / "config.yaml").read_text())
    cfg["train"]["seed"] = seed
    for key, value in cfg_edits.items():
        section, name = key.split("__")
        cfg[section][name] = value
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = {"top1_weighted": knn, "top1_majority": knn - 1, "top1": knn, "n_train": 1, "n_eval": 1}
    (dst / "eval").mkdir(exist_ok=True)
    (dst / "eval" / "knn.json").write_text(json.dumps(res))
    (dst / "eval" / "knn_pixels.json").write_text(json.dumps(res | {"top1_weighted": 50.0, "top1_majority": 49.0}))


def test_table_groups_runs_that_differ_only_in_seed(tiny_run, tmp_path):
    from pjepa.eval.table import table_rows, to_csv, to_markdown

    _copy_run(tiny_run, tmp_path / "a_s0", 0, 40.0)
    _copy_run(tiny_run, tmp_path / "a_s1", 1, 44.0)
    _copy_run(tiny_run, tmp_path / "b_s0", 0, 30.0, optim__lr=0.5)  # another config: its own row
    rows = table_rows([tmp_path / "a_s0", tmp_path / "a_s1", tmp_path / "b_s0"])
    # two groups, then one pixel-baseline row: seeds 0 and 1 (a_s0 and b_s0 rate the same seed-0 baseline: once)
    assert [r["n"] for r in rows] == [2, 1, 2]
    assert rows[0]["run"] == "a_s*" and rows[0]["knn"] == 42.0 and rows[0]["knn_std"] == pytest.approx(2 * 2**0.5) and rows[0]["seeds"] == "0,1"
    assert rows[1]["knn"] == 30.0 and rows[1]["knn_std"] is None
    assert rows[2]["run"] == "(raw pixels)" and rows[2]["knn"] == 50.0 and rows[2]["knn_std"] == 0.0
    assert "42.00 ± 2.83" in to_markdown(rows)
    assert to_csv(rows).splitlines()[0].startswith("run,n,seeds,method,head,epochs")


def test_table_groups_across_thread_count_and_a_cap_the_run_finished_within(tiny_run, tmp_path):
    """How a run was executed (threads, progress bar, a wall-time cap it never reached) does not split a
    seed group; a cap that stopped a run early does."""
    from pjepa.eval.table import table_rows

    _copy_run(tiny_run, tmp_path / "a_s0", 0, 40.0, train__num_threads=1, train__time_limit_min=0.0,
              train__progress=False)
    _copy_run(tiny_run, tmp_path / "a_s1", 1, 44.0, train__num_threads=0, train__time_limit_min=20.0)
    _copy_run(tiny_run, tmp_path / "a_s2", 2, 30.0, train__time_limit_min=20.0)
    info = json.loads((tmp_path / "a_s2" / "run_info.json").read_text())
    info["total_steps"] += 100  # a_s2 stopped at the cap before the end of its schedule
    (tmp_path / "a_s2" / "run_info.json").write_text(json.dumps(info))
    rows = table_rows([tmp_path / d for d in ("a_s0", "a_s1", "a_s2")])
    assert [(r["seeds"], r["knn"]) for r in rows if r["method"] != "baseline"] == [("0,1", 42.0), ("2", 30.0)]


def _without_validation(src, dst):
    """A copy of run ``src`` whose config holds no validation split out (data.val_fraction=0): its splits' "val"
    is then the reported split. No eval/ folder: features cached for the run with a validation split differ."""
    import shutil

    import yaml

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("eval"))
    cfg = yaml.safe_load((dst / "config.yaml").read_text())
    cfg["data"]["val_fraction"] = 0.0
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dst


def test_where_a_choice_was_made_names_the_split_it_read():
    from pjepa.config import DataConfig
    from pjepa.eval.protocols.base import choice_split, choice_split_short, choice_warning

    held, none = DataConfig(val_fraction=0.1), DataConfig(val_fraction=0.0, eval_split="test")
    assert (choice_split(held), choice_split(held, "best epoch")) == ("validation split", "validation split (best epoch)")
    assert choice_split_short(held) == "val" and choice_warning(held, "the choice") is None
    assert choice_split(none, "best epoch") == ("reported split (test, best epoch): no validation split held out "
                                                "(data.val_fraction=0)")
    assert choice_split_short(none) == "the reported split test"
    assert choice_warning(none, "the choice of the lr").startswith(
        "warning: data.val_fraction=0: no validation split was held out, so the choice of the lr was made on the "
        "reported split (test)")


def test_without_a_validation_split_the_probe_says_it_chose_on_the_reported_split(tiny_run, tmp_path, capsys,
                                                                                    one_thread):
    """data.val_fraction=0: the probe's grid and the kNN read for choices ran on the reported split; the results
    record that split, never "validation split", and the protocols print a warning."""
    run = _without_validation(tiny_run, tmp_path / "no_val")
    assert main(["eval", "linear", "--run", str(run), "--epochs", "2"]) == 0
    r = json.loads((run / "eval" / "linear.json").read_text())
    out = capsys.readouterr().out
    assert r["chosen_on"] == f"reported split ({r['split']}): no validation split held out (data.val_fraction=0)"
    assert r["n_val"] == r["n_eval"]  # the "validation" features were the reported split's
    assert r["warning"].startswith("warning: data.val_fraction=0: no validation split was held out")
    assert out.splitlines()[0] == r["warning"]
    assert f"chosen on the reported split {r['split']}: " in out and "chosen on val" not in out
    assert main(["eval", "knn", "--run", str(run), "--split", "val"]) == 0
    knn = json.loads((run / "eval" / "knn_val.json").read_text())
    assert knn["selection_split"].startswith(f"reported split ({knn['split']})") and knn["val_fraction"] == 0.0
    assert capsys.readouterr().out.startswith("warning: data.val_fraction=0")


def test_with_a_validation_split_the_probe_says_it_chose_on_it(tiny_run, capsys, one_thread):
    assert main(["eval", "linear", "--run", str(tiny_run), "--epochs", "1"]) == 0
    r = json.loads((tiny_run / "eval" / "linear.json").read_text())
    out = capsys.readouterr().out
    assert r["chosen_on"] == "validation split" and r["warning"] is None
    assert "warning" not in out and "chosen on val: " in out and r["n_val"] + r["n_train"] == 128
    assert main(["eval", "knn", "--run", str(tiny_run), "--split", "val"]) == 0
    knn = json.loads((tiny_run / "eval" / "knn_val.json").read_text())
    assert knn["selection_split"] == "validation split" and knn["warning"] is None
    assert "warning" not in capsys.readouterr().out
