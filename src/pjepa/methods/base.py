"""The method contract: the seam between the one training loop and every method.

The loop builds a ``Batch`` (augmented images, labels, the step and its two
random generators), calls ``training_step(batch) -> StepOutput`` for the loss,
steps the optimiser over ``param_groups()``, applies the EMA pairs the method
declares, compiles ``compile_modules()``, and at periodic evaluation rates what
``monitors()`` names. Evaluation asks ``feature_encoder()`` for the encoder
whose features it rates. The loop never names a method's modules: a new method
(N-JEPA, MAE, a fine-tune) is a new file that registers itself.

What a method has (a predictor head, an EMA teacher) it declares in ``capabilities(cfg)``,
read from a config without building the model: the table and the figures ask it
instead of testing method names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn as nn

from pjepa.heads import PredictorHead
from pjepa.models import VisionTransformer

if TYPE_CHECKING:
    from pjepa.config import Config

Metrics = dict[str, torch.Tensor | float]
#: (normalised images (B, 3, S, S), CPU mask generator) -> (h (B, T, Dp), y (B, T, D))
ConditionFn = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Capabilities:
    """What a method trained from a config has, known without building it.

    Attributes:
        has_head: it trains a predictor head (the ``head`` config is used): head metrics,
            calibration and the head figures apply to its runs.
        has_target_encoder: it keeps a target encoder apart from the context encoder (an EMA
            teacher); False where "target" names the context encoder itself.
    """

    has_head: bool
    has_target_encoder: bool


@dataclass
class Batch:
    """One step's input.

    Attributes:
        images: (B, 3, S, S) augmented, normalised images on the training device.
        labels: (B,) int64 labels on the device (-1 where unlabelled); self-supervised
            methods ignore them, a fine-tune or an online probe uses them.
        step: the global step (0-based) this batch trains.
        mask_generator: CPU generator seeded from (seed, step, rank): masks.
        noise_generator: generator on the training device seeded the same way:
            every other random draw of the step (a head's noise and times), so a
            step is a pure function of (weights, batch) and a resumed run repeats it.
        diagnostics: add costlier monitors (effective rank, ...) to the metrics.
    """

    images: torch.Tensor
    labels: torch.Tensor
    step: int
    mask_generator: torch.Generator
    noise_generator: torch.Generator
    diagnostics: bool = False


@dataclass
class StepOutput:
    """The scalar loss to minimise and the step's metrics (tensors stay on the device: no host sync)."""

    loss: torch.Tensor
    metrics: Metrics = field(default_factory=dict)


@dataclass
class HeadMonitor:
    """A predictive head and how to get its (h, y) pairs, for the shared head metrics."""

    head: PredictorHead
    conditions: ConditionFn


@dataclass
class Monitors:
    """What periodic evaluation may rate: encoders by kNN (the first one picks ``checkpoints/best``)
    and predictive heads by the head metrics. Empty where a method has none."""

    encoders: dict[str, VisionTransformer] = field(default_factory=dict)
    heads: dict[str, HeadMonitor] = field(default_factory=dict)


class Method(nn.Module, ABC):
    """Base class of every registered method. ``forward(batch)`` is ``training_step`` (so DDP can wrap it)."""

    #: False for methods that do not use the ``head`` config (MAE, a fine-tune): tables then show no head
    #: and head figures skip their runs.
    has_head: ClassVar[bool] = True
    #: True for methods with a target encoder apart from the context encoder (an EMA teacher).
    has_target_encoder: ClassVar[bool] = False
    #: How tables and reports name the method ("I-JEPA"); empty: its registered name.
    label: ClassVar[str] = ""

    @classmethod
    def capabilities(cls, cfg: Config) -> Capabilities:
        """What this method has when trained from ``cfg`` (its ``method.options`` may decide)."""
        return Capabilities(has_head=cls.has_head, has_target_encoder=cls.has_target_encoder)

    @abstractmethod
    def training_step(self, batch: Batch) -> StepOutput:
        """The loss of one batch (and its metrics)."""

    def forward(self, batch: Batch) -> StepOutput:  # type: ignore[override]
        return self.training_step(batch)

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups; each may carry ``lr_scale`` and ``wd_scale`` (multipliers of the schedules).

        Default: weight decay on matrices and convolutions only (not biases,
        norms, tokens). A fine-tune overrides this for layer-wise LR decay.
        """
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim >= 2 and "token" not in name else no_decay).append(p)
        return [{"params": decay, "wd_scale": 1.0, "lr_scale": 1.0},
                {"params": no_decay, "wd_scale": 0.0, "lr_scale": 1.0}]

    def ema_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(target parameters, online parameters) the loop moves by EMA after each step."""
        return [], []

    def compile_modules(self) -> list[nn.Module]:
        """Modules ``train.compile`` compiles: each of their transformer blocks in place, a module without
        blocks whole (``pjepa.train.compile``; state-dict keys stay plain)."""
        return []

    def monitors(self) -> Monitors:
        """What periodic evaluation rates; nothing by default."""
        return Monitors()

    def init_encoders(self) -> list[nn.Module]:
        """The encoders ``model.init`` loads its weights into (default: the context and target encoders)."""
        out: list[nn.Module] = []
        for which in ("context", "target"):
            encoder = self.feature_encoder(which)
            if all(encoder is not e for e in out):
                out.append(encoder)
        return out

    @abstractmethod
    def feature_encoder(self, which: str = "target") -> VisionTransformer:
        """An encoder mapping (B, 3, H, W) -> (B, N, D) tokens for evaluation, with
        ``intermediate_layers(images, n)`` for probes over the last n layers."""
