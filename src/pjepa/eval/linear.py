"""Linear probes on frozen, cached features: a grid of learning rates and weight decays in one pass.

Each probe is MAE's: BatchNorm without affine parameters, then one linear layer. Over
cached features the BatchNorm's evaluation-time statistics are those of the training
features, so the features are standardised once by their training mean and std. Every
(lr, wd) of the grid is an independent linear layer; all of them train together on the
same shuffled batches (one matmul, dinov2's one-pass grid): cross-entropy summed over the
grid (so each layer's gradient is its own), SGD with momentum 0.9, cosine learning rate.
The choice among them reads only the validation features (``choose``); the evaluation
split is scored once, with the chosen layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pjepa.eval.classification import classification_metrics
from pjepa.schedules import cosine

LRS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
WDS = (0.0, 1e-4, 1e-3)
BATCH = 1024  # large batches: few, cheap steps over cached features (the lr grid spans what suits them)


@dataclass
class ProbeGrid:
    """G = len(lrs) * len(wds) probes: weight (D, G, C) (one matmul scores them all), bias (G, C), (lr, wd)."""

    weight: torch.Tensor
    bias: torch.Tensor
    settings: list[tuple[float, float]]

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) standardised features -> (G, N, C) logits."""
        return logits(x, self.weight, self.bias).transpose(0, 1)

    def take(self, g: int) -> ProbeGrid:
        return ProbeGrid(self.weight[:, g : g + 1], self.bias[g : g + 1], [self.settings[g]])


def logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(N, D) @ (D, G, C) + (G, C) -> (N, G, C), as one (N, D) x (D, G*C) matmul."""
    D, G, C = weight.shape
    return (x @ weight.reshape(D, G * C)).view(-1, G, C) + bias


def standardiser(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) training features -> (mean, std) (D,): BatchNorm(affine=False)'s evaluation statistics."""
    return x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)


def train_probes(x: torch.Tensor, y: torch.Tensor, num_classes: int, lrs=LRS, wds=WDS, epochs: int = 100,
                 batch_size: int = BATCH, seed: int = 0) -> ProbeGrid:
    """Train every (lr, wd) probe on standardised features ``x`` (N, D) and labels ``y`` (N,)."""
    settings = [(lr, wd) for lr in lrs for wd in wds]
    G, (N, D) = len(settings), x.shape
    lr0 = torch.tensor([s[0] for s in settings]).view(1, G, 1)
    wd = torch.tensor([s[1] for s in settings]).view(1, G, 1)
    weight = torch.zeros(D, G, num_classes, requires_grad=True)
    bias = torch.zeros(G, num_classes, requires_grad=True)
    momentum = [torch.zeros_like(weight), torch.zeros_like(bias)]
    g = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(N // batch_size, 1)
    total = epochs * steps_per_epoch
    for step in range(total):
        if step % steps_per_epoch == 0:
            order = torch.randperm(N, generator=g)
        idx = order[(step % steps_per_epoch) * batch_size :][:batch_size]
        out = logits(x[idx], weight, bias)  # (b, G, C)
        target = y[idx, None].expand(-1, G).reshape(-1)  # (b * G,)
        loss = F.cross_entropy(out.reshape(-1, num_classes), target, reduction="sum") / len(idx)
        gw, gb = torch.autograd.grad(loss, (weight, bias))
        scale = cosine(1.0, 0.0, step / total)
        with torch.no_grad():
            momentum[0].mul_(0.9).add_(gw + wd * weight)
            momentum[1].mul_(0.9).add_(gb)  # no decay on biases
            weight.sub_(lr0 * scale * momentum[0])
            bias.sub_(lr0.view(G, 1) * scale * momentum[1])  # (G, C)
    return ProbeGrid(weight.detach(), bias.detach(), settings)


def choose(grid: ProbeGrid, x_val: torch.Tensor, y_val: torch.Tensor) -> tuple[int, list[float]]:
    """(index of the best probe on the validation features, every probe's validation top-1 in %).
    Ties go to the first (smallest lr, then smallest wd)."""
    pred = grid.scores(x_val).argmax(dim=2)  # (G, N)
    acc = (100.0 * (pred == y_val[None]).double().mean(dim=1)).tolist()
    return max(range(len(acc)), key=lambda i: (acc[i], -i)), acc


def linear_probe(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], num_classes: int, epochs: int = 100, seed: int = 0,
                 lrs=LRS, wds=WDS) -> dict:
    """Train the grid on ``train``, choose on ``val``, score ``test`` once with the chosen probe.

    Each pair is (features (N, D), labels (N,)). Returns the chosen (lr, wd), every probe's
    validation top-1, the chosen probe's validation top-1 and the test-split report
    (``classification_metrics``).
    """
    mean, std = standardiser(train[0])
    norm = lambda x: (x.float() - mean) / std  # noqa: E731
    grid = train_probes(norm(train[0]), train[1].long(), num_classes, lrs, wds, epochs=epochs, seed=seed)
    best, val_acc = choose(grid, norm(val[0]), val[1].long())
    scores = grid.take(best).scores(norm(test[0]))[0]  # (N, C)
    lr, wd = grid.settings[best]
    return {"lr": lr, "weight_decay": wd, "val_top1": val_acc[best],
            "grid": [{"lr": s[0], "weight_decay": s[1], "val_top1": a} for s, a in zip(grid.settings, val_acc)],
            **classification_metrics(scores, test[1], num_classes)}
