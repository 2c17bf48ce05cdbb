"""``train.compile`` never recompiles across steps: token counts vary
from batch to batch, so the loop compiles with symbolic sizes and a later step must reuse the
graphs of the first ones, for every registered method. TorchDynamo's guards decide recompiles
before any backend runs, so the ``eager`` backend shows them on a CPU in seconds (Inductor's CPU
code generation is slow here and not what is under test).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from conftest import SMOKE, TINY
from test_host_sync import CASES
from torch import nn

from pjepa.config import load_config
from pjepa.methods import METHODS

#: one case per method (every head shares the I-JEPA trunk's compiled modules)
METHOD_CASES = {c.split("-")[0]: c for c in sorted(CASES) if c != "ijepa-vicreg"}


def test_every_method_is_covered():
    assert set(METHOD_CASES) == set(METHODS.names())


def compiled_steps(case: str, dynamic, tmp_path, monkeypatch) -> None:
    """Build the Trainer with ``train.compile=true`` (modules compiled with ``dynamic`` instead of the
    loop's choice when it is not None), run 2 steps, then 8 more with recompiles made errors."""
    from pjepa.train.loop import Trainer

    compiled: list[dict] = []
    original = nn.Module.compile

    def eager_compile(module, *args, **kwargs):
        compiled.append(dict(kwargs))
        if dynamic is not None:
            kwargs["dynamic"] = dynamic
        return original(module, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(nn.Module, "compile", eager_compile)
    torch._dynamo.reset()
    overrides = ([o for o in TINY if not o.startswith("train.max_steps")]
                 + ["train.max_steps=100", "train.compile=true"] + CASES[case])
    trainer = Trainer(load_config(SMOKE, overrides), tmp_path / "run")
    assert compiled and all(k.get("dynamic") is True for k in compiled), compiled
    try:
        for step in range(2):  # first steps: each compiled function traced (once per grad mode)
            trainer.train_step(step)
        with torch._dynamo.config.patch(error_on_recompile=True):
            for step in range(2, 10):
                _, out, _ = trainer.train_step(step)
                assert torch.isfinite(out.loss)
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("method", sorted(METHOD_CASES))
@pytest.mark.slow
def test_compiled_steps_do_not_recompile(method, tmp_path, monkeypatch, one_thread):
    compiled_steps(METHOD_CASES[method], None, tmp_path, monkeypatch)


def test_static_shapes_would_recompile(tmp_path, monkeypatch, one_thread):
    """The control: the token counts of these steps do vary, so static-then-automatic shapes
    (``dynamic=None``) recompile and the check above can fail."""
    with pytest.raises(torch._dynamo.exc.RecompileError, match="size mismatch"):
        compiled_steps("ijepa-deterministic", False, tmp_path, monkeypatch)
