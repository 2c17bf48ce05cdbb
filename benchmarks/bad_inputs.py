"""A corpus of bad inputs, made here, fed to the ``pjepa`` command: each must end in a named error
(exit 2, one ``pjepa: error:`` / argparse ``error:`` line, no traceback; exit 130 and ``pjepa: interrupted``
for Ctrl-C) or, where the input is odd but valid (a torn last metrics line), succeed. Every file that
existed before a case must be there, unchanged, after it ("data lost" counts the cases where one is not),
and a case that should fail but exits 0, or fails without a message, counts as "silent".

Run as root on Linux, the output cases also use real mounts: a read-only tmpfs (permission bits do not
stop root) and a 1 MB tmpfs that fills up during training. Used by ``benchmarks/faults.py --bad-inputs``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

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
    out += _more_configs(root, dry)
    out += _outputs(root, ref, train_args)
    out += _weight_files(root, ref)
    out += _tables_and_flags(root, ref)
    return out


def _more_configs(root: Path, dry: list[str]) -> list[tuple[str, str, list[str], int]]:
    (root / "cfgdir").mkdir()
    (root / "nobase.yaml").write_text("base: does_not_exist.yaml\noptim: {lr: 0.001}\n")
    (root / "latin1.yaml").write_bytes("# caf\xe9 latin-1 comment\noptim: {lr: 0.001}\n".encode("latin-1"))
    return [("config", "--config names a folder", ["train", "--config", str(root / "cfgdir"), "--dry-run"], 2),
            ("config", "missing base: file", ["train", "--config", str(root / "nobase.yaml"), "--dry-run"], 2),
            ("config", "config that is not UTF-8", ["train", "--config", str(root / "latin1.yaml"), "--dry-run"], 2),
            ("config", "eval.periodic_train_subset=0 with periodic kNN on",
             [*dry, "train.eval_every=4", "eval.periodic_train_subset=0"], 2),
            ("config", "Ctrl-C during start-up (SIGINT 1.5 s in)", [*dry[:-1], "--out", str(root / "ctrlc")], 130)]


def _kept_run(ref: Path, dst: Path) -> Path:
    """A copy of the reference run as a kept run: evaluation results, no checkpoint."""
    d = _copy(ref, dst)
    shutil.rmtree(d / "checkpoints")
    (d / "eval").mkdir(exist_ok=True)
    (d / "eval" / "knn.json").write_text(json.dumps({"top1_weighted": 50.0, "top1_majority": 49.0}))
    return d


def _outputs(root: Path, ref: Path, train_args: Callable[[Path], list[str]]) -> list[tuple[str, str, list[str], int]]:
    out = []
    kept = _kept_run(ref, root / "kept")
    out.append(("output", "--auto-resume onto a kept run (results, no checkpoint)",
                [*train_args(kept), "--auto-resume"], 2))
    other = _copy(ref, root / "other_exp")
    out.append(("output", "--auto-resume with a different experiment (width)",
                [*train_args(other), "model.encoder.embed_dim=48", "--auto-resume"], 2))
    (root / "a_file").write_text("not a folder")
    out.append(("output", "train --out is an existing file", train_args(root / "a_file"), 2))
    out.append(("output", "train --out inside a file", train_args(root / "a_file" / "run"), 2))
    out.append(("output", "export --out inside a file",
                ["export", "--run", str(ref), "--out", str(root / "a_file" / "enc.safetensors")], 2))
    out.append(("output", "report --out is an existing file", ["report", str(ref), "--out", str(root / "a_file")], 2))
    ro, full = root / "ro_mount", root / "full_mount"
    if _mount(ro, "size=16m", populate=lambda: _copy(ref, ro / "run")):
        out.append(("output", "train --out on a read-only mount", train_args(ro / "new"), 2))
        out.append(("output", "eval on a run in a read-only mount", ["eval", "knn", "--run", str(ro / "run")], 2))
        out.append(("output", "export onto a read-only mount",
                    ["export", "--run", str(ref), "--out", str(ro / "enc.safetensors")], 2))
        out.append(("output", "resume a run on a read-only mount", ["train", "--resume", str(ro / "run")], 2))
    if _mount(full, "size=1m"):
        out.append(("output", "train onto a 1 MB disk (fills up at the first checkpoint)", train_args(full / "run"), 2))
    return out


def _mount(path: Path, options: str, populate: Callable[[], object] | None = None) -> bool:
    """Mount a tmpfs at ``path`` (root only), fill it with ``populate()``, and make it read-only when
    ``populate`` is given; False where mounting is not possible (not root, not Linux, a container)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        return False
    if populate is not None:
        populate()
        if subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True).returncode != 0:
            return False
    return True


