"""A run's method: with its trained (or, for baselines, untrained) weights, or as a fresh run starts it."""

from __future__ import annotations

from pjepa.config import Config
from pjepa.methods import Method, build_method
from pjepa.runs import Run, load_weights_into
from pjepa.utils import seed_everything


def load_run_method(run: Run, checkpoint: str = "last", random_init: bool = False) -> tuple[Method, int]:
    """(method, step): the run's method with the weights of ``checkpoint`` ("last" / "best"), or built
    from the run's seed without training (``random_init``: the untrained-encoder baseline, step 0)."""
    cfg = run.config
    seed_everything(cfg.train.seed)
    method = build_method(cfg, init=False)  # the checkpoint's weights, or (random_init) none
    if random_init:
        return method, 0
    weights, state = run.load_checkpoint(checkpoint)
    load_weights_into(method, weights, run.path)
    return method, int(state["step"])


def build_run_method(cfg: Config) -> Method:
    """The method ``cfg`` trains, as a fresh run starts it: the global RNG seeded with ``train.seed``, then
    built with its initial weights (``model.init``'s file in the encoders where set), ready to save as step 0."""
    seed_everything(cfg.train.seed)
    return build_method(cfg)
