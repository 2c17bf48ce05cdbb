"""``data.cache: disk`` at scale: resident memory while training batches are read, and step throughput
disk vs memory. One table.

    python benchmarks/disk_cache.py                                # both parts, ImageNet-100 scale (~20 GB)
    python benchmarks/disk_cache.py --part memory --images 5000    # a quick check of part (a)
    PJEPA_DATA=/path python benchmarks/disk_cache.py --part throughput --data cifar10   # (b) on real CIFAR-10

(a) memory: a decoded split of ``--images`` images at ``--image-size`` px (default 130,000 at 224 px,
    ImageNet-100's training split, 19.6 GB) is written into a disk cache by the cache's own builder
    (chunks, thread pool, manifest) from low-frequency noise instead of 130k decoded JPEGs, then read
    back as training batches by ``pjepa.train.batches.BatchMaker`` (this rank's rows, read one step
    ahead, cropped, flipped and normalised on ``--device``) for ``--steps`` steps (default one epoch).
    The file's pages are dropped from the page cache first (``posix_fadvise``), so reads start cold.
    A thread samples ``/proc/self/status`` every 20 ms: the rows give the resident set (VmRSS) and its
    file-backed part (RssFile) before iterating and at their peak; the growth must stay under 2 GB.
    The same batches read through ``numpy.load(mmap_mode="r")`` are the comparison row: a mapping's
    touched pages count in the resident set, the reason ``DiskImages`` reads with ``preadv`` instead.
(b) throughput: training steps of the ``cifar10/cpu`` preset's model on a CIFAR-10-size split
    (``--data synthetic``: ``--train-images`` generated 32 px images, default 50,000; ``--data cifar10``: ``$PJEPA_DATA/cifar10_jpeg.npz``)
    with ``data.cache=memory`` and ``data.cache=disk``, alternated over ``--rounds`` rounds of
    ``--round-steps`` steps; medians.

The cache folders go under ``<--cache-dir>/benchmark`` (default ``$PJEPA_CACHE/decoded``; it needs the
split's size free, on a real disk, not a tmpfs) and are deleted at the end unless ``--keep`` (a later run
then reuses them).
Record results in docs/data.md with date, machine and command.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pjepa.config import DataConfig, load_config  # noqa: E402
from pjepa.data import ImageDataset, diskcache  # noqa: E402
from pjepa.data.decode import EncodedImages  # noqa: E402
from pjepa.runs.device import resolve_device  # noqa: E402
from pjepa.train.batches import Batcher, BatchMaker  # noqa: E402
from pjepa.train.distributed import DistInfo  # noqa: E402
from pjepa.train.loop import Trainer  # noqa: E402

GB = 1e9
LIMIT_GB = 2.0


class NoiseImages(EncodedImages):
    """``n`` "decoded" images: 8 x 8 cells of random colour XOR a fixed fine texture shifted by the image's
    index, made per chunk from a seed of the chunk's first row: a stand-in for decoding, at memory speed."""

    def __init__(self, n: int, size: int) -> None:
        super().__init__(n, lambda i: b"", "synthetic noise", None, size)
        self.texture = np.random.default_rng(0).integers(0, 64, (3, size, size), dtype=np.uint8)

    def decode_into(self, out: np.ndarray, start: int, bar=None) -> None:
        k, s = out.shape[0], self.image_size
        cell = -(-s // 8)
        coarse = np.random.default_rng(start).integers(0, 256, (k, 3, 8, 1, 8, 1), dtype=np.uint8)
        blocks = np.broadcast_to(coarse, (k, 3, 8, cell, 8, cell)).reshape(k, 3, 8 * cell, 8 * cell)
        shift = (np.arange(start, start + k) % 64).astype(np.uint8).reshape(k, 1, 1, 1)
        np.bitwise_xor(blocks[:, :, :s, :s], self.texture[None] + shift, out=out)


def status() -> dict[str, float]:
    """VmRSS, RssAnon, RssFile of this process in bytes (Linux); {} elsewhere."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = float(value.split()[0]) * 1024
    return out


class Sampler:
    """Peak of ``status()`` sampled every ``interval`` s on a thread, between ``start`` and ``stop``."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak, self._stop = interval, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for k, v in status().items():
                self.peak[k] = max(self.peak.get(k, 0.0), v)
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for k, v in status().items():
            self.peak[k] = max(self.peak.get(k, 0.0), v)


def drop_page_cache(path: Path) -> None:
    """Ask the kernel to forget the file's cached pages (clean pages only; no root needed)."""
    if hasattr(os, "posix_fadvise"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def build_noise_cache(root: Path, n: int, size: int, workers: int | None) -> tuple[Path, float]:
    """The cache folder of ``n`` noise images at ``size`` px (built unless already complete), build seconds."""
    key = diskcache.source_key("noise", "train", None, {"images": n, "image_size": size}, skip=root)
    folder = diskcache.cache_folder(root, key)
    t0 = time.perf_counter()
    if diskcache.open_cache(folder) is None:
        labels = torch.arange(n, dtype=torch.int64) % 100
        load = lambda: ImageDataset(NoiseImages(n, size), labels, [f"c{i}" for i in range(100)],  # noqa: E731
                                    "noise", "train")
        root.mkdir(parents=True, exist_ok=True)
        with diskcache.build_lock(root, folder.name):
            diskcache.build(folder, key, load, workers=workers, progress=True)
    return folder, time.perf_counter() - t0


def measured(path: Path, work) -> tuple[float, dict[str, float], dict[str, float]]:
    """(seconds, status before, peak status) of ``work()``, started with the file's pages out of the page cache."""
    drop_page_cache(path)
    before = status()
    with Sampler() as sampled:
        t0 = time.perf_counter()
        work()
        seconds = time.perf_counter() - t0
    return seconds, before, sampled.peak


def part_memory(args: argparse.Namespace, root: Path) -> list[tuple[str, str]]:
    n, size, batch = args.images, args.image_size, args.batch
    folder, build_s = build_noise_cache(root, n, size, args.workers)
    ds = diskcache.open_cache(folder)
    assert ds is not None
    path, nbytes = ds.images.path, n * 3 * size * size
    steps = args.steps or n // batch
    device = resolve_device(args.device)
    batcher = Batcher(n, batch, DistInfo(), seed=0, device=device)
    maker = BatchMaker(ds, DataConfig(image_size=size), batcher, torch.full((3,), 0.5), torch.full((3,), 0.25),
                       0, device)

    def read_disk() -> None:  # what a rank reads: its rows of each step
        for step in range(steps):
            ds.images[batcher.host_indices(step)]

    def read_mapped() -> None:  # the same rows through a memory map
        mapped = np.load(path, mmap_mode="r")
        for step in range(steps):
            torch.from_numpy(mapped[np.sort(batcher.host_indices(step).numpy())])
        del mapped

    def batches() -> None:  # the training batches: rows read one step ahead, augmented on the device
        for step in range(steps):
            maker(step)
        maker._ahead[1].result()
        if device.type == "cuda":
            torch.cuda.synchronize()

    gb = lambda b: f"{b / GB:.2f} GB"  # noqa: E731
    rows = [(f"(a) split: {n:,} images at {size} px, uint8", f"{nbytes / GB:.1f} GB on disk ({path.parent})"),
            ("(a) cache build (noise through the cache's builder; 0 when kept from a run with --keep)",
             f"{build_s:.1f} s")]
    for what, work in ((f"DiskImages reads, {steps} batches of {batch}", read_disk),
                       ("numpy.load(mmap_mode='r') reads, same batches", read_mapped),
                       (f"training batches (BatchMaker: reads + crop/flip/normalise on {device})", batches)):
        seconds, before, peak = measured(path, work)
        growth = peak.get("VmRSS", 0.0) - before.get("VmRSS", 0.0)
        bound = "within" if growth < LIMIT_GB * GB else "OVER"
        rows += [(f"(a) {what}, cold page cache", f"{steps * batch / seconds:.0f} images/s"),
                 (f"(a) {what}: peak VmRSS growth (RssFile part)",
                  f"{gb(growth)} ({gb(peak.get('RssFile', 0.0) - before.get('RssFile', 0.0))}); {bound} "
                  f"{LIMIT_GB:.0f} GB; VmRSS before {gb(before.get('VmRSS', 0.0))}")]
    return rows


def make_trainer(args: argparse.Namespace, cache: str, root: Path, tmp: Path) -> Trainer:
    preset = ROOT / "configs" / "cifar10" / "cpu.yaml"
    overrides = [f"data.cache={cache}", f"data.cache_dir={root}", f"optim.batch_size={args.train_batch}",
                 "train.progress=false", "train.eval_every=0", "train.max_steps=1000000",
                 f"train.device={args.device}", f"train.precision={args.precision}"]
    if args.data == "synthetic":
        overrides += ["data.name=synthetic", "data.path=null", "data.eval_split=val",
                      f"data.options={{num_train: {args.train_images}, num_val: 1000, image_size: 32, num_classes: 10}}"]
    return Trainer(load_config(preset, overrides), tmp / cache)


def time_steps(trainer: Trainer, start: int, steps: int) -> float:
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for s in range(start, start + steps):
        trainer.train_step(s)
    sync()
    return (time.perf_counter() - t0) / steps


def part_throughput(args: argparse.Namespace, root: Path, tmp: Path) -> list[tuple[str, str]]:
    trainers = {cache: make_trainer(args, cache, root, tmp) for cache in ("memory", "disk")}
    for t in trainers.values():
        time_steps(t, 0, args.warmup)
    per: dict[str, list[float]] = {c: [] for c in trainers}
    for r in range(args.rounds):  # alternate so drift on a shared machine hits both
        for cache, t in trainers.items():
            per[cache].append(time_steps(t, args.warmup + r * args.round_steps, args.round_steps))
    med = {c: statistics.median(v) for c, v in per.items()}
    b = args.train_batch
    what = (f"{args.train_images:,} synthetic 32 px" if args.data == "synthetic"
            else "CIFAR-10 train (45,000 after validation)")
    return [(f"(b) train images/s, data.cache=memory ({what}, batch {b}, median of {args.rounds})",
             f"{b / med['memory']:.1f}"),
            ("(b) train images/s, data.cache=disk", f"{b / med['disk']:.1f}"),
            ("(b) step time disk / memory", f"{med['disk'] / med['memory']:.3f}x")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["memory", "throughput", "both"], default="both")
    p.add_argument("--cache-dir", type=Path, default=None, help="default: $PJEPA_CACHE/decoded")
    p.add_argument("--keep", action="store_true", help="keep the cache folders written")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=None, help="cache-building threads (default: one per core)")
    p.add_argument("--images", type=int, default=130_000, help="(a) images in the split")
    p.add_argument("--image-size", type=int, default=224, help="(a) side in pixels")
    p.add_argument("--batch", type=int, default=256, help="(a) batch size")
    p.add_argument("--steps", type=int, default=0, help="(a) batches read (0: one epoch)")
    p.add_argument("--data", choices=["synthetic", "cifar10"], default="synthetic", help="(b) the split")
    p.add_argument("--train-images", type=int, default=50_000, help="(b) synthetic training images")
    p.add_argument("--train-batch", type=int, default=128, help="(b) batch size")
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--rounds", type=int, default=4, help="(b) alternations of memory and disk (>= 4)")
    p.add_argument("--round-steps", type=int, default=20, help="(b) timed steps per round")
    p.add_argument("--warmup", type=int, default=3, help="(b) untimed steps first")
    args = p.parse_args()
    if args.part != "memory" and args.rounds < 4:
        p.error("--rounds must be at least 4")
    root = (args.cache_dir or diskcache.default_cache_dir()) / "benchmark"  # reused by the next run with --keep
    rows: list[tuple[str, str]] = []
    try:
        with tempfile.TemporaryDirectory() as d:
            if args.part in ("memory", "both"):
                rows += part_memory(args, root)
            if args.part in ("throughput", "both"):
                rows += part_throughput(args, root, Path(d))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"
    print(f"\n| measurement ({dev}, torch {torch.__version__}, threads={torch.get_num_threads()}) | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
