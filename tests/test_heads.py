"""Contract over every registered head, plus the deterministic head's own behaviour."""

import pytest
import torch

from pjepa.errors import ConfigError
from pjepa.heads import HEADS, build_head
from pjepa.heads.deterministic import covariance_loss, variance_loss

B, M, DP, D = 3, 5, 16, 8


# Every registered head at its defaults, plus the option sets that change its code path ("flow" with
# objective flow_matching: the spelling of earlier releases, which builds the flow_matching head).
VARIANTS = [(name, {}, D) for name in HEADS.names()] + [
    ("flow", {"objective": "flow_matching"}, D),
    ("flow", {"objective": "flow_matching", "solver": "euler", "ode_steps": 3}, D),
    ("flow", {"actnorm": False}, D),
    ("flow", {}, 1),  # one coordinate: every coupling is an h-dependent affine map
    ("flow", {"objective": "flow_matching"}, 1),
    ("flow_matching", {"solver": "euler", "ode_steps": 3}, D),
    ("flow_matching", {}, 1),
    ("autoregressive", {"family": "logistic"}, D),
    ("autoregressive", {"actnorm": False}, 1),
    ("mdn", {"components": 1, "hidden": 8}, D),
    ("diffusion", {"attention": True, "width": 16, "num_heads": 2, "sample_steps": 4}, D),
]


@pytest.fixture(params=VARIANTS, ids=lambda v: f"{v[0]}-{v[2]}d" + "".join(f"-{k}={x}" for k, x in v[1].items()))
def head(request, one_thread):
    name, options, dim = request.param
    torch.manual_seed(0)
    return build_head(name, DP, dim, **options)


def test_contract_shapes_finiteness_gradients(head):
    E = head.embed_dim
    h = torch.randn(B, M, DP, requires_grad=True)
    y = torch.randn(B, M, E)
    loss, diag = head.loss(h, y)
    assert loss.shape == () and torch.isfinite(loss)
    assert all(not v.requires_grad for v in diag.values())
    loss.backward()
    assert h.grad is not None and h.grad.abs().sum() > 0  # the loss reaches the trunk
    assert head.predict(h).shape == (B, M, E)
    s = head.sample(h.detach(), 4)
    assert s.shape == (4, B, M, E) and torch.isfinite(s).all()


def test_contract_sampling_is_reproducible(head):
    h = torch.randn(B, M, DP)
    a = head.sample(h, 3, torch.Generator().manual_seed(1))
    b = head.sample(h, 3, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)


def test_contract_log_prob_only_where_exact(head):
    h, y = torch.randn(B, M, DP), torch.randn(B, M, head.embed_dim)
    if head.has_log_prob:
        lp = head.log_prob(h, y)
        assert lp.shape == (B, M) and torch.isfinite(lp).all()
    else:
        with pytest.raises(ConfigError, match="no exact log-likelihood"):
            head.log_prob(h, y)


def test_regularisers_worked_examples():
    x = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])  # std (sqrt 2, 2 sqrt 2): above 1 -> no variance penalty
    assert variance_loss(x) == 0
    assert variance_loss(torch.zeros(4, 3)) == pytest.approx(1 - 1e-2, abs=1e-3)
    # perfectly correlated dimensions: cov = [[2, 4], [4, 8]] -> off-diagonal 2 * 16 / D(2) = 16
    assert covariance_loss(x) == pytest.approx(16.0)


def test_deterministic_losses_and_bad_option():
    h, y = torch.randn(B, M, DP), torch.randn(B, M, D)
    mse = build_head("deterministic", DP, D, loss="mse")
    l, diag = mse.loss(h, y)
    assert l.item() == pytest.approx(((mse.predict(h) - y) ** 2).mean().item(), rel=1e-5)
    reg = build_head("deterministic", DP, D, var_weight=0.1, cov_weight=0.01)
    assert {"align", "var", "cov"} <= set(reg.loss(h, y)[1])
    with pytest.raises(ConfigError, match="head.options.loss"):
        build_head("deterministic", DP, D, loss="l3")
    with pytest.raises(ConfigError, match="rejected head.options"):
        build_head("deterministic", DP, D, temperature=1.0)
