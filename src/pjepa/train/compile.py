"""``train.compile``: compile the transformer blocks of a method's ``compile_modules()`` (regional compilation).

The number of context and target tokens changes from batch to batch (the masking distribution stays as
it is), so compiled code takes symbolic sizes from the first compile (``dynamic=True``); a static graph
would recompile at the first new token count (tests/test_compile.py).

Why each block, not each whole encoder / predictor: compiled whole, the joint predictor's sequence
length is an expression of three sizes, L = Nc + M * Nt (context tokens, target blocks, tokens per
block). In bf16 on a CPU its attention scores (B, heads, L, L) carry the stride L^2, which Inductor
(torch 2.13) expands into a polynomial; its stride-order check then evaluates Mod(1, L^2 / L) with the
polynomial uncancelled, and value-range analysis fails on the negative power: ``InductorError:
ValueRangeError: Invalid ranges [0:-1]``, after minutes of compiling. A block receives its tokens
(B, L, D) and the attention mask (L, L) as inputs, so L is a single symbol and L^2 / L cancels.

Compiling blocks also compiles less: blocks of one width share code and shapes, so one graph serves a
whole stack (per width, grad mode and mask presence) instead of one graph of depth-times the code. What
stays eager is small beside the blocks: the patch embedding, token gathers, the predictor's mask and
position embeddings, the final norms.

``Module.compile`` compiles in place, so state-dict keys stay free of ``_orig_mod.`` prefixes and
checkpoints load into an uncompiled model (eval, resume without compile).
"""

from __future__ import annotations

from torch import nn

from pjepa.models.vit import Block


def compile_units(module: nn.Module) -> list[nn.Module]:
    """The submodules ``train.compile`` compiles in ``module``: its transformer blocks, or the module itself
    when it has none."""
    blocks: list[nn.Module] = [m for m in module.modules() if isinstance(m, Block)]
    return blocks or [module]


def compile_modules(modules: list[nn.Module]) -> int:
    """Compile the units of ``modules`` in place with symbolic sizes; returns how many were compiled."""
    n = 0
    for module in modules:
        for unit in compile_units(module):
            unit.compile(dynamic=True)
            n += 1
    return n
