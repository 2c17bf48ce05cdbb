"""A small explicit registry: name -> object, filled by decorators at import.

No string imports and no ``globals()[name]``: each registry is filled by the
modules of its package, and ``get`` names the valid choices when a lookup fails.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

from pjepa.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one kind (heads, methods, datasets, presets)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")`` adds the decorated object."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def unregister(self, name: str) -> T:
        """Remove and return entry ``name`` (for tests and throwaway plug-ins)."""
        return self._items.pop(name)

    def get(self, name: str) -> T:
        if name not in self._items:
            choices = ", ".join(sorted(self._items)) or "(none registered)"
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {choices}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


@dataclass(frozen=True)
class Option:
    """One declared option of a plug-in: its type hint (``Any`` when unannotated) and default."""

    type: Any
    default: Any


def declared_options(obj: Callable[..., Any], skip: int) -> dict[str, Option]:
    """The options a plug-in declares: the parameters of ``obj`` after its first ``skip`` ones.

    A plug-in (head, method, mask sampler, dataset loader) declares its options
    by its signature: a name, a type annotation and a default each. ``skip``
    drops what the framework passes itself (a head's ``cond_dim, embed_dim``, a
    loader's ``split, path``). Options without a default are required.
    """
    fn = obj.__init__ if inspect.isclass(obj) else obj
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    params = [p for p in params[skip:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):  # an annotation that cannot be resolved: check names only
        hints = {}
    return {p.name: Option(hints.get(p.name, Any), p.default) for p in params}