def unmount_all(root: Path) -> None:
    for name in ("ro_mount", "full_mount"):
        if (root / name).is_mount():
            subprocess.run(["umount", str(root / name)], capture_output=True)


def _weight_files(root: Path, ref: Path) -> list[tuple[str, str, list[str], int]]:
    """Encoder files (pjepa export) that lie or break: each is named before any evaluation."""
    from safetensors.numpy import load_file, save_file

    base = root / "enc.safetensors"
    subprocess.run([*_PJEPA, "export", "--run", str(ref), "--out", str(base)], capture_output=True, env=_ENV)
    out = []
    if not base.exists():
        return out
    sidecar = json.loads(base.with_suffix(".json").read_text())

    def variant(name: str, edit_json=None, edit_weights=None) -> Path:
        f = root / f"enc_{name}.safetensors"
        shutil.copy(base, f)
        meta = dict(sidecar)
        if edit_json:
            edit_json(meta)
        f.with_suffix(".json").write_text(json.dumps(meta))
        if edit_weights:
            w = load_file(str(f))
            edit_weights(w)
            save_file(w, str(f))
        return f

    def lie(key: str, value):
        return lambda meta: meta.__setitem__(key, value)

    for key, value in (("depth", 40), ("embed_dim", 4096), ("img_size", 100000), ("patch_size", 3)):
        f = variant(f"lie_{key}", edit_json=lie(key, value))
        out.append(("weights", f"sidecar lies: {key}={value}",
                    ["eval", "knn", "--run", str(ref), "--weights", str(f)], 2))

    def nan(w):
        k = next(k for k, v in w.items() if v.dtype.kind == "f")
        w[k] = np.full_like(w[k], np.nan)

    f = variant("nan", edit_weights=nan)
    out.append(("weights", "NaN in an encoder file", ["eval", "knn", "--run", str(ref), "--weights", str(f)], 2))
    f = root / "enc_nosidecar.safetensors"
    shutil.copy(base, f)
    out.append(("weights", "encoder file without its .json", ["eval", "knn", "--run", str(ref), "--weights", str(f)], 2))
    f = variant("trunc")
    f.write_bytes(f.read_bytes()[:200])
    out.append(("weights", "truncated encoder file", ["eval", "knn", "--run", str(ref), "--weights", str(f)], 2))
    d = _copy(ref, root / "bitflip")
    m = d / "checkpoints" / "last" / "model.safetensors"
    data = bytearray(m.read_bytes())
    data[-9] ^= 0x01  # one bit in the last tensor's data: still a valid file, silently different weights
    m.write_bytes(bytes(data))
    out.append(("checkpoint", "one flipped bit in the weights (checksum)", ["eval", "knn", "--run", str(d)], 2))
    return out


def _tables_and_flags(root: Path, ref: Path) -> list[tuple[str, str, list[str], int]]:
    out = []
    a, b = _kept_run(ref, root / "copy_a"), _kept_run(ref, root / "copy_b")
    out.append(("table", "two copies of one run as two seeds", ["table", str(a), str(b)], 2))
    d = _kept_run(ref, root / "emptycfg")
    (d / "config.yaml").write_text("")
    out.append(("table", "a run with an empty config.yaml", ["table", str(d)], 2))
    d = _copy(ref, root / "nometrics")
    (d / "metrics.jsonl").unlink()
    out.append(("flag", "plot loss of a run without metrics", ["plot", "loss", str(d)], 2))
    out.append(("flag", "finetune --min-lr above --lr",
                ["eval", "finetune", "--run", str(ref), "--lr", "0.001", "--min-lr", "0.01"], 2))
    out.append(("flag", "sweep grid above the size limit",
                ["sweep", "--config", str(ref / "config.yaml"), "--out", str(root / "sweep"), "optim.lr=" +
                 ",".join(f"{i}e-4" for i in range(1, 41)), "train.seed=" + ",".join(str(i) for i in range(30)),
                 "--dry-run"], 2))
    return out


