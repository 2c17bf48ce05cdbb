"""``pjepa presets``: list the built-in presets (``pjepa.presets``)."""

from __future__ import annotations

import argparse

NAME = "presets"
OVERRIDES = False


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("presets", help="list the built-in presets (usable as --config NAME)")


def run(args: argparse.Namespace) -> int:
    from pjepa.presets import list_presets

    presets = list_presets()
    width = max(len(name) for name, _ in presets)
    for name, line in presets:
        print(f"{name:<{width}}  {line}")
    return 0
