"""Frozen patch embeddings of a run's encoder, written once as shards: the data of the generative study.

The study (jepa-embeddings-generative-study, section 3) models the distribution of
``Enc(I) in R^{K x K x D}``: the encoder's last-layer (normed) patch tokens on a K x K grid, K =
image_size / patch_size. ``extract_tokens`` runs the frozen encoder over every image of a split and
writes

    OUT/manifest.json                   run, step, encoder, split, K, D, N, image_size, mean/std, shards
    OUT/shard_00000.safetensors         tokens  float16 (n, D, K, K)   the maps, channels first
                                        labels  int64   (n,)
                                        index   int64   (n,)           position of each image in the split

Storage is float16: the tokens leave a LayerNorm, so they are O(1) and float16 keeps about 3
significant digits (relative error <= 2^-11) at half the disk of float32; ``dtype="float32"``
keeps them exact. ``TokenShards`` reads them back as float32 maps. ``index`` pairs each map with
its image (``TokenShards.images()`` reloads the split), which the pixel decoder trains on.

Extraction is resumable: the manifest is written first and a shard is written atomically when
complete, so a rerun with the same arguments writes only the shards that are missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from tqdm import tqdm

from pjepa.data import ImageDataset, resize_normalize, splits_for
from pjepa.errors import ConfigError, DataError
from pjepa.methods.load import load_run_method
from pjepa.runs import Run, atomic_write_bytes, resolve_device
from pjepa.utils import stream_seed

FORMAT = "pjepa.tokens/1"
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "eval")
DTYPES = {"float16": torch.float16, "float32": torch.float32}
#: Manifest keys that must agree for a rerun to resume into an existing folder.
IDENTITY = ("run", "checkpoint", "step", "encoder", "split", "limit", "subset_seed", "N", "K", "D", "dtype",
            "shard_size")


def tokens_to_maps(tokens: torch.Tensor, grid_size: int) -> torch.Tensor:
    """(B, N, D) tokens in the patch embedding's row-major order -> (B, D, K, K) maps, N = K * K."""
    b, n, d = tokens.shape
    if n != grid_size * grid_size:
        raise ValueError(f"{n} tokens do not fill a {grid_size} x {grid_size} grid")
    return tokens.transpose(1, 2).reshape(b, d, grid_size, grid_size)


def split_dataset(run: Run, split: str) -> ImageDataset:
    """The images of ``split`` ("train": pretraining images, "val": held out of train, "eval": reported)."""
    if split not in SPLITS:
        raise ConfigError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    return getattr(splits_for(run.config), split)


def subset_indices(n: int, limit: int, seed: int, split: str) -> torch.Tensor:
    """Sorted int64 indices: all ``n`` (limit 0), else a seeded random ``limit`` of them (never a prefix)."""
    if limit < 0:
        raise ConfigError(f"limit={limit}: pass 0 (every image) or a positive number of images")
    if limit == 0 or limit >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(stream_seed(seed, 0, 0, f"tokens-{split}"))
    return torch.randperm(n, generator=g)[:limit].sort().values


def _plan(run: Run, step: int, grid: int, dim: int, which: str, checkpoint: str, split: str,
          limit: int, subset_seed: int, n: int, shard_size: int, dtype: str) -> dict[str, Any]:
    """The manifest of an extraction: what was encoded, how, and which shard holds which rows."""
    mean, std = run.stats()
    shards = [{"file": f"shard_{i:05d}.safetensors", "start": s, "stop": min(s + shard_size, n)}
              for i, s in enumerate(range(0, n, shard_size))]
    return {
        "format": FORMAT, "run": str(run.path.resolve()), "checkpoint": checkpoint, "step": step,
        "encoder": which, "split": split, "limit": limit, "subset_seed": subset_seed, "N": n,
        "K": grid, "D": dim, "dtype": dtype, "layout": "(n, D, K, K)",
        "shard_size": shard_size, "image_size": int(run.config.data.image_size), "dataset": run.config.data.name,
        "mean": mean.tolist(), "std": std.tolist(), "shards": shards,
    }