def _copy(ref: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(ref, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def _rechecksum(folder: Path) -> None:
    """Rewrite a checkpoint folder's checksums for its current files: a crafted checkpoint that passes the
    checksum, so the checks behind it (finite values, shapes, the state's fields) are exercised."""
    sums = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.glob("*.safetensors"))}
    (folder / "checksums.json").write_text(json.dumps(sums, indent=1))


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
    d2 = _copy(d, root / "crafted_summed")
    _rechecksum(d2 / "checkpoints" / "last")
    out.append(("checkpoint", "NaN weights under a matching checksum (eval)", ["eval", "knn", "--run", str(d2)], 2))
    d = _copy(ref, root / "mismatch")
    w = load_file(str(d / "checkpoints" / "last" / "model.safetensors"))
    w[key] = np.zeros((3, 3), w[key].dtype)
    save_file(w, str(d / "checkpoints" / "last" / "model.safetensors"))
    out.append(("checkpoint", "weights of another shape (eval)", ["eval", "knn", "--run", str(d)], 2))
    d2 = _copy(d, root / "mismatch_summed")
    _rechecksum(d2 / "checkpoints" / "last")
    out.append(("checkpoint", "weights of another shape under a matching checksum (eval)",
                ["eval", "knn", "--run", str(d2)], 2))
    d = _copy(ref, root / "state_summed")
    (d / "checkpoints" / "last" / "state.safetensors").write_bytes(np.random.default_rng(2).bytes(500))
    _rechecksum(d / "checkpoints" / "last")
    out.append(("checkpoint", "random-bytes state under a matching checksum (resume)", ["train", "--resume", str(d)], 2))
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


_ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"), OMP_NUM_THREADS="1")
_PJEPA = [os.environ.get("PJEPA_PYTHON", __import__("sys").executable), "-m", "pjepa"]


def _snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (symlinks and unreadable files by name only)."""
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError:
                out[str(p)] = "unreadable"
    return out


def _interrupt(args: list[str], after_s: float) -> subprocess.CompletedProcess:
    """Run ``pjepa ARGS`` and send SIGINT (Ctrl-C) after ``after_s`` seconds."""
    proc = subprocess.Popen([*_PJEPA, *args], env=_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(after_s)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def judge(expected: int, r: subprocess.CompletedProcess, lost: list[str]) -> dict:
    """A case's verdict: handled, silent, raw traceback, data lost."""
    err = r.stderr.strip().splitlines()
    message = err[-1][:200] if err else ""
    traceback = "Traceback" in r.stderr
    named = "error:" in message or (expected == 130 and "interrupted" in message)
    silent = expected != 0 and (r.returncode == 0 or not named)
    return {"exit": r.returncode, "expected": expected, "traceback": traceback, "message": message,
            "silent": silent, "data_lost": lost[:3],
            "handled": r.returncode == expected and not traceback and not lost and (expected == 0 or named)}


def run_corpus(root: Path, pjepa: Callable, train_args: Callable[[Path], list[str]]) -> list[dict]:
    unmount_all(root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    ref = root.parent / "reference"
    records = []
    try:
        for kind, name, args, expected in cases(root, ref, train_args):
            before = _snapshot(root)
            before.update(_snapshot(ref))
            r = _interrupt(args, 1.5) if expected == 130 else pjepa(*args)
            after = _snapshot(root)
            after.update(_snapshot(ref))
            lost = [p for p, h in before.items() if after.get(p) != h]
            rec = {"kind": kind, "case": name, **judge(expected, r, lost)}
            records.append(rec)
            print(json.dumps(rec), flush=True)
    finally:
        unmount_all(root)
    (root.parent / "bad_inputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"\nbad inputs: {len(records)} cases; handled (named error or correct result): "
          f"{sum(r['handled'] for r in records)}; raw tracebacks: {sum(r['traceback'] for r in records)}; "
          f"silent: {sum(r['silent'] for r in records)}; data lost: {sum(bool(r['data_lost']) for r in records)}")
    return records
