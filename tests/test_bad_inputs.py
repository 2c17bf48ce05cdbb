"""Bad user input gets a named error, never a traceback: image files, npz shards, dataset folders,
index files and evaluation flags. Every bad file is built in tmp_path.

Each case asserts the exception class (a PJepaError subclass, or argparse's exit 2) and that the
message names the file, entry or flag at fault.
"""

from __future__ import annotations

import argparse
import io
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMOKE, TINY, run_cli
from PIL import Image

from pjepa.cli.main import build_parser
from pjepa.data import load_dataset
from pjepa.data.decode import decode_images
from pjepa.errors import ConfigError, DataError
from pjepa.eval.protocols import PROTOCOLS

RNG = np.random.default_rng(0)
NOISE = RNG.integers(0, 256, (48, 48, 3), dtype=np.uint8)  # incompressible: a cut file is really truncated


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png16_rgb(rgb: tuple[int, int, int], size: int = 4) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one from an array), built chunk by chunk."""
    row = b"\0" + struct.pack(">3H", *rgb) * size  # filter byte 0, then big-endian samples

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0)  # bit depth 16, colour type 2 (RGB)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * size))
            + chunk(b"IEND", b""))


def palette_png() -> bytes:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.putpixel((1, 1), 1)
    return encode(img, "PNG")


def imagefolder(root: Path, files: dict[str, bytes]) -> Path:
    """root/<class>/<name> for every 'class/name' key."""
    for rel, blob in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(blob)
    return root


# ------------------------------------------------------------------ 1. image files

GOOD_JPEG = encode(Image.fromarray(NOISE), "JPEG", quality=90)
GOOD_PNG = encode(Image.fromarray(NOISE), "PNG")
CORRUPT = {
    "random.jpg": bytes(RNG.integers(0, 256, 300, dtype=np.uint8)),
    "random.png": b"not a png at all, just text",
    "empty.jpg": b"",
    "truncated.jpg": GOOD_JPEG[: len(GOOD_JPEG) // 2],
    "truncated.png": GOOD_PNG[: len(GOOD_PNG) // 2],
    "header_only.png": GOOD_PNG[:40],
}


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_image_in_imagefolder_names_the_file(tmp_path, name):
    root = imagefolder(tmp_path, {"a/ok.png": GOOD_PNG, f"b/{name}": CORRUPT[name]})
    with pytest.raises(DataError, match=rf"cannot decode image 1 \('.*b/{name}'\)") as err:
        load_dataset("imagefolder", "train", path=root)
    assert "BytesIO" not in str(err.value)  # Pillow's own text for an unknown format says nothing useful


def test_corrupt_image_in_tiny_imagenet_folder_names_the_file(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(100)]
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids))
    for w in wnids:
        imagefolder(root / "train" / w / "images", {f"{w}_0.JPEG": GOOD_JPEG})
    (root / "train" / wnids[7] / "images" / "bad.JPEG").write_bytes(CORRUPT["truncated.jpg"])
    with pytest.raises(DataError, match=rf"{wnids[7]}/images/bad\.JPEG"):
        load_dataset("tiny-imagenet-100", "train", path=root)


DECODED = {  # file bytes -> the RGB pixel at (0, 0) it must decode to
    "grey16_max.png": (encode(Image.fromarray(np.full((4, 4), 65535, np.uint16)), "PNG"), (255, 255, 255)),
    "grey16_mid.png": (encode(Image.fromarray(np.full((4, 4), 128 * 257, np.uint16)), "PNG"), (128, 128, 128)),
    "grey16_low.png": (encode(Image.fromarray(np.full((4, 4), 1000, np.uint16)), "PNG"), (3, 3, 3)),  # not 255
    "rgb16.png": (png16_rgb((65535, 128 * 257, 0)), (255, 128, 0)),
    "palette.png": (palette_png(), (10, 20, 30)),
    "cmyk.jpg": (encode(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG", quality=100), (255, 0, 0)),
    "grey.png": (encode(Image.new("L", (4, 4), 77), "PNG"), (77, 77, 77)),
    "grey_alpha.png": (encode(Image.new("LA", (4, 4), (77, 10)), "PNG"), (77, 77, 77)),
    "rgba.png": (encode(Image.new("RGBA", (4, 4), (1, 2, 3, 0)), "PNG"), (1, 2, 3)),  # alpha dropped
    "bilevel.png": (encode(Image.new("1", (4, 4), 1), "PNG"), (255, 255, 255)),
}


@pytest.mark.parametrize("name", sorted(DECODED))
def test_image_modes_decode_to_the_right_rgb(tmp_path, name):
    blob, want = DECODED[name]
    ds = load_dataset("imagefolder", "train", path=imagefolder(tmp_path, {f"c/{name}": blob}))
    got = ds.images[0, :, 0, 0].tolist()
    tolerance = 3 if name.endswith(".jpg") else 0  # JPEG is lossy
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (1, 3, 4, 4)
    assert all(abs(g - w) <= tolerance for g, w in zip(got, want)), (got, want)
    if name == "palette.png":
        assert ds.images[0, :, 1, 1].tolist() == [200, 100, 50]


@pytest.mark.parametrize("array, mode", [(np.full((4, 4), 70000, np.int32), "I"),
                                         (np.full((4, 4), 0.5, np.float32), "F")])
def test_images_without_a_standard_range_are_refused(array, mode):
    blob = encode(Image.fromarray(array), "TIFF")
    with pytest.raises(DataError, match=rf"'scan\.tif'.*mode {mode}"):
        decode_images([blob], source="test", names=["scan.tif"])


# -------------------------------------------------------------------- 2. npz shards

BLOBS = [GOOD_PNG, encode(Image.new("RGB", (48, 48), (9, 9, 9)), "PNG")]


def good_arrays() -> dict[str, np.ndarray]:
    lengths = [len(b) for b in BLOBS]
    return {"train_bytes": np.frombuffer(b"".join(BLOBS), np.uint8),
            "train_offsets": np.array([0, lengths[0], sum(lengths)], np.int64),
            "train_y": np.array([0, 1], np.int16), "class_names": np.array(["a", "b"])}


BAD_SHARDS = {  # case -> (changes to a good shard (None deletes the key), what the message must name)
    "missing offsets": ({"train_offsets": None}, r"lacks train_offsets; keys found"),
    "float labels": ({"train_y": np.array([0.0, 1.0])}, r"train_y in .* must be a 1-D integer array.*float64"),
    "fractional labels": ({"train_y": np.array([0.5, 1.0])}, r"train_y in .* integer"),
    "string labels": ({"train_y": np.array(["0", "1"])}, r"train_y in .* integer.*<U1"),
    "2-D labels": ({"train_y": np.array([[0, 1]])}, r"train_y in .* shape \(1, 2\)"),
    "0-d labels": ({"train_y": np.array(1)}, r"train_y in .* shape \(\)"),
    "fewer labels": ({"train_y": np.array([0])}, r"train_offsets has 3 entries but train_y has 1 labels"),
    "more labels": ({"train_y": np.array([0, 1, 1])}, r"train_offsets has 3 entries but train_y has 3 labels"),
    "float offsets": ({"train_offsets": np.array([0.0, 1.5, 3.0])}, r"train_offsets in .* integer.*float64"),
    "raw pixels": ({"train_bytes": NOISE[None].repeat(2, 0)}, r"train_bytes in .*\(2, 48, 48, 3\).*raw pixel"),
    "float bytes": ({"train_bytes": np.zeros(10, np.float32)}, r"train_bytes in .* must be uint8.*float32"),
    "files per image": ({"train_files": np.array(["a.png"])}, r"train_files has shape \(1,\) but train_y has 2"),
    "class_names scalar": ({"class_names": np.array("ab")}, r"class_names in .* 1-D array of names"),
    "raw-array format": ({"train_bytes": None, "train_offsets": None, "train_y": None,
                          "x_train": NOISE[None], "y_train": np.array([0])}, r"keys: class_names, x_train, y_train"),
}


@pytest.mark.parametrize("case", sorted(BAD_SHARDS))
def test_bad_npz_arrays_name_the_file_and_key(tmp_path, case):
    changes, pattern = BAD_SHARDS[case]
    arrays = {k: v for k, v in {**good_arrays(), **changes}.items() if v is not None}
    path = tmp_path / "shard.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=pattern) as err:
        load_dataset("npz", "train", path=path)
    assert "shard.npz" in str(err.value)


def corrupt_member(path: Path) -> None:
    """A compressed shard whose train_y member has flipped bytes (CRC / zlib error when read)."""
    np.savez_compressed(path, **good_arrays())
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("train_y.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start, start + info.compress_size):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


NOT_NPZ = {  # file -> (how to write it, what the message says)
    "random.npz": (lambda p: p.write_bytes(bytes(range(256))), "does not start like a zip archive"),
    "text.npz": (lambda p: p.write_text("x_train,y_train\n"), "does not start like a zip archive"),
    "empty.npz": (lambda p: p.write_bytes(b""), "the file is empty"),
    "array.npy": (lambda p: np.save(p, np.zeros(3)), "single .npy array"),
    "archive.npz": (lambda p: p.write_bytes(b"\x1f\x8b\x08\0" + bytes(20)), "gzip-compressed"),
    "truncated.npz": (lambda p: (np.savez(p, **good_arrays()), p.write_bytes(p.read_bytes()[:200])),
                      "cannot read npz shard"),
    "corrupt_member.npz": (corrupt_member, "array 'train_y'"),
    "pickled.npz": (lambda p: np.savez(p, **{**good_arrays(), "train_y": np.array([0, None], dtype=object)}),
                    "array 'train_y'.*Python objects"),
}


@pytest.mark.parametrize("name", sorted(NOT_NPZ))
def test_a_file_that_is_not_an_npz_is_named(tmp_path, name):
    write, message = NOT_NPZ[name]
    write(tmp_path / name)
    with pytest.raises(DataError, match=message) as err:
        load_dataset("npz", "train", path=tmp_path / name)
    assert str(tmp_path / name) in str(err.value)


def test_a_bad_npz_in_a_tiny_imagenet_folder_is_named(tmp_path):
    (tmp_path / "notes.npz").write_text("not a shard")
    with pytest.raises(DataError, match=r"notes\.npz is not an npz shard"):
        load_dataset("tiny-imagenet-100", "train", path=tmp_path)


# ------------------------------------------------------------- 3. folders without images


def test_empty_class_folder_is_named(tmp_path):
    root = imagefolder(tmp_path, {"cat/1.png": GOOD_PNG, "dog/notes.txt": b"no images here"})
    (root / "emu").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) .*dog, .*emu hold no images"):
        load_dataset("imagefolder", "train", path=root)


@pytest.mark.parametrize("layout, message", [
    ({"cat/notes.txt": b"x"}, r"no images .* in the class folders of .*root"),
    ({"notes.txt": b"x"}, r"root has no class sub-folders"),
])
def test_imagefolder_without_images_names_the_folder(tmp_path, layout, message):
    root = imagefolder(tmp_path / "root", layout)
    with pytest.raises(DataError, match=message):
        load_dataset("imagefolder", "train", path=root)


def tiny_imagenet(root: Path, wnids: list[str], images: bool = True) -> Path:
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "val" / "images").mkdir(parents=True)
    for w in wnids:
        (root / "train" / w / "images").mkdir(parents=True)
        if images:
            (root / "train" / w / "images" / f"{w}_0.JPEG").write_bytes(GOOD_JPEG)
    return root


WNIDS = [f"n{i:08d}" for i in range(100)]


def test_tiny_imagenet_empty_class_and_empty_val_are_named(tmp_path):
    root = tiny_imagenet(tmp_path / "tiny-imagenet-200", WNIDS)
    (root / "train" / WNIDS[3] / "images" / f"{WNIDS[3]}_0.JPEG").unlink()
    with pytest.raises(DataError, match=rf"class folder .*{WNIDS[3]}/images holds no images"):
        load_dataset("tiny-imagenet-100", "train", path=root)
    (root / "val" / "val_annotations.txt").write_text("")
    with pytest.raises(DataError, match=r"no val images found under .*tiny-imagenet-200"):
        load_dataset("tiny-imagenet-100", "val", path=root)


# ------------------------------------------- 4. a path that is not the dataset: no download


@pytest.fixture
def no_download(monkeypatch, tmp_path):
    """Any download fails the test; the cache is a temporary folder."""
    monkeypatch.setenv("PJEPA_CACHE", str(tmp_path / "cache"))

    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a download of {url} was attempted")

    for module in ("cifar", "stl10", "tiny_imagenet"):
        monkeypatch.setattr(f"pjepa.data.{module}.download", refuse)
    return refuse


@pytest.mark.parametrize("name, split, expected", [
    ("cifar10", "train", r"not a cifar10 folder: expected .*batches\.meta, data_batch_1"),
    ("cifar100", "test", r"not a cifar100 folder: expected .*meta, train, test"),
    ("stl10", "train", r"not an STL-10 folder: expected train_X\.bin"),
    ("tiny-imagenet-100", "train", r"holds no tiny-imagenet-100 data .* expected the tiny-imagenet-200/ folder"),
])
def test_a_folder_that_is_not_the_dataset_is_named_not_downloaded_into(tmp_path, no_download, name, split,
                                                                        expected):
    folder = imagefolder(tmp_path / "photos", {"cat/1.png": GOOD_PNG})
    with pytest.raises(DataError, match=expected) as err:
        load_dataset(name, split, path=folder)
    text = str(err.value)
    assert str(folder) in text and "cat/" in text and "unset" in text  # what it holds, how to download
    assert sorted(p.name for p in folder.iterdir()) == ["cat"]  # nothing written there


def test_download_into_a_named_folder_needs_the_url_option(tmp_path, monkeypatch):
    """The real download path is kept: asked for with url=, it runs (the fake stands in for the network)."""
    calls = []

    def fake_download(url, dest, **kwargs):
        calls.append((url, Path(dest).parent))
        raise DataError("fake download stops here")

    monkeypatch.setattr("pjepa.data.cifar.download", fake_download)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="fake download"):
        load_dataset("cifar10", "test", path=tmp_path / "empty", url="file:///mirror/cifar.tar.gz")
    assert calls == [("file:///mirror/cifar.tar.gz", tmp_path / "empty")]


def test_a_text_file_as_cifar_path_is_named(tmp_path, no_download):
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match=r"labels\.txt is not an npz shard"):
        load_dataset("cifar10", "train", path=tmp_path / "labels.txt")


# ----------------------------------------------------------- 5. index files stay inside


@pytest.mark.parametrize("entry", ["../../../../secret.JPEG", "/etc/passwd", "../images/../../x.JPEG",
                                   "..\\..\\secret.JPEG", "C:\\secret.JPEG", ""])
def test_val_annotations_cannot_reach_outside(tmp_path, entry):
    (tmp_path / "secret.JPEG").write_bytes(GOOD_JPEG)  # an image the escape would silently have read
    root = tiny_imagenet(tmp_path / "data" / "tiny-imagenet-200", WNIDS, images=False)
    (root / "val" / "images" / "ok.JPEG").write_bytes(GOOD_JPEG)
    (root / "val" / "val_annotations.txt").write_text(f"ok.JPEG\t{WNIDS[0]}\n{entry}\t{WNIDS[1]}\t0\t0\t8\t8\n")
    with pytest.raises(DataError, match=r"val_annotations\.txt line 2: entry .* points outside"):
        load_dataset("tiny-imagenet-100", "val", path=root)


@pytest.mark.parametrize("bad", ["../../outside", "n0/../../x", ".."])
def test_wnids_cannot_name_folders_outside(tmp_path, bad):
    root = tiny_imagenet(tmp_path / "tiny-imagenet-200", WNIDS)
    (root / "wnids.txt").write_text("\n".join([bad, *WNIDS]) + "\n")
    with pytest.raises(DataError, match=r"wnids\.txt entry .* is not a WordNet id"):
        load_dataset("tiny-imagenet-100", "train", path=root)


def test_index_files_that_are_not_text_are_named(tmp_path):
    root = tiny_imagenet(tmp_path / "tiny-imagenet-200", WNIDS)
    (root / "wnids.txt").write_bytes(b"\xff\xfe\x00n0\x00")
    with pytest.raises(DataError, match=r"wnids\.txt is not UTF-8 text"):
        load_dataset("tiny-imagenet-100", "train", path=root)
    (root / "wnids.txt").write_text("\n".join(WNIDS + WNIDS[:1]))
    with pytest.raises(DataError, match=rf"lists {WNIDS[0]} more than once"):
        load_dataset("tiny-imagenet-100", "train", path=root)


# ----------------------------------------------------------------- 6. evaluation flags

BAD_FLAGS = [  # (protocol, flag, value, message)
    ("knn", "--eval-limit", "-1", "must be >= 0"),
    ("knn", "--train-limit", "-5", "must be >= 0"),
    ("knn", "--layers", "0", "must be >= 1"),
    ("knn", "--eval-limit", "ten", "must be an integer"),
    ("head", "--eval-limit", "-1", "must be >= 0"),
    ("head", "--samples", "0", "must be >= 1"),
    ("calibration", "--eval-limit", "-2", "must be >= 0"),
    ("calibration", "--samples", "-1", "must be >= 1"),
    ("calibration", "--tokens", "0", "must be >= 1"),
    ("linear", "--epochs", "0", "must be >= 1"),
    ("lowshot", "--seeds", "0", "must be >= 1"),
    ("lowshot", "--fractions", "0", r"must be in \(0, 1\)"),
    ("lowshot", "--fractions", "1.5", r"must be in \(0, 1\)"),
    ("finetune", "--epochs", "0", "must be >= 1"),
    ("finetune", "--batch-size", "-8", "must be >= 1"),
    ("finetune", "--lr", "0", "must be > 0"),
    ("finetune", "--lr", "nan", "must be a finite number"),
    ("finetune", "--min-lr", "-1e-6", "must be >= 0"),
    ("finetune", "--weight-decay", "-0.1", "must be >= 0"),
    ("finetune", "--warmup-fraction", "1.5", r"must be in \[0, 1\]"),
    ("finetune", "--layer-decay", "0", r"must be in \(0, 1\]"),
    ("finetune", "--drop-path", "1", r"must be in \[0, 1\)"),
    ("finetune", "--label-smoothing", "-0.1", r"must be in \[0, 1\)"),
]


@pytest.mark.parametrize("protocol, flag, value, message", BAD_FLAGS, ids=lambda v: str(v))
def test_bad_eval_flag_is_an_argparse_error_naming_it(capsys, protocol, flag, value, message):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["eval", protocol, "--run", "r", f"{flag}={value}"])
    assert exit_.value.code == 2
    assert re.search(rf"argument {flag}: {message}", capsys.readouterr().err)


def test_good_eval_flags_still_parse():
    args = build_parser().parse_args(["eval", "knn", "--run", "r", "--eval-limit", "0", "--layers", "2"])
    assert args.eval_limit == 0 and args.layers == 2
    args = build_parser().parse_args(["eval", "finetune", "--run", "r", "--lr", "5e-4", "--drop-path", "0"])
    assert args.lr == 5e-4 and args.drop_path == 0.0 and args.epochs == 5


def test_every_numeric_eval_flag_has_a_range():
    """A new count flag declared with plain type=int / float would accept 0 and negatives unchecked."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["eval"]
    protocols = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert sorted(protocols) == sorted(PROTOCOLS.names())
    plain = [f"{name} {opt}" for name, p in protocols.items() for a in p._actions
             if a.type in (int, float) and not a.choices for opt in a.option_strings[:1]]
    assert not plain, f"flags without a range type (use positive_int / non_negative_int / float_in): {plain}"


@pytest.mark.slow
def test_bad_eval_flags_on_the_command_line():
    """The whole path: one line naming the flag, exit status 2, no traceback (one subprocess per flag)."""
    for args, flag in ((["eval", "knn", "--run", "r", "--eval-limit", "-1"], "--eval-limit"),
                       (["eval", "calibration", "--run", "r", "--samples", "0"], "--samples")):
        out = run_cli(*args, timeout=120)
        assert out.returncode == 2, out.stderr
        assert f"argument {flag}: must be" in out.stderr and "Traceback" not in out.stderr


def test_knn_layers_beyond_the_encoder_depth_is_a_config_error(tmp_path):
    from pjepa.config import dump_config, load_config
    from pjepa.eval.protocols.knn import evaluate_knn

    (tmp_path / "config.yaml").write_text(dump_config(load_config(SMOKE, TINY)))  # depth 2; no data is read
    with pytest.raises(ConfigError, match=r"--layers 3: the encoder has 2 layers"):
        evaluate_knn(tmp_path, layers=3, device="cpu")
