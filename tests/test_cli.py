"""The command line: presets by name, evaluation protocols from the registry, data paths from $PJEPA_DATA."""

from __future__ import annotations

import argparse
import os

import pytest
from conftest import run_cli

from pjepa.cli.main import build_parser
from pjepa.data import expand_data_path
from pjepa.errors import DataError
from pjepa.eval.protocols import PROTOCOLS, Protocol, register


def test_presets_lists_every_preset_with_a_description():
    out = run_cli("presets")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert {"smoke", "cifar10/cpu", "tin100/mdn"} <= set(names)
    assert all(len(line.split()) > 2 for line in lines)  # name + a description


def test_every_registered_protocol_is_a_subcommand_of_eval():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    eval_sub = next(a for a in sub.choices["eval"]._actions if isinstance(a, argparse._SubParsersAction))
    assert set(eval_sub.choices) == set(PROTOCOLS.names()) >= {"knn", "head"}


def _subparsers(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def test_every_help_page_formats(capsys):
    """argparse formats help text with %: a bare '%' in a protocol's help crashes `pjepa eval --help`."""
    parser = build_parser()
    pages = [parser]
    while pages:
        p = pages.pop()
        p.format_help()
        for sub in _subparsers(p):
            pages += list(sub.choices.values())
            assert all(isinstance(a.help, str) for a in sub._choices_actions)
            p.format_usage()


def test_a_new_protocol_shows_up_without_touching_the_cli():
    def add(p):
        p.add_argument("--run", required=True)

    register(Protocol("echo-test", "echo the run argument", add, lambda args: [f"run={args.run}"]))
    try:
        from pjepa.cli.main import main

        assert main(["eval", "echo-test", "--run", "somewhere"]) == 0
    finally:
        PROTOCOLS.unregister("echo-test")


def test_pjepa_data_expands_or_says_what_to_set(monkeypatch, tmp_path):
    monkeypatch.setenv("PJEPA_DATA", str(tmp_path))
    assert expand_data_path("$PJEPA_DATA/x.npz") == f"{tmp_path}/x.npz"
    assert expand_data_path(["${PJEPA_DATA}/a", "b"]) == [f"{tmp_path}/a", "b"]
    assert expand_data_path(None) is None
    monkeypatch.delenv("PJEPA_DATA")
    with pytest.raises(DataError, match="export PJEPA_DATA=.*or pass data.path"):
        expand_data_path("$PJEPA_DATA/x.npz")


@pytest.mark.slow
def test_a_preset_without_its_data_fails_with_one_line_at_start_up(tmp_path):
    out = run_cli("train", "--config", "cifar10/cpu", "--out", str(tmp_path / "r"), env={"PJEPA_DATA": ""})
    assert out.returncode == 2 and "PJEPA_DATA" in out.stderr and "Traceback" not in out.stderr


def test_a_mistyped_option_gets_the_subcommands_usage_and_the_closest_option(capsys):
    from pjepa.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["eval", "knn", "--run", "r", "--whitten"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "usage: pjepa eval knn" in err and "--whitten: did you mean --whiten?" in err
    with pytest.raises(SystemExit):
        main(["table", "--formt", "md", "r"])
    assert "did you mean --format?" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a typo in a required option: the typo is named, not "--config is required"
        main(["train", "--confg", "smoke"])
    err = capsys.readouterr().err
    assert "--confg: did you mean --config?" in err and "required" not in err


def test_a_mistyped_subcommand_is_named_before_the_options_after_it(capsys):
    from pjepa.cli.main import main

    with pytest.raises(SystemExit) as e:  # argparse alone says "unrecognized arguments: --run"
        main(["eval", "knnn", "--run", "r"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "invalid choice: 'knnn'" in err and "did you mean 'knn'" in err
    assert "--run" not in err.splitlines()[-1]
    with pytest.raises(SystemExit):
        main(["trian", "--config", "smoke"])
    assert "invalid choice: 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.6])
def test_ctrl_c_while_a_command_starts_or_works_is_one_line(delay, tiny_run):
    """SIGINT at any moment of a command (importing torch, building the parsers, computing features): one
    line, ``pjepa: interrupted``, no traceback; the exit says so (130, or death by SIGINT)."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "pjepa", "eval", "finetune", "--run", str(tiny_run), "--epochs", "5000",
                             "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.fail(f"the command finished within {delay} s, before the interrupt: give it more work")
    assert proc.returncode in (130, -signal.SIGINT) and err.strip().splitlines()[-1:] == ["pjepa: interrupted"], err
    assert "Traceback" not in err


def test_every_writing_command_checks_its_output_before_working(tmp_path, tiny_run, capsys):
    """An output that is a file where a folder is wanted (or the reverse), or a folder that cannot be created,
    is one named error before any work: train, eval, sweep, export, report, plot, table --csv."""
    from conftest import SMOKE, TINY

    from pjepa.cli.main import main

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    under_file = a_file / "sub"
    cases = [
        (["train", "--config", str(SMOKE), *TINY, "--out", str(a_file)], "is a file, not a folder"),
        (["train", "--config", str(SMOKE), *TINY, "--out", str(under_file)], "cannot create run directory"),
        (["sweep", "--config", str(SMOKE), "--out", str(a_file), *TINY], "is a file, not a folder"),
        (["export", "--run", str(tiny_run), "--out", str(tmp_path)], "is a folder: give a file name"),
        (["export", "--run", str(tiny_run), "--out", str(under_file / "e.safetensors")], "cannot create"),
        (["report", str(tiny_run), "--out", str(a_file)], "is a file, not a folder"),
        (["plot", "loss", str(tiny_run), "--out", str(under_file)], "cannot create figure folder"),
        (["table", str(tiny_run), "--csv", str(tmp_path)], "is a folder: give a file name"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


def test_a_read_only_output_is_named(tmp_path, monkeypatch):
    """A folder that exists but cannot be written (a read-only mount: permission bits do not stop root)."""
    import errno
    from pathlib import Path

    from pjepa.errors import CheckpointError
    from pjepa.runs.writable import writable_dir

    real = Path.write_bytes

    def read_only(self, data):
        if self.name.startswith(".pjepa-write-probe"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    with pytest.raises(CheckpointError, match="is not writable \\(Read-only file system\\)"):
        writable_dir(tmp_path, "report folder (--out)")


def test_every_parser_records_what_argparse_holds():
    """The "did you mean" messages read the options and subcommands ``Parser`` records as they are added;
    an option added past the records (a group, a mutually exclusive group) would never be suggested."""
    pages = [build_parser()]
    while pages:
        p = pages.pop()
        assert list(p.options) == list(p._option_string_actions), p.prog
        subs = _subparsers(p)
        assert (p.subcommands is None) == (not subs) and all(p.subcommands is s for s in subs), p.prog
        pages += list(p.subcommands.choices.values()) if p.subcommands else []
