"""Selection hygiene: no choice made by looking at a number reads the split tables report (docs/evaluation.md).

The choices: the periodic kNN that picks ``checkpoints/best`` (train/periodic.py), the linear probe's
(lr, wd) (eval/linear.py ``choose``), the low-shot probe's (lr, wd) on a hold-out of its subset
(eval/protocols/lowshot.py) and the fine-tune's best epoch (eval/finetune.py). Method: the same run is
trained and rated twice, the second time in a world where the reported split (``data.eval_split``) is
garbage: random images, random labels, and 7 more of them. Every chosen quantity must come out
identical, while every number reported on that split changes (so the test can fail: a choice that read
the reported split would change with it). The garbage split's size is 71 against 64 (coprime), so an
accuracy on it cannot equal one on the real split by chance unless both are 0 or 100 %.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from conftest import SMOKE, TINY

import pjepa.data
from pjepa.config import load_config
from pjepa.data import ImageDataset, splits_for
from pjepa.eval.finetune import Recipe
from pjepa.eval.protocols.finetune import evaluate_finetune
from pjepa.eval.protocols.knn import evaluate_knn
from pjepa.eval.protocols.linear import evaluate_linear
from pjepa.eval.protocols.lowshot import evaluate_lowshot
from pjepa.eval.sources import labelled_splits
from pjepa.runs import Run, checkpoint_step, load_checkpoint
from pjepa.train.loop import train
from pjepa.train.periodic import PeriodicEvaluator

OVER = TINY + ["train.eval_every=2", "train.max_steps=8", "train.seed=5"]  # 5 periodic kNN values to choose from
EXTRA = 7  # the garbage split is larger: a reported number computed on it cannot coincide with the real one


def _garbage_loader(real, eval_split: str):
    """``load_dataset`` whose ``eval_split`` is random images and labels (EXTRA more than the real split)."""

    def load(name, split, path=None, **options):
        ds = real(name, split, path, **options)
        if split != eval_split:
            return ds
        g = torch.Generator().manual_seed(1234)  # its own generator: the global RNG is untouched
        n = len(ds) + EXTRA
        images = torch.randint(0, 256, (n, *ds.images.shape[1:]), generator=g, dtype=torch.uint8)
        labels = torch.randint(0, ds.num_classes, (n,), generator=g)
        return ImageDataset(images, labels, ds.class_names, ds.name, ds.split)

    return load


def _rate(run: Path) -> dict:
    """Every protocol that makes a choice, on ``run`` (small settings: the choices, not the numbers, matter)."""
    return {
        "knn": evaluate_knn(run, progress=False),
        "linear": evaluate_linear(run, epochs=20, progress=False),
        "lowshot": evaluate_lowshot(run, seeds=2, fractions=(0.5,), epochs=5, progress=False),
        "finetune": evaluate_finetune(run, recipe=Recipe(epochs=3, batch_size=32), progress=False),
    }


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, dict]:
    """{"real": ..., "garbage": ...}: the run trained and rated in each world."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for world in ("real", "garbage"):
            run = tmp_path_factory.mktemp(world) / "run"
            with pytest.MonkeyPatch.context() as mp:
                if world == "garbage":
                    eval_split = load_config(SMOKE, OVER).data.eval_split
                    mp.setattr(pjepa.data, "load_dataset", _garbage_loader(pjepa.data.load_dataset, eval_split))
                train(load_config(SMOKE, OVER), run)
                out[world] = {"run": run, **_rate(run)}
    finally:
        torch.set_num_threads(threads)
    return out


def test_the_garbage_reaches_the_reported_split(worlds):
    """The worlds do differ where they should: every reported number and its split size change."""
    real, bad = worlds["real"], worlds["garbage"]
    assert bad["knn"]["n_eval"] == real["knn"]["n_eval"] + EXTRA
    assert bad["knn"]["top1"] != real["knn"]["top1"]
    assert bad["linear"]["top1"] != real["linear"]["top1"]
    assert bad["linear"]["n_eval"] == real["linear"]["n_eval"] + EXTRA
    for a, b in zip(real["lowshot"]["fractions"]["0.5"]["seeds"], bad["lowshot"]["fractions"]["0.5"]["seeds"]):
        assert len(b["labels"]) == len(a["labels"]) + EXTRA and b["top1"] != a["top1"]
    assert bad["finetune"]["top1"] != real["finetune"]["top1"]
    assert bad["finetune"]["n_eval"] == real["finetune"]["n_eval"] + EXTRA


