"""``pjepa report RUN... --out DIR``: one self-contained HTML page (figures inlined as PNG data).
``--study DIR`` (and ``pjepa gen study``, into ``DIR/report.html``) adds a generative study's table,
real images, sample grids and decoder reconstructions, read from the study's files.

Sections: the comparison table (``pjepa table``'s rows, headed by the groups its protocols
declare), each protocol's per-run details table (calibration), the registered figures over
runs (loss, kNN@1, sampled distributions, reliability), then each run with its budget,
commit, config and the registered per-run figures (mask layout, imagination, t-SNE,
confusion, MDN statistics). A figure a run lacks what it needs for (imagination of MAE) is
left out and named; one that cannot be made says why on the page. The PNGs are also written
beside the page.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from pjepa.atomic import atomic_write_text
from pjepa.errors import ConfigError, PJepaError
from pjepa.eval.protocols import Protocol, protocols_in_order, table_columns
from pjepa.eval.table import cell, expand_run_dirs, noise_metric, noise_rule, table_rows
from pjepa.runs import Run
from pjepa.viz.common import DEFAULT_DPI, run_label, run_name, save_figure
from pjepa.viz.figures import FIGURES
from pjepa.viz.tensorboard import write_tensorboard

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 5px;text-align:right}
th{background:#f3f3f3;text-align:center}td:first-child{text-align:left}.wrap{overflow-x:auto}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}figcaption{font-size:13px;color:#444;max-width:60em}
.note{color:#a33;font-size:13px}pre{background:#f7f7f7;padding:1em;font-size:12px;overflow:auto}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em}.meta{color:#555;font-size:13px}nav li{font-size:14px}"""

#: The comparison tables' columns: (group, full name) of each table column. The budget and the scores go
#: in two tables so that each fits a 1,280-pixel window; the scores' names are the protocols' (``score_columns``).
BUDGET_COLUMNS = {"run": ("", "run"), "n": ("", "n"), "seeds": ("", "seeds"), "method": ("", "method"),
                  "head": ("", "head"), "epochs": ("budget", "epochs"), "steps": ("budget", "steps"),
                  "batch": ("budget", "batch"), "lr": ("budget", "peak lr"), "precision": ("budget", "precision"),
                  "wall_min": ("budget", "training (min)")}


def score_columns() -> dict[str, tuple[str, str]]:
    """The scores table's columns: (group, full name) of each column the protocols declare, in table order
    with the columns of one group side by side (in the order the groups first appear), then ``vs_best``."""
    groups: dict[str, list[tuple[str, tuple[str, str]]]] = {}
    for _, col in table_columns():
        groups.setdefault(col.header[0], []).append((col.name, col.header))
    return {"run": ("", "run"), **{name: header for cols in groups.values() for name, header in cols},
            "vs_best": ("", "against the best")}


def _png_width(data: bytes) -> int | None:
    """A PNG's width in pixels from its header (None for anything else)."""
    return int.from_bytes(data[16:20], "big") if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 else None


def _img(path: Path, alt: str, caption: str = "", dpi: int = 100) -> str:
    """A figure inlined as PNG, shown at the size it would have at 100 dpi (a 200-dpi PNG is sharp on
    high-density screens without taking twice the page), with its caption."""
    raw = path.read_bytes()
    width = _png_width(raw)
    style = f' style="width:{round(width * 100 / dpi)}px"' if width else ""
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    data = base64.b64encode(raw).decode()
    return f'<figure><img alt="{html.escape(alt)}"{style} src="data:image/png;base64,{data}">{cap}</figure>'


