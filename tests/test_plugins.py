"""One registration mechanism: a plug-in declared in one place shows up everywhere.

A throwaway evaluation protocol and a throwaway figure are registered here, in the test, and
nowhere else: ``pjepa eval`` runs the protocol, ``pjepa table`` shows its column, ``pjepa sweep
--eval`` accepts (and plans) its result files, TensorBoard's hparams view takes its number,
``pjepa plot`` and ``pjepa report`` make the figure. Calls are in-process: a child process would
not see the test's registrations. Methods declare their capabilities, read from a config.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from conftest import SMOKE

from pjepa.cli.main import main
from pjepa.config import dump_config, load_config
from pjepa.eval.protocols import PROTOCOLS, Column, Protocol, ResultFile, add_run_arguments
from pjepa.eval.protocols.outputs import number
from pjepa.registry import Registry
from pjepa.runs import Run
from pjepa.viz.figures import FIGURES, Figure, Needs

PROTOCOL, FIGURE = "toyprobe", "toyfig"
CAPTION = "A throwaway figure: one line per run that has a toy probe."


def _toy_add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p, checkpoint=False)
    p.add_argument("--fast", action="store_true", help="the quick variant (-> toyprobe_fast.json)")


def _toy_run(args: argparse.Namespace) -> list[str]:
    top1 = 12.5 if args.fast else 61.25
    path = Run(args.run).write_eval(PROTOCOL + ("_fast" if args.fast else ""), {"top1": top1})
    return [f"toy probe {top1:.2f}%", f"wrote {path}"]


def _toy_figure(run: Run):
    from pjepa.viz.common import pyplot

    fig, ax = pyplot().subplots(figsize=(2.0, 2.0))
    ax.plot([0, 1], [0, run.eval_result(PROTOCOL)["top1"]])
    return fig


@pytest.fixture
def toy_plugins():
    """The throwaway protocol and figure, registered for one test and removed after it."""
    PROTOCOLS.register(PROTOCOL)(Protocol(
        PROTOCOL, "a throwaway protocol", _toy_add_arguments, _toy_run,
        results=(ResultFile(), ResultFile("_fast", ("--fast",), "the toy probe, quickly")),
        columns=(Column("toyprobe_top1", ("toy probe (%)", "top-1"), number("top1"), rated=0, tensorboard="toyprobe"),
                 Column("toyprobe_fast", ("toy probe (%)", "quick"), number("top1"), "_fast")),
        order=35))
    FIGURES.register(FIGURE)(Figure(FIGURE, "the toy probe per run", False, _toy_figure,
                                    Needs(results=(PROTOCOL,)), CAPTION, order=85))
    try:
        yield
    finally:
        PROTOCOLS.unregister(PROTOCOL)
        FIGURES.unregister(FIGURE)


def _run(path: Path, knn: float) -> Path:
    """A run directory as pjepa train and pjepa eval knn leave it (no checkpoint: the table reads none)."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(dump_config(load_config(SMOKE, [f"optim.lr={knn / 1e5}"])))
    rows = [{"step": s, "epoch": s / 10, "train/loss": 1.0 / s, "wall_seconds": 6.0 * s} for s in (10, 20)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "eval").mkdir()
    (path / "eval" / "knn.json").write_text(json.dumps({"top1": knn, "top1_weighted": knn, "top1_majority": knn - 2}))
    return path


def test_a_registered_protocol_runs_and_has_its_column_in_the_table(toy_plugins, tmp_path, capsys):
    rated, plain = _run(tmp_path / "rated", 40.0), _run(tmp_path / "plain", 30.0)
    assert main(["eval", PROTOCOL, "--run", str(rated)]) == 0
    assert main(["eval", PROTOCOL, "--run", str(rated), "--fast"]) == 0
    capsys.readouterr()
    assert main(["table", str(rated), str(plain)]) == 0
    header, _, first, second = capsys.readouterr().out.splitlines()[:4]
    cols = [c.strip() for c in header.strip("|").split("|")]
    # declared order: after kNN (10), linear (20), low-shot (30), before the fine-tune (40)
    assert cols[cols.index("knn") + 1:cols.index("vs_best")] == ["knn_majority", "toyprobe_top1", "toyprobe_fast"]
    cells = dict(zip(cols, (c.strip() for c in first.strip("|").split("|"))))
    assert cells["run"] == "rated" and cells["toyprobe_top1"] == "61.25" and cells["toyprobe_fast"] == "12.50"
    assert dict(zip(cols, (c.strip() for c in second.strip("|").split("|"))))["toyprobe_top1"] == "-"

    from pjepa.eval.table import table_rows, to_csv

    rows = table_rows([rated], by="toyprobe_top1")  # a rated column: the noise test may compare on it
    assert rows[0]["vs_best"] == "best" and "toyprobe_top1" in to_csv(rows).splitlines()[0]

    from pjepa.viz.tensorboard import final_metrics

    assert final_metrics(Run(rated))["eval/toyprobe"] == 61.25


