"""The two-mode toy problem of the project's hypothesis, shared by the head tests.

y = +-2 on every coordinate (each sign with probability 1/2, independent of h)
plus small noise: the best single vector is 0, between the modes; a head that
models p(y | h) should put its samples on both modes.
"""

import torch


def two_mode_batch(tokens: int, D: int, cond: int, noise: float):
    """y = +-2 (all coordinates, each sign with prob 1/2) + noise; h random and independent of the mode."""
    sign = torch.randint(0, 2, (1, tokens, 1)).float() * 2 - 1
    y = 2.0 * sign.expand(1, tokens, D) + noise * torch.randn(1, tokens, D)
    return torch.randn(1, tokens, cond), y


def train_toy(head, D: int, cond: int, steps: int, noise: float, lr: float):
    torch.manual_seed(0)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)  # the decay averages out SGD noise in predict
    for _ in range(steps):
        h, y = two_mode_batch(256, D, cond, noise)
        loss, _ = head.loss(h, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return head.eval()


def mode_fractions(samples: torch.Tensor) -> tuple[float, float, float]:
    """Fractions of samples (mean coordinate) within 0.75 of +2, of -2, and within 0.5 of 0.

    A moment-matched unimodal Gaussian N(0, 2^2) would put only ~0.18 near each mode.
    """
    s = samples.mean(-1).reshape(-1)
    return ((s - 2).abs() < 0.75).float().mean().item(), ((s + 2).abs() < 0.75).float().mean().item(), \
        (s.abs() < 0.5).float().mean().item()