def _grouped_table(names: dict[str, tuple[str, str]], rows: Sequence[dict[str, Any]]) -> str:
    """The columns of ``names`` that some row has, under a header row of their groups (colspans)."""
    cols = [c for c in names if c == "run" or any(r.get(c) is not None for r in rows)]
    groups: list[list[Any]] = []
    for c in cols:
        g = names[c][0]
        if groups and groups[-1][0] == g:
            groups[-1][1] += 1
        else:
            groups.append([g, 1])
    top = "".join(f'<th colspan="{n}">{html.escape(g)}</th>' for g, n in groups)
    head = "".join(f"<th>{html.escape(names[c][1])}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(r, c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<div class="wrap"><table><tr>{top}</tr><tr>{head}</tr>{body}</table></div>'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class Log(list):
    """The report's one line per figure, echoed as it is made when given a printer."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.echo = echo

    def append(self, line: str) -> None:
        super().append(line)
        if self.echo is not None:
            self.echo(line)


def _save_made(make: Callable[[Any], Any], what: Any, path: Path, dpi: int, formats: Sequence[str]) -> Path:
    """``make(what)``'s figure written to ``path`` (and its ``formats``)."""
    return save_figure(make(what), path, dpi, formats)


def _attempt(make: Callable[[], Path], alt: str, log: list[str], made: list[Path], caption: str = "",
             dpi: int = DEFAULT_DPI) -> str:
    """The figure's <img> with its caption (its file appended to ``made``), or a note saying why it could
    not be made (a run may lack what it needs: no calibration result, no labels)."""
    t0 = time.perf_counter()
    try:
        path = make()
    except PJepaError as e:
        log.append(f"{alt}: not made ({e})")
        return f'<p class="note">{html.escape(alt)}: not made: {html.escape(str(e))}</p>'
    log.append(f"{alt}: {time.perf_counter() - t0:.1f} s")
    made.append(path)
    return _img(path, alt, caption, dpi)


def details_rows(protocol: Protocol, runs: Sequence[Run]) -> list[list[Any]]:
    """One row per run with the protocol's details result file: the run's name, then each declared field."""
    details = protocol.details
    if details is None:
        return []
    rows = []
    for run in runs:
        result = run.eval_result(protocol.stem(details.result))
        if not isinstance(result, dict):
            continue
        rows.append([run.name] + [_fmt(read(result)) for _, read in details.fields])
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _run_section(run: Run, figs: Path, log: list[str], made: list[Path], formats: Sequence[str] = (),
                 dpi: int = DEFAULT_DPI) -> str:
    info, rows = run.info, [r for r in run.metrics() if "train/loss" in r]
    last = rows[-1] if rows else {}
    budget = (f"{last.get('step', 0)} steps, {last.get('epoch', 0):.2f} epochs, global batch "
              f"{info.get('global_batch', '?')}, {last.get('wall_seconds', 0) / 60:.1f} min of training on "
              f"{info.get('device', '?')} (torch {info.get('torch', '?')}); commit {info.get('git_commit', '?')}")
    parts = [f'<h2 id="{_anchor(run_name(run))}">{html.escape(run_label(run))}</h2>',
             f'<p class="meta">{html.escape(str(run.path))}: {html.escape(budget)}</p>']
    skipped = []
    for f in FIGURES.values():
        if f.over_runs:
            continue
        if f.applies(run):
            stem = run_name(run).replace("/", "-")
            parts.append(_attempt(partial(_save_made, f.make, run, figs / f"{stem}-{f.name}.png", dpi, formats),
                                  f"{run_name(run)}: {f.help}", log, made, f.caption,
                                  dpi))
        else:
            skipped.append(f"{f.name} (needs {f.needs.describe()})")
    if skipped:
        parts.append(f'<p class="note">Figures this run cannot have: {html.escape("; ".join(skipped))}.</p>')
    config = (run.path / "config.yaml").read_text()
    parts.append(f"<details><summary>config.yaml</summary><pre>{html.escape(config)}</pre></details>")
    return "\n".join(parts)


#: a study's images, per compared run folder: (file, caption)
STUDY_RUN_IMAGES = [("samples_uncond.png", "unconditional samples"), ("samples_cond.png", "class-conditional samples"
                     " (a row per class)"), ("reconstructions.png", "pixel decoder: targets (top row), then its "
                                                                     "reconstructions over training steps")]


def study_section(study: str | Path) -> str:
    """HTML for a ``pjepa gen study`` folder: its table (``table.json``, with the lines of ``table.md`` that say
    which networks computed the metrics), the real reference grid and each run's grids. Reads files only."""
    study = Path(study)
    if not (study / "table.json").is_file():
        raise ConfigError(f"{study}: no table.json: not a finished `pjepa gen study` folder (rerun the same "
                          "pjepa gen study command to finish it)")
    table = json.loads((study / "table.json").read_text())
    rows = table["rows"]
    header = [k for k in rows[0]] if rows else []
    for row in rows[1:]:
        header += [k for k in row if k not in header]
    notes = [ln for ln in (study / "table.md").read_text().splitlines() if ln and not ln.startswith("|")] \
        if (study / "table.md").is_file() else []
    parts = [f'<h2 id="{_anchor("study-" + study.name)}">Generative study: {html.escape(study.name)}</h2>',
             *(f'<p class="meta">{html.escape(n)}</p>' for n in notes),
             _table(header, [[_fmt(r.get(k)) for k in header] for r in rows])]
    if (study / "real.png").is_file():
        parts += ["<h3>Real reference images</h3>", _img(study / "real.png", "real images")]
    for name in dict.fromkeys(r["run"] for r in rows):
        parts.append(f"<h3>{html.escape(name)}</h3>")
        for file, caption in STUDY_RUN_IMAGES:
            path = study / name / file
            parts.append(f"<p>{html.escape(caption)}</p>" + _img(path, f"{name}: {caption}") if path.is_file()
                         else f'<p class="note">{html.escape(name)}: no {file} (stage not run yet)</p>')
    return "\n".join(parts)


def write_study_report(study: str | Path, title: str | None = None) -> Path:
    """``STUDY/report.html``: the study's section on a page of its own; returns its path."""
    study = Path(study)
    title = title or f"pjepa generative study: {study.name}"
    path = study / "report.html"
    atomic_write_text(path, _page(title, [f"<h1>{html.escape(title)}</h1>", study_section(study)]))
    return path


def _anchor(text: str) -> str:
    return "s-" + "".join(ch if ch.isalnum() else "-" for ch in text.lower())


def _toc(parts: Sequence[str]) -> str:
    """A table of contents of the page's <h2 id=...> sections."""
    import re

    items = re.findall(r'<h2 id="([^"]+)">(.*?)</h2>', "".join(parts))
    links = "".join(f'<li><a href="#{a}">{t}</a></li>' for a, t in items)
    return f"<nav><strong>Contents</strong><ul>{links}</ul></nav>" if items else ""


def _page(title: str, parts: Sequence[str]) -> str:
    body = [parts[0], _toc(parts), *parts[1:]] if parts else []
    return (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>")


def _runs_parts(runs: Sequence[Run], figs: Path, log: Log, tensorboard: bool, formats: Sequence[str] = (),
                dpi: int = DEFAULT_DPI) -> list[str]:
    """The runs' sections: comparison and calibration tables, figures over runs, then each run."""
    rows = table_rows([r.path for r in runs])
    parts = [f'<p class="meta">{len(runs)} runs; made {dt.datetime.now().isoformat(timespec="seconds")}</p>',
             '<h2 id="s-comparison">Comparison</h2>', "<h3>What trained, and for how long</h3>",
             _grouped_table(BUDGET_COLUMNS, rows), "<h3>Scores (mean ± std over seeds)</h3>",
             _grouped_table(score_columns(), rows)]
    if (col := noise_metric(rows)) is not None:
        first = rows[0] if rows else {}
        rule = noise_rule(col, first.get("vs_best_correction", "holm"), first.get("vs_best_tests"))
        parts.append(f'<p class="meta">{html.escape(rule)}</p>')
    for protocol in protocols_in_order():  # each protocol's own per-run table (calibration's)
        found = details_rows(protocol, runs)
        if found and protocol.details is not None:
            parts += [f'<h2 id="{_anchor(protocol.details.anchor)}">{html.escape(protocol.details.title)}</h2>',
                      _table(["run"] + [h for h, _ in protocol.details.fields], found)]
    parts.append('<h2 id="s-over-runs">Over runs</h2>')
    shared: list[Path] = []
    for f in FIGURES.values():
        if not f.over_runs:
            continue
        parts.append(_attempt(partial(_save_made, f.render, runs, figs / f"{f.name}.png", dpi, formats), f.help,
                              log, shared, f.caption, dpi))
    for run in runs:
        own: list[Path] = []
        parts.append(_run_section(run, figs, log, own, formats, dpi))
        if tensorboard:
            write_tensorboard(run, shared + own)
    return parts


def write_report(run_dirs: Sequence[str | Path], out: str | Path, title: str = "pjepa report",
                 tensorboard: bool = True, echo: Callable[[str], None] | None = None,
                 studies: Sequence[str | Path] = (), formats: Sequence[str] = (),
                 dpi: int = DEFAULT_DPI) -> tuple[Path, list[str]]:
    """Write ``out/index.html`` (and the figures' PNGs beside it); returns (page, one line per figure).
    With ``tensorboard``, each run's hparams and its figures also go to ``RUN/tb/{hparams,figures}``;
    ``echo`` (e.g. print) gets each figure's line as soon as it is made. ``studies``: ``pjepa gen study``
    folders whose tables and grids follow the runs (with no runs, the page holds only them). The page inlines
    each figure as a PNG at ``dpi``; ``formats`` (pdf, svg) also writes each figure in those formats."""
    runs = [Run(d) for d in expand_run_dirs(list(run_dirs))]  # a sweep folder stands for its runs
    if not runs and not studies:
        raise ConfigError("pjepa report needs at least one run directory (or --study DIR)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(echo)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if runs:
        parts += _runs_parts(runs, out / "figures", log, tensorboard, formats, dpi)
    parts += [study_section(st) for st in studies]
    path = out / "index.html"
    atomic_write_text(path, _page(title, parts))
    return path, log
