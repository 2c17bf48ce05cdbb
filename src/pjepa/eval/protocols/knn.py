"""``pjepa eval knn --run DIR``: kNN@1 of a run's encoder, written to DIR/eval/.

Features: the target (EMA) encoder's average-pooled last layer by default (or
the last ``layers`` layers concatenated), the context encoder on request, and
two baselines on the same data and preprocessing: the same architecture at
random initialisation and raw normalised pixels. The bank is the training split
minus the validation part the run held out; the queries are the reported split
(``data.eval_split``), or with ``--split val`` the validation split (for
choices). k, T, both votes, the encoder and the split sizes are recorded with
the result (docs/evaluation.md). A run without a validation split (``data.val_fraction=0``)
answers ``--split val`` with the reported split: the result's ``selection_split`` and a printed
warning say so.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from pjepa.data import ImageDataset, Images, splits_for
from pjepa.errors import ConfigError
from pjepa.eval.features import extract_features, pixel_features
from pjepa.eval.knn import WHITEN_FLOOR, fit_whitening, knn_evaluate, require_labels
from pjepa.eval.protocols.base import (
    PROTOCOLS,
    Protocol,
    add_run_arguments,
    add_source_arguments,
    choice_split,
    choice_warning,
    non_negative_int,
    positive_int,
    source_of,
)
from pjepa.eval.protocols.outputs import Column, ResultFile, number
from pjepa.eval.sources import (
    Source,
    encoder_depth,
    feature_amp,
    load_encoder_for,
    precision_name,
    probe_layers,
    split_features,
)
from pjepa.runs import Run, resolve_device
from pjepa.utils import stream_seed


def subset(ds: ImageDataset, limit: int, seed: int, stream: str) -> tuple[Images, torch.Tensor]:
    """(images, labels), a seeded random subset of ``limit`` items (all if 0): never a prefix."""
    if limit <= 0 or limit >= len(ds):
        return ds.images, ds.labels
    g = torch.Generator().manual_seed(stream_seed(seed, 0, 0, stream))
    idx = torch.randperm(len(ds), generator=g)[:limit]
    return ds.images[idx], ds.labels[idx]


def _encoder_features(run: Run, source: Source, images, device, layers: int, progress: bool):
    """Features of the bank and query images, and the step of the weights used."""
    cfg = run.config
    mean, std = run.stats()
    encoder, step, _ = load_encoder_for(run, source)
    encoder.to(device)
    amp = feature_amp(run, device)
    feats = [extract_features(encoder, x, cfg.data.image_size, mean, std, device, cfg.eval.batch_size, amp,
                              progress=progress, desc=f"features ({name})", layers=layers)
             for name, x in zip(("bank", "queries"), images)]
    return feats, step


def _cached_features(run: Run, source: Source, device, layers: int, progress: bool, split: str):
    """((bank features, labels), (query features, labels), step, split info) from the linear protocol's cache
    (extracting and caching them if needed), when its layers cover ``layers``; None otherwise. ``split``
    ("eval" or "val") names the queries: the cache holds both, so ``knn_val`` and ``knn`` of one run extract
    the bank once between them, and a cached extraction is read without loading any image."""
    cached = probe_layers(run, source)
    if layers not in (1, cached):
        return None
    feats, step, info = split_features(run, source, device, cached, progress)
    width = feats["bank"][0].shape[1] // cached * layers
    bank, queries = ((feats[k][0][:, -width:], feats[k][1]) for k in ("bank", split))
    return bank, queries, step, info


def evaluate_knn(
    run_dir: str | Path,
    encoder: str = "target",
    baseline: str | None = None,
    checkpoint: str = "last",
    train_limit: int = 0,
    eval_limit: int = 0,
    device: str = "auto",
    split: str = "eval",
    layers: int = 1,
    progress: bool = True,
    weights: str | Path | None = None,
    whiten: bool = False,
) -> dict[str, Any]:
    """Run the kNN protocol on ``run_dir`` and write ``eval/knn[_<baseline>][_context][_val][_lastN][_white].json``.

    Args:
        encoder: "target" (EMA teacher, default) or "context".
        baseline: None, "random-init" (same architecture, untrained) or "pixels".
        checkpoint: "last" or "best".
        train_limit / eval_limit: seeded random subsets of the bank / queries (0 = all).
        split: "eval" (the reported split, ``data.eval_split``) or "val" (the validation split).
        layers: mean-pooled features of the last ``layers`` layers, concatenated.
        weights: rate this encoder file (``pjepa export`` / ``import``) on the run's data instead.
        whiten: PCA-whiten bank and queries with the bank's statistics first (``eval.knn.whiten``); the
            same treatment applies to the baselines, so compare whitened numbers with whitened ones.
    """
    source = Source(encoder, checkpoint, baseline, Path(weights) if weights is not None else None)
    if split not in ("eval", "val"):
        raise ConfigError(f"--split {split!r}: choose eval (the reported split) or val (the validation split)")
    run = Run(run_dir)
    cfg = run.config
    d = cfg.data
    if baseline != "pixels":  # checked before any data is read: the encoder would fail after the bank is loaded
        depth = encoder_depth(run, source)
        if not 1 <= layers <= depth:
            raise ConfigError(f"--layers {layers}: the encoder has {depth} layers (blocks); choose 1..{depth}")
    dev = resolve_device(device)
    t0 = time.perf_counter()
    cached = (_cached_features(run, source, dev, layers, progress, split)
              if baseline != "pixels" and train_limit == eval_limit == 0 else None)
    if cached is not None:
        (fb, yb), (fq, yq), step, info = cached
        feats, which = [fb, fq], encoder
        num_classes, bank_split, query_split = info.num_classes, info.names["bank"], info.names[split]
    else:
        splits = splits_for(cfg)
        bank, queries = splits.bank, (splits.eval if split == "eval" else splits.val)
        require_labels(bank, "data.bank_split")
        require_labels(queries, "data.eval_split")
        (xb, yb), (xq, yq) = (subset(bank, train_limit, cfg.train.seed, "bank"),
                              subset(queries, eval_limit, cfg.train.seed, "query"))
        if baseline == "pixels":
            mean, std = run.stats()
            feats, step, which = [pixel_features(x, d.image_size, mean, std) for x in (xb, xq)], 0, "pixels"
        else:
            feats, step = _encoder_features(run, source, (xb, xq), dev, layers, progress)
            which = encoder
        num_classes, bank_split, query_split = bank.num_classes, bank.split, queries.split
        del splits, bank, queries, xb, xq  # the images (0.7 GB for Tiny ImageNet) are not needed past the features
    n_train, n_eval = int(feats[0].shape[0]), int(feats[1].shape[0])
    features = "raw"
    if whiten:
        whitening = fit_whitening(feats[0])
        # in place where it can (the features are this function's own): no second copy of the bank
        feats = [whitening(f, out=f if whitening.exact and f.dtype == torch.float32 else None) for f in feats]
        features = (f"PCA-whitened on the bank (eigenvalue floor {WHITEN_FLOOR:g} x the largest; "
                    f"{whitening.describe()})")
        del whitening  # its F x F factor is not needed for the neighbours
    votes = knn_evaluate(feats[0].to(dev), yb.to(dev), feats[1].to(dev), yq.to(dev), num_classes,
                         k=cfg.eval.k, temperature=cfg.eval.temperature, in_place=True)
    result = {
        "top1": votes["weighted"], "top1_weighted": votes["weighted"], "top1_majority": votes["majority"],
        "k": cfg.eval.k, "temperature": cfg.eval.temperature, "vote": "weighted",
        "encoder": which, "source": source.describe(run), "baseline": baseline, "checkpoint": None if baseline or weights else checkpoint,
        "weights": str(weights) if weights is not None else None,
        "layers": layers if which != "pixels" else None,
        "features": features,
        "feature_precision": precision_name(feature_amp(run, dev)) if which != "pixels" else None,
        "dataset": d.name, "split": query_split, "bank_split": bank_split, "val_fraction": d.val_fraction,
        "n_train": n_train, "n_eval": n_eval, "feature_dim": int(feats[0].shape[1]),
        "step": step, "seconds": round(time.perf_counter() - t0, 2),
    }
    if split == "val":  # the number choices read: say which split it really is
        result["selection_split"] = choice_split(d)
        result["warning"] = choice_warning(d, "a choice read from this kNN (--split val)")
    # One file per (features, split, layers): a context-encoder or validation result never overwrites knn.json.
    name = "knn" + source.suffix
    name += ("_val" if split == "val" else "") + (f"_last{layers}" if layers > 1 and which != "pixels" else "")
    name += "_white" if whiten else ""
    result["path"] = str(run.write_eval(name, result))
    return result


def _add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    add_source_arguments(p)
    p.add_argument("--split", choices=["eval", "val"], default="eval",
                   help="queries: the reported split (data.eval_split) or the validation split (for choices; "
                        "a run with data.val_fraction=0 has none: then the reported split, with a warning)")
    p.add_argument("--layers", type=positive_int, default=1, help="concatenate the mean-pooled last N layers")
    p.add_argument("--train-limit", type=non_negative_int, default=0, help="random subset of the bank (0 = all)")
    p.add_argument("--eval-limit", type=non_negative_int, default=0, help="random subset of the queries (0 = all)")
    p.add_argument("--whiten", action="store_true",
                   help="PCA-whiten features with the bank's statistics first (-> knn..._white.json; "
                        "rate the baselines the same way)")


def _run(args: argparse.Namespace) -> list[str]:
    baseline = "random-init" if args.random_init else "pixels" if args.pixels else None
    r = evaluate_knn(args.run, encoder=args.encoder, baseline=baseline, checkpoint=args.checkpoint,
                     train_limit=args.train_limit, eval_limit=args.eval_limit, device=args.device,
                     split=args.split, layers=args.layers, weights=args.weights, whiten=args.whiten)
    layers = r.get("layers") or 1  # None for pixels
    what = (r.get("source", source_of(args).describe()) + (f", last {layers} layers" if layers > 1 else "")
            + (", whitened" if args.whiten else ""))
    lines = [f"kNN@1 ({what}, k={r['k']}, {r['dataset']} "
             f"{r['split']}: {r['n_train']} bank / {r['n_eval']} queries, step {r['step']}): "
             f"weighted {r['top1_weighted']:.2f}%  majority {r['top1_majority']:.2f}%",
             f"wrote {r['path']}"]
    return ([r["warning"]] if r.get("warning") else []) + lines


def _columns() -> tuple[Column, ...]:
    """kNN@1 of both votes on the reported split; the weighted vote of each variant (validation queries,
    whitened features, the context encoder's features, which also gets its majority vote)."""
    reported, context = "kNN@1 (%), reported split", "kNN@1 (%), context encoder"
    weighted, majority = number("top1_weighted"), number("top1_majority")
    return (
        Column("knn", (reported, "weighted"), weighted, rated=0, tensorboard="knn"),
        Column("knn_majority", (reported, "majority"), majority, rated=0),
        # `pjepa eval knn --encoder context`: the student, as the Probabilistic-JEPA report rates it
        Column("knn_context", (context, "weighted"), weighted, "_context", rated=2),
        Column("knn_context_majority", (context, "majority"), majority, "_context", rated=2),
        # validation queries: the number choices read
        Column("knn_val", ("kNN@1 (%), validation", "raw"), weighted, "_val", rated=1),
        Column("knn_white", ("kNN@1 (%), whitened", "reported"), weighted, "_white", rated=1),
        Column("knn_val_white", ("kNN@1 (%), validation", "whitened"), weighted, "_val_white", rated=1),
    )


PROTOCOLS.register("knn")(Protocol(
    "knn", "kNN@1 (k=20, cosine; weighted and majority votes) of an encoder or a baseline", _add_arguments, _run,
    results=(ResultFile(sweep_baselines="always"),
             ResultFile("_val", ("--split", "val"), "kNN on the validation split"),
             ResultFile("_white", ("--whiten",), "kNN on whitened features", sweep_baselines="asked"),
             ResultFile("_val_white", ("--split", "val", "--whiten")),
             ResultFile("_context", ("--encoder", "context"), "kNN of the context encoder")),
    columns=_columns(), baselines=True, order=10))
