"""Non-executable serialisation of training state (optimizer, RNG, counters).

``torch.save`` pickles, and unpickling a checkpoint can run arbitrary code.
Here a "tree" of nested containers is written as ONE safetensors file: every
tensor is stored under a key "t0", "t1", ... and the structure around them is a
JSON skeleton kept in the file's ``__metadata__``. One file means one atomic
write: a crash mid-save leaves the previous file (or none), never half a file.

Supported tree nodes:
    containers: dict (keys str or int, e.g. optimizer state uses int param
        ids), list, tuple (kept distinct from list, e.g. AdamW ``betas``);
    leaves: torch.Tensor (any shape incl. 0-dim; dtypes in ``TENSOR_DTYPES``),
        int, float (incl. nan/inf, round-tripped exactly), bool, str, None.

Tensors are copied to CPU and made contiguous on save; views of one storage
and non-contiguous tensors are fine, but aliasing is not preserved (two
references to one tensor load as two equal tensors). ``requires_grad`` is
dropped. Anything else raises TypeError naming its path in the tree.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from pjepa.atomic import atomic_write_bytes
from pjepa.errors import CheckpointError

FORMAT = "pjepa.state_tree/1"
_FORMAT_KEY = "format"
_TREE_KEY = "tree"
_DTYPE_NAMES = (
    "float64", "float32", "float16", "bfloat16", "complex64",
    "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8", "bool",
    "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
)
TENSOR_DTYPES: frozenset[torch.dtype] = frozenset(
    getattr(torch, name) for name in _DTYPE_NAMES if hasattr(torch, name)
)


def _child_path(path: str, key: object) -> str:
    """Readable path of a child: ``state[0].exp_avg``, ``param_groups[1]['lr x']``."""
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path or '<root>'}[{key!r}]"


def _to_cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A dense, contiguous CPU tensor owning its own storage (safe for safetensors)."""
    tensor = tensor.detach()
    if tensor.device.type == "cpu":
        return tensor.clone(memory_format=torch.contiguous_format)
    return tensor.to("cpu").contiguous()


