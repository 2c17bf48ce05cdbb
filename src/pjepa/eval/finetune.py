"""Fine-tuning protocol: the whole encoder and a linear classifier trained on the labels.

The run's encoder (or an encoder file, or for ``random-init`` the untrained architecture:
then this is supervised training from scratch, and is labelled so) is copied into
``methods.finetune.FineTune`` and trained on the bank split (the labelled training split
minus validation) for a stated number of epochs: AdamW, linear warm-up then cosine decay,
layer-wise learning-rate decay through the method's ``param_groups``, random-resized-crop
and flip, drop-path, label smoothing. After every epoch the validation split is scored;
the epoch with the best validation top-1 is kept and the reported split is scored once,
with it. Augmentation and order come from generators seeded from the run's seed.

This is its own short loop (the training loop lives in ``train``, which ``eval`` does not
import); a long fine-tune with checkpoints, resume and DDP is
``pjepa train method.name=finetune method.options.num_classes=C model.init=FILE``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from pjepa.config import Config
from pjepa.data import ImageDataset, random_resized_crop_flip, resize_normalize
from pjepa.eval.classification import accuracy, classification_metrics
from pjepa.methods import Batch
from pjepa.methods.finetune import FineTune
from pjepa.schedules import learning_rate
from pjepa.utils import stream_seed


@dataclass
class Recipe:
    """The fine-tune's settings (CPU defaults; MAE's ViT-B recipe is 100 epochs, lr 5e-4 x batch / 256)."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_fraction: float = 0.1
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    drop_path: float = 0.1
    label_smoothing: float = 0.1
    crop_scale: tuple[float, float] = (0.3, 1.0)


@torch.no_grad()
def logits_of(model: FineTune, ds: ImageDataset, cfg: Config, mean, std, device, batch_size: int = 512) -> torch.Tensor:
    """(N, C) logits of a split (resized and normalised, no augmentation), in eval mode."""
    model.eval()
    out = []
    for s in range(0, len(ds), batch_size):
        x = resize_normalize(ds.images[s : s + batch_size].to(device), cfg.data.image_size, mean, std)
        out.append(model.logits(x).float().cpu())
    model.train()
    return torch.cat(out)


def finetune(model: FineTune, data: dict[str, ImageDataset], cfg: Config, mean: torch.Tensor, std: torch.Tensor,
             device: torch.device, recipe: Recipe, seed: int, progress: bool = True) -> dict[str, Any]:
    """Train ``model`` on data["bank"], keep the best epoch on data["val"], score data["eval"] once."""
    bank, num_classes = data["bank"], data["bank"].num_classes
    model.to(device).train()
    mean, std = mean.to(device), std.to(device)
    opt = torch.optim.AdamW(model.param_groups(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    per_epoch = max(len(bank) // recipe.batch_size, 1)
    total, warmup = recipe.epochs * per_epoch, int(recipe.warmup_fraction * recipe.epochs * per_epoch)
    images, labels = bank.images_on(device), bank.labels.to(device)  # from the disk cache: read per batch
    aug, order_gen = torch.Generator(device=device), torch.Generator()
    best: tuple[float, int, dict[str, Any] | None] = (-1.0, 0, None)  # (val top-1, epoch, weights)
    history = []
    bar = tqdm(range(total), desc="fine-tune", disable=True if not progress else None, leave=False)
    for step in bar:
        epoch, pos = divmod(step, per_epoch)
        if pos == 0:
            order = torch.randperm(len(bank), generator=order_gen.manual_seed(stream_seed(seed, epoch, 0, "ft-order")))
        idx = order[pos * recipe.batch_size : (pos + 1) * recipe.batch_size].to(device)
        aug.manual_seed(stream_seed(seed, step, 0, "ft-augment"))
        x = random_resized_crop_flip(images[idx].to(device), cfg.data.image_size, mean, std, scale=recipe.crop_scale,
                                     ratio=cfg.data.crop_ratio, flip_p=0.5, generator=aug)
        lr = learning_rate(step, total, recipe.lr, warmup, recipe.min_lr)
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_scale"]
            group["weight_decay"] = recipe.weight_decay * group["wd_scale"]
        out = model.training_step(Batch(x, labels[idx], step, torch.Generator(), aug))  # aug also seeds drop-path
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if pos == per_epoch - 1:
            val = accuracy(logits_of(model, data["val"], cfg, mean, std, device), data["val"].labels)
            history.append({"epoch": epoch + 1, "loss": out.loss.item(), "val_top1": val})
            bar.set_postfix(epoch=epoch + 1, val_top1=f"{val:.2f}")
            if val > best[0]:
                best = (val, epoch + 1, copy.deepcopy(model.state_dict()))
    if best[2] is not None:  # set at the first epoch's end (any top-1 beats -1)
        model.load_state_dict(best[2])
    report = classification_metrics(logits_of(model, data["eval"], cfg, mean, std, device), data["eval"].labels,
                                     num_classes)
    return {**report, "val_top1": best[0], "best_epoch": best[1], "history": history}
