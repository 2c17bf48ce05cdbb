"""The in-project FID InceptionV3 (pjepa.studies.generative.inception): layout, shapes, loading. Offline: no weights
file exists here, so a randomly initialised network is saved and loaded back."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from pjepa.errors import ConfigError
from pjepa.studies.generative.inception import FIDInceptionV3, load_fid_inception

# torchvision's Inception_V3_Weights.IMAGENET1K_V1 reports num_params 27,161,264 (aux classifier, 1000 classes).
# pytorch-fid's FID network drops the aux classifier (conv0 98,560 + conv1 2,459,136 + fc 769,000 = 3,326,696)
# and has 1008 classes (+8 x 2049 = 16,392); its patched blocks only change pooling, not parameters.
FID_INCEPTION_PARAMS = 27_161_264 - 3_326_696 + 8 * 2049  # 23,850,960
NUM_CONV_LAYERS = 94  # stem 5 + 3 A x 7 + B 4 + 4 C x 10 + D 6 + 2 E x 9; each conv + bn = 6 state entries


@pytest.fixture(scope="module")
def model() -> FIDInceptionV3:
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def outputs(model, images):
    with torch.no_grad():
        return model(images)


def test_output_shapes(outputs):
    assert outputs.pool.shape == (2, 2048)
    assert outputs.logits.shape == outputs.logits_unbiased.shape == (2, 1008)
    assert torch.isfinite(outputs.pool).all() and outputs.pool.std() > 0


def test_logits_are_the_fc_of_the_pool_features(model, outputs):
    torch.testing.assert_close(outputs.logits, model.fc(outputs.pool))
    torch.testing.assert_close(outputs.logits_unbiased, outputs.pool @ model.fc.weight.T)


def test_eval_mode_is_deterministic(model, images, outputs):
    with torch.no_grad():
        again = model(images)
    assert torch.equal(again.pool, outputs.pool) and torch.equal(again.logits, outputs.logits)


def test_preprocessing_matches_pytorch_fid():
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ref = 2 * torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(FIDInceptionV3.preprocess(x), ref)
    with pytest.raises(ConfigError, match=r"shape \(1, 1, 32, 32\)"):
        FIDInceptionV3.preprocess(torch.rand(1, 1, 32, 32))


def test_state_dict_has_the_standard_fid_layout(model):
    state = model.state_dict()
    shapes = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_mean": (32,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in state)
    assert len(state) == 6 * NUM_CONV_LAYERS + 2
    assert sum(p.numel() for p in model.parameters()) == FID_INCEPTION_PARAMS == 23_850_960


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_saved_weights_load_back_with_identical_outputs(model, images, outputs, tmp_path, suffix):
    path = tmp_path / f"inception{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    loaded = load_fid_inception(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        out = loaded(images)
    assert torch.equal(out.pool, outputs.pool) and torch.equal(out.logits, outputs.logits)


def test_batch_norm_counters_may_be_absent(model, tmp_path):
    """Files saved before PyTorch tracked num_batches_tracked lack those keys; eval outputs do not use them."""
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(tmp_path / "old.safetensors"))
    loaded = load_fid_inception(tmp_path / "old.safetensors")
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items() if k in state)


def test_missing_file_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such weights file.*pt_inception-2015-12-05"):
        load_fid_inception(tmp_path / "pt_inception-2015-12-05-6726825d.pth")


def test_wrong_keys_raise_config_error_listing_them(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match=r"missing \[Conv2d_1a_3x3\.conv\.weight.*unexpected \[encoder\.weight\]"):
        load_fid_inception(tmp_path / "other.pth")


def test_wrong_shapes_raise_config_error(model, tmp_path):
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)  # torchvision's 1000 classes
    save_file(state, str(tmp_path / "tv.safetensors"))
    with pytest.raises(ConfigError, match=r"wrong shape \[fc\.bias \(1000,\) vs \(1008,\)"):
        load_fid_inception(tmp_path / "tv.safetensors")


def test_unreadable_file_raises_config_error(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pth"):
        load_fid_inception(tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match="junk.safetensors"):
        load_fid_inception(tmp_path / "junk.safetensors")
