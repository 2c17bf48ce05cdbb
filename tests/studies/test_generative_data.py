"""The generative study's data and networks: token shards of a run's encoder, the two classifiers, the decoder."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SMOKE, TINY

from pjepa.config import dump_config, load_config
from pjepa.data import resize_normalize, splits_for
from pjepa.errors import ConfigError, DataError
from pjepa.methods import build_method
from pjepa.methods.load import load_run_method
from pjepa.runs import Run, save_checkpoint
from pjepa.studies.generative.classifier import (
    SmallResNet,
    SmallVGG,
    crop_flip,
    load_classifier,
    save_classifier,
    train_classifier,
)
from pjepa.studies.generative.decoder import PixelDecoder, perceptual_loss, train_decoder, upsample_factors
from pjepa.studies.generative.tokens import TokenShards, extract_tokens
from pjepa.utils import seed_everything


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory without training: the tiny config, data stats and an untrained checkpoint at step 3."""
    run = tmp_path_factory.mktemp("runs") / "run"
    run.mkdir()
    cfg = load_config(SMOKE, TINY)  # check_config would build the model on the meta device: seconds, once
    (run / "config.yaml").write_text(dump_config(cfg))
    (run / "data_stats.json").write_text(json.dumps({"mean": [0.4, 0.45, 0.5], "std": [0.25, 0.2, 0.3]}))
    seed_everything(cfg.train.seed)
    save_checkpoint(run / "checkpoints", "last", build_method(cfg).state_dict(), {"step": 3})
    return run


