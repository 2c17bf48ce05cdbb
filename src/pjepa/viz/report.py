"""``pjepa report RUN... --out DIR``: one self-contained HTML page (figures inlined as PNG data).
``--study DIR`` (and ``pjepa gen study``, into ``DIR/report.html``) adds a generative study's table,
real images, sample grids and decoder reconstructions, read from the study's files.

Sections: the comparison table (``pjepa table``'s rows), the calibration table, the figures
over runs (loss, kNN@1, sampled distributions, reliability), then each run with its budget,
commit, config and its own figures (mask layout, imagination, t-SNE, confusion, MDN
statistics). A figure that does not apply to a run (imagination of MAE) is left out; one
that cannot be made says why on the page. The PNGs are also written beside the page.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from pjepa.errors import ConfigError, PJepaError
from pjepa.eval.table import COLUMNS, cell, expand_run_dirs, noise_metric, noise_rule, table_rows
from pjepa.runs import Run
from pjepa.runs.state_io import atomic_write_bytes
from pjepa.viz.common import run_label, save_figure
from pjepa.viz.figures import FIGURES
from pjepa.viz.tensorboard import write_tensorboard

OVER_RUNS = ["loss", "knn", "samples", "reliability"]
PER_RUN = ["masks", "mdn", "imagination", "tsne", "confusion"]
CALIBRATION = [("head", "head"), ("nll", "NLL/dim"), ("coverage_50", "cover@0.5"), ("coverage_90", "cover@0.9"),
               ("calibration_error", "mean |cover - level|"), ("crps", "CRPS"), ("point_crps", "CRPS of point"),
               ("energy_score", "energy score"), ("point_energy_score", "ES of point"),
               ("spread_error_spearman", "spread-error rank corr."), ("diversity", "diversity"),
               ("sampling", "s / 1000 tokens")]

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.note{color:#a33;font-size:13px}pre{background:#f7f7f7;padding:1em;font-size:12px;overflow:auto}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em}.meta{color:#555;font-size:13px}"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


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


def _attempt(make: Callable[[], Path], alt: str, log: list[str], made: list[Path]) -> str:
    """The figure's <img> (its file appended to ``made``), or a note saying why it could not be made
    (a run may lack what it needs: no calibration result, no labels)."""
    t0 = time.perf_counter()
    try:
        path = make()
    except PJepaError as e:
        log.append(f"{alt}: not made ({e})")
        return f'<p class="note">{html.escape(alt)}: not made: {html.escape(str(e))}</p>'
    log.append(f"{alt}: {time.perf_counter() - t0:.1f} s")
    made.append(path)
    return _img(path, alt)


def calibration_rows(runs: Sequence[Run]) -> list[list[Any]]:
    rows = []
    for run in runs:
        c = run.eval_result("calibration")
        if c is None:
            continue
        cov = dict(zip(c.get("levels", []), c.get("coverage", [])))
        times = c.get("sample_seconds_per_1000") or {}
        cells = {**c, "coverage_50": cov.get(0.5), "coverage_90": cov.get(0.9),
                 "sampling": ", ".join(f"{k} {v:.3g}" for k, v in times.items()) or None}
        rows.append([run.name] + [_fmt(cells.get(k)) for k, _ in CALIBRATION])
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _run_section(run: Run, figs: Path, log: list[str], made: list[Path]) -> str:
    info, rows = run.info, [r for r in run.metrics() if "train/loss" in r]
    last = rows[-1] if rows else {}
    budget = (f"{last.get('step', 0)} steps, {last.get('epoch', 0):.2f} epochs, global batch "
              f"{info.get('global_batch', '?')}, {last.get('wall_seconds', 0) / 60:.1f} min of training on "
              f"{info.get('device', '?')} (torch {info.get('torch', '?')}); commit {info.get('git_commit', '?')}")
    parts = [f"<h2>{html.escape(run_label(run))}</h2>", f'<p class="meta">{html.escape(str(run.path))}: '
             f"{html.escape(budget)}</p>"]
    for name in PER_RUN:
        f = FIGURES[name]
        if f.applies(run):
            parts.append(_attempt(lambda f=f: save_figure(f.make(run), figs / f"{run.name}-{f.name}.png"),
                                  f"{run.name}: {f.help}", log, made))
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
    parts = [f"<h2>Generative study: {html.escape(study.name)}</h2>",
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
    atomic_write_bytes(path, _page(title, [f"<h1>{html.escape(title)}</h1>", study_section(study)]).encode())
    return path


def _page(title: str, parts: Sequence[str]) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")


def _runs_parts(runs: Sequence[Run], figs: Path, log: Log, tensorboard: bool) -> list[str]:
    """The runs' sections: comparison and calibration tables, figures over runs, then each run."""
    rows = table_rows([r.path for r in runs])
    cols = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
    parts = [f'<p class="meta">{len(runs)} runs; made {dt.datetime.now().isoformat(timespec="seconds")}</p>',
             "<h2>Comparison</h2>", _table(cols, [[cell(r, c) for c in cols] for r in rows])]
    if (col := noise_metric(rows)) is not None:
        parts.append(f'<p class="meta">{html.escape(noise_rule(col))}</p>')
    cal = calibration_rows(runs)
    if cal:
        parts += ["<h2>Calibration (validation targets)</h2>", _table(["run"] + [h for _, h in CALIBRATION], cal)]
    parts.append("<h2>Over runs</h2>")
    shared: list[Path] = []
    for name in OVER_RUNS:
        f = FIGURES[name]
        parts.append(_attempt(lambda f=f: save_figure(f.make(runs), figs / f"{f.name}.png"), f.help, log, shared))
    for run in runs:
        own: list[Path] = []
        parts.append(_run_section(run, figs, log, own))
        if tensorboard:
            write_tensorboard(run, shared + own)
    return parts


def write_report(run_dirs: Sequence[str | Path], out: str | Path, title: str = "pjepa report",
                 tensorboard: bool = True, echo: Callable[[str], None] | None = None,
                 studies: Sequence[str | Path] = ()) -> tuple[Path, list[str]]:
    """Write ``out/index.html`` (and the figures' PNGs beside it); returns (page, one line per figure).
    With ``tensorboard``, each run's hparams and its figures also go to ``RUN/tb/{hparams,figures}``;
    ``echo`` (e.g. print) gets each figure's line as soon as it is made. ``studies``: ``pjepa gen study``
    folders whose tables and grids follow the runs (with no runs, the page holds only them)."""
    runs = [Run(d) for d in expand_run_dirs(list(run_dirs))]  # a sweep folder stands for its runs
    if not runs and not studies:
        raise ConfigError("pjepa report needs at least one run directory (or --study DIR)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(echo)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if runs:
        parts += _runs_parts(runs, out / "figures", log, tensorboard)
    parts += [study_section(st) for st in studies]
    path = out / "index.html"
    atomic_write_bytes(path, _page(title, parts).encode())
    return path, log
