"""Periodic evaluation during training, driven by the method's ``monitors()``, on the validation split.

Each monitored encoder gets kNN@1 (fixed random subsets: the bank from the
training split minus validation, the queries from the validation split; the
first encoder's weighted kNN picks ``checkpoints/best``); each monitored head
gets the shared head metrics on a fixed validation subset. A method that
monitors nothing is not evaluated. The reported split is never looked at here.
"""

from __future__ import annotations

import torch

from pjepa.config import Config
from pjepa.data import Splits
from pjepa.eval.features import extract_features
from pjepa.eval.head_metrics import collect_pairs, head_metrics
from pjepa.eval.knn import knn_evaluate, require_labels
from pjepa.methods import HeadMonitor, Method
from pjepa.models import VisionTransformer
from pjepa.utils import stream_seed


class PeriodicEvaluator:
    """``__call__(method) -> metrics``: ``knn/top1_{weighted,majority}`` for the first monitored encoder
    (``knn_<name>/...`` for others) and ``headeval/*`` for the first monitored head."""

    def __init__(self, cfg: Config, splits: Splits, mean: torch.Tensor, std: torch.Tensor,
                 device: torch.device, amp_dtype: torch.dtype | None) -> None:
        self.bank, self.val, self.cfg = splits.bank, splits.val, cfg
        g = torch.Generator().manual_seed(stream_seed(cfg.train.seed, 0, 0, "knn-subset"))
        self.bank_idx = torch.randperm(len(self.bank), generator=g)[: cfg.eval.periodic_train_subset]
        self.query_idx = torch.randperm(len(self.val), generator=g)[: cfg.eval.periodic_val_subset]
        self.mean, self.std, self.device, self.amp_dtype = mean, std, device, amp_dtype

    def check(self, method: Method) -> None:
        """Fail before training if a monitored encoder cannot be rated (unlabelled bank or queries)."""
        if self.cfg.train.eval_every > 0 and method.monitors().encoders:
            require_labels(self.bank, "data.bank_split")
            require_labels(self.val, "data.val_fraction / data.eval_split")

    def knn(self, encoder: VisionTransformer) -> dict[str, float]:
        c = self.cfg
        feats = [
            extract_features(encoder, ds.images[idx], c.data.image_size, self.mean, self.std, self.device,
                             c.eval.batch_size, self.amp_dtype)
            for ds, idx in ((self.bank, self.bank_idx), (self.val, self.query_idx))
        ]
        return knn_evaluate(feats[0], self.bank.labels[self.bank_idx], feats[1], self.val.labels[self.query_idx],
                            self.bank.num_classes, k=c.eval.k, temperature=c.eval.temperature)

    def head(self, monitor: HeadMonitor) -> dict[str, float]:
        c = self.cfg
        n = c.eval.periodic_head_subset
        if n <= 0:
            return {}
        seed = stream_seed(c.train.seed, 0, 0, "head-eval-masks")
        pairs = collect_pairs(monitor.conditions, self.val.images[:n], c.data.image_size, self.mean, self.std,
                              self.device, seed, c.eval.batch_size, self.amp_dtype)
        gen = torch.Generator(device=self.device).manual_seed(stream_seed(c.train.seed, 0, 0, "head-eval-samples"))
        res = head_metrics(monitor.head, pairs, gen, num_samples=c.eval.head_samples,
                           sample_tokens=c.eval.head_sample_tokens)
        return {f"headeval/{k}": v for k, v in res.items() if not k.endswith("tokens")}

    def __call__(self, method: Method) -> dict[str, float]:
        monitors = method.monitors()
        was_training = method.training
        method.eval()
        res: dict[str, float] = {}
        for i, (name, encoder) in enumerate(monitors.encoders.items()):
            prefix = "knn" if i == 0 else f"knn_{name}"
            res.update({f"{prefix}/top1_{vote}": v for vote, v in self.knn(encoder).items()})
        for monitor in list(monitors.heads.values())[:1]:
            res.update(self.head(monitor))
        method.train(was_training)
        return res
