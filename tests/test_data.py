"""Tests of pjepa.data loaders, decoding and download, on tiny files in tmp_path."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
from conftest import SMOKE
from PIL import Image

from pjepa.checks import check_config
from pjepa.config import load_config
from pjepa.data import DATASETS, ImageDataset, load_dataset
from pjepa.data.cifar import safe_unpickle
from pjepa.data.decode import decode_images
from pjepa.data.download import download, extract_tar
from pjepa.errors import ConfigError, DataError

# ------------------------------------------------------------------ helpers


def encode(color=(200, 30, 60), size=(8, 8), mode="RGB", fmt="JPEG") -> bytes:
    """A small solid image, encoded."""
    img = Image.new("RGB", size, color).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=95)
    return buf.getvalue()


def shard_arrays(split: str, blobs: list[bytes], labels: list[int], files: list[str] | None = None) -> dict:
    lengths = [len(b) for b in blobs]
    out = {
        f"{split}_bytes": np.frombuffer(b"".join(blobs), dtype=np.uint8),
        f"{split}_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        f"{split}_y": np.asarray(labels, dtype=np.int16),
    }
    if files is not None:
        out[f"{split}_files"] = np.asarray(files)
    return out


def write_shard(path, split="train", blobs=None, labels=(0, 1), class_names=("a", "b"), files=None, **extra):
    blobs = blobs if blobs is not None else [encode((10 * i, 0, 0)) for i in range(len(labels))]
    arrays = shard_arrays(split, blobs, list(labels), files)
    if class_names is not None:
        arrays["class_names"] = np.asarray(class_names)
    np.savez(path, **arrays, **extra)
    return path


# ---------------------------------------------------------------- registry


def test_registered_names():
    for name in ["npz", "imagefolder", "cifar10", "cifar100", "stl10", "synthetic",
                 "tiny-imagenet-100", "tiny-imagenet-200"]:
        assert name in DATASETS


def test_unknown_option_and_dataset():
    with pytest.raises(DataError, match="bogus"):
        load_dataset("synthetic", "train", bogus=1)
    with pytest.raises(ConfigError, match="choose one of"):
        load_dataset("nope", "train")


# --------------------------------------------------------------------- npz


def test_npz_two_shards_concatenated_in_order(tmp_path):
    a = write_shard(tmp_path / "a.npz", labels=[0, 1], blobs=[encode((0, 0, 0)), encode((250, 250, 250))])
    b = write_shard(tmp_path / "b.npz", labels=[1], blobs=[encode((0, 0, 250))])
    write_shard(tmp_path / "c.npz", split="val", labels=[0])  # no train split: skipped
    ds = load_dataset("npz", "train", path=[b, a])
    assert isinstance(ds, ImageDataset) and len(ds) == 3
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (3, 3, 8, 8)
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [1, 0, 1]
    assert ds.images[0, 2].float().mean() > 200 and ds.images[0, 0].float().mean() < 50  # blue first
    assert ds.class_names == ["a", "b"] and ds.split == "train"
    globbed = load_dataset("npz", "train", path=str(tmp_path / "*.npz"))  # sorted: a, b, c
    assert globbed.labels.tolist() == [0, 1, 1]
    assert load_dataset("npz", "train", path=tmp_path).labels.tolist() == [0, 1, 1]


def test_npz_missing_keys_lists_keys_and_splits(tmp_path):
    arrays = shard_arrays("train", [encode()], [0])
    del arrays["train_offsets"]
    np.savez(tmp_path / "bad.npz", **arrays, class_names=np.asarray(["a"]))
    with pytest.raises(DataError, match="train_offsets") as err:
        load_dataset("npz", "train", path=tmp_path / "bad.npz")
    assert "keys found" in str(err.value) and "train_bytes" in str(err.value)
    good = write_shard(tmp_path / "good.npz")
    with pytest.raises(DataError, match="splits available: good.npz: train"):
        load_dataset("npz", "val", path=good)


def test_npz_label_class_mismatch(tmp_path):
    path = write_shard(tmp_path / "x.npz", labels=[0, 2], class_names=["a", "b"])
    with pytest.raises(DataError, match="2 class_names"):
        load_dataset("npz", "train", path=path)


def test_npz_class_names_must_agree(tmp_path):
    a = write_shard(tmp_path / "a.npz", class_names=["a", "b"])
    b = write_shard(tmp_path / "b.npz", class_names=["a", "c"])
    with pytest.raises(DataError, match="class_names differ"):
        load_dataset("npz", "train", path=[a, b])


def test_npz_empty_split(tmp_path):
    path = write_shard(tmp_path / "e.npz", labels=[], blobs=[])
    with pytest.raises(DataError, match="empty"):
        load_dataset("npz", "train", path=path)


def test_npz_missing_path(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(DataError, match="nope.npz does not exist.*npz shard"):
        load_dataset("npz", "train", path=missing)
    with pytest.raises(DataError, match="no file matches"):
        load_dataset("npz", "train", path=str(tmp_path / "*.npz"))
    with pytest.raises(DataError, match="needs path"):
        load_dataset("npz", "train")


def test_npz_refuses_pickled_objects(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, train_bytes=np.asarray([{"a": 1}], dtype=object), train_offsets=np.zeros(1), train_y=np.zeros(0))
    with pytest.raises(DataError, match="cannot read npz shard"):
        load_dataset("npz", "train", path=path)


def test_grayscale_and_rgba_converted_to_rgb(tmp_path):
    blobs = [encode((90, 90, 90), mode="L"), encode((10, 200, 30), mode="RGBA", fmt="PNG"),
             encode((10, 200, 30), mode="CMYK")]
    ds = load_dataset("npz", "train", path=write_shard(tmp_path / "g.npz", blobs=blobs, labels=[0, 1, 1]))
    assert ds.images.shape == (3, 3, 8, 8)
    gray = ds.images[0].float()
    assert torch.allclose(gray[0], gray[1]) and torch.allclose(gray[1], gray[2])
    assert abs(ds.images[1, 1].float().mean().item() - 200) < 2


def test_corrupt_image_names_index_and_file(tmp_path):
    blobs = [encode(), b"\xff\xd8\xff\xe0 this is not a jpeg"]
    path = write_shard(tmp_path / "c.npz", blobs=blobs, files=["ok.JPEG", "broken.JPEG"])
    with pytest.raises(DataError, match=r"image 1 .*broken\.JPEG.*c\.npz"):
        load_dataset("npz", "train", path=path)


def test_sizes_differ_needs_image_size(tmp_path):
    blobs = [encode(size=(8, 8)), encode(size=(12, 10))]
    path = write_shard(tmp_path / "s.npz", blobs=blobs)
    with pytest.raises(DataError, match="image_size"):
        load_dataset("npz", "train", path=path)
    assert load_dataset("npz", "train", path=path, image_size=6).images.shape == (2, 3, 6, 6)


def test_decode_images_direct():
    out = decode_images([encode(size=(5, 7))] * 3, source="mem")
    assert out.shape == (3, 3, 7, 5) and out.dtype == torch.uint8


# -------------------------------------------------------------- imagefolder


def _save(path, color=(1, 2, 3), size=(8, 8), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).convert(mode).save(path, format=fmt)


def test_imagefolder(tmp_path):
    _save(tmp_path / "train" / "dog" / "1.png", (0, 255, 0), mode="RGBA")
    _save(tmp_path / "train" / "cat" / "sub" / "2.JPG", (255, 0, 0), fmt="JPEG")
    _save(tmp_path / "train" / "cat" / "3.bmp", (255, 0, 0))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    ds = load_dataset("imagefolder", "train", path=tmp_path)
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1]
    assert ds.images.shape == (3, 3, 8, 8) and ds.images[2, 1, 0, 0] == 255
    flat = load_dataset("imagefolder", "whatever", path=tmp_path / "train")  # no subfolder: root is the split
    assert len(flat) == 3
    _save(tmp_path / "train" / "dog" / "big.png", size=(16, 16))
    with pytest.raises(DataError, match="image_size"):
        load_dataset("imagefolder", "train", path=tmp_path)
    assert load_dataset("imagefolder", "train", path=tmp_path, image_size=8).images.shape == (4, 3, 8, 8)


# ----------------------------------------------------------- tiny imagenet


def test_tiny_imagenet_folder_layout(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(101)]
    (root / "train").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # unsorted on disk
    (root / "words.txt").write_text("".join(f"{w}\tthing {i}, other name\n" for i, w in enumerate(wnids)))
    blob = encode((50, 50, 50), size=(4, 4), mode="L")
    for w in wnids:
        (root / "train" / w / "images").mkdir(parents=True)
        (root / "train" / w / "images" / f"{w}_0.JPEG").write_bytes(blob)
    (root / "val" / "images").mkdir(parents=True)
    ann = [("val_0.JPEG", wnids[100]), ("val_1.JPEG", wnids[5]), ("val_2.JPEG", wnids[0])]
    for f, _ in ann:
        (root / "val" / "images" / f).write_bytes(blob)
    (root / "val" / "val_annotations.txt").write_text("".join(f"{f}\t{w}\t0\t0\t4\t4\n" for f, w in ann))
    train = load_dataset("tiny-imagenet-100", "train", path=tmp_path)
    assert len(train) == 100 and train.labels.tolist() == list(range(100))
    assert train.class_names[3] == "thing 3" and train.images.shape == (100, 3, 4, 4)
    val = load_dataset("tiny-imagenet-100", "val", path=root)
    assert val.labels.tolist() == [0, 5]  # class 100 dropped, grouped by class
    with pytest.raises(DataError, match="lists 101 classes"):
        load_dataset("tiny-imagenet-200", "val", path=root)
    with pytest.raises(DataError, match="splits train, val"):
        load_dataset("tiny-imagenet-100", "test", path=root)


def _write_hf_parquet(path, labels):
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [f"n{i:08d}" for i in range(200)]
    image = pa.array([{"bytes": encode((i, 0, 0)), "path": None} for i in range(len(labels))],
                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    meta = {"info": {"features": {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}}}
    table = pa.table({"image": image, "label": pa.array(labels, type=pa.int64())})
    table = table.replace_schema_metadata({"huggingface": json.dumps(meta)})
    pq.write_table(table, path)
    return path


def test_tiny_imagenet_hf_parquet_download(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    src = tmp_path / "src"
    src.mkdir()
    train_pq = _write_hf_parquet(src / "train.parquet", [0, 150, 99, 3])
    val_pq = _write_hf_parquet(src / "valid.parquet", [7, 199])
    monkeypatch.setenv("PJEPA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PJEPA_TINY_IMAGENET_TRAIN_URL", train_pq.as_uri())
    train = load_dataset("tiny-imagenet-100", "train")
    assert train.labels.tolist() == [0, 99, 3] and train.class_names[0] == "n00000000"
    assert train.num_classes == 100 and train.images.shape == (3, 3, 8, 8)
    cache = tmp_path / "cache" / "tiny-imagenet"
    assert (cache / "tiny-imagenet-200_train_jpeg.npz").is_file()
    assert not (cache / "train.parquet").exists()
    train_pq.unlink()  # the converted cache is reused, no second download
    assert len(load_dataset("tiny-imagenet-200", "train")) == 4
    with pytest.raises(DataError, match="mycache does not exist"):
        load_dataset("tiny-imagenet-200", "val", path=tmp_path / "mycache")
    (tmp_path / "mycache").mkdir()
    val = load_dataset("tiny-imagenet-200", "val", path=tmp_path / "mycache", urls={"val": val_pq.as_uri()})
    assert val.labels.tolist() == [7, 199] and val.num_classes == 200


def test_tiny_imagenet_npz_shards(tmp_path):
    names = [f"c{i}" for i in range(200)]
    path = write_shard(tmp_path / "t.npz", labels=[0, 150, 99], class_names=names)
    ds = load_dataset("tiny-imagenet-100", "train", path=str(path))
    assert ds.labels.tolist() == [0, 99] and ds.class_names == names[:100]
    small = write_shard(tmp_path / "small.npz", labels=[0, 1], class_names=names[:100])
    with pytest.raises(DataError, match="tiny-imagenet-100"):
        load_dataset("tiny-imagenet-200", "train", path=[small])


# -------------------------------------------------------------------- cifar


def _cifar_batch(n, label_key=b"labels", offset=0):
    data = (np.arange(n * 3072, dtype=np.int64).reshape(n, 3072) + offset) % 251
    return {b"batch_label": b"x", b"data": data.astype(np.uint8), label_key: [i % 3 for i in range(n)]}


def _dump(obj, path, protocol):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def make_cifar10(folder):
    folder.mkdir(parents=True)
    for i in range(1, 6):
        _dump(_cifar_batch(2, offset=i), folder / f"data_batch_{i}", protocol=2)
    _dump(_cifar_batch(3), folder / "test_batch", protocol=5)
    _dump({b"label_names": [f"name{i}".encode() for i in range(10)]}, folder / "batches.meta", protocol=2)
    return folder


def test_cifar10_python_batches(tmp_path):
    make_cifar10(tmp_path / "cifar-10-batches-py")
    train = load_dataset("cifar10", "train", path=tmp_path)
    assert train.images.shape == (10, 3, 32, 32) and train.labels.tolist() == [0, 1] * 5
    data = _cifar_batch(2, offset=1)[b"data"]
    assert train.images[0, 1, 0, 5] == data[0, 1024 + 5]  # channel-major rows of 32
    assert train.images[1, 2, 3, 4] == data[1, 2048 + 3 * 32 + 4]
    test = load_dataset("cifar10", "test", path=tmp_path / "cifar-10-batches-py")
    assert len(test) == 3 and test.class_names[9] == "name9"
    assert load_dataset("cifar10", "test", path=tmp_path, image_size=16).images.shape == (3, 3, 16, 16)


def test_cifar100_python_batches(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _dump(_cifar_batch(4, b"fine_labels"), folder / "train", protocol=4)
    _dump(_cifar_batch(2, b"fine_labels"), folder / "test", protocol=4)
    _dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, folder / "meta", protocol=4)
    ds = load_dataset("cifar100", "train", path=tmp_path)
    assert len(ds) == 4 and ds.num_classes == 100


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_refuses_malicious_pickle(tmp_path):
    folder = make_cifar10(tmp_path / "cifar-10-batches-py")
    marker = tmp_path / "pwned"
    _dump({b"data": Evil(marker), b"labels": [0]}, folder / "test_batch", protocol=2)
    with pytest.raises(DataError, match=r"refusing to unpickle global (posix|nt|os)\.system from .*test_batch"):
        load_dataset("cifar10", "test", path=folder)
    assert not marker.exists()
    (folder / "junk").write_bytes(b"\x80\x04 not a pickle")
    with pytest.raises(DataError, match="junk"):
        safe_unpickle(folder / "junk")


def test_cifar_download_from_tarball(tmp_path, monkeypatch):
    make_cifar10(tmp_path / "src" / "cifar-10-batches-py")
    tarball = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    md5 = hashlib.md5(tarball.read_bytes()).hexdigest()
    monkeypatch.setenv("PJEPA_CACHE", str(tmp_path / "cache"))
    ds = load_dataset("cifar10", "test", url=tarball.as_uri(), md5=md5)
    assert len(ds) == 3 and (tmp_path / "cache" / "cifar10" / "cifar-10-batches-py" / "test_batch").is_file()
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("cifar100", "test", url=tarball.as_uri(), md5="0" * 32)


def test_cifar_from_npz(tmp_path):
    names = [f"c{i}" for i in range(10)]
    path = write_shard(tmp_path / "cifar.npz", split="test", labels=[0, 9], class_names=names)
    assert load_dataset("cifar10", "test", path=path).labels.tolist() == [0, 9]
    with pytest.raises(DataError, match="expects 100 classes"):
        load_dataset("cifar100", "test", path=path)
    with pytest.raises(DataError, match="splits train, test"):
        load_dataset("cifar10", "val", path=path)


# -------------------------------------------------------------------- stl10


def test_stl10_binary_column_major(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(3, 3, 96, 96), dtype=np.uint8)  # (N, 3, H, W)
    images[1, 2, 10, 70] = 255  # row 10, column 70 of the blue channel
    images[1, 2, 70, 10] = 0
    images.transpose(0, 1, 3, 2).tofile(folder / "train_X.bin")  # stored column-major
    np.asarray([1, 10, 4], dtype=np.uint8).tofile(folder / "train_y.bin")
    images[:2].transpose(0, 1, 3, 2).tofile(folder / "unlabeled_X.bin")
    (folder / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)) + "\n")
    ds = load_dataset("stl10", "train", path=tmp_path)
    assert ds.images.shape == (3, 3, 96, 96) and torch.equal(ds.images, torch.from_numpy(images))
    assert ds.images[1, 2, 10, 70] == 255 and ds.images[1, 2, 70, 10] == 0
    assert ds.labels.tolist() == [0, 9, 3] and ds.class_names[0] == "k0"
    unl = load_dataset("stl10", "unlabeled", path=folder, limit=1)
    assert len(unl) == 1 and unl.labels.tolist() == [-1]
    with open(folder / "test_X.bin", "wb") as f:
        f.write(b"\0" * 100)
    with pytest.raises(DataError, match="not a multiple"):
        load_dataset("stl10", "test", path=folder)


# ----------------------------------------------------------------- download


def test_download_md5_and_sha256(tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(b"hello pjepa" * 1000)
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    out = download(src.as_uri(), tmp_path / "dl" / "a.bin", md5=md5, progress=False)
    assert out.read_bytes() == src.read_bytes()
    assert download(src.as_uri(), tmp_path / "dl" / "b.bin", sha256=sha, progress=False).is_file()
    with pytest.raises(DataError, match="checksum mismatch"):
        download(src.as_uri(), tmp_path / "dl" / "c.bin", md5="0" * 32, progress=False)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["a.bin", "b.bin"]  # no partial file left
    with pytest.raises(DataError, match="cannot download"):
        download((tmp_path / "missing.bin").as_uri(), tmp_path / "dl" / "d.bin", progress=False)


def _tar_with(path, name, data=b"x"):
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_extract_tar_refuses_escaping_members(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"refusing to extract '\.\./x'"):
        extract_tar(_tar_with(tmp_path / "evil.tar", "../x"), out)
    with pytest.raises(DataError, match="refusing"):
        extract_tar(_tar_with(tmp_path / "abs.tar", "/tmp/abs_x"), out)
    assert not (tmp_path / "x").exists()
    extract_tar(_tar_with(tmp_path / "ok.tar", "dir/y.txt", b"ok"), out)
    assert (out / "dir" / "y.txt").read_bytes() == b"ok"


# ---------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_balanced():
    a = load_dataset("synthetic", "train", num_train=200, seed=1)
    b = load_dataset("synthetic", "train", num_train=200, seed=1)
    c = load_dataset("synthetic", "train", num_train=200, seed=2)
    v = load_dataset("synthetic", "val", num_val=200, seed=1)
    assert a.images.shape == (200, 3, 32, 32) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images) and not torch.equal(a.images, v.images)
    assert a.labels.bincount().tolist() == [20] * 10 and a.num_classes == 10
    d = load_dataset("synthetic", "val", num_val=30, num_classes=12, image_size=24)
    assert d.images.shape == (30, 3, 24, 24) and len(d.class_names) == 12
    with pytest.raises(DataError, match="num_classes"):
        load_dataset("synthetic", "train", num_classes=99)


def test_synthetic_glyphs_style():
    """Deterministic per (seed, split, style), balanced, a plain background with 4-7 bright glyphs of the
    class's shape; a bad style is a named error."""
    a = load_dataset("synthetic", "train", num_train=100, seed=3, style="glyphs")
    b = load_dataset("synthetic", "train", num_train=100, seed=3, style="glyphs")
    s = load_dataset("synthetic", "train", num_train=100, seed=3)
    assert a.images.shape == (100, 3, 32, 32) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and not torch.equal(a.images, s.images)
    assert a.labels.bincount().tolist() == [10] * 10
    bright = (a.images.float() / 255).min(dim=1).values > 0.5  # (N, S, S): glyph pixels (noise aside)
    area = bright.float().mean(dim=(1, 2))
    assert area.min() > 0.05 and area.max() < 0.8  # always some glyphs, never a full image
    background = a.images.float()[~bright.unsqueeze(1).expand_as(a.images)] / 255
    assert abs(background.median().item() - 0.2) < 0.02  # the plain background
    with pytest.raises(DataError, match="style='blobs'"):
        load_dataset("synthetic", "train", num_train=10, style="blobs")
    with pytest.raises(ConfigError, match="style='blobs' is not one of"):  # and before anything is built
        check_config(load_config(SMOKE, ["data.options.style=blobs"]))


def test_synthetic_shape_not_pixels_carries_the_class():
    """Raw-pixel 1-NN is weak; a position/colour-invariant feature (|FFT| of the
    standardised image) separates the classes, so the class is learnable."""
    tr = load_dataset("synthetic", "train", num_train=1000)
    va = load_dataset("synthetic", "val", num_val=200)

    def nn_acc(f_tr, f_va):
        f_tr = torch.nn.functional.normalize(f_tr.flatten(1), dim=1)
        f_va = torch.nn.functional.normalize(f_va.flatten(1), dim=1)
        return (tr.labels[(f_va @ f_tr.T).argmax(1)] == va.labels).float().mean().item()

    def raw(x):
        x = x.float()
        return x - x.mean(dim=(1, 2, 3), keepdim=True)

    def fft(x):
        x = x.float()
        x = (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True) + 1e-3)
        return torch.fft.rfft2(x).abs().sum(1)

    raw_acc, fft_acc = nn_acc(raw(tr.images), raw(va.images)), nn_acc(fft(tr.images), fft(va.images))
    assert raw_acc < 0.6 and fft_acc > 0.85, (raw_acc, fft_acc)
