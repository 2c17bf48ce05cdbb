"""The parser every ``pjepa`` (sub)command is built with, and the "did you mean" messages it makes possible.

argparse keeps a parser's options and subcommands to itself; ``Parser`` records them as they are
added (``options``: every option string, its groups' included; ``subcommands``: the action holding
its subparsers, whose ``choices`` map each name to its parser). ``check_typed`` reads only those
records to name a mistyped option or subcommand before argparse runs, with the closest valid
spellings.
"""

from __future__ import annotations

import argparse
import difflib
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that records its option strings and its subcommands (its subparsers are Parsers too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.options: dict[str, None] = {}  # option strings in the order added (a dict: each once)
        self.subcommands: argparse._SubParsersAction | None = None
        super().__init__(*args, **kwargs)  # adds -h/--help through add_argument: recorded too

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return self._record(super().add_argument(*args, **kwargs))

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        return self._recording(super().add_argument_group(*args, **kwargs))

    def add_mutually_exclusive_group(self, **kwargs: Any) -> Any:
        return self._recording(super().add_mutually_exclusive_group(**kwargs))

    def add_subparsers(self, **kwargs: Any) -> argparse._SubParsersAction:
        self.subcommands = super().add_subparsers(**kwargs)
        return self.subcommands

    def _record(self, action: argparse.Action) -> argparse.Action:
        self.options.update(dict.fromkeys(action.option_strings))
        return action

    def _recording(self, group: Any) -> Any:
        """``group`` with its ``add_argument`` (and a mutually exclusive group inside it) recorded here."""
        add_argument, add_exclusive = group.add_argument, group.add_mutually_exclusive_group
        group.add_argument = lambda *args, **kwargs: self._record(add_argument(*args, **kwargs))
        group.add_mutually_exclusive_group = lambda **kwargs: self._recording(add_exclusive(**kwargs))
        return group

    def subcommand(self, token: str) -> Parser | None:
        """The subparser ``token`` names, or None (also for a parser without subcommands)."""
        return self.subcommands.choices.get(token) if self.subcommands else None


def check_typed(parser: Parser, argv: list[str]) -> None:
    """Exit 2 for a word where a subcommand goes that names none, or a ``--option`` the (sub)command it
    follows does not have, naming the closest valid spellings.

    Checked before argparse runs: a mistyped required option (`train --confg X`) would otherwise end
    in "one of the arguments --config --resume is required", which hides the typo."""
    misspelled = _unknown_long_options(parser, argv)
    if misspelled:
        unrecognized(parser, argv, misspelled)


def _unknown_long_options(parser: Parser, argv: list[str]) -> list[str]:
    """The `--options` typed that the (sub)command they follow does not have. A word typed where a
    subcommand goes that names none exits here (`_unknown_subcommand`)."""
    current, unknown, expect_sub = parser, [], True
    for token in argv:
        if token == "--":  # everything after it is positional
            break
        sub = current.subcommand(token)
        if sub is not None:
            current, expect_sub = sub, True
            continue
        if expect_sub and not token.startswith("-"):
            _unknown_subcommand(current, token)  # `eval knnn --run X`: name the word, not the options after it
        expect_sub = False
        if token.startswith("--") and not any(o.startswith(token.split("=")[0]) for o in current.options):
            unknown.append(token)  # (a prefix of a valid option is argparse's abbreviation: left to it)
    return unknown


def _unknown_subcommand(parser: Parser, token: str) -> None:
    """Exit 2 if `parser` takes a subcommand and `token` (the word typed where it goes) is not one of them.

    argparse itself would first report the options after the bad word as unrecognized, which sends the
    user after the wrong mistake (`pjepa eval knnn --run X` -> "unrecognized arguments: --run")."""

    subs = parser.subcommands
    if subs is None or token in subs.choices:
        return
    choices = list(subs.choices)
    close = closest(token, choices)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    parser.error(f"argument {subs.dest}: invalid choice: {token!r} (choose from {', '.join(choices)}){hint}")


def closest(word: str, choices: list[str]) -> list[str]:
    """Up to two valid spellings close to ``word``: the closest, and a second only if it is about as close
    (``--formt`` suggests ``--format``, not also ``--correct``)."""
    close = difflib.get_close_matches(word, choices, n=2, cutoff=0.6)
    score = [difflib.SequenceMatcher(None, word, c).ratio() for c in close]
    return [c for c, r in zip(close, score) if r >= score[0] - 0.1]


def unrecognized(parser: Parser, argv: list[str], unknown: list[str]) -> NoReturn:
    """Exit 2 naming the unknown arguments, with the (sub)command's usage and the closest valid options."""

    current = parser  # follow the subcommands typed (pjepa eval knn ...) to the parser that read the options
    for token in argv:
        current = current.subcommand(token) or current
    valid = [o for o in current.options if o.startswith("--")]
    hints = []
    for u in unknown:
        close = closest(u.split("=")[0], valid) if u.startswith("-") else []
        if close:
            hints.append(f"{u}: did you mean {' or '.join(close)}?")
    current.error(f"unrecognized arguments: {' '.join(unknown)}" + ("; " + "; ".join(hints) if hints else "")
                  + f" (see `{current.prog} --help`)")
