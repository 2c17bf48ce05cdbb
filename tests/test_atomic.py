"""Atomic writes (``pjepa.atomic``): the old file or the new one, never a mix, and no temporary file left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pjepa import atomic
from pjepa.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, fsync_dir, move
from pjepa.errors import CheckpointError


def test_failed_write_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("io error")))
    with pytest.raises(CheckpointError, match="cannot write .*io error"):
        atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_bytes_overwrites(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "x.bin", b"one")
    atomic_write_bytes(str(tmp_path / "x.bin"), b"two")
    assert (tmp_path / "x.bin").read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]
    with pytest.raises(CheckpointError, match="does not exist"):
        atomic_write_bytes(tmp_path / "missing_dir" / "x.bin", b"")


def test_text_and_json_are_the_bytes_a_plain_write_gives(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "ä\n")
    assert (tmp_path / "a.txt").read_bytes() == "ä\n".encode()
    data = {"b": [1, 2.5, None], "a": float("nan")}
    atomic_write_json(tmp_path / "b.json", data)
    assert (tmp_path / "b.json").read_text() == json.dumps(data, indent=2) + "\n"
    atomic_write_json(tmp_path / "c.json", data, indent=None, sort_keys=True)
    assert (tmp_path / "c.json").read_text() == json.dumps(data, sort_keys=True) + "\n"


def test_atomic_path_renames_on_success(tmp_path: Path) -> None:
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".fig.png.") and not tmp.exists()
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # nothing visible before the block ends
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


@pytest.mark.parametrize("fail", ["writer", "rename"])
def test_atomic_path_keeps_the_old_file_and_the_writers_error(tmp_path: Path, monkeypatch, fail: str) -> None:
    target = tmp_path / "weights.safetensors"
    target.write_bytes(b"old")
    if fail == "rename":
        monkeypatch.setattr(atomic.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError, match="No space left"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        if fail == "writer":
            raise OSError(28, "No space left")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


def test_atomic_path_removes_the_temporary_file_on_any_exception(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_move_renames_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "events").write_text("x")
    dest = tmp_path / "previous" / "1"
    dest.mkdir(parents=True)
    move(tmp_path / "a.json", dest / "a.json")
    move(tmp_path / "tb", dest / "tb")
    assert (dest / "a.json").read_text() == "{}" and (dest / "tb" / "events").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous"]
    with pytest.raises(FileNotFoundError):
        move(tmp_path / "missing", dest / "missing")


def test_fsync_dir_tolerates_what_cannot_be_fsynced(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "missing")  # a no-op, as on a filesystem whose folders cannot be opened
