"""The training step never waits for the device: no ``.item()``,
``.tolist()``, ``bool()``, ``float()`` or ``int()`` of a tensor during ``Trainer.train_step`` of any
registered method and head, except inside the mask sampler, which runs on the host by design (its
index tensors go to the device with ``non_blocking=True``). On a GPU each such call would stall the
queue; on a CPU they are cheap, which is why a test must hold them out.

Logged steps (``diagnostics=True``) may read values for the log; the loop only asks for them every
``train.log_every`` steps, so they are excluded here.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import SMOKE, TINY

from pjepa.config import load_config
from pjepa.heads import HEADS
from pjepa.methods import METHODS

SYNCS = ("item", "tolist", "__bool__", "__float__", "__int__")

#: Per method (and every head under I-JEPA): what keeps it tiny; finetune trains a classifier on labels.
CASES = {
    **{f"ijepa-{h}": ["method.name=ijepa", f"head.name={h}"] for h in HEADS.names()},
    "ijepa-vicreg": ["method.name=ijepa", "reg.name=vicreg", "reg.options={var_weight: 1.0, cov_weight: 0.04}"],
    "ijepa-sigreg-online": ["method.name=ijepa", "reg.name=sigreg", "method.options={target: online}",
                            "mask.options={sets_per_image: 2}"],
    "njepa": ["method.name=njepa"],
    "mae": ["method.name=mae", "mask.name=random",
            "method.options={decoder_dim: 16, decoder_depth: 1, decoder_heads: 2}"],
    "finetune": ["method.name=finetune", "method.options={num_classes: 4}"],
}


def test_every_method_is_covered():
    assert {c.split("-")[0] for c in CASES} >= set(METHODS.names())


class SyncCounter:
    """Counts host reads of tensors while active, except while ``hold`` is entered (the mask sampler)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self.held = 0
        for name in SYNCS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, original))

    def _wrap(self, name, original):
        def counted(t, *args, **kwargs):
            if not self.held:
                self.calls.append(f"Tensor.{name} on a {tuple(t.shape)} {t.dtype} tensor")
            return original(t, *args, **kwargs)

        return counted

    @contextlib.contextmanager
    def hold(self):
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_step_reads_nothing_back(case, tmp_path, monkeypatch, one_thread):
    from pjepa.train.loop import Trainer

    overrides = [o for o in TINY if not o.startswith("train.max_steps")] + ["train.max_steps=100"] + CASES[case]
    trainer = Trainer(load_config(SMOKE, overrides), tmp_path / "run")
    trainer.train_step(0)  # first step: lazy initialisation may look at values
    counter = SyncCounter(monkeypatch)
    sampler = getattr(trainer.method, "mask_sampler", None)
    if sampler is not None:
        def held_sampler(*args, **kwargs):
            with counter.hold():
                return sampler(*args, **kwargs)
        monkeypatch.setattr(trainer.method, "mask_sampler", held_sampler)
    for step in (1, 2):
        trainer.train_step(step, diagnostics=False)
    assert counter.calls == [], f"{case}: the step read {len(counter.calls)} values back: {counter.calls[:5]}"


def test_the_counter_can_fail(monkeypatch):
    counter = SyncCounter(monkeypatch)
    x = torch.ones(2)
    x.sum().item()
    if x.any():
        pass
    with counter.hold():
        x.tolist()
    assert len(counter.calls) == 2
