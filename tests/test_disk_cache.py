"""``data.cache: disk``: the decoded-image cache equals the in-memory split, is built once (resumably, under a
lock), names damage, trains bit-identically, and under DDP every rank reads only its own rows."""

from __future__ import annotations

import functools
import io
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, SMOKE, TINY
from PIL import Image

from pjepa.config import load_config
from pjepa.data import DATASETS, DiskImages, diskcache, load_dataset, load_splits
from pjepa.data.decode import EncodedImages
from pjepa.errors import ConfigError, DataError

RNG = np.random.default_rng(0)


def jpeg(h: int, w: int) -> bytes:
    """A noisy RGB JPEG: any decoding or resizing difference would show."""
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def npz_shard(path: Path, n: int = 37, classes: int = 3) -> Path:
    """``n`` JPEGs of three different sizes (so ``image_size`` resizes) in one npz shard."""
    blobs = [jpeg(20 + i % 3, 24 - i % 2) for i in range(n)]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(path, train_bytes=np.frombuffer(b"".join(blobs), np.uint8), train_offsets=offsets,
             train_y=(np.arange(n) % classes).astype(np.int16), class_names=np.asarray([f"c{i}" for i in range(classes)]))
    return path


def image_folder(root: Path, per_class: int = 5) -> Path:
    for c in ("cat", "dog", "eel"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            (root / c / f"{i}.jpg").write_bytes(jpeg(16, 16))
    return root


def disk(name, split="train", path=None, cache_dir=None, **options):
    return load_dataset(name, split, path, cache="disk", cache_dir=cache_dir, **options)


def the_folder(cache_dir: Path) -> Path:
    (folder,) = [p for p in cache_dir.iterdir() if not p.name.startswith(".")]
    return folder


@pytest.fixture
def shard(tmp_path) -> Path:
    return npz_shard(tmp_path / "shard.npz")


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 4 rows and 3 decoding threads: a tiny split still has many chunks, decoded in parallel."""
    real = diskcache.build
    monkeypatch.setattr(diskcache, "build", lambda folder, key, load, workers=None, chunk_rows=None, progress=None:
                        real(folder, key, load, workers or 3, chunk_rows or 4, progress))


# ------------------------------------------------------------------ the cache equals the memory path


@pytest.mark.parametrize("kind", ["npz", "imagefolder", "synthetic"])
def test_the_disk_cache_equals_the_memory_path_bit_for_bit(tmp_path, kind, small_chunks):
    if kind == "npz":  # encoded images, decoded by threads (resized)
        args = ("npz", "train", npz_shard(tmp_path / "s.npz")), {"image_size": 16}
    elif kind == "imagefolder":  # files read one by one while decoding
        args = ("imagefolder", "train", image_folder(tmp_path / "root")), {}
    else:  # a loader that returns a tensor
        args = ("synthetic", "val", None), {"num_val": 30, "image_size": 12}
    (name, split, path), options = args
    memory = load_dataset(name, split, path, **options)
    cached = disk(name, split, path, tmp_path / "cache", **options)
    assert isinstance(cached.images, DiskImages) and cached.on_disk and not memory.on_disk
    assert cached.images.shape == memory.images.shape and len(cached) == len(memory)
    assert torch.equal(cached.images[:], memory.images)
    assert torch.equal(cached.labels, memory.labels) and cached.labels.dtype == torch.int64
    assert (cached.class_names, cached.name, cached.split) == (memory.class_names, memory.name, memory.split)
    idx = torch.tensor([5, 2, 2, len(memory) - 1, 0])  # unsorted, repeated: rows come back in the order asked
    assert torch.equal(cached.images[idx], memory.images[idx])
    assert np.array_equal(np.load(the_folder(tmp_path / "cache") / "images.npy", mmap_mode="r"), memory.images.numpy())
    assert diskcache.verify(the_folder(tmp_path / "cache")) == len(memory)


def test_disk_images_index_like_a_tensor(tmp_path):
    memory = load_dataset("synthetic", "train", num_train=20, image_size=8)
    images = disk("synthetic", "train", None, tmp_path, num_train=20, image_size=8).images
    ref = memory.images
    assert (images.dtype, images.ndim, images.device, images.size(0)) == (torch.uint8, 4, torch.device("cpu"), 20)
    assert torch.equal(images[3], ref[3]) and torch.equal(images[-1], ref[-1])
    assert torch.equal(images[2:9], ref[2:9]) and torch.equal(images[::-3], ref.flip(0)[::3])
    assert torch.equal(images[np.array([7, 1])], ref[[7, 1]]) and torch.equal(images[[4, 4]], ref[[4, 4]])
    assert images[torch.tensor([], dtype=torch.int64)].shape == (0, 3, 8, 8)
    view = images.subset(torch.tensor([9, 3, 15, 0])).subset(torch.tensor([2, 0]))  # views of views: nothing read
    assert len(view) == 2 and torch.equal(view[:], ref[[15, 9]]) and torch.equal(view[-1], ref[9])
    clone = pickle.loads(pickle.dumps(view))  # e.g. into a worker process: the descriptor is reopened
    assert torch.equal(clone[:], ref[[15, 9]])
    with pytest.raises(IndexError, match="20 images"):
        images[torch.tensor([0, 20])]
    with pytest.raises(IndexError):
        images[-21]
    with pytest.raises(TypeError, match="1-D integer"):
        images[torch.ones(20, dtype=torch.bool)]


def test_disk_images_survive_short_reads_and_a_small_vector_limit(tmp_path, monkeypatch):
    from pjepa.data import diskimages

    ref = load_dataset("synthetic", "train", num_train=50, image_size=8).images
    images = disk("synthetic", "train", None, tmp_path, num_train=50, image_size=8).images
    real, calls = os.preadv, []

    def preadv(fd, views, offset):  # every other call stops after 100 bytes, mid-row
        calls.append(1)
        return real(fd, views, offset) if len(calls) % 2 else real(fd, [views[0][:100]], offset)

    monkeypatch.setattr(diskimages, "_IOV_MAX", 3)  # runs of consecutive rows split into several reads
    monkeypatch.setattr(os, "preadv", preadv)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        idx = torch.randint(0, 50, (40,), generator=g)  # repeats, runs and gaps
        assert torch.equal(images[idx], ref[idx])
    assert torch.equal(images[10:30], ref[10:30]) and torch.equal(images[idx.sort().values], ref[idx.sort().values])
    assert len(calls) > 100


def test_a_carved_split_on_disk_is_a_view_not_a_copy(tmp_path):
    opts = {"num_train": 40, "num_val": 10, "image_size": 8}
    mem = load_splits("synthetic", None, opts, "train", "val", None, 0.25, seed=3)
    dsk = load_splits("synthetic", None, opts, "train", "val", None, 0.25, seed=3, cache="disk", cache_dir=tmp_path)
    for part in ("train", "bank", "val", "eval"):
        a, b = getattr(mem, part), getattr(dsk, part)
        assert isinstance(b.images, DiskImages) and torch.equal(b.images[:], a.images), part
        assert torch.equal(b.labels, a.labels) and b.split == a.split
    assert dsk.val.images.rows is not None and dsk.val.images.path == dsk.bank.images.path


# ------------------------------------------------------------------ built once, keyed by the source


def test_a_second_open_does_not_rebuild(tmp_path, shard, monkeypatch):
    first = disk("npz", "train", shard, tmp_path / "cache", image_size=16)
    folder = the_folder(tmp_path / "cache")
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    monkeypatch.setattr(diskcache, "build", lambda *a, **k: pytest.fail("rebuilt a complete cache"))
    calls = []
    real = DATASETS.get("npz")
    monkeypatch.setitem(DATASETS._items, "npz", functools.wraps(real)(lambda *a, **k: calls.append(1) or real(*a, **k)))
    again = disk("npz", "train", shard, tmp_path / "cache", image_size=16)
    assert calls == []  # the loader is not even called: labels and class names come from the cache
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    assert torch.equal(again.images[:], first.images[:]) and again.class_names == first.class_names


def test_a_changed_source_or_option_gets_its_own_cache(tmp_path, shard):
    disk("npz", "train", shard, tmp_path / "cache", image_size=16)
    disk("npz", "train", shard, tmp_path / "cache", image_size=12)  # another decode option
    npz_shard(shard, n=20)  # the file changes (size and mtime)
    changed = disk("npz", "train", shard, tmp_path / "cache", image_size=16)
    assert len(changed) == 20
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 3


def test_the_default_cache_folder_is_under_pjepa_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PJEPA_CACHE", str(tmp_path / "home-cache"))
    ds = disk("synthetic", "val", None, None, num_val=4, image_size=8)
    assert ds.images.path.parent.parent == tmp_path / "home-cache" / "decoded"
    assert ds.images.path.parent.name.startswith("synthetic_val_")


# ------------------------------------------------------------------ interrupted builds resume


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("workers", [1, 3])
def test_an_interrupted_build_resumes_where_it_stopped_and_ends_identical(tmp_path, shard, monkeypatch, workers):
    ref = disk("npz", "train", shard, tmp_path / "ref", image_size=16)  # uninterrupted (default chunking)
    real_build, real_decode = diskcache.build, EncodedImages.decode_into
    monkeypatch.setattr(diskcache, "build", lambda folder, key, load, w=None, c=None, p=None:
                        real_build(folder, key, load, workers, 4, p))
    decoded: list[int] = []

    def decode_into(self, out, start, bar=None):
        if fail_at is not None and start == 4 * fail_at:
            raise Interrupt(f"killed at chunk {fail_at}")
        decoded.append(start // 4)
        return real_decode(self, out, start, bar)

    monkeypatch.setattr(EncodedImages, "decode_into", decode_into)
    fail_at = 5  # of 10 chunks (37 rows, 4 per chunk)
    with pytest.raises(Interrupt):
        disk("npz", "train", shard, tmp_path / "cache", image_size=16)
    folder = the_folder(tmp_path / "cache")
    manifest = diskcache.read_manifest(folder)
    done = sorted(int(i) for i in manifest["done"])
    assert manifest["complete"] is False and "5" not in manifest["done"] and done == sorted(set(decoded))
    if workers == 1:
        assert done == [0, 1, 2, 3, 4]
    fail_at, decoded[:] = None, []
    resumed = disk("npz", "train", shard, tmp_path / "cache", image_size=16)
    assert sorted(decoded) == [i for i in range(10) if i not in done]  # only what was missing
    assert torch.equal(resumed.images[:], ref.images[:])
    assert diskcache.verify(folder) == 37


def test_a_resumed_build_redoes_a_chunk_whose_bytes_changed(tmp_path, shard, monkeypatch):
    real_build = diskcache.build
    monkeypatch.setattr(diskcache, "build", lambda folder, key, load, w=None, c=None, p=None:
                        real_build(folder, key, load, 1, 4, p))
    real_decode = EncodedImages.decode_into
    decoded: list[int] = []

    def decode_into(self, out, start, bar=None):
        if stop and start == 12:
            raise Interrupt()
        decoded.append(start // 4)
        return real_decode(self, out, start, bar)

    monkeypatch.setattr(EncodedImages, "decode_into", decode_into)
    stop = True
    with pytest.raises(Interrupt):
        disk("npz", "train", shard, tmp_path / "cache", image_size=16)
    folder = the_folder(tmp_path / "cache")
    with open(folder / "images.npy", "r+b") as fh:  # a byte of chunk 1 lost (e.g. a crash before writeback)
        fh.seek(-1, os.SEEK_END)
        offset = fh.tell() + 1 - 37 * 3 * 16 * 16 + 4 * 3 * 16 * 16 + 5
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    stop, decoded[:] = False, []
    resumed = disk("npz", "train", shard, tmp_path / "cache", image_size=16)
    assert decoded == [1, 3, 4, 5, 6, 7, 8, 9]
    assert torch.equal(resumed.images[:], load_dataset("npz", "train", shard, image_size=16).images)


# ------------------------------------------------------------------ damage is named


def _flip_last_byte(folder: Path) -> None:
    with open(folder / "images.npy", "r+b") as fh:
        fh.seek(-1, os.SEEK_END)
        b = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([b[0] ^ 0xFF]))


DAMAGE = {
    "truncated": (lambda f: os.truncate(f / "images.npy", (f / "images.npy").stat().st_size - 100),
                  "images.npy has .* bytes, expected"),
    "manifest edited": (lambda f: (f / "manifest.json").write_text(
        (f / "manifest.json").read_text().replace('"complete": true', '"complete": false')),
        "does not match its checksum"),
    "manifest not json": (lambda f: (f / "manifest.json").write_text("{"), "not JSON"),
    "labels missing": (lambda f: (f / "labels.npy").unlink(), "labels.npy is missing"),
    "images missing": (lambda f: (f / "images.npy").unlink(), "images.npy is missing"),
    "last chunk changed": (_flip_last_byte, "do not match their checksum"),
    "not an npy": (lambda f: (f / "images.npy").write_bytes(b"junk" * 100), "no valid .npy header"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cache_is_a_named_error_that_says_to_delete_it(tmp_path, shard, damage):
    disk("npz", "train", shard, tmp_path / "cache", image_size=16)
    folder = the_folder(tmp_path / "cache")
    harm, message = DAMAGE[damage]
    harm(folder)
    with pytest.raises(DataError, match=message) as err:
        disk("npz", "train", shard, tmp_path / "cache", image_size=16)
    assert f"the decoded-image cache {folder} is damaged" in str(err.value)
    assert f"delete the folder {folder}" in str(err.value) and "\n" not in str(err.value)


def test_a_foreign_cache_in_the_folder_is_named(tmp_path, shard):
    disk("npz", "train", shard, tmp_path / "a", image_size=16)
    disk("npz", "train", shard, tmp_path / "b", image_size=12)
    ours, theirs = the_folder(tmp_path / "a"), the_folder(tmp_path / "b")
    for name in ("manifest.json", "images.npy", "labels.npy"):
        (ours / name).write_bytes((theirs / name).read_bytes())
    with pytest.raises(DataError, match="other sources .*delete the folder"):
        disk("npz", "train", shard, tmp_path / "a", image_size=16)


def test_verify_reads_every_chunk(tmp_path, shard, small_chunks):
    disk("npz", "train", shard, tmp_path / "cache", image_size=16)
    folder = the_folder(tmp_path / "cache")
    with open(folder / "images.npy", "r+b") as fh:  # a byte in the middle: the cheap checks on open pass
        fh.seek(-20 * 3 * 16 * 16, os.SEEK_END)
        b = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([b[0] ^ 0xFF]))
    disk("npz", "train", shard, tmp_path / "cache", image_size=16)
    with pytest.raises(DataError, match="rows 16..19 of images.npy do not match"):
        diskcache.verify(folder)


def test_a_bad_cache_mode_is_named(tmp_path):
    with pytest.raises(ConfigError, match="data.cache"):
        load_config(SMOKE, ["data.cache=ssd"])
    with pytest.raises(DataError, match="data.cache='ssd': choose memory or disk"):
        load_dataset("synthetic", "val", cache="ssd")


# ------------------------------------------------------------------ training


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keep = lambda k: (k.startswith(("train/", "knn/", "headeval/")) and "seconds" not in k) or k == "step"  # noqa: E731
    return [{k: v for k, v in r.items() if keep(k)} for r in rows]


def test_training_from_the_disk_cache_gives_bit_identical_losses(tmp_path, one_thread):
    from pjepa.eval.protocols.knn import evaluate_knn
    from pjepa.train.loop import train

    base = TINY + ["train.max_steps=8", "train.log_every=1", "train.eval_every=4"]
    train(load_config(SMOKE, base), tmp_path / "memory")
    train(load_config(SMOKE, base + ["data.cache=disk", f"data.cache_dir={tmp_path / 'cache'}"]), tmp_path / "disk")
    a, b = _metrics(tmp_path / "memory"), _metrics(tmp_path / "disk")
    assert [r["step"] for r in a if "train/loss" in r] == list(range(1, 9))
    assert any("knn/top1_weighted" in r for r in a)
    assert a == b  # every loss and every periodic kNN number
    stats = [json.loads((tmp_path / r / "data_stats.json").read_text()) for r in ("memory", "disk")]
    assert stats[0] == stats[1]
    knn = [evaluate_knn(tmp_path / r, progress=False) for r in ("memory", "disk")]  # features of splits on disk
    assert knn[0]["top1"] == knn[1]["top1"] and knn[0]["n_train"] == knn[1]["n_train"]


# ------------------------------------------------------------------ DDP: one build, disjoint reads

RANK_SCRIPT = r"""
import functools, json, os, sys
import torch
import torch.distributed as dist
from pjepa.config import DataConfig
from pjepa.data import DATASETS, DiskImages, load_dataset
from pjepa.train.batches import Batcher, BatchMaker
from pjepa.train.distributed import init_distributed

info, device = init_distributed("cpu")
shard, cache_dir, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
calls = []
real = DATASETS.get("npz")
DATASETS._items["npz"] = functools.wraps(real)(lambda *a, **k: calls.append(1) or real(*a, **k))
ds = load_dataset("npz", "train", shard, cache="disk", cache_dir=cache_dir, image_size=16)
reads = []
read = DiskImages._read
def logged(self, idx):
    reads.extend(idx.tolist())
    return read(self, idx)
DiskImages._read = logged
batcher = Batcher(len(ds), 16, info, seed=0, device=device)
maker = BatchMaker(ds, DataConfig(image_size=16), batcher, torch.zeros(3), torch.ones(3), 0, device)
for step in range(steps):
    maker(step)
maker._ahead[1].result()  # the read-ahead of the next step has happened too
dist.barrier()
with open(os.path.join(out, f"rank{info.rank}.json"), "w") as fh:
    json.dump({"loader_calls": len(calls), "reads": reads,
               "shares": [batcher.indices(s).tolist() for s in range(steps + 1)]}, fh)
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ddp_ranks_build_once_and_read_disjoint_rows(tmp_path):
    """Two gloo processes open one cache at the same moment: one decodes it while the other waits on the
    lock; then each reads only the rows of its own share of each batch."""
    shard = npz_shard(tmp_path / "s.npz", n=64)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", WORLD_SIZE="2",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    steps = 3  # of 4 per epoch (64 images, global batch 16): the read-ahead of step 3 stays in the epoch
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(shard), str(tmp_path / "cache"), str(out),
                               str(steps)], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        results = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stdout[-2000:] + stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert sum(r["loader_calls"] for r in ranks) == 1  # decoded by one process; the other mapped its file
    reads = [set(r["reads"]) for r in ranks]
    assert not reads[0] & reads[1]  # no row read by both ranks
    for r in ranks:  # each rank read exactly its shares of steps 0..3 (3: read ahead), each row once
        share = [i for s in r["shares"] for i in s]
        assert sorted(r["reads"]) == sorted(share) and len(share) == 32
    assert reads[0] | reads[1] == set(range(64))
