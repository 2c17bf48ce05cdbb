"""Schedules are pure functions of the step with the documented end points."""

import math

import pytest

from pjepa import schedules as S


def test_learning_rate_warmup_then_cosine():
    lr = lambda s: S.learning_rate(s, total=110, peak=1.0, warmup=10, min_lr=0.0, start=0.0)  # noqa: E731
    assert lr(0) == 0.0
    assert lr(5) == pytest.approx(0.5)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.5)  # half way through the cosine
    assert lr(110) == pytest.approx(0.0)
    assert all(lr(s) >= lr(s + 1) for s in range(10, 110))


def test_ema_momentum_cosine_and_linear():
    assert S.ema_momentum(0, 100, 0.998, 1.0) == pytest.approx(0.998)
    assert S.ema_momentum(100, 100, 0.998, 1.0) == pytest.approx(1.0)
    assert S.ema_momentum(50, 100, 0.998, 1.0, "linear") == pytest.approx(0.999)
    # the cosine ramp starts slower than the linear one
    assert S.ema_momentum(10, 100, 0.998, 1.0) < S.ema_momentum(10, 100, 0.998, 1.0, "linear")
    with pytest.raises(ValueError, match="ema_schedule"):
        S.ema_momentum(0, 10, 0.9, 1.0, "step")


def test_weight_decay_ramp_and_lr_scaling():
    assert S.weight_decay(0, 10, 0.04, 0.4) == pytest.approx(0.04)
    assert S.weight_decay(10, 10, 0.04, 0.4) == pytest.approx(0.4)
    assert S.scaled_lr(1e-3, 512, 256, "linear") == pytest.approx(2e-3)
    assert S.scaled_lr(1e-3, 1024, 256, "sqrt") == pytest.approx(2e-3)
    assert S.scaled_lr(1e-3, 1024, 256, "none") == 1e-3
    assert math.isclose(S.cosine(1, 0, 2.0), 0.0)  # progress is clamped
