"""ViT encoder, positions, predictor trunk layouts and the EMA update."""

import pytest
import torch

from pjepa.masking import MultiBlockMaskSampler
from pjepa.models import PredictorTrunk, VisionTransformer, ema_update
from pjepa.models.pos_embed import sincos_2d


def test_sincos_positions_are_distinct_and_bounded():
    pe = sincos_2d(32, 4, 5)
    assert pe.shape == (20, 32)
    assert pe.abs().max() <= 1.0
    assert torch.cdist(pe, pe).add(torch.eye(20) * 10).min() > 1e-3  # no two positions collide


def test_vit_shapes_and_index_selection():
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4)
    x = torch.randn(3, 3, 16, 16)
    assert vit(x).shape == (3, 16, 32)
    idx = torch.tensor([[0, 5, 7], [1, 2, 3], [15, 14, 0]])
    assert vit(x, idx).shape == (3, 3, 32)
    with pytest.raises(ValueError, match="multiple of patch size"):
        VisionTransformer(img_size=15, patch_size=4, embed_dim=32, depth=1, num_heads=4)


def _trunk_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = MultiBlockMaskSampler(6)(4, g)
    ctx = torch.randn(4, masks.ctx_idx.shape[1], 32, generator=g)
    return ctx, masks.ctx_idx, masks.tgt_idx


@pytest.mark.parametrize("layout", ["joint", "per_block"])
def test_trunk_blocks_do_not_see_each_other(layout):
    """Block j's prediction depends on the context and block j only."""
    torch.manual_seed(0)
    trunk = PredictorTrunk(36, 32, 16, depth=2, num_heads=2, layout=layout).eval()
    ctx, ctx_idx, tgt_idx = _trunk_inputs()
    B, M, Nt = tgt_idx.shape
    h = trunk(ctx, ctx_idx, tgt_idx).reshape(B, M, Nt, -1)
    moved = tgt_idx.clone()
    moved[:, 1:] = tgt_idx[:, 1:].flip(0)  # change every block but block 0
    h2 = trunk(ctx, ctx_idx, moved).reshape(B, M, Nt, -1)
    torch.testing.assert_close(h[:, 0], h2[:, 0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(h[:, 1:], h2[:, 1:])


def test_joint_layout_equals_per_block_without_context_to_query_attention():
    """'joint' = the per-block pass in which context rows see only context."""
    torch.manual_seed(0)
    joint = PredictorTrunk(36, 32, 16, depth=2, num_heads=2, layout="joint").eval()
    ctx, ctx_idx, tgt_idx = _trunk_inputs(1)
    h = joint(ctx, ctx_idx, tgt_idx)
    B, M, Nt = tgt_idx.shape
    for j in range(M):
        hj = joint(ctx, ctx_idx, tgt_idx[:, j : j + 1])  # a single block, same rule
        torch.testing.assert_close(h[:, j * Nt : (j + 1) * Nt], hj, atol=1e-5, rtol=1e-5)


def test_ema_update_lerps_every_pair():
    t = [torch.zeros(3), torch.ones(2)]
    o = [torch.ones(3), torch.zeros(2)]
    ema_update(t, o, momentum=0.75)
    torch.testing.assert_close(t[0], torch.full((3,), 0.25))
    torch.testing.assert_close(t[1], torch.full((2,), 0.75))
    ema_update(t, o, momentum=1.0)  # momentum 1 freezes the target
    torch.testing.assert_close(t[0], torch.full((3,), 0.25))


def test_official_init_scheme_truncnormal_patch_embedding_and_depth_scaled_predictor():
    """model.init_scheme: official (I-JEPA's _init_weights + the predictor's fix_init_weight)."""
    torch.manual_seed(0)
    ours = VisionTransformer(32, 4, 192, 2, 3)
    torch.manual_seed(0)
    official = VisionTransformer(32, 4, 192, 2, 3, init_scheme="official")
    w = official.patch_embed.weight
    # trunc_normal_'s cut-offs are absolute (+-2), so at std 0.02 it is a plain normal, as in the official code
    assert w.std().item() == pytest.approx(0.02, rel=0.05) and w.mean().abs() < 0.002
    assert (official.patch_embed.bias == 0).all()
    # PyTorch's Conv2d default: Kaiming-uniform with a = sqrt(5), bound 1 / sqrt(fan_in = 48)
    assert ours.patch_embed.weight.abs().max() <= 48 ** -0.5 and ours.patch_embed.weight.std() > 0.07
    torch.manual_seed(0)
    plain = PredictorTrunk(64, 32, 16, 3, 2)
    torch.manual_seed(0)
    scaled = PredictorTrunk(64, 32, 16, 3, 2, init_scheme="official")
    for i, (a, b) in enumerate(zip(plain.blocks, scaled.blocks), start=1):
        torch.testing.assert_close(b.attn.proj.weight, a.attn.proj.weight / (2 * i) ** 0.5)
        torch.testing.assert_close(b.mlp[2].weight, a.mlp[2].weight / (2 * i) ** 0.5)
        torch.testing.assert_close(b.attn.qkv.weight, a.attn.qkv.weight)


def test_unknown_init_scheme_is_named():
    with pytest.raises(ValueError, match="model.init_scheme='timm'"):
        VisionTransformer(32, 4, 64, 1, 2, init_scheme="timm")


@pytest.mark.parametrize("masked", [False, True])
def test_cpu_bf16_attention_matches_the_fused_kernel(masked):
    """models.vit.attention: fp32 is the fused kernel itself; bf16 on a CPU (plain matmuls, fp32 softmax)
    agrees with the fp32 kernel on outputs and gradients to bf16 accuracy, mask included."""
    import torch.nn.functional as F

    from pjepa.masking.ops import block_attention_mask
    from pjepa.models.vit import attention

    g = torch.Generator().manual_seed(0)
    B, H, L, d = 3, 2, 10, 16
    q, k, v = (torch.randn(B, H, L, d, generator=g) for _ in range(3))
    mask = block_attention_mask(4, 2, 3) if masked else None  # (10, 10): 4 context, 2 blocks of 3
    ref = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out_ref = F.scaled_dot_product_attention(*ref, attn_mask=mask)
    assert torch.equal(attention(*ref, mask), out_ref)  # fp32: the same kernel
    low = [t.to(torch.bfloat16).requires_grad_(True) for t in (q, k, v)]
    out = attention(*low, mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), out_ref, atol=3e-2, rtol=3e-2)
    grad = torch.randn(B, H, L, d, generator=g)
    out_ref.backward(grad)
    out.backward(grad.to(torch.bfloat16))
    for a, b in zip(low, ref):
        torch.testing.assert_close(a.grad.float(), b.grad, atol=6e-2, rtol=6e-2)
