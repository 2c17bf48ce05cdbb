"""Encoder weights in and out in timm's ViT layout: the key list, round trips, official checkpoints, errors."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from pjepa.cli.main import main
from pjepa.errors import WeightsError
from pjepa.models import VisionTransformer
from pjepa.models.timm_format import (
    build_encoder_from,
    load_encoder,
    load_encoder_weights,
    official_to_timm,
    save_encoder,
    to_timm,
)

# timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4,
# class_token=False, global_pool='avg', fc_norm=False, num_classes=0).state_dict(), written out from the timm
# source (huggingface/pytorch-image-models: timm/models/vision_transformer.py VisionTransformer / Block,
# timm/layers/{attention,mlp,patch_embed}.py): pos_embed is (1, N + 0 prefix tokens, D); PatchEmbed.proj is a
# Conv2d; Attention holds qkv (bias: qkv_bias=True) and proj, its q_norm / k_norm / norm are Identity; Mlp holds
# fc1 / fc2; ls1 / ls2 / drop_path are Identity; fc_norm=False keeps `norm`, fc_norm and head are Identity.
TIMM_BLOCK = [
    ("norm1.weight", (64,)), ("norm1.bias", (64,)),
    ("attn.qkv.weight", (192, 64)), ("attn.qkv.bias", (192,)),
    ("attn.proj.weight", (64, 64)), ("attn.proj.bias", (64,)),
    ("norm2.weight", (64,)), ("norm2.bias", (64,)),
    ("mlp.fc1.weight", (256, 64)), ("mlp.fc1.bias", (256,)),
    ("mlp.fc2.weight", (64, 256)), ("mlp.fc2.bias", (64,)),
]
TIMM_KEYS = {
    "pos_embed": (1, 64, 64),
    "patch_embed.proj.weight": (64, 3, 4, 4),
    "patch_embed.proj.bias": (64,),
    **{f"blocks.{i}.{name}": shape for i in range(2) for name, shape in TIMM_BLOCK},
    "norm.weight": (64,),
    "norm.bias": (64,),
}


def vit(dim=64, depth=2, heads=4, seed=0) -> VisionTransformer:
    """A tiny encoder with every weight random (LayerNorms and biases too, so a swapped key would show)."""
    torch.manual_seed(seed)
    enc = VisionTransformer(img_size=32, patch_size=4, embed_dim=dim, depth=depth, num_heads=heads)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return enc.eval()


def features(enc: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return enc(x).mean(1)


def official_pos_embed(enc: VisionTransformer) -> torch.Tensor:
    """The official I-JEPA / MAE table: our sin-cos halves swapped (their first half encodes the column)."""
    pe, half = enc.pos_embed, enc.embed_dim // 2
    return torch.cat([pe[..., half:], pe[..., :half]], dim=-1).clone()


def with_pos_embed(enc: VisionTransformer, pos_embed: torch.Tensor) -> VisionTransformer:
    enc.pos_embed.copy_(pos_embed)
    return enc


@pytest.fixture
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_to_timm_gives_exactly_timm_keys_and_shapes():
    timm = to_timm(vit().state_dict())
    assert {k: tuple(v.shape) for k, v in timm.items()} == TIMM_KEYS


def test_save_then_load_is_bit_identical(tmp_path, images):
    enc = vit()
    path = save_encoder(enc, tmp_path / "enc.safetensors")
    arch = json.loads((tmp_path / "enc.json").read_text())
    assert arch["format"] == "timm.VisionTransformer(class_token=False, global_pool='avg', fc_norm=False)"
    assert (arch["embed_dim"], arch["depth"], arch["num_heads"], arch["num_patches"]) == (64, 2, 4, 64)
    back = load_encoder(path)
    assert torch.equal(features(back, images), features(enc, images))
    ours, theirs = enc.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_pos_embed_comes_from_the_file(tmp_path, images):
    enc = with_pos_embed(vit(), official_pos_embed(vit()))
    back = load_encoder(save_encoder(enc, tmp_path / "enc.safetensors"))
    assert torch.equal(back.pos_embed, enc.pos_embed) and not torch.equal(back.pos_embed, vit().pos_embed)
    assert torch.equal(features(back, images), features(enc, images))


def test_an_odd_mlp_ratio_rebuilds_the_same_width(tmp_path):
    """120 / 88 * 88 rounds down to 119 in floats; the saved ratio must give 120 again."""
    torch.manual_seed(0)
    enc = VisionTransformer(img_size=16, patch_size=4, embed_dim=88, depth=1, num_heads=2, mlp_ratio=120 / 88)
    assert enc.blocks[0].mlp[0].out_features == 119  # the float pitfall this test is about
    enc.blocks[0].mlp[0], enc.blocks[0].mlp[2] = torch.nn.Linear(88, 120), torch.nn.Linear(120, 88)
    back = load_encoder(save_encoder(enc, tmp_path / "enc.safetensors"))
    assert back.blocks[0].mlp[0].out_features == 120


def ijepa_checkpoint(target: VisionTransformer, context: VisionTransformer) -> dict:
    """What facebookresearch/ijepa's src/train.py saves (under DDP: `module.` prefixes), pos_embed official."""
    def module_dict(enc):
        state = to_timm(enc.state_dict())
        state["pos_embed"] = official_pos_embed(enc)
        return {f"module.{k}": v.clone() for k, v in state.items()}

    return {
        "encoder": module_dict(context), "target_encoder": module_dict(target),
        "predictor": {"module.predictor_embed.weight": torch.randn(16, 64), "module.mask_token": torch.zeros(1, 1, 16)},
        "opt": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}, "scaler": None,
        "epoch": 300, "loss": 0.1, "batch_size": 2048, "world_size": 16, "lr": 1e-3,
    }


