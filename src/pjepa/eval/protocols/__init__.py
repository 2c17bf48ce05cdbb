"""Evaluation protocols: ``pjepa eval NAME`` for every protocol registered here.

A protocol is one file in this package that calls ``register(Protocol(...))``:
its name, a help line, the command-line arguments it adds and the function
that runs it on a parsed namespace. Every module of the package is imported
below, so a new protocol is one new file and shows up in ``pjepa eval --help``.
"""

from __future__ import annotations

import importlib
import pkgutil

from pjepa.eval.protocols.base import PROTOCOLS, Protocol, add_run_arguments, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["PROTOCOLS", "Protocol", "add_run_arguments", "register"]
