"""Pickle-free training-state files: round trips, type tags, errors, atomic writes (``pjepa.atomic``: test_atomic.py)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from pjepa import atomic
from pjepa.errors import CheckpointError
from pjepa.runs import state_io
from pjepa.runs.state_io import load_tree, save_tree


def _assert_same(a, b) -> None:
    """Deep equality with types: tuple != list, int keys != str keys, tensors bit-equal."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def _adamw_after_two_steps() -> tuple[torch.nn.Module, torch.optim.AdamW]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.05)
    for _ in range(2):
        _step(model, opt)
    return model, opt


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad()
    model(torch.ones(5, 4)).pow(2).sum().backward()
    opt.step()


def test_adamw_state_round_trip_gives_identical_next_step(tmp_path: Path) -> None:
    model, opt = _adamw_after_two_steps()
    state = opt.state_dict()
    save_tree(tmp_path / "opt.safetensors", state)
    loaded = load_tree(tmp_path / "opt.safetensors")
    _assert_same(state, loaded)
    assert loaded["param_groups"][0]["betas"] == (0.9, 0.95)  # tuple, not list
    assert sorted(loaded["state"]) == [0, 1, 2, 3]  # int param ids

    model2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model2.load_state_dict(model.state_dict())
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1.0)
    opt2.load_state_dict(loaded)
    _step(model, opt)
    _step(model2, opt2)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_rng_states_round_trip(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(123)
    torch.rand(3, generator=gen)  # advance it past the seed state
    tree = {"cpu": torch.get_rng_state(), "gen": gen.get_state(), "epoch": 3}
    save_tree(tmp_path / "rng.safetensors", tree)
    loaded = load_tree(tmp_path / "rng.safetensors")
    _assert_same(tree, loaded)
    assert loaded["cpu"].dtype == torch.uint8
    fresh = torch.Generator()
    fresh.set_state(loaded["gen"])
    assert torch.equal(torch.rand(5, generator=fresh), torch.rand(5, generator=gen))


def test_scalars_containers_and_dtypes_round_trip(tmp_path: Path) -> None:
    base = torch.arange(12.0).reshape(3, 4)
    tree = {
        "nested": {0: {1: [1, 2.5], "x": (True, False, None)}, -7: "neg", "0": "string zero"},
        "floats": [float("nan"), float("inf"), -float("inf"), 0.1, -0.0, 1e-310],
        "big_int": 2**70,
        "empty": {"list": [], "tuple": (), "dict": {}},
        "bf16": torch.randn(3, 2).bfloat16(),
        "scalar": torch.tensor(7, dtype=torch.int64),
        "bool_t": torch.tensor([True, False]),
        "transposed": base.T,  # non-contiguous
        "view_a": base[0],  # two views sharing one storage
        "view_b": base[1:],
        "same_twice": [base, base],
        "unicode key é": "value ✓",
    }
    save_tree(tmp_path / "t.safetensors", tree)
    loaded = load_tree(tmp_path / "t.safetensors")
    _assert_same(tree, loaded)
    assert math.copysign(1.0, loaded["floats"][4]) == -1.0
    assert loaded["scalar"].dim() == 0
    assert loaded["transposed"].is_contiguous()


def test_tensor_only_and_scalar_only_roots(tmp_path: Path) -> None:
    for i, tree in enumerate([torch.ones(2), 5, None, [], {}]):
        save_tree(tmp_path / f"{i}.st", tree)
        _assert_same(tree, load_tree(tmp_path / f"{i}.st"))


def test_requires_grad_is_dropped_and_map_location(tmp_path: Path) -> None:
    param = torch.nn.Parameter(torch.ones(2))
    save_tree(tmp_path / "p.st", {"w": param})
    loaded = load_tree(tmp_path / "p.st", map_location=torch.device("cpu"))["w"]
    assert type(loaded) is torch.Tensor and not loaded.requires_grad


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"state": {"param_groups": [{"foo": {1, 2}}]}}, "state.param_groups[0].foo: unsupported type set"),
        ({"a": [1, object()]}, "a[1]: unsupported type object"),
        ({(1, 2): 3}, "<root>[(1, 2)]: unsupported dict key type tuple"),
        ({True: 3}, "unsupported dict key type bool"),
        ({"lr x": {1.5: 0}}, "<root>['lr x'][1.5]: unsupported dict key type float"),
        ({"s": torch.ones(2).to_sparse()}, "s: unsupported tensor"),
        (b"bytes", "<root>: unsupported type bytes"),
    ],
)
def test_unsupported_types_name_their_path(tmp_path: Path, tree, message: str) -> None:
    with pytest.raises(TypeError) as info:
        save_tree(tmp_path / "bad.st", tree)
    assert message in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cycle_is_a_type_error(tmp_path: Path) -> None:
    tree: dict = {"a": []}
    tree["a"].append(tree)
    with pytest.raises(TypeError, match="cycle"):
        save_tree(tmp_path / "c.st", tree)


def test_failed_replace_keeps_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "state.safetensors"
    save_tree(target, {"step": 1})
    before = target.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(CheckpointError, match=r"cannot write .*disk full \(simulated\)"):
        save_tree(target, {"step": 2, "w": torch.ones(100)})
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.safetensors"]
    monkeypatch.undo()
    assert load_tree(target) == {"step": 1}


def test_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        load_tree(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("keep", [0, 5, 20, -10, -1])
def test_truncated_file_is_checkpoint_error(tmp_path: Path, keep: int) -> None:
    target = tmp_path / "s.safetensors"
    save_tree(target, {"w": torch.randn(64), "step": 3})
    data = target.read_bytes()
    target.write_bytes(data[:keep] if keep >= 0 else data[: len(data) + keep])
    with pytest.raises(CheckpointError, match="s.safetensors"):
        load_tree(target)


def test_corrupt_or_foreign_files_are_checkpoint_errors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "plain.st"))  # no pjepa skeleton
    with pytest.raises(CheckpointError, match="not a pjepa state tree"):
        load_tree(tmp_path / "plain.st")
    (tmp_path / "junk.st").write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError, match="junk.st"):
        load_tree(tmp_path / "junk.st")
    bad_skeleton = {"format": state_io.FORMAT, "tree": '{"type": "tensor", "key": "t9"}'}
    save_file({"t0": torch.ones(1)}, str(tmp_path / "bad.st"), metadata=bad_skeleton)
    with pytest.raises(CheckpointError, match="corrupt or incomplete"):
        load_tree(tmp_path / "bad.st")