@pytest.mark.parametrize("which", ["target", "context"])
def test_import_an_ijepa_checkpoint(tmp_path, images, capsys, which):
    target, context = vit(seed=1), vit(seed=2)
    torch.save(ijepa_checkpoint(target, context), tmp_path / "IN1K-vit.pth.tar")
    out = tmp_path / "ijepa.safetensors"
    argv = ["import", "--from", str(tmp_path / "IN1K-vit.pth.tar"), "--out", str(out), "--num-heads", "4",
            "--encoder", which]
    assert main(argv) == 0
    assert str(out) in capsys.readouterr().out
    ref = target if which == "target" else context
    ref = with_pos_embed(ref, official_pos_embed(ref))
    assert torch.equal(features(load_encoder(out), images), features(ref, images))


def mae_checkpoint(enc: VisionTransformer, finetuned: bool = False) -> dict:
    """facebookresearch/mae: {'model': ...} with a class token, its position row first, decoder (pretrain) or
    fc_norm + head (fine-tuned with global_pool, no `norm`)."""
    d = enc.embed_dim
    model = {"cls_token": torch.randn(1, 1, d)}
    model.update({k: v.clone() for k, v in to_timm(enc.state_dict()).items()})
    model["pos_embed"] = torch.cat([torch.zeros(1, 1, d), official_pos_embed(enc)], dim=1)
    if finetuned:
        model["fc_norm.weight"], model["fc_norm.bias"] = model.pop("norm.weight"), model.pop("norm.bias")
        model["head.weight"], model["head.bias"] = torch.randn(10, d), torch.zeros(10)
    else:
        model.update({
            "mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.randn(32, d),
            "decoder_embed.bias": torch.zeros(32), "decoder_pos_embed": torch.zeros(1, 65, 32),
            "decoder_blocks.0.norm1.weight": torch.ones(32), "decoder_norm.weight": torch.ones(32),
            "decoder_pred.weight": torch.randn(48, 32), "decoder_pred.bias": torch.zeros(48),
        })
    return {"model": model}


@pytest.mark.parametrize("finetuned", [False, True])
def test_import_an_mae_checkpoint(tmp_path, images, finetuned):
    enc = vit(dim=128, heads=2, seed=3)  # width 128, 2 heads: nothing in the weights says so
    torch.save(mae_checkpoint(enc, finetuned), tmp_path / "mae.pth")
    out = tmp_path / "mae.safetensors"
    assert main(["import", "--from", str(tmp_path / "mae.pth"), "--out", str(out), "--num-heads", "2"]) == 0
    loaded = load_encoder(out)
    assert loaded.blocks[0].attn.num_heads == 2 and loaded.num_patches == 64
    ref = with_pos_embed(enc, official_pos_embed(enc))
    assert torch.equal(features(loaded, images), features(ref, images))


