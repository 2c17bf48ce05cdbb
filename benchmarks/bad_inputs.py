"""A corpus of bad inputs, made here, fed to the ``pjepa`` command: each must end in a named error
(exit 2, one ``pjepa: error:`` / argparse ``error:`` line, no traceback) or, where the input is odd but
valid (a torn last metrics line), succeed. Used by ``benchmarks/faults.py --bad-inputs``."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image


def _images(folder: Path, n: int, size: int = 24, fmt: str = "PNG") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.{fmt.lower()}", fmt)


def _imagefolder(root: Path, bad: str) -> Path:
    for c in ("a", "b"):
        _images(root / c, 8)
    if bad == "empty_class":
        (root / "c").mkdir()
    elif bad == "corrupt_image":
        (root / "a" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    elif bad == "random_bytes":
        (root / "b" / "9.jpg").write_bytes(np.random.default_rng(1).bytes(300))
    return root


def _npz(path: Path, bad: str) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(buf, "PNG")
    data = np.frombuffer(buf.getvalue(), np.uint8)
    arrays = {"train_bytes": np.tile(data, 4), "train_offsets": np.arange(5) * len(data), "train_y": np.arange(4) % 2}
    if bad == "missing_key":
        arrays.pop("train_offsets")
    elif bad == "float_labels":
        arrays["train_y"] = arrays["train_y"].astype(float) + 0.5
    np.savez(path, **arrays)
    if bad == "not_npz":
        path.write_bytes(b"not a zip file at all")
    return path


def cases(root: Path, ref: Path, train_args: Callable[[Path], list[str]]) -> list[tuple[str, str, list[str], int]]:
    """(kind, name, pjepa arguments, expected exit code) for every case; files made under ``root``."""
    out: list[tuple[str, str, list[str], int]] = []
    t = train_args(root / "t")
    dry = [*t, "--dry-run"]
    for name, item in [("unknown key", "optim.lrr=1"), ("wrong type", "optim.lr=abc"),
                       ("out of range", "optim.batch_size=-1"), ("unknown head", "head.name=nope"),
                       ("unknown head option", "head.options.nope=1"), ("unknown method", "method.name=nope"),
                       ("unknown mask sampler", "mask.name=nope"), ("bad diffusion schedule",
                                                                    "head.options.schedule=cosin")]:
        extra = ["head.name=diffusion"] if "schedule" in name else []
        out.append(("config", name, [*dry, *extra, item], 2))
    (root / "broken.yaml").write_text("optim: {lr: [1, 2\n")
    out.append(("config", "malformed YAML", ["train", "--config", str(root / "broken.yaml"), "--dry-run"], 2))
    out.append(("config", "missing config file", ["train", "--config", str(root / "nope.yaml"), "--dry-run"], 2))
    for bad in ("empty_class", "corrupt_image", "random_bytes"):
        folder = _imagefolder(root / f"if_{bad}", bad)
        out.append(("dataset", f"imagefolder: {bad}", [*train_args(root / f"r_{bad}"), "data.name=imagefolder",
                                                        f"data.path={folder}", "data.options={}"], 2))
    for bad in ("missing_key", "float_labels", "not_npz"):
        path = _npz(root / f"{bad}.npz", bad)
        out.append(("dataset", f"npz: {bad}", [*train_args(root / f"n_{bad}"), "data.name=cifar10",
                                                f"data.path={path}", "data.options={}"], 2))
    (root / "notcifar").mkdir()
    (root / "notcifar" / "readme.txt").write_text("not a dataset")
    out.append(("dataset", "cifar10 path to the wrong folder (no download)",
                [*train_args(root / "wrongdir"), "data.name=cifar10", f"data.path={root / 'notcifar'}",
                 "data.options={}"], 2))
    out += _run_dirs(root, ref)
    out.append(("flag", "negative --eval-limit", ["eval", "knn", "--run", str(ref), "--eval-limit", "-1"], 2))
    out.append(("flag", "zero --samples", ["eval", "calibration", "--run", str(ref), "--samples", "0"], 2))
    out.append(("flag", "unknown figure", ["plot", "nope", str(ref)], 2))
    out.append(("flag", "report of a missing run", ["report", str(root / "missing"), "--out", str(root / "h")], 2))
    return out


def _copy(ref: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(ref, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def _run_dirs(root: Path, ref: Path) -> list[tuple[str, str, list[str], int]]:
    out = []
    d = _copy(ref, root / "trunc")
    f = d / "checkpoints" / "last" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    out.append(("checkpoint", "truncated weights (eval)", ["eval", "knn", "--run", str(d)], 2))
    d = _copy(ref, root / "state")
    (d / "checkpoints" / "last" / "state.safetensors").write_bytes(np.random.default_rng(2).bytes(500))
    out.append(("checkpoint", "random-bytes state (resume)", ["train", "--resume", str(d)], 2))
    d = _copy(ref, root / "crafted")
    from safetensors.numpy import load_file, save_file

    w = load_file(str(d / "checkpoints" / "last" / "model.safetensors"))
    key = next(k for k, v in w.items() if v.dtype.kind == "f")
    w[key] = np.full_like(w[key], np.nan)
    save_file(w, str(d / "checkpoints" / "last" / "model.safetensors"))
    out.append(("checkpoint", "NaN weights (eval)", ["eval", "knn", "--run", str(d)], 2))
    d = _copy(ref, root / "mismatch")
    w = load_file(str(d / "checkpoints" / "last" / "model.safetensors"))
    w[key] = np.zeros((3, 3), w[key].dtype)
    save_file(w, str(d / "checkpoints" / "last" / "model.safetensors"))
    out.append(("checkpoint", "weights of another shape (eval)", ["eval", "knn", "--run", str(d)], 2))
    for name, edit in [("missing config.yaml", lambda p: (p / "config.yaml").unlink()),
                       ("corrupt config.yaml", lambda p: (p / "config.yaml").write_text("model: [\n")),
                       ("missing data_stats.json", lambda p: (p / "data_stats.json").unlink()),
                       ("no checkpoint", lambda p: shutil.rmtree(p / "checkpoints"))]:
        d = _copy(ref, root / name.replace(" ", "_"))
        edit(d)
        out.append(("run dir", name, ["eval", "knn", "--run", str(d)], 2))
    d = _copy(ref, root / "torn")
    with open(d / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 30, "train/lo')
    out.append(("run dir", "torn last metrics line (table works)", ["table", str(d)], 0))
    d = _copy(ref, root / "badjson")
    (d / "eval").mkdir(exist_ok=True)
    (d / "eval" / "knn.json").write_text("{not json")
    out.append(("run dir", "corrupt eval/knn.json (table)", ["table", str(d)], 2))
    return out


def run_corpus(root: Path, pjepa: Callable, train_args: Callable[[Path], list[str]]) -> list[dict]:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    ref = root.parent / "reference"
    records = []
    for kind, name, args, expected in cases(root, ref, train_args):
        r = pjepa(*args)
        err = r.stderr.strip().splitlines()
        rec = {"kind": kind, "case": name, "exit": r.returncode, "expected": expected,
               "traceback": "Traceback" in r.stderr, "message": err[-1][:200] if err else ""}
        rec["handled"] = r.returncode == expected and not rec["traceback"] and (
            expected == 0 or "error:" in rec["message"])
        records.append(rec)
        print(json.dumps(rec), flush=True)
    (root.parent / "bad_inputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"\nbad inputs: {len(records)} cases; handled (named error or correct result): "
          f"{sum(r['handled'] for r in records)}; raw tracebacks: {sum(r['traceback'] for r in records)}")
    return records