def _encode_tensor(node: torch.Tensor, path: str, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Store ``node`` under the next free key "t<i>"; returns its skeleton node."""
    if node.layout != torch.strided or node.dtype not in TENSOR_DTYPES:
        raise TypeError(
            f"{path or '<root>'}: unsupported tensor (dtype {node.dtype}, layout {node.layout}); "
            "only dense tensors of the dtypes in pjepa.runs.state_io.TENSOR_DTYPES can be saved"
        )
    key = f"t{len(tensors)}"
    tensors[key] = _to_cpu_copy(node)
    return {"type": "tensor", "key": key}


def _encode_leaf(node: Any, path: str) -> dict[str, Any]:
    """Skeleton node of a scalar leaf (bool checked before int: bool is an int)."""
    if node is None:
        return {"type": "none"}
    if isinstance(node, bool):
        return {"type": "bool", "value": node}
    if isinstance(node, int):
        return {"type": "int", "value": int(node)}
    if isinstance(node, float):
        return {"type": "float", "value": repr(float(node))}  # repr round-trips, incl. nan/inf
    if isinstance(node, str):
        return {"type": "str", "value": str(node)}
    raise TypeError(f"{path or '<root>'}: unsupported type {type(node).__name__}")


def _encode(node: Any, path: str, tensors: dict[str, torch.Tensor], active: set[int]) -> dict[str, Any]:
    """JSON skeleton of ``node``; tensors are moved into ``tensors``.

    ``active`` holds the ids of the containers on the current path (cycle check).
    """
    if isinstance(node, torch.Tensor):
        return _encode_tensor(node, path, tensors)
    if not isinstance(node, (dict, list, tuple)):
        return _encode_leaf(node, path)
    if id(node) in active:
        raise TypeError(f"{path or '<root>'}: the tree contains a reference cycle")
    active.add(id(node))
    if isinstance(node, dict):
        items = []
        for key, value in node.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"{_child_path(path, key)}: unsupported dict key type {type(key).__name__}")
            items.append([key, _encode(value, _child_path(path, key), tensors, active)])
        encoded: dict[str, Any] = {"type": "dict", "items": items}
    else:
        kind = "tuple" if isinstance(node, tuple) else "list"
        children = [_encode(v, _child_path(path, i), tensors, active) for i, v in enumerate(node)]
        encoded = {"type": kind, "items": children}
    active.discard(id(node))
    return encoded


def _decode(node: Any, tensors: dict[str, torch.Tensor], device: torch.device) -> Any:
    """Rebuild a tree from its skeleton; KeyError/TypeError/ValueError if malformed."""
    kind = node["type"]
    if kind == "tensor":
        return tensors[node["key"]].to(device)
    if kind == "dict":
        return {_decode_key(k): _decode(v, tensors, device) for k, v in node["items"]}
    if kind in ("list", "tuple"):
        children = [_decode(v, tensors, device) for v in node["items"]]
        return tuple(children) if kind == "tuple" else children
    scalars: dict[str, Callable[[Any], Any]] = {"none": lambda v: None, "bool": bool, "int": int, "float": float,
                                                "str": str}
    if kind not in scalars:
        raise ValueError(f"unknown node type {kind!r}")
    return scalars[kind](node.get("value"))


def _decode_key(key: Any) -> str | int:
    """Dict keys are JSON strings or integers, exactly as saved."""
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise ValueError(f"bad dict key {key!r}")
    return key


def save_tree(path: str | Path, tree: Any) -> None:
    """Save a tree of containers, tensors and scalars to one safetensors file, atomically.

    Raises TypeError (naming the path in the tree, e.g.
    ``state.param_groups[0].foo: unsupported type set``) before anything is written.
    """
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(tree, "", tensors, set())
    metadata = {_FORMAT_KEY: FORMAT, _TREE_KEY: json.dumps(skeleton, allow_nan=False)}
    atomic_write_bytes(path, _st_save(tensors, metadata=metadata))


def _read_metadata(data: bytes, path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors buffer: u64 little-endian header size, JSON header."""
    if len(data) < 8:
        raise CheckpointError(f"{path} is truncated ({len(data)} bytes): not a safetensors file")
    (header_size,) = struct.unpack("<Q", data[:8])
    if header_size > len(data) - 8:
        raise CheckpointError(f"{path} is truncated: header needs {header_size} bytes")
    try:
        header = json.loads(data[8 : 8 + header_size])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} has a corrupt safetensors header: {err}") from err
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or metadata.get(_FORMAT_KEY) != FORMAT:
        raise CheckpointError(f"{path} is not a pjepa state tree file (format {FORMAT!r} expected)")
    return metadata


def read_scalars(path: str | Path) -> dict[str, Any]:
    """The top-level scalar leaves (int, float, bool, str, None) of a dict tree written by :func:`save_tree`,
    read from the file's header alone: no tensor is loaded (a sweep asks every run for its step, and an
    optimiser state can be gigabytes). CheckpointError naming ``path`` if it is missing or not a state tree."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            data = head + f.read(min(size, 100_000_000))  # a header, never tensor bytes
    except OSError as e:
        raise CheckpointError(f"cannot read state file {path}: {e.strerror or e}") from None
    metadata = _read_metadata(data, path)
    try:
        skeleton = json.loads(metadata[_TREE_KEY])
        items = skeleton["items"] if skeleton["type"] == "dict" else []
        scalars = {"none", "bool", "int", "float", "str"}
        return {k: _decode(v, {}, torch.device("cpu")) for k, v in items if v["type"] in scalars}
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} has a corrupt state tree header: {type(err).__name__}: {err}") from err


def load_tree(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a tree written by :func:`save_tree`; tensors go to ``map_location``.

    Never unpickles. Reads the whole file into memory (transient peak ~2x the
    tensor bytes). Raises CheckpointError naming ``path`` if it is missing,
    truncated, corrupt or not a state tree.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"state file {path} does not exist")
    data = path.read_bytes()
    metadata = _read_metadata(data, path)
    try:
        tensors = _st_load(data)
        skeleton = json.loads(metadata[_TREE_KEY])
        return _decode(skeleton, tensors, torch.device(map_location))
    except (SafetensorError, KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError) as err:
        # a crafted or damaged skeleton (wrong types, missing keys, nesting deep enough to exhaust the stack)
        raise CheckpointError(f"{path} is corrupt or incomplete: {type(err).__name__}: {str(err)[:200]}") from None
