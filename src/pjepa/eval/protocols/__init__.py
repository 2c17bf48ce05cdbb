"""Evaluation protocols: ``pjepa eval NAME`` for every protocol registered here.

A protocol is one file in this package that registers a ``Protocol`` with
``PROTOCOLS.register("name")(Protocol("name", ...))``: its name, a help line, the
command-line arguments it adds, the function that runs it on a parsed namespace, and
what it produces (result files, table columns; ``outputs``). Every module of the
package is imported below, so a new protocol is one new file: it shows up in
``pjepa eval --help``, ``pjepa sweep --eval``, ``pjepa table``, TensorBoard and the report.
"""

from __future__ import annotations

from pjepa.eval.protocols.base import (
                                       PROTOCOLS,
                                       Protocol,
                                       add_run_arguments,
                                       find_result,
                                       protocols_in_order,
                                       rated_columns,
                                       register,
                                       result_files,
                                       table_columns,
                                       tensorboard_columns,
)
from pjepa.eval.protocols.outputs import BASELINES, Baseline, Column, Details, ResultFile
from pjepa.registry import import_modules

import_modules(__name__, __path__)  # each protocol module registers itself

__all__ = ["BASELINES", "PROTOCOLS", "Baseline", "Column", "Details", "Protocol", "ResultFile", "add_run_arguments",
           "find_result", "protocols_in_order", "rated_columns", "register", "result_files", "table_columns",
           "tensorboard_columns"]