def test_the_number_of_heads_is_never_guessed(tmp_path, capsys):
    """Without --num-heads a checkpoint that does not record its heads is refused by name (a guess would build
    another model without a word); one that records them is read as it says."""
    enc = vit(dim=128, heads=4, seed=3)
    torch.save(mae_checkpoint(enc), tmp_path / "mae.pth")
    assert main(["import", "--from", str(tmp_path / "mae.pth"), "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "does not record its number of attention heads" in err and "--num-heads" in err
    recorded = {**mae_checkpoint(enc), "args": {"num_heads": 4}}
    _, arch = official_to_timm(recorded)
    assert arch["num_heads"] == 4
    with pytest.raises(WeightsError, match="standard ViT of width 768 uses 12"):
        from pjepa.models.timm_format import infer_architecture

        infer_architecture({"pos_embed": torch.zeros(1, 4, 768), "patch_embed.proj.weight": torch.zeros(768, 3, 2, 2),
                            "blocks.0.mlp.fc1.weight": torch.zeros(3072, 768)})


def test_an_unknown_checkpoint_names_its_keys(tmp_path, capsys):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": 1}, tmp_path / "odd.pth")
    assert main(["import", "--from", str(tmp_path / "odd.pth"), "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "odd.pth" in err and "state_dict" in err and "meta" in err and "Traceback" not in err
    with pytest.raises(WeightsError, match="top-level keys: meta, state_dict"):
        official_to_timm({"state_dict": {}, "meta": 1})


def test_a_checkpoint_with_pickled_objects_is_refused_by_name(tmp_path, capsys):
    ckpt = mae_checkpoint(vit(dim=128, heads=2))
    ckpt["args"] = argparse.Namespace(model="mae_vit_base_patch16")  # what MAE's own training adds
    torch.save(ckpt, tmp_path / "mae-own.pth")
    assert main(["import", "--from", str(tmp_path / "mae-own.pth"), "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "mae-own.pth" in err and "weights_only=True" in err and "Traceback" not in err


def test_layer_scale_or_other_extra_keys_are_named():
    ckpt = ijepa_checkpoint(vit(), vit())
    ckpt["target_encoder"]["module.blocks.0.ls1.gamma"] = torch.ones(64)
    with pytest.raises(WeightsError, match=r"unexpected \['blocks.0.ls1.gamma'\]"):
        official_to_timm(ckpt, num_heads=4)


def test_a_missing_json_is_named(tmp_path):
    path = save_encoder(vit(), tmp_path / "enc.safetensors")
    (tmp_path / "enc.json").unlink()
    with pytest.raises(WeightsError, match=r"enc\.json: missing"):
        load_encoder(path)


def test_an_encoder_of_another_depth_is_named(tmp_path):
    path = save_encoder(vit(depth=2), tmp_path / "enc.safetensors")
    with pytest.raises(WeightsError, match=r"enc\.safetensors: missing 'blocks\.2\.norm1\.weight'"):
        load_encoder_weights(vit(depth=3), path)
    with pytest.raises(WeightsError, match=r"enc\.safetensors: unexpected key 'blocks\.1\."):
        load_encoder_weights(vit(depth=1), path)
    with pytest.raises(WeightsError, match=r"'pos_embed' has shape \(1, 64, 64\), the encoder expects \(1, 64, 32\)"):
        load_encoder_weights(vit(dim=32), path)


def test_a_bad_architecture_names_the_key():
    arch = {"img_size": 32, "patch_size": 4, "embed_dim": 64, "depth": 2, "mlp_ratio": 4.0}
    with pytest.raises(WeightsError, match=r"missing key\(s\) \['num_heads'\]"):
        build_encoder_from(arch, where="enc.json")
    with pytest.raises(WeightsError, match="enc.json: depth must be a positive integer, got '2'"):
        build_encoder_from({**arch, "num_heads": 4, "depth": "2"}, where="enc.json")
    with pytest.raises(WeightsError, match="not divisible by num_heads 3"):
        build_encoder_from({**arch, "num_heads": 3})




@pytest.mark.parametrize("which", ["target", "context"])
def test_export_a_run(tiny_run, tmp_path, capsys, which):
    from pjepa.methods.load import load_run_method
    from pjepa.runs import Run

    out = tmp_path / "run-encoder.safetensors"
    assert main(["export", "--run", str(tiny_run), "--out", str(out), "--encoder", which]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "29 tensors" in printed and "depth 2" in printed
    method, _ = load_run_method(Run(tiny_run), "last")
    ref = method.feature_encoder(which).eval()
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    assert torch.equal(features(load_encoder(out), x), features(ref, x))


def test_a_weight_file_is_checked_like_a_checkpoint(tmp_path):
    """NaN weights, and a JSON that lies about (or exaggerates) the architecture, are named errors before
    anything is built or rated."""
    import json

    path = save_encoder(vit(), tmp_path / "enc.safetensors")
    arch = json.loads(path.with_suffix(".json").read_text())
    for key, value in (("depth", 1_000_000), ("img_size", 4_000_000), ("embed_dim", 96)):
        path.with_suffix(".json").write_text(json.dumps({**arch, key: value}))
        with pytest.raises(WeightsError, match=f"{key} is {value} but the weights in enc.safetensors hold"):
            load_encoder(path)  # refused from the header: the error comes before any model is built
    path.with_suffix(".json").write_text(json.dumps(arch))
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    state["blocks.1.mlp.fc2.weight"][0, 0] = float("nan")
    save_file(state, str(path))
    with pytest.raises(WeightsError, match="'blocks.1.mlp.fc2.weight' holds 1 non-finite value"):
        load_encoder(path)
