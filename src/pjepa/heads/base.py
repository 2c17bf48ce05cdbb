"""The head interface: a conditional distribution p(y | h) over target embeddings.

The predictor trunk gives one conditioning vector ``h`` (width Dp) per target
token; a head maps it to a distribution over the layer-normed target-encoder
embedding ``y`` (width D). Every head sees the same inputs, so comparing heads
changes only the head. Training losses are not comparable across heads; the
shared evaluation (kNN, point-prediction error, NLL where exact) is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager

import torch
import torch.nn as nn

from pjepa.errors import ConfigError

Diagnostics = dict[str, torch.Tensor]


def full_precision(t: torch.Tensor) -> AbstractContextManager:
    """Disable autocast on ``t``'s device: densities (log-sum-exp, log-dets) need fp32.

    Use as ``with full_precision(h): ...`` and cast inputs with ``.float()`` inside.
    """
    return torch.autocast(device_type=t.device.type, enabled=False)


def check_option(ok: bool, name: str, value: object, allowed: str) -> None:
    """Unless ``ok``, raise a ConfigError naming ``head.options.<name>``, its value and what is allowed."""
    if not ok:
        raise ConfigError(f"head.options.{name}={value!r}: {allowed}")


def is_count(value: object) -> bool:
    """An integer >= 1 (booleans excluded: YAML ``true`` is not a layer count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def mixture_entropy(log_pi: torch.Tensor) -> torch.Tensor:
    """(..., K) normalised log weights -> (...,) entropy in nats; exp() of it is the effective K."""
    return -(log_pi.exp() * log_pi).sum(-1)


class PredictorHead(nn.Module, ABC):
    """Base class of every registered head.

    Args:
        cond_dim: width Dp of the trunk's conditioning vectors ``h``.
        embed_dim: width D of the target embeddings ``y``.
    """

    #: True when ``log_prob`` is an exact log-density.
    has_log_prob: bool = False
    #: True when ``predict`` is differentiable (a loss may be put on the point estimate itself,
    #: as N-JEPA's N-C term); iterative or sampled point estimates run under no_grad.
    differentiable_predict: bool = False

    def __init__(self, cond_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.embed_dim = embed_dim

    @abstractmethod
    def loss(
        self, h: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, Diagnostics]:
        """(B, M, Dp) conditions, (B, M, D) targets -> (scalar loss, detached diagnostics).

        Heads whose loss is stochastic (diffusion steps, flow-matching times)
        draw from ``generator`` (on h's device; the loop passes the step's
        noise generator) so a step repeats exactly on resume.
        """

    @abstractmethod
    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, M, Dp) -> (n, B, M, D) draws from p(y | h)."""

    @abstractmethod
    def predict(self, h: torch.Tensor) -> torch.Tensor:
        """(B, M, Dp) -> (B, M, D) point estimate (the mean, or the head's best single guess)."""

    def log_prob(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, M, Dp), (B, M, D) -> (B, M) exact log-density, for heads with ``has_log_prob``."""
        raise ConfigError(
            f"head {type(self).__name__} has no exact log-likelihood; "
            "use a head with has_log_prob=True (e.g. mdn, autoregressive, flow) for NLL metrics"
        )
