"""The generated references of the documentation: every config key and every command.

``config_reference()`` walks the typed schema (``pjepa.config.Config``): each section's
docstring, then one row per key with its type, default and the comment written beside it
in the source; then every registered plug-in (datasets, mask samplers, methods, heads,
regularisers) with the options its signature declares. ``cli_reference()`` is the
``--help`` of every command and subcommand. ``python -m pjepa.cli.reference docs/reference``
rewrites both pages; a test fails when the committed pages differ from what the code gives.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any

from pjepa.cli.parser import Parser
from pjepa.config import Config

#: argparse wraps help to the terminal: a fixed width makes the page the same everywhere.
HELP_WIDTH = "100"


def _type_name(tp: Any) -> str:
    text = getattr(tp, "__name__", None) if not typing.get_args(tp) else None
    text = text or str(tp).replace("typing.", "")
    return text.replace("NoneType", "None")


def _field_comments(cls: type) -> dict[str, str]:
    """``name: type = default  # comment`` lines of a dataclass's source -> {name: comment}."""
    out: dict[str, str] = {}
    above: list[str] = []  # comment lines just above a field
    for line in inspect.getsource(cls).splitlines():
        if line.strip().startswith("#"):
            above.append(line.strip().lstrip("#").strip())
            continue
        m = re.match(r"^\s+(\w+): [^#]*?(?:#\s?(.*))?$", line)
        if m:
            out[m.group(1)] = " ".join(above + ([m.group(2).strip()] if m.group(2) else []))
        above = []
    return out


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "(required)"
    return "" if dataclasses.is_dataclass(value) else f"`{value!r}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _section(cls: type, prefix: str) -> list[str]:
    doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " ")
    out = [f"## `{prefix}`", "", doc, "", "| key | type | default | meaning |", "|---|---|---|---|"]
    hints, comments, nested = typing.get_type_hints(cls), _field_comments(cls), []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            nested.append((tp, f"{prefix}.{f.name}"))
            continue
        out.append(f"| `{prefix}.{f.name}` | `{_cell(_type_name(tp))}` | {_cell(_default(f))} | "
                   f"{_cell(comments.get(f.name, ''))} |")
    out.append("")
    for tp, key in nested:
        out += _section(tp, key)
    return out


def _plugins() -> list[str]:
    from pjepa.checks import PLUGINS
    from pjepa.registry import declared_options

    out = ["# Plug-ins and their options", "",
           "`SECTION.name` picks a registered plug-in; `SECTION.options` are the options its signature declares "
           "(checked, typed and completed with these defaults before anything runs).", ""]
    for section, (registry, skip) in PLUGINS.items():
        out += [f"## `{section}.name`: {registry.kind}s", ""]
        for name in registry.names():
            obj = registry.get(name)
            own = obj.__doc__ or sys.modules[obj.__module__].__doc__ or ""  # a class's own, else its module's
            doc = inspect.cleandoc(own).split("\n\n")[0].replace("\n", " ")
            opts = declared_options(obj, skip)
            shown = ", ".join(f"`{k}`" + ("" if o.default is inspect.Parameter.empty else f" = `{o.default!r}`")
                              for k, o in opts.items()) or "no options"
            out.append(f"- **`{name}`**: {_cell(doc)}  \n  options: {shown}")
        out.append("")
    return out


def config_reference() -> str:
    """The configuration reference page (markdown)."""
    head = ["# Configuration reference", "",
            "Generated from the typed schema (`src/pjepa/config.py`) and the plug-in registries by "
            "`python -m pjepa.cli.reference docs/reference`; a test fails when this page is stale. "
            "How configs compose (presets, `base:` chains, dotted overrides) is in [Configuration](../configuration.md).",
            ""]
    body: list[str] = ["# Schema", ""]
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        body += _section(hints[f.name], f.name)
    return "\n".join(head + body + _plugins()).rstrip() + "\n"


def _walk(parser: Parser, name: str) -> list[tuple[str, Parser]]:
    out = [(name, parser)]
    subs = parser.subcommands
    for sub_name, sub in (subs.choices.items() if subs else []):
        out += _walk(sub, f"{name} {sub_name}")
    return out


def cli_reference() -> str:
    """The command-line reference page (markdown): the ``--help`` of every (sub)command."""
    from pjepa.cli.main import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        parsers = _walk(build_parser(), "pjepa")
        out = ["# Command-line reference", "",
               "Generated from the parsers by `python -m pjepa.cli.reference docs/reference`; a test fails when "
               "this page is stale. Worked examples are in [Usage](../usage.md).", ""]
        for name, parser in parsers:
            out += [f"## `{name}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(out).rstrip() + "\n"


PAGES = {"config.md": config_reference, "cli.md": cli_reference}


def write_references(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in PAGES.items():
        (folder / name).write_text(make())
        written.append(folder / name)
    return written


if __name__ == "__main__":
    for path in write_references(sys.argv[1] if len(sys.argv) > 1 else "docs/reference"):
        print(f"wrote {path}")
