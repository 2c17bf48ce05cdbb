"""Arguments several commands share: ``--threads N``, ``--config FILE|PRESET`` and the dotted overrides."""

from __future__ import annotations

import argparse


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads N``: CPU threads for the command's computation (training takes train.num_threads)."""
    from pjepa.eval.protocols.base import positive_int

    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU threads to compute with (default: torch's, usually every core; 1 beside other jobs)")


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's CPU threads to ``--threads`` where the command has the flag and it was given."""
    threads = getattr(args, "threads", None)
    if threads:
        import torch

        torch.set_num_threads(threads)


def add_config(p: argparse.ArgumentParser) -> None:
    """``--config FILE|PRESET`` (required) of a command that builds an experiment's config."""
    p.add_argument("--config", required=True, help="experiment YAML, or a preset name (see `pjepa presets`)")


def add_overrides(p: argparse.ArgumentParser, metavar: str, help: str) -> None:
    """The trailing ``key=value`` overrides. Overrides may also come before or after options (`--out DIR
    key=value`): argparse leaves those unparsed, and the dispatcher adds every ``key=value`` left over
    for a command whose module sets ``OVERRIDES``."""
    p.add_argument("overrides", nargs="*", metavar=metavar, help=help)