def _untimed(history: list[dict]) -> list[dict]:
    """Periodic results without their timings (sampling seconds differ between any two runs)."""
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in history]


def test_periodic_knn_and_the_best_checkpoint_ignore_the_reported_split(worlds):
    real, bad = Run(worlds["real"]["run"]), Run(worlds["garbage"]["run"])
    def periodic(run: Run) -> list[dict]:
        return [{k: v for k, v in r.items() if k.startswith(("step", "knn/"))}
                for r in run.metrics() if "knn/top1_weighted" in r]

    assert len(periodic(real)) == 5 and periodic(real) == periodic(bad)
    assert checkpoint_step(real.checkpoints_dir, "best") == checkpoint_step(bad.checkpoints_dir, "best")
    (w_real, s_real), (w_bad, s_bad) = real.load_checkpoint("best"), bad.load_checkpoint("best")
    assert s_real["best_knn"] == s_bad["best_knn"] and _untimed(s_real["history"]) == _untimed(s_bad["history"])
    assert all(torch.equal(w_real[k], w_bad[k]) for k in w_real)  # the same model was kept
    last_real, last_bad = (load_checkpoint(r.checkpoints_dir, "last")[0] for r in (real, bad))
    assert all(torch.equal(last_real[k], last_bad[k]) for k in last_real)  # and training never looked either


def test_the_linear_probe_chooses_on_validation_only(worlds):
    real, bad = worlds["real"]["linear"], worlds["garbage"]["linear"]
    assert real["probes"].keys() == bad["probes"].keys()
    for name in real["probes"]:
        chosen = ("lr", "weight_decay", "val_top1", "grid")
        assert {k: real["probes"][name][k] for k in chosen} == {k: bad["probes"][name][k] for k in chosen}
    assert real["val_top1"] == bad["val_top1"] and real["n_val"] == bad["n_val"]


def test_lowshot_chooses_on_its_subset_hold_out_only(worlds):
    real = worlds["real"]["lowshot"]["fractions"]["0.5"]["seeds"]
    bad = worlds["garbage"]["lowshot"]["fractions"]["0.5"]["seeds"]
    chosen = ("lr", "weight_decay", "holdout_top1", "n_subset", "n_holdout", "subset_seed")
    assert len(real) == 2 and [{k: r[k] for k in chosen} for r in real] == [{k: r[k] for k in chosen} for r in bad]


def test_finetune_early_stopping_reads_validation_only(worlds):
    real, bad = worlds["real"]["finetune"], worlds["garbage"]["finetune"]
    assert real["best_epoch"] == bad["best_epoch"] and real["val_top1"] == bad["val_top1"]
    assert real["history"] == bad["history"] and len(real["history"]) == 3


def _digests(ds: ImageDataset) -> set[bytes]:
    return {hashlib.sha1(img.numpy().tobytes()).digest() for img in ds.images}


def test_validation_is_disjoint_from_the_bank_pretraining_and_reported_split(worlds):
    cfg = Run(worlds["real"]["run"]).config
    splits = splits_for(cfg)
    val, bank, train_set, reported = (_digests(d) for d in (splits.val, splits.bank, splits.train, splits.eval))
    assert len(val) == len(splits.val) > 0 and len(reported) == len(splits.eval)  # no duplicate images
    assert not val & bank and not val & train_set and not val & reported
    assert len(val) + len(bank) == splits.val.labels.numel() + splits.bank.labels.numel()
    # the periodic kNN's bank and queries are exactly these splits (never the reported one)
    periodic = PeriodicEvaluator(cfg, splits, torch.zeros(3), torch.ones(3), torch.device("cpu"), None)
    assert periodic.bank is splits.bank and periodic.val is splits.val
    # and the protocols carve the same validation split as training did
    protocol = labelled_splits(Run(worlds["real"]["run"]))
    assert _digests(protocol["val"]) == val and _digests(protocol["bank"]) == bank