def _start_manifest(out: Path, plan: dict[str, Any]) -> None:
    """Write the manifest, or check that the one already in ``out`` describes the same extraction."""
    path = out / MANIFEST
    if path.is_file():
        old = read_manifest(out)
        diff = [f"{k}: {old.get(k)!r} there, {plan[k]!r} now" for k in IDENTITY if old.get(k) != plan[k]]
        if diff:
            raise ConfigError(f"{out} holds tokens of another extraction ({'; '.join(diff)}); pass a new "
                              "out_dir, or delete that folder to extract again")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(plan, indent=2) + "\n").encode())


def _shard_done(path: Path, rows: int) -> bool:
    """True when ``path`` is a readable shard of ``rows`` rows (its header only is read)."""
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_slice("labels").get_shape() == [rows]
    except (SafetensorError, OSError, KeyError):
        return False


@torch.no_grad()
def _encode(encoder: torch.nn.Module, images: torch.Tensor, plan: dict[str, Any], device: torch.device,
            batch_size: int, bar: tqdm) -> torch.Tensor:
    """uint8 (n, 3, H, W) -> (n, D, K, K) maps in the manifest's dtype, on CPU."""
    mean, std = torch.tensor(plan["mean"], device=device), torch.tensor(plan["std"], device=device)
    amp = torch.bfloat16 if device.type == "cuda" else None
    out = []
    for s in range(0, images.shape[0], batch_size):
        x = resize_normalize(images[s : s + batch_size].to(device), plan["image_size"], mean, std)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            tokens = encoder(x).float()  # (b, N, D)
        out.append(tokens_to_maps(tokens, plan["K"]).to("cpu", DTYPES[plan["dtype"]]))
        bar.update(x.shape[0])
    maps = torch.cat(out)
    if not bool(torch.isfinite(maps).all()):
        raise ConfigError(f"the {plan['encoder']} encoder's tokens overflow {plan['dtype']}; extract with "
                          "dtype='float32' into a new out_dir")
    return maps


