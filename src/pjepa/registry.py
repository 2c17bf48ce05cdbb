"""A small explicit registry: name -> object, filled by decorators at import.

Every plug-in kind (datasets, mask samplers, methods, heads, regularisers,
evaluation protocols, figures) is one ``Registry``. A plug-in registers itself in
its own file with ``@REGISTRY.register("name")`` (or ``REGISTRY.register("name")(obj)``),
and its package's ``__init__`` imports every module of the package
(``import_modules``): adding a plug-in is one new file. No string imports and no
``globals()[name]``; ``get`` names the valid choices when a lookup fails.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Generic, TypeVar

from pjepa.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one kind (heads, methods, datasets, protocols, figures).

    ``sort_key`` orders ``names()`` (and iteration) for kinds whose order is shown,
    such as figures on a page; by default names are sorted alphabetically.
    """

    def __init__(self, kind: str, sort_key: Callable[[T], Any] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._sort_key = sort_key

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")`` adds the decorated object. An object that carries its own
        ``name`` (a declared protocol or figure) must carry this one."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            own = None if callable(obj) else getattr(obj, "name", None)  # classes and functions are named here
            if isinstance(own, str) and own != name:
                raise ValueError(f"{self.kind} {own!r} is registered under another name, {name!r}")
            self._items[name] = obj
            return obj

        return add

    def unregister(self, name: str) -> T:
        """Remove and return entry ``name`` (for tests and throwaway plug-ins)."""
        return self._items.pop(name)

    def get(self, name: str) -> T:
        if name not in self._items:
            choices = ", ".join(self.names()) or "(none registered)"
            close = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint}; choose one of: {choices}")
        return self._items[name]

    __getitem__ = get

    def names(self) -> list[str]:
        if self._sort_key is None:
            return sorted(self._items)
        key = self._sort_key
        return sorted(self._items, key=lambda name: (key(self._items[name]), name))

    def values(self) -> list[T]:
        """The registered objects, in ``names()`` order."""
        return [self._items[name] for name in self.names()]

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._items[name]) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def import_modules(package: str, path: Iterable[str]) -> list[ModuleType]:
    """Import every module of ``package`` (its ``__name__``, ``__path__``), in name order, so that each
    plug-in module registers itself; a package's ``__init__`` calls it once. Subpackages are imported
    too (their own ``__init__`` imports their modules)."""
    return [importlib.import_module(f"{package}.{m.name}") for m in pkgutil.iter_modules(list(path))]


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