def test_a_registered_protocols_result_files_are_sweep_evaluations(toy_plugins, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sweep", "--config", str(SMOKE), "--out", str(out), "--eval", f"knn,{PROTOCOL},{PROTOCOL}_fast",
                 "--dry-run", "train.seed=0,1"]) == 0
    assert f"evaluations: knn, {PROTOCOL}, {PROTOCOL}_fast" in capsys.readouterr().out

    from pjepa.sweep import plan_sweep, point_jobs

    job = point_jobs(plan_sweep(str(SMOKE), out, ["train.seed=0,1"]), (PROTOCOL, f"{PROTOCOL}_fast"))[0]
    cmds = dict(job.eval_commands())
    assert cmds[f"{PROTOCOL}_fast"][3:] == ["eval", PROTOCOL, "--run", str(job.run_dir), "--fast"]
    assert main(["sweep", "--config", str(SMOKE), "--out", str(out), "--eval", "toyprob", "--dry-run"]) == 2
    assert f"did you mean '{PROTOCOL}'" in capsys.readouterr().err


def test_a_registered_figure_is_plotted_and_has_its_section_in_the_report(toy_plugins, tmp_path, capsys):
    rated, plain = _run(tmp_path / "rated", 40.0), _run(tmp_path / "plain", 30.0)
    Run(rated).write_eval(PROTOCOL, {"top1": 61.25})
    assert main(["plot", FIGURE, str(rated), str(plain), "--out", str(tmp_path / "plots")]) == 0
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [f"rated-{FIGURE}.png"]  # plain lacks the result

    from pjepa.viz.report import write_report

    page, log = write_report([rated, plain], tmp_path / "html", tensorboard=False)
    text = page.read_text()
    rated_part, plain_part = text[text.index('id="s-rated"'):text.index('id="s-plain"')], text[text.index('id="s-plain"'):]
    assert f"<figcaption>{CAPTION}</figcaption>" in rated_part
    assert any(line.startswith("rated: the toy probe per run: ") for line in log)
    assert f"{FIGURE} (needs eval/{PROTOCOL}.json: run pjepa eval {PROTOCOL} --run RUN first)" in plain_part
    assert ">toy probe (%)</th>" in text  # the protocol's column group heads the scores table
    assert (tmp_path / "html" / "figures" / f"rated-{FIGURE}.png").is_file()


def test_the_throwaway_plugins_are_gone_afterwards():
    assert PROTOCOL not in PROTOCOLS and FIGURE not in FIGURES


def test_methods_declare_their_capabilities_and_figures_ask_them(tmp_path):
    from pjepa.methods import capabilities

    def caps(*overrides: str):
        return capabilities(load_config(SMOKE, list(overrides)))

    assert caps() == caps("method.name=njepa") and caps().has_head and caps().has_target_encoder
    assert not caps("method.options={target: online}", "reg.name=sigreg").has_target_encoder
    assert not caps("method.name=mae", "mask.name=random").has_head
    finetune = caps("method.name=finetune", "method.options={num_classes: 4}")
    assert not finetune.has_head and not finetune.has_target_encoder
    # a fine-tune run is offered no head figures: its method, not its name, says so
    run = _run(tmp_path / "ft", 30.0)
    cfg = load_config(SMOKE, ["method.name=finetune", "method.options={num_classes: 4}"])
    (run / "config.yaml").write_text(dump_config(cfg))
    assert [f.name for f in FIGURES.values() if f.needs.head and f.applies(Run(run))] == []
    assert FIGURES["imagination"].applies(Run(_run(tmp_path / "jepa", 30.0)))


def test_a_package_registers_every_module_it_holds(tmp_path, monkeypatch):
    """Adding a plug-in is one new file: ``import_modules`` imports each module of the package."""
    package = tmp_path / "toyplugins"
    package.mkdir()
    (package / "registry.py").write_text("from pjepa.registry import Registry\nTOYS = Registry('toy')\n")
    (package / "__init__.py").write_text("from pjepa.registry import import_modules\n"
                                         "import_modules(__name__, __path__)\n")
    for name in ("alpha", "beta"):
        (package / f"{name}.py").write_text("from toyplugins.registry import TOYS\n"
                                            f"TOYS.register({name!r})(lambda: {name!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import toyplugins.registry

    assert toyplugins.registry.TOYS.names() == ["alpha", "beta"]
    ordered = Registry("thing", sort_key=lambda f: -len(f.name))
    for name in ("a", "ccc", "bb"):
        ordered.register(name)(argparse.Namespace(name=name))
    assert ordered.names() == ["ccc", "bb", "a"] and [t.name for t in ordered.values()] == ordered.names()
    with pytest.raises(ValueError, match="registered under another name"):
        ordered.register("dd")(argparse.Namespace(name="d"))