def extract_tokens(
    run_dir: str | Path,
    out_dir: str | Path,
    split: str = "train",
    encoder: str = "target",
    checkpoint: str = "last",
    limit: int = 0,
    shard_size: int = 4096,
    device: str = "auto",
    progress: bool = True,
    batch_size: int = 0,
    dtype: str = "float16",
    seed: int | None = None,
) -> TokenShards:
    """Encode every image of ``split`` (or a seeded random ``limit`` of them) with the run's frozen
    ``encoder`` ("target" (EMA) or "context") at ``checkpoint`` and write shards of ``shard_size`` maps
    to ``out_dir``; a rerun writes only missing shards. ``batch_size`` 0: the run's ``eval.batch_size``.
    On CUDA the encoder runs under bf16 autocast (as feature extraction does). ``seed`` picks the ``limit``
    subset (default: the run's ``train.seed``; the generative study passes its own, so runs of different
    seeds encode the same images). Returns the shards."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: choose float16 (half the disk) or float32 (exact)")
    if shard_size <= 0:
        raise ConfigError(f"shard_size={shard_size}: pass a positive number of images per shard")
    run, out = Run(run_dir), Path(out_dir)
    data = split_dataset(run, split)
    subset_seed = run.config.train.seed if seed is None else seed
    idx = subset_indices(len(data), limit, subset_seed, split)
    if len(idx) == 0:
        raise DataError(f"split {split!r} of {run.path} holds no images; choose another split")
    method, step = load_run_method(run, checkpoint)
    net = method.feature_encoder(encoder).eval()
    plan = _plan(run, step, int(net.grid_size), int(net.embed_dim), encoder, checkpoint, split, limit, subset_seed,
                 len(idx), shard_size, dtype)
    _start_manifest(out, plan)
    todo = [s for s in plan["shards"] if not _shard_done(out / s["file"], s["stop"] - s["start"])]
    dev = resolve_device(device)
    net.to(dev)
    bar = tqdm(total=sum(s["stop"] - s["start"] for s in todo), desc=f"tokens ({split})", unit="img",
               disable=not progress)
    for shard in todo:
        rows = idx[shard["start"] : shard["stop"]]
        maps = _encode(net, data.images[rows], plan, dev, batch_size or run.config.eval.batch_size, bar)
        tensors = {"tokens": maps.contiguous(), "labels": data.labels[rows].long(), "index": rows.long()}
        atomic_write_bytes(out / shard["file"], save_safetensors_bytes(tensors, metadata={"format": FORMAT}))
    bar.close()
    return TokenShards(out)


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of a token folder, or a DataError saying how to make one."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path} is missing: {out_dir} holds no extracted tokens; run "
                        "pjepa.studies.generative.tokens.extract_tokens(run_dir, out_dir) first")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}); delete {out_dir} and extract again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"{path} is not a {FORMAT} manifest; delete {out_dir} and extract again")
    return data


class TokenShards:
    """The maps written by ``extract_tokens``: ``len``, ``load()`` (all or some, float32), ``[i]``.

    Maps are (n, D, K, K) float32 (``K``, ``D`` as attributes), labels int64 (n,). ``split_indices()``
    gives each map's position in the run's split and ``images()`` the paired uint8 images.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir)
        self.manifest = read_manifest(self.path)
        self.K, self.D, self.N = int(self.manifest["K"]), int(self.manifest["D"]), int(self.manifest["N"])
        self._starts = torch.tensor([s["start"] for s in self.manifest["shards"]])
        missing = [s["file"] for s in self.manifest["shards"] if not (self.path / s["file"]).is_file()]
        if missing:
            raise DataError(f"{self.path} lacks {len(missing)} shard(s) ({', '.join(missing[:3])}"
                            f"{', ...' if len(missing) > 3 else ''}): the extraction stopped early; rerun "
                            "extract_tokens with the same arguments to finish it")
        self._cache: tuple[int, dict[str, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return self.N

    def __repr__(self) -> str:
        m = self.manifest
        return f"TokenShards({str(self.path)!r}: {self.N} x ({self.D}, {self.K}, {self.K}), {m['encoder']} step {m['step']})"

    def _shard(self, i: int) -> dict[str, torch.Tensor]:
        """Shard ``i``'s tensors (the last one read is kept: ``[i]`` in order reads each file once)."""
        if self._cache is None or self._cache[0] != i:
            spec = self.manifest["shards"][i]
            path = self.path / spec["file"]
            try:
                tensors = load_safetensors_bytes(path.read_bytes())
            except (SafetensorError, OSError) as e:
                raise DataError(f"{path} cannot be read ({e}); delete it and rerun extract_tokens") from None
            if tensors["labels"].shape[0] != spec["stop"] - spec["start"]:
                raise DataError(f"{path} holds {tensors['labels'].shape[0]} rows, the manifest says "
                                f"{spec['stop'] - spec['start']}; delete it and rerun extract_tokens")
            self._cache = (i, tensors)
        return self._cache[1]

    def _gather(self, keys: tuple[str, ...], indices: torch.Tensor | None) -> list[torch.Tensor]:
        """The tensors ``keys`` of every row (None) or of ``indices``, reading each shard once."""
        if indices is None:
            parts = [self._shard(i) for i in range(len(self._starts))]
            return [torch.cat([p[k] for p in parts]) for k in keys]
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.N):
            raise IndexError(f"token index out of range 0..{self.N - 1} ({self.path})")
        which = torch.searchsorted(self._starts, indices, right=True) - 1
        first = self._shard(int(which[0]) if indices.numel() else 0)
        out = [first[k].new_empty((len(indices), *first[k].shape[1:])) for k in keys]
        for i in torch.unique(which).tolist():
            sel = (which == i).nonzero().squeeze(1)
            shard, rows = self._shard(i), indices[sel] - int(self._starts[i])
            for o, k in zip(out, keys):
                o[sel] = shard[k][rows]
        return out

    def load(self, indices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(maps float32 (n, D, K, K), labels int64 (n,)) of every item (None) or of ``indices``.
        All of them take N * D * K * K * 4 bytes of memory."""
        maps, labels = self._gather(("tokens", "labels"), indices)
        return maps.float(), labels.long()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """(map float32 (D, K, K), label) of item ``i``."""
        maps, labels = self.load(torch.tensor([i]))
        return maps[0], int(labels[0])

    def split_indices(self) -> torch.Tensor:
        """int64 (N,): where each map's image sits in the run's split."""
        return self._gather(("index",), None)[0].long()

    def images(self) -> torch.Tensor:
        """uint8 (N, 3, H, W): the images the maps encode, in the same order (reloads the run's split)."""
        data = split_dataset(Run(self.manifest["run"]), self.manifest["split"])
        return data.images[self.split_indices()]
