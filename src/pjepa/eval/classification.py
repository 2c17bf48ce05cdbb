"""What every classification protocol reports, from class scores and true labels.

top-1 and top-5 accuracy (%), macro-F1 (%), per-class accuracy (%), the confusion
matrix (rows: true class, columns: predicted) and the per-sample top-1 predictions
with the true labels (two int lists: compact, and enough for later figures).
"""

from __future__ import annotations

from typing import Any

import torch


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N,), (N,) -> (C, C) int64 counts, ``[true, predicted]``."""
    flat = labels.long() * num_classes + pred.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def macro_f1(confusion: torch.Tensor) -> float:
    """Mean over classes of 2 TP / (2 TP + FP + FN), in %; a class never true nor predicted counts as 0."""
    tp = confusion.diag().double()
    fp = confusion.sum(0).double() - tp
    fn = confusion.sum(1).double() - tp
    f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
    return 100.0 * f1.mean().item()


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """(N, C) scores (logits or votes), (N,) labels -> the report every protocol writes."""
    if scores.shape != (labels.shape[0], num_classes):
        raise ValueError(f"scores {tuple(scores.shape)} do not fit {labels.shape[0]} labels of {num_classes} classes")
    labels = labels.long().cpu()
    scores = scores.float().cpu()
    pred = scores.argmax(dim=1)
    top5 = scores.topk(min(5, num_classes), dim=1).indices
    confusion = confusion_matrix(pred, labels, num_classes)
    per_class = confusion.diag().double() / confusion.sum(1).double().clamp_min(1)
    return {
        "top1": 100.0 * (pred == labels).double().mean().item(),
        "top5": 100.0 * (top5 == labels[:, None]).any(dim=1).double().mean().item(),
        "macro_f1": macro_f1(confusion),
        "per_class_accuracy": [round(100.0 * v, 3) for v in per_class.tolist()],
        "confusion": confusion.tolist(),
        "predictions": pred.tolist(),
        "labels": labels.tolist(),
    }


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """(N, C), (N,) -> top-1 accuracy in %."""
    return 100.0 * (scores.argmax(dim=1).cpu() == labels.cpu()).double().mean().item()
