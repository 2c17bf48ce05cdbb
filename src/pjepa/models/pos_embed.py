"""Fixed 2-D sine-cosine position embeddings (MAE / I-JEPA).

Half of the channels encode the row, half the column; each half is the 1-D
transformer encoding sin(pos * omega_i), cos(pos * omega_i) with
omega_i = 1 / 10000^(i / (D/4)).
"""

from __future__ import annotations

import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(P,) positions -> (P, dim) embedding; ``dim`` must be even."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (dim/2,)
    angles = positions.double()[:, None] * omega[None, :]  # (P, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """(grid_h * grid_w, dim) embedding of a row-major patch grid."""
    if dim % 4 != 0:
        raise ValueError(f"2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    emb_rows = sincos_1d(dim // 2, rows.reshape(-1))
    emb_cols = sincos_1d(dim // 2, cols.reshape(-1))
    return torch.cat([emb_rows, emb_cols], dim=1)  # (N, dim)