@pytest.fixture(scope="module")
def encoded(run_dir, tmp_path_factory):
    """(out_dir, shards) of the train split in shards of 40 (116 images: 3 shards)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tokens") / "train"
    return out, extract_tokens(run_dir, out, shard_size=40, device="cpu", progress=False)


def test_tokens_equal_the_encoder_on_the_same_images(run_dir, encoded):
    out, shards = encoded
    run = Run(run_dir)
    encoder = load_run_method(run)[0].feature_encoder("target").eval()
    data = splits_for(run.config).train
    mean, std = run.stats()
    with torch.no_grad():
        tokens = encoder(resize_normalize(data.images, 24, mean, std))  # (N, 36, 32)
    maps, labels = shards.load()
    assert len(shards) == len(data) == 116 and maps.dtype == torch.float32
    assert maps.shape == (116, encoder.embed_dim, encoder.grid_size, encoder.grid_size) == (116, 32, 6, 6)
    assert torch.allclose(maps.flatten(2).transpose(1, 2), tokens, atol=4e-3, rtol=2e-3)  # stored as float16
    assert torch.equal(labels, data.labels) and torch.equal(shards.split_indices(), torch.arange(116))
    assert torch.equal(shards.images(), data.images)
    m = json.loads((out / "manifest.json").read_text())
    assert (m["step"], m["encoder"], m["split"], m["K"], m["D"], m["N"], m["image_size"]) == (3, "target", "train", 6, 32, 116, 24)
    assert [s["file"] for s in m["shards"]] == [f"shard_{i:05d}.safetensors" for i in range(3)]
    assert m["mean"] == pytest.approx([0.4, 0.45, 0.5]) and m["dtype"] == "float16"
    one, label = shards[77]
    assert torch.equal(one, maps[77]) and label == int(labels[77])
    picked, picked_labels = shards.load(torch.tensor([100, 3, 41]))
    assert torch.equal(picked, maps[[100, 3, 41]]) and torch.equal(picked_labels, labels[[100, 3, 41]])


def test_an_interrupted_extraction_writes_only_the_missing_shard(run_dir, encoded):
    out, shards = encoded
    before = shards.load()[0]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*")}
    (out / "shard_00001.safetensors").unlink()
    with pytest.raises(DataError, match="lacks 1 shard.*shard_00001.*rerun extract_tokens"):
        TokenShards(out)
    again = extract_tokens(run_dir, out, shard_size=40, device="cpu", progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*")}
    assert after["shard_00000.safetensors"] == stamps["shard_00000.safetensors"]
    assert after["shard_00002.safetensors"] == stamps["shard_00002.safetensors"]
    assert after["shard_00001.safetensors"] != stamps["shard_00001.safetensors"]
    assert torch.equal(again.load()[0], before) and torch.equal(TokenShards(out).load()[0], before)
    with pytest.raises(ConfigError, match="another extraction.*encoder"):
        extract_tokens(run_dir, out, encoder="context", shard_size=40, device="cpu", progress=False)


def test_a_limited_extraction_is_a_seeded_subset_paired_with_its_images(run_dir, tmp_path):
    shards = extract_tokens(run_dir, tmp_path / "t", split="eval", limit=10, dtype="float32", device="cpu", progress=False)
    idx = shards.split_indices()
    assert len(shards) == 10 and torch.equal(idx, idx.sort().values) and not torch.equal(idx, torch.arange(10))
    assert torch.equal(shards.images(), splits_for(Run(run_dir).config).eval.images[idx])
    with pytest.raises(ConfigError, match="split 'test'"):
        extract_tokens(run_dir, tmp_path / "u", split="test", progress=False)


def toy(n: int = 64, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two separable classes: reddish or bluish noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = torch.randint(0, 120, (n, 3, size, size), generator=g)
    x[labels == 0, 0] += 120
    x[labels == 1, 2] += 120
    return x.to(torch.uint8), labels


def test_classifier_shapes():
    x = torch.randn(2, 3, 16, 16)
    resnet, vgg = SmallResNet(5, image_size=16, width=8), SmallVGG(5, image_size=16, width=8)
    f, logits = resnet.features_and_logits(x)
    assert f.shape == (2, 32) and logits.shape == (2, 5) and torch.allclose(resnet(x), logits)
    assert [tuple(m.shape) for m in vgg.feature_maps(x)] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4)]
    assert vgg(x).shape == (2, 5)
    g = torch.Generator().manual_seed(0)
    assert crop_flip(x, 2, g).shape == x.shape


def test_training_on_a_separable_toy_lowers_the_loss_and_save_load_keeps_role_and_outputs(tmp_path, one_thread):
    images, labels = toy()
    net = train_classifier(SmallResNet(2, image_size=16, width=8), images, labels, torch.full((3,), 0.5),
                           torch.full((3,), 0.25), epochs=4, batch_size=16, lr=3e-3, holdout=0.25, progress=False)
    assert net.info["loss"][-1] < net.info["loss"][0] and net.info["n_heldout"] == 16
    path = save_classifier(net, tmp_path / "metric.safetensors", "metric", dataset="toy")
    back = load_classifier(path, role="metric")
    meta = json.loads((tmp_path / "metric.json").read_text())
    assert back.role == meta["role"] == "metric" and meta["arch"] == "SmallResNet" and meta["dataset"] == "toy"
    assert back.info["heldout_accuracy"] == net.info["heldout_accuracy"]
    x = net.prepare(images[:4])
    assert torch.allclose(back(back.prepare(images[:4])), net(x), atol=1e-6)
    with pytest.raises(ConfigError, match="'metric' network.*perceptual"):
        load_classifier(path, role="perceptual")
    with pytest.raises(ConfigError, match="role 'perceptual' for a SmallResNet"):
        save_classifier(net, tmp_path / "p.safetensors", "perceptual")
    with pytest.raises(ConfigError, match="never trained against the metric"):
        perceptual_loss(back, x, x)


@pytest.mark.parametrize("k", [4, 8])
@pytest.mark.parametrize("size", [32, 64])
def test_decoder_output_shape(k, size):
    dec = PixelDecoder(6, size, k, width=8)
    assert dec(torch.randn(2, 6, k, k)).shape == (2, 3, size, size)


def test_decoder_odd_factors_and_bad_sizes():
    assert upsample_factors(14) == [2, 7] and upsample_factors(1) == []
    assert PixelDecoder(4, 28, 4, width=8)(torch.randn(1, 4, 4, 4)).shape == (1, 3, 28, 28)
    with pytest.raises(ConfigError, match="multiple"):
        PixelDecoder(4, 30, 4)
    with pytest.raises(ConfigError, match="expects"):
        PixelDecoder(4, 32, 4, width=8)(torch.randn(1, 5, 4, 4))


def test_perceptual_loss_is_zero_only_for_identical_images():
    torch.manual_seed(0)
    vgg = SmallVGG(3, image_size=16, width=8).eval()
    x, y = torch.randn(2, 3, 16, 16, requires_grad=True), torch.randn(2, 3, 16, 16)
    assert float(perceptual_loss(vgg, y, y).detach()) == 0.0
    loss = perceptual_loss(vgg, x, y)
    loss.backward()
    assert float(loss.detach()) > 0 and x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(ConfigError, match="eval mode"):
        perceptual_loss(vgg.train(), x, y)


def test_train_decoder_returns_losses_and_snapshots(one_thread):
    torch.manual_seed(0)
    images, _ = toy(16, 16)
    maps = torch.randn(16, 6, 4, 4)
    vgg = SmallVGG(2, image_size=16, width=4)
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    hist = train_decoder(PixelDecoder(6, 16, 4, width=8), maps, images, vgg, mean, std, steps=6, batch_size=4,
                         snapshot_every=3, snapshot_size=5, log_every=2, progress=False)
    assert hist.steps == [2, 4, 6] and set(hist.losses) == {"loss", "l1", "perceptual"}
    assert hist.snapshot_steps == [3, 6] and all(s.shape == (5, 3, 16, 16) and s.dtype == torch.uint8 for s in hist.snapshots)
    assert hist.targets.shape == (5, 3, 16, 16)
    with pytest.raises(ConfigError, match="pairs maps"):
        train_decoder(PixelDecoder(6, 16, 4, width=8), maps[:3], images, vgg, mean, std, steps=1, progress=False)
