"""The public Python API: ``load_encoder`` on a run directory and on an exported file, and ``embed``
giving exactly the features the evaluation protocols rate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pjepa
from pjepa import Encoder, embed, load_encoder
from pjepa.errors import PJepaError, WeightsError
from pjepa.eval.features import extract_features
from pjepa.methods.load import load_run_method
from pjepa.methods.weights import export_run_encoder
from pjepa.runs import Run


def images(n: int = 5, size: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_the_package_exposes_the_api_lazily():
    assert set(pjepa.__all__) >= {"load_encoder", "embed", "Encoder", "__version__"}
    assert pjepa.load_encoder is load_encoder
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pjepa.nope  # noqa: B018


def test_embed_of_a_run_equals_the_features_evaluation_rates(tiny_run):
    run = Run(tiny_run)
    encoder = load_encoder(tiny_run)
    assert isinstance(encoder, Encoder) and isinstance(encoder, torch.nn.Module)
    x = images()
    method, _ = load_run_method(run, "last")
    mean, std = run.stats()
    expected = extract_features(method.feature_encoder("target"), x, run.config.data.image_size, mean, std,
                                torch.device("cpu"))
    assert torch.allclose(embed(encoder, x), expected, atol=1e-5)
    assert encoder(x).shape == (5, (24 // 4) ** 2, encoder.embed_dim)


def test_images_may_come_channels_last_as_numpy_float_or_one_at_a_time(tiny_run):
    encoder = load_encoder(tiny_run)
    x = images(3)
    ref = encoder.embed(x)
    assert torch.allclose(encoder.embed(x.permute(0, 2, 3, 1).numpy()), ref, atol=1e-6)
    assert torch.allclose(encoder.embed(x.float() / 255), ref, atol=1e-5)
    assert torch.allclose(encoder.embed(x[0]), ref[:1], atol=1e-6)
    assert encoder.embed(images(2, size=40)).shape == (2, encoder.embed_dim)  # resized to the run's 24 px


@pytest.mark.parametrize("bad, match", [(np.zeros((2, 5, 8, 8), np.uint8), "expected \\(B, 3, H, W\\)"),
                                        (torch.full((1, 3, 8, 8), 2.0), "in \\[0, 1\\]"),
                                        (torch.zeros((1, 3, 8, 8), dtype=torch.int32), "dtype torch.int32")])
def test_bad_images_are_named(tiny_run, bad, match):
    with pytest.raises(PJepaError, match=match):
        load_encoder(tiny_run).embed(bad)


def test_an_exported_file_loads_alone_with_the_runs_preprocessing(tiny_run, tmp_path):
    path = export_run_encoder(tiny_run, tmp_path / "enc.safetensors")
    arch = json.loads(path.with_suffix(".json").read_text())
    mean, _ = Run(tiny_run).stats()
    assert arch["preprocessing"]["image_size"] == 24 and arch["preprocessing"]["mean"] == pytest.approx(mean.tolist())
    card = path.with_suffix(".md").read_text()
    assert "load_encoder('enc.safetensors')" in card and "class_token=False" in card
    x = images()
    assert torch.allclose(load_encoder(path).embed(x), load_encoder(tiny_run).embed(x), atol=1e-5)


def test_a_file_without_preprocessing_warns_and_uses_imagenet_statistics(tiny_run, tmp_path):
    path = export_run_encoder(tiny_run, tmp_path / "enc.safetensors")
    arch = json.loads(path.with_suffix(".json").read_text())
    del arch["preprocessing"]
    path.with_suffix(".json").write_text(json.dumps(arch))
    with pytest.warns(UserWarning, match="ImageNet"):
        encoder = load_encoder(path)
    assert encoder.preprocessing.mean == (0.485, 0.456, 0.406)


def test_a_path_that_is_neither_is_named(tmp_path):
    with pytest.raises(WeightsError, match="neither a run directory nor an encoder file"):
        load_encoder(tmp_path / "missing")
