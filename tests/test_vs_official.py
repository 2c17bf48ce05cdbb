"""benchmarks/vs_official.py without the official code: a small stand-in "official" tree written here (the
module names and call signatures the script imports, nothing of the official implementation), a tiny pjepa
configuration, two alternating rounds; and the one-line errors for a missing clone."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "vs_official.py"
# The smoke preset (32 px, patch 4: an 8 x 8 grid, like the reference) made tiny.
SMALL = ["model.encoder.embed_dim=32", "model.encoder.depth=1", "model.encoder.num_heads=2",
         "model.predictor.embed_dim=16", "model.predictor.depth=1", "model.predictor.num_heads=2",
         "optim.batch_size=8", "data.stats_samples=64"]

STANDIN = {
    "src/utils/tensors.py": """
        import torch


        def repeat_interleave_batch(x, B, repeat):
            return torch.cat([chunk for chunk in x.split(B) for _ in range(repeat)])
        """,
    "src/masks/utils.py": """
        import torch


        def apply_masks(x, masks):
            return torch.cat([x.gather(1, m[..., None].expand(-1, -1, x.shape[-1])) for m in masks])
        """,
    "src/masks/multiblock.py": """
        import torch


        class MaskCollator:
            # a random split of the grid: npred disjoint target sets, then one context set from the rest
            def __init__(self, input_size=(224, 224), patch_size=16, enc_mask_scale=(0.2, 0.8),
                         pred_mask_scale=(0.2, 0.8), aspect_ratio=(0.3, 3.0), nenc=1, npred=2, min_keep=4,
                         allow_overlap=False):
                side = input_size if isinstance(input_size, int) else input_size[0]
                self.n = (side // patch_size) ** 2
                self.nenc, self.npred = nenc, npred
                self.k_pred = max(1, int(self.n * pred_mask_scale[0]))
                self.k_enc = max(min_keep + 1, min(int(self.n * enc_mask_scale[0]), self.n - npred * self.k_pred))
                self.args = dict(enc_mask_scale=enc_mask_scale, pred_mask_scale=pred_mask_scale,
                                 aspect_ratio=aspect_ratio, min_keep=min_keep)

            def __call__(self, batch):
                images = torch.stack([b[0] for b in batch])
                labels = torch.tensor([b[1] for b in batch])
                order = torch.rand(len(batch), self.n).argsort(dim=1)
                kp, ke = self.k_pred, self.k_enc
                pred = [order[:, i * kp:(i + 1) * kp] for i in range(self.npred)]
                enc = [order[:, self.npred * kp:self.npred * kp + ke] for _ in range(self.nenc)]
                return (images, labels), enc, pred
        """,
    "src/models/vision_transformer.py": """
        import torch
        import torch.nn as nn

        from src.masks.utils import apply_masks
        from src.utils.tensors import repeat_interleave_batch


        class Block(nn.Module):
            def __init__(self, dim, mlp_ratio, norm_layer):
                super().__init__()
                self.norm = norm_layer(dim)
                self.fc1, self.fc2 = nn.Linear(dim, int(dim * mlp_ratio)), nn.Linear(int(dim * mlp_ratio), dim)

            def forward(self, x):
                return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x))))


        class VisionTransformer(nn.Module):
            def __init__(self, img_size=(224,), patch_size=16, embed_dim=768, depth=12, num_heads=12,
                         mlp_ratio=4.0, qkv_bias=True, norm_layer=nn.LayerNorm, **kwargs):
                super().__init__()
                n = (img_size[0] // patch_size) ** 2
                self.embed_dim, self.num_heads = embed_dim, num_heads
                self.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)
                self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim), requires_grad=False)
                self.blocks = nn.ModuleList([Block(embed_dim, mlp_ratio, norm_layer) for _ in range(depth)])
                self.norm = norm_layer(embed_dim)

            def forward(self, x, masks=None):
                x = self.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
                if masks is not None:
                    x = apply_masks(x, masks if isinstance(masks, list) else [masks])
                for blk in self.blocks:
                    x = blk(x)
                return self.norm(x)


        class VisionTransformerPredictor(nn.Module):
            def __init__(self, num_patches, embed_dim=768, predictor_embed_dim=384, depth=6, num_heads=12,
                         mlp_ratio=4.0, qkv_bias=True, norm_layer=nn.LayerNorm, **kwargs):
                super().__init__()
                self.embed = nn.Linear(embed_dim, predictor_embed_dim)
                self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_embed_dim))
                self.pos = nn.Parameter(torch.randn(1, num_patches, predictor_embed_dim), requires_grad=False)
                self.blocks = nn.ModuleList([Block(predictor_embed_dim, mlp_ratio, norm_layer)
                                             for _ in range(depth)])
                self.out = nn.Linear(predictor_embed_dim, embed_dim)

            def forward(self, x, masks_x, masks):
                B = len(x) // len(masks_x)
                x = self.embed(x) + apply_masks(self.pos.repeat(B, 1, 1), masks_x)
                n_ctx = x.shape[1]
                pos = repeat_interleave_batch(apply_masks(self.pos.repeat(B, 1, 1), masks), B, repeat=len(masks_x))
                x = torch.cat([x.repeat(len(masks), 1, 1), self.mask_token + pos], dim=1)
                for blk in self.blocks:
                    x = blk(x)
                return self.out(x[:, n_ctx:])
        """,
}


def standin(root: Path) -> Path:
    for rel, text in STANDIN.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text).lstrip())
    return root


def run_script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def vs():
    spec = importlib.util.spec_from_file_location("vs_official", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_both_sides_alternate_and_the_ratios_are_the_rows_quotients(tmp_path):
    official = standin(tmp_path / "ijepa")
    out = tmp_path / "vs.json"
    proc = run_script("--official", str(official), "--config", "smoke", "--rounds", "2", "--steps", "1",
                      "--warmup", "0", "--precision", "fp32", "--threads", "1", "--json", str(out), *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert set(rows) == {"official", "pjepa"}
    for row in rows.values():
        assert row["images_per_s"] > 0 and row["gflop_per_image"] > 0 and row["gflops"] > 0
        assert row["context_tokens"] > 0 and row["target_tokens"] > 0
        assert row["gflops"] == pytest.approx(row["gflop_per_image"] * row["images_per_s"], rel=1e-12)
    assert report["ratios"]["images_per_s"] == pytest.approx(
        rows["pjepa"]["images_per_s"] / rows["official"]["images_per_s"], rel=1e-12)
    assert report["ratios"]["gflops"] == pytest.approx(rows["pjepa"]["gflops"] / rows["official"]["gflops"],
                                                       rel=1e-12)
    assert [r["order"] for r in report["per_round"]] == [["official", "pjepa"], ["pjepa", "official"]]
    for r in report["per_round"]:
        assert r["official"]["impl"] == "official" and r["pjepa"]["impl"] == "pjepa"
        assert r["official"]["precision"] == r["pjepa"]["precision"] == "fp32"
        assert r["official"]["threads"] == r["pjepa"]["threads"] == 1
        # the FLOPs are those of the timed steps: the replay drew the same token counts
        assert r["official"]["flop_replay_matches"] and r["pjepa"]["flop_replay_matches"]
    # the official side is sized and masked from the pjepa config (smoke: 32 px, patch 4; default masks)
    s = report["official_settings"]
    assert (s["image_size"], s["patch_size"], s["embed_dim"], s["batch_size"]) == (32, 4, 32, 8)
    assert (s["npred"], s["pred_mask_scale"], s["aspect_ratio"], s["min_keep"]) == (4, [0.15, 0.2], [0.75, 1.5], 7)
    # the stand-in's target sets: 4 x int(64 * 0.15) = 36 tokens per image
    assert rows["official"]["target_tokens"] == 36
    assert "| official |" in proc.stdout and "| pjepa |" in proc.stdout and "pjepa / official" in proc.stdout


def test_a_missing_clone_is_one_line_and_exit_code_2(tmp_path):
    proc = run_script("--official", str(tmp_path / "nowhere"), timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "github.com/facebookresearch/ijepa" in lines[0], proc.stderr


def test_the_clone_is_checked_before_anything_runs(vs, tmp_path, capsys):
    (tmp_path / "src").mkdir()
    for argv in ([], ["--official", str(tmp_path)]):  # no --official; a folder without the model file
        assert vs.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "src/models/vision_transformer.py" in err[0]


def test_bad_values_are_argparse_errors(vs, tmp_path, capsys):
    for argv in (["--rounds", "1"], ["--steps", "0"], ["--precision", "fp16"], ["--threads", "x"]):
        with pytest.raises(SystemExit) as e:
            vs.main(["--official", str(tmp_path), *argv])
        assert e.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_a_config_the_official_sampler_never_finishes_is_refused(vs):
    _, cfg = vs.resolved_config("smoke", ["mask.options={min_context: 10}"])  # 3 x 3 targets: 9 <= min_keep 9
    with pytest.raises(vs.UsageError, match="never return"):
        vs.official_settings(cfg)
