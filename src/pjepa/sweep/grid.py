"""The grid of a sweep: which overrides vary, the runs they make and the runs' names.

    pjepa sweep ... head.name=deterministic,mdn optim.lr=1e-3 train.seed=0,1

Every override whose value has a comma at the top level (not inside ``[]``, ``{}`` or
quotes) is an axis: ``train.ema=[0.99,1.0]`` is one value, ``train.ema=[0.99,1.0],[0.996,1.0]``
two. An override with one value is applied to every run. The runs are the Cartesian product
of the axes, in command-line order (the last axis varies fastest). Each run keeps the
overrides in the order they were given: switching a plug-in (``head.name=mdn``) drops the
options before it, so order matters (``pjepa.config.merge``).

A key given twice keeps its later values (as for ``pjepa train``). A run's name is built
from the varying keys only (``head.name-mdn_seed1``), with
``train.seed`` last as ``seedN`` so that ``pjepa table`` groups a row's seeds (it strips a
trailing ``_seedN``); characters a file name should not hold become ``-``, and names that
would collide get a short hash of their overrides.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from dataclasses import dataclass

from pjepa.errors import ConfigError

SEED_KEY = "train.seed"
MAX_NAME = 100  # characters of a run name before it is shortened (+ a hash): file systems allow 255
MAX_RUNS = 1000  # a grid larger than this needs --max-runs: a typo in a range should not queue a million runs
_OPEN, _CLOSE = "[{", "]}"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
_UNSAFE_ENDS = re.compile(r"^[^A-Za-z0-9_.+-]+|[^A-Za-z0-9_.+-]+$")


def split_top_level(raw: str, where: str) -> list[str]:
    """``raw`` cut at the commas outside brackets, braces and quotes: 'a,[1,2],{b: 3}' -> ['a', '[1,2]', '{b: 3}'].
    ``where`` names the override in the error for unbalanced brackets or quotes."""
    parts, depth, quote, start = [], [], None, 0
    for i, ch in enumerate(raw):
        if quote is not None:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth.append(_CLOSE[_OPEN.index(ch)])
        elif ch in _CLOSE:
            if not depth or depth.pop() != ch:
                raise ConfigError(f"override {where!r}: unmatched {ch!r} at character {i + 1}")
        elif ch == "," and not depth:
            parts.append(raw[start:i])
            start = i + 1
    if depth or quote is not None:
        raise ConfigError(f"override {where!r}: unclosed {quote or depth[-1]!r}; close it or quote the value")
    return parts + [raw[start:]]


@dataclass(frozen=True)
class Override:
    """One command-line override: its key and its values (more than one: an axis of the grid)."""

    key: str
    values: tuple[str, ...]

    @property
    def is_axis(self) -> bool:
        return len(self.values) > 1


def parse_grid(overrides: list[str]) -> list[Override]:
    """``key=v1,v2,...`` items -> Overrides, in order; a ConfigError names a malformed item, an empty value
    in a list (``key=`` alone stays one empty value, as for pjepa train) or a value listed twice. A key
    given again replaces the earlier one (later wins, as for pjepa train): shared overrides can come
    first and the grid after them."""
    out: list[Override] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
            raise ConfigError(f"override {item!r} must look like key.sub=value or key.sub=v1,v2,...")
        out = [o for o in out if o.key != key]
        values = tuple(v.strip() for v in split_top_level(raw, item))
        if len(values) > 1 and not all(values):
            raise ConfigError(f"override {item!r}: an empty value in the list; remove the extra comma")
        if len(set(values)) < len(values):
            raise ConfigError(f"override {item!r}: a value is listed twice; list each once")
        out.append(Override(key, values))
    return out


@dataclass(frozen=True)
class GridPoint:
    """One run of the sweep: its directory name, every override it trains with, and the varying ones."""

    name: str
    overrides: tuple[str, ...]
    varying: tuple[str, ...]


def _clean(text: str) -> str:
    """A file-name-safe form of a key or value: '[0.99, 1.0]' -> '0.99-1.0', '-1' -> '-1', '' -> 'empty'."""
    return _UNSAFE.sub("-", _UNSAFE_ENDS.sub("", text)) or "empty"


def _short_hash(items: tuple[str, ...]) -> str:
    return hashlib.sha1("\0".join(items).encode()).hexdigest()[:8]


def _name(axes: list[Override], values: tuple[str, ...], stem: str) -> tuple[str, str]:
    """(name without the seed part, seed part or '') of one point."""
    parts = [f"{_clean(o.key)}-{_clean(v)}" for o, v in zip(axes, values) if o.key != SEED_KEY]
    seed = [f"seed{_clean(v)}" for o, v in zip(axes, values) if o.key == SEED_KEY]
    body = "_".join(parts) or _clean(stem).lstrip(".-") or "run"  # a seeds-only sweep: the config's name, _seedN
    if len(body) > MAX_NAME:
        body = body[: MAX_NAME - 9].rstrip("-_.") + "-" + _short_hash(values)
    return body, seed[0] if seed else ""


def grid_points(items: list[Override], stem: str, max_runs: int = MAX_RUNS) -> list[GridPoint]:
    """The Cartesian product of the axes in ``items`` (command-line order; one point if none), each with
    a unique, readable name; ``stem`` (the config's file name) names a sweep that varies only the seed.
    A grid of more than ``max_runs`` points is a ConfigError before any is built."""
    axes = [o for o in items if o.is_axis]
    size = math.prod(len(o.values) for o in axes)
    if size > max_runs:
        shape = " x ".join(f"{len(o.values)} ({o.key})" for o in axes)
        raise ConfigError(f"the grid has {size:,} runs ({shape}), more than --max-runs {max_runs:,}: check the "
                          f"values, or pass --max-runs {size} if you mean it")
    points = []
    for combo in itertools.product(*(o.values for o in axes)):
        chosen = dict(zip((o.key for o in axes), combo))
        overrides = tuple(f"{o.key}={chosen.get(o.key, o.values[0])}" for o in items)
        varying = tuple(f"{k}={v}" for k, v in chosen.items())
        points.append((combo, overrides, varying))
    names = [_name(axes, combo, stem) for combo, _, _ in points]
    full = ["_".join(p for p in n if p) for n in names]
    out = []
    for (_, overrides, varying), (body, seed), name in zip(points, names, full):
        if full.count(name) > 1:  # e.g. 'a/b' and 'a-b' clean to the same text: tell them apart by a hash
            body = f"{body}-{_short_hash(varying)}"
        out.append(GridPoint("_".join(p for p in (body, seed) if p), overrides, varying))
    return out
