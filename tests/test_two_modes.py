"""The project's hypothesis on a toy: two well-separated modes, one head each.

p(y | h): y = +2 or -2 on both coordinates with probability 1/2 each, whatever h.
The deterministic head, trained with its regression loss, predicts between the
modes (the average); every probabilistic head's samples cover both modes and
leave the middle nearly empty. Parametrised over every registered head, so a
new head is held to it automatically.
"""

import pytest
import torch
from toy import mode_fractions, train_toy, two_mode_batch

from pjepa.heads import HEADS, build_head

D, COND = 2, 8

# Small, fast settings per head (the defaults are sized for real embeddings); name -> (options, steps, lr).
TOY = {
    "deterministic": ({"loss": "mse"}, 300, 3e-3),
    "mdn": ({"components": 3, "hidden": 32}, 300, 3e-3),
    "autoregressive": ({"hidden": 32, "depth": 2, "components": 3}, 300, 3e-3),
    "flow": ({"layers": 4, "hidden": 32}, 400, 3e-3),
    "flow_matching": ({"objective": "flow_matching", "hidden": 32, "fm_blocks": 2}, 300, 3e-3),
    "diffusion": ({"width": 64, "blocks": 2, "sample_steps": 25}, 600, 3e-3),
}
CASES = sorted(set(HEADS.names()) | {"flow_matching"})


def test_every_registered_head_has_a_toy_setting():
    assert set(HEADS.names()) <= set(TOY), "add the new head to TOY"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.slow
def test_two_modes(case, one_thread):
    options, steps, lr = TOY[case]
    torch.manual_seed(0)
    head = build_head("flow" if case == "flow_matching" else case, COND, D, **options)
    train_toy(head, D, COND, steps=steps, noise=0.1, lr=lr)
    h, _ = two_mode_batch(1000, D, COND, 0.0)
    point = head.predict(h).mean(-1)  # (1, T)
    plus, minus, middle = mode_fractions(head.sample(h, 1, torch.Generator().manual_seed(0)))
    if case == "deterministic":
        assert point.abs().max() < 0.5  # the average of the modes, for every token
        assert middle > 0.99  # its "samples" are the prediction
    else:
        assert plus > 0.3 and minus > 0.3, (plus, minus)  # both modes covered
        assert middle < 0.15, middle  # and not the average between them
