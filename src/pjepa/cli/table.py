"""``pjepa table``: the kNN@1 table of run directories (``pjepa.eval.table``)."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "table"
OVERRIDES = False


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help="kNN@1 table of run directories (both votes, budgets, head metrics)")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="run directories, folders of runs (a pjepa sweep --out) standing for their runs, or per-run "
                        "CSV files (--per-run) standing for the runs they list")
    p.add_argument("--format", choices=["md", "csv", "both"], default="both")
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write the CSV to FILE")
    p.add_argument("--per-run", action="store_true",
                   help="the CSV (printed and --csv) has one row per run and seed instead of one per group: what the "
                        "grouped table and its statistics are computed from; `pjepa table FILE.csv` groups it again")
    p.add_argument("--pairs", action="store_true",
                   help="also print every pair of rows under Welch's t-test over seeds (p-values and verdicts)")
    p.add_argument("--against", metavar="ROW",
                   help="also print every trained row against this one (its run label as the table shows it, e.g. "
                        "deterministic/s*): the many-to-one tests, one family for --correct (does any row beat it?)")
    p.add_argument("--by", metavar="COLUMN",
                   help="the column vs_best, --pairs and --against compare on (default knn); knn_val for a choice, "
                        "which must read the validation split")
    p.add_argument("--correct", choices=["auto", "holm", "none"], default="auto",
                   help="multiple-comparison correction of the vs_best, --pairs and --against p-values: holm "
                        "(Holm-Bonferroni step-down over the family of tests: the rows tested against the best; "
                        "every pair for --pairs; the rows tested against ROW for --against), none (raw p-values), auto (default: holm when the family has "
                        "more than one test). Verdicts read the corrected p; the CSV also has the raw one")


def run(args: argparse.Namespace) -> int:
    from pjepa.eval.table import against_markdown, pairs_markdown, per_run_csv, table_rows, to_csv, to_markdown

    if args.csv is not None:
        from pjepa.runs.writable import writable_file

        writable_file(args.csv, "--csv")
    rows = table_rows(args.runs, args.by, args.correct)
    csv_text = per_run_csv(args.runs) if args.per_run else to_csv(rows)
    # before anything is printed: a misspelt --against row is an error, not a table and then an error
    against = None if args.against is None else against_markdown(rows, args.against, args.by, args.correct)
    if args.format in ("md", "both"):
        print(to_markdown(rows, args.by))
    if args.format in ("csv", "both"):
        print(csv_text, end="")
    if args.pairs:
        print("\n" + pairs_markdown(rows, args.by, args.correct), end="")
    if against is not None:
        print("\n" + against, end="")
    if args.csv is not None:
        args.csv.write_text(csv_text)
        print(f"wrote {args.csv}")
    return 0
