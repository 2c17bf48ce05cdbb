"""The validation split: carved from train, seeded, class-balanced, left out of pretraining and the bank."""

from __future__ import annotations

import pytest
import torch
from conftest import SMOKE, TINY

from pjepa.config import load_config
from pjepa.data import carve_validation, splits_for
from pjepa.errors import DataError


def test_carve_is_class_balanced_disjoint_and_seeded():
    labels = torch.arange(10).repeat_interleave(50)[torch.randperm(500, generator=torch.Generator().manual_seed(0))]
    rest, val = carve_validation(labels, 0.1, torch.Generator().manual_seed(1))
    assert len(val) == 50 and len(rest) == 450
    assert torch.bincount(labels[val], minlength=10).tolist() == [5] * 10  # 10 % of every class
    assert set(rest.tolist()).isdisjoint(val.tolist()) and sorted(rest.tolist() + val.tolist()) == list(range(500))
    again, val2 = carve_validation(labels, 0.1, torch.Generator().manual_seed(1))
    assert torch.equal(val, val2) and torch.equal(rest, again)
    _, other = carve_validation(labels, 0.1, torch.Generator().manual_seed(2))
    assert not torch.equal(val, other)


def test_carve_refuses_unlabelled_images_and_bad_fractions():
    with pytest.raises(DataError, match="labelled"):
        carve_validation(torch.tensor([0, 1, -1, 1]), 0.5, torch.Generator())
    with pytest.raises(DataError, match="val_fraction"):
        carve_validation(torch.tensor([0, 1]), 1.0, torch.Generator())


def test_run_splits_leave_validation_out_of_training_and_the_bank():
    cfg = load_config(SMOKE, TINY)
    s = splits_for(cfg)
    assert s.train is s.bank and len(s.train) + len(s.val) == 128
    assert s.eval.split == "val" and len(s.eval) == 64  # the reported split is untouched
    train_rows = {tuple(x.flatten().tolist()) for x in s.train.images}
    assert not any(tuple(x.flatten().tolist()) in train_rows for x in s.val.images)
    assert torch.equal(splits_for(cfg).val.images, s.val.images)  # training and evaluation carve the same
    off = splits_for(load_config(SMOKE, TINY + ["data.val_fraction=0"]))
    assert len(off.train) == 128 and off.val is off.eval
