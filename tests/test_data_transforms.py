"""Tests of the batched GPU-friendly transforms in pjepa.data.transforms."""

from __future__ import annotations

import pytest
import torch

from pjepa.data import channel_stats, random_resized_crop_flip, resize_normalize
from pjepa.errors import DataError

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def images(b=4, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)


def test_shapes_and_dtype():
    x = images(5, 20, 12)
    out = random_resized_crop_flip(x, 8, MEAN, STD, generator=torch.Generator().manual_seed(0))
    assert out.shape == (5, 3, 8, 8) and out.dtype == torch.float32
    ev = resize_normalize(x, 10, MEAN, STD)
    assert ev.shape == (5, 3, 10, 10) and ev.dtype == torch.float32


@pytest.mark.parametrize("size", [16, 24])
def test_full_crop_matches_resize_normalize(size):
    x = images()
    crop = random_resized_crop_flip(x, size, MEAN, STD, scale=(1, 1), ratio=(1, 1), flip_p=0.0)
    ref = resize_normalize(x, size, MEAN, STD)
    assert torch.allclose(crop, ref, atol=1e-4)


def test_resize_normalize_noop_resize():
    x = images()
    expect = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(resize_normalize(x, 16, MEAN, STD), expect, atol=1e-6)


def test_flip_one_is_mirrored_image():
    x = images()
    flipped = random_resized_crop_flip(x, 16, MEAN, STD, scale=(1, 1), ratio=(1, 1), flip_p=1.0)
    assert torch.allclose(flipped, resize_normalize(x.flip(-1), 16, MEAN, STD), atol=1e-4)


def test_reproducible_with_seeded_generator():
    x = images(8)
    run = lambda seed: random_resized_crop_flip(x, 12, MEAN, STD, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_crop_samples_inside_the_image():
    x = torch.zeros(64, 3, 16, 16, dtype=torch.uint8)
    x[..., 4:12, 4:12] = 255  # a bright centre square; crops of 1/4 area mostly see part of it
    out = random_resized_crop_flip(x, 8, (0, 0, 0), (1, 1, 1), scale=(0.25, 0.25),
                                   generator=torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    assert out.mean(dim=(1, 2, 3)).std() > 0.05  # crops differ in position


def test_channel_stats():
    x = images(300, 4, 4)  # more than one 256-image chunk
    mean, std = channel_stats(x, num_samples=1000)
    xf = x.double() / 255
    assert torch.allclose(mean, xf.mean(dim=(0, 2, 3)).float(), atol=1e-6)
    assert torch.allclose(std, xf.std(dim=(0, 2, 3), unbiased=False).float(), atol=1e-6)
    sub_mean, _ = channel_stats(x, num_samples=3, generator=torch.Generator().manual_seed(0))
    assert sub_mean.shape == (3,)


def test_rejects_bad_input():
    with pytest.raises(DataError, match="uint8"):
        resize_normalize(torch.zeros(2, 3, 4, 4), 4, MEAN, STD)
    with pytest.raises(DataError, match="uint8"):
        channel_stats(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
