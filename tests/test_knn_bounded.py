"""Whitening and kNN in bounded memory: the Cholesky form equals the PCA reference formula, chunked equals
unchunked, in place equals a copy, and the chunk sizes are honoured."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from pjepa.errors import ConfigError
from pjepa.eval import knn
from pjepa.eval.features import pixel_features
from pjepa.eval.knn import knn_evaluate, knn_predict


def _pca_reference(bank: torch.Tensor, x: torch.Tensor, floor: float = knn.WHITEN_FLOOR) -> torch.Tensor:
    """The definition, in float64: (x - mean) V diag(1 / sqrt(max(e, 0) + floor * e_max)), with (e, V) the
    eigendecomposition of the bank's covariance (divided by N)."""
    b = bank.double()
    mean = b.mean(0)
    c = b - mean
    e, v = torch.linalg.eigh(c.T @ c / len(b))
    return (x.double() - mean) @ v / (e.clamp_min(0) + floor * e.max()).sqrt()


def _spectrum_data(n: int, f: int, seed: int, decay: float = 1.0) -> torch.Tensor:
    """Rows with a power-law spectrum (variance ~ 1 / rank^decay, like natural images' pixels), rotated
    and off-centre."""
    g = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(f, f, generator=g))
    std = torch.arange(1, f + 1, dtype=torch.float32) ** (-decay / 2)
    return (torch.randn(n, f, generator=g) * std) @ rotation + 0.5


@pytest.mark.parametrize(("n", "f"), [(3000, 48), (40, 64)])  # N > F, and F > N (a rank-deficient covariance)
def test_exact_whitening_has_the_inner_products_of_the_pca_reference(n: int, f: int) -> None:
    """x -> (x - mean) L^-T is PCA whitening up to a rotation: every inner product (hence cosine kNN) agrees."""
    bank = _spectrum_data(n, f, seed=0)
    queries = _spectrum_data(30, f, seed=1)
    w = knn.fit_whitening(bank)
    assert w.exact and w.describe() == "exact"
    for x in (bank[:50], queries):
        ref = _pca_reference(bank, x)
        got = w(x).double()
        scale = (ref @ ref.T).abs().max()
        torch.testing.assert_close(got @ got.T / scale, ref @ ref.T / scale, atol=2e-5, rtol=0)
    ref_cross = _pca_reference(bank, queries) @ _pca_reference(bank, bank).T
    got_cross = w(queries).double() @ w(bank).double().T
    torch.testing.assert_close(got_cross / ref_cross.abs().max(), ref_cross / ref_cross.abs().max(), atol=2e-5, rtol=0)


def test_whitened_knn_predicts_as_the_pca_reference() -> None:
    g = torch.Generator().manual_seed(5)
    centres = _spectrum_data(6, 40, seed=2) * 3
    yb, yq = torch.randint(0, 6, (1500,), generator=g), torch.randint(0, 6, (300,), generator=g)
    bank = centres[yb] + _spectrum_data(1500, 40, seed=3)
    queries = centres[yq] + _spectrum_data(300, 40, seed=4)
    wb, wq = knn.whiten(bank, queries)
    ref_b, ref_q = _pca_reference(bank, bank), _pca_reference(bank, queries)
    for vote in ("weighted", "majority"):
        got = knn_predict(wb, yb, wq, 6, k=10, vote=vote)
        ref = knn_predict(ref_b, yb, ref_q, 6, k=10, vote=vote)  # float64 throughout
        assert (got == ref).float().mean() >= 0.995


def test_covariance_blocks_and_chunks_do_not_change_it() -> None:
    """The block-triangular, chunked float32 accumulation equals the float64 covariance, whatever the sizes."""
    bank = _spectrum_data(701, 37, seed=6)
    mean = bank.double().mean(0)
    ref = ((bank.double() - mean).T @ (bank.double() - mean) / len(bank)).float()
    for chunk, block in [(701, 37), (64, 37), (100, 8), (1, 5), (333, 36)]:
        cov = knn._covariance(bank, mean, chunk_size=chunk, block=block)
        torch.testing.assert_close(cov, ref, atol=1e-5 * float(ref.abs().max()), rtol=0)
        assert torch.equal(cov, cov.T)  # mirrored exactly: a symmetric matrix


def test_largest_eigenvalue_by_lanczos() -> None:
    """Above 1,024 dimensions e_max comes from the Lanczos iteration; it matches eigvalsh (and does below)."""
    g = torch.Generator().manual_seed(7)
    rotation, _ = torch.linalg.qr(torch.randn(1100, 1100, generator=g))
    ranks = torch.arange(1, 1101, dtype=torch.float32)
    # a fast decay, a nearly flat spectrum, and a repeated largest eigenvalue
    for spectrum in (10.0 / ranks, 1.0 + 0.01 / ranks, torch.cat([torch.full((2,), 20.0), 1 / ranks[2:]])):
        for f in (1100, 300):
            cov = (rotation[:f, :f] * spectrum[:f]) @ rotation[:f, :f].T
            exact = float(torch.linalg.eigvalsh(cov.double())[-1])
            assert knn._largest_eigenvalue(cov) == pytest.approx(exact, rel=1e-6)


def test_whitening_chunk_size_is_honoured_and_does_not_change_the_output(monkeypatch) -> None:
    bank = _spectrum_data(257, 24, seed=8)
    w = knn.fit_whitening(bank)
    one = w(bank, chunk_size=1000)
    rows: list[int] = []
    real = torch.linalg.solve_triangular

    def spy(a, b, **kwargs):
        rows.append(b.shape[0])  # the rows whitened at once: the size of the temporaries
        return real(a, b, **kwargs)

    monkeypatch.setattr(torch.linalg, "solve_triangular", spy)
    chunked = w(bank, chunk_size=50)
    assert rows == [50] * 5 + [7]
    torch.testing.assert_close(chunked, one, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        w(bank, chunk_size=0)


def test_fit_chunk_size_does_not_change_the_whitening() -> None:
    bank = _spectrum_data(500, 20, seed=9)
    a, b = knn.fit_whitening(bank), knn.fit_whitening(bank, chunk_size=7)
    torch.testing.assert_close(a.mean, b.mean, atol=1e-12, rtol=0)
    torch.testing.assert_close(a(bank), b(bank), atol=1e-4, rtol=0)


def test_whitening_in_place_equals_a_new_tensor() -> None:
    bank = _spectrum_data(300, 16, seed=10)
    w = knn.fit_whitening(bank)
    fresh = w(bank, chunk_size=64)
    x = bank.clone()
    out = w(x, chunk_size=64, out=x)
    assert out.data_ptr() == x.data_ptr() and torch.equal(out, fresh)
    with pytest.raises(ValueError, match="out must be a float32"):
        w(bank, out=torch.empty(300, 15))
    low = knn.fit_whitening(bank, max_rank=4)  # low rank: r + F columns, so never in place
    with pytest.raises(ValueError, match=r"out must be a float32 \(300, 20\)"):
        low(bank, out=bank.clone())
    torch.testing.assert_close(low(bank, chunk_size=7), low(bank), atol=1e-5, rtol=0)


def test_whitening_names_features_it_cannot_whiten() -> None:
    with pytest.raises(ConfigError, match="every bank feature vector is the same"):
        knn.fit_whitening(torch.ones(50, 8))
    bad = torch.randn(50, 8)
    bad[3, 2] = float("nan")
    with pytest.raises(ConfigError, match="non-finite"):
        knn.fit_whitening(bad)


def test_knn_in_place_normalises_the_bank_and_predicts_the_same() -> None:
    g = torch.Generator().manual_seed(11)
    bank, queries = torch.randn(400, 12, generator=g) * 3, torch.randn(90, 12, generator=g)
    labels, truth = torch.randint(0, 5, (400,), generator=g), torch.randint(0, 5, (90,), generator=g)
    copy = knn_evaluate(bank, labels, queries, truth, 5, k=7, chunk_size=16)
    x = bank.clone()
    assert knn_evaluate(x, labels, queries, truth, 5, k=7, chunk_size=16, in_place=True) == copy
    assert torch.equal(x, torch.nn.functional.normalize(bank, dim=1))  # the caller's tensor was normalised
    half = bank.bfloat16()
    before = half.clone()
    knn_predict(half, labels, queries, 5, k=7, in_place=True)  # computed in float32: a copy, input untouched
    assert torch.equal(half, before)


def test_pixel_features_written_in_place_equal_the_concatenated_batches() -> None:
    g = torch.Generator().manual_seed(12)
    images = torch.randint(0, 256, (37, 3, 12, 12), dtype=torch.uint8, generator=g)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    from pjepa.data import resize_normalize

    ref = torch.cat([resize_normalize(images[s : s + 10], 8, mean, std).flatten(1) for s in range(0, 37, 10)])
    assert torch.equal(pixel_features(images, 8, mean, std, batch_size=10), ref)
    assert torch.equal(pixel_features(images, 8, mean, std, batch_size=1000), ref)
    assert pixel_features(images[:0], 8, mean, std).shape == (0, 3 * 8 * 8)


def test_whitened_pixel_knn_of_the_protocol_equals_the_functions(tiny_run, one_thread) -> None:
    """The protocol whitens and normalises its own features in place; its result is the one the library
    functions give on fresh copies."""
    from pjepa.data import splits_for
    from pjepa.eval.protocols.knn import evaluate_knn
    from pjepa.runs import Run

    r = evaluate_knn(tiny_run, baseline="pixels", whiten=True, progress=False)
    run = Run(tiny_run)
    splits, (mean, std) = splits_for(run.config), run.stats()
    size = run.config.data.image_size
    fb, fq = (pixel_features(s.images, size, mean, std) for s in (splits.bank, splits.eval))
    wb, wq = knn.whiten(fb, fq)
    ref = knn_evaluate(wb, splits.bank.labels, wq, splits.eval.labels, splits.bank.num_classes,
                       k=run.config.eval.k, temperature=run.config.eval.temperature)
    assert (r["top1_weighted"], r["top1_majority"]) == (ref["weighted"], ref["majority"])
    assert json.loads((tiny_run / "eval" / "knn_pixels_white.json").read_text())["features"].endswith("exact)")


def test_eval_timings_benchmark_times_a_protocol_on_a_copy_of_the_run(tiny_run, tmp_path, capsys, monkeypatch) -> None:
    """benchmarks/eval_timings.py: one row per protocol, run on a copy (the run's own results untouched)."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("eval_timings", ROOT / "benchmarks" / "eval_timings.py")
    assert spec is not None and spec.loader is not None
    timings = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "eval_timings", timings)  # its dataclass looks its module up there
    spec.loader.exec_module(timings)
    before = sorted(p.name for p in (tiny_run / "eval").iterdir()) if (tiny_run / "eval").is_dir() else []
    assert timings.main([str(tiny_run), "--only", "head", "--threads", "1", "--csv", str(tmp_path / "t.csv"),
                         "--keep", str(tmp_path / "copy")]) == 0
    out = capsys.readouterr().out
    assert "| protocol | seconds | CPU seconds | max RSS MB | threads | processor |" in out and "| `head` |" in out
    assert (tmp_path / "copy" / tiny_run.name / "eval" / "head.json").is_file()
    after = sorted(p.name for p in (tiny_run / "eval").iterdir()) if (tiny_run / "eval").is_dir() else []
    assert after == before
    rows = (tmp_path / "t.csv").read_text().splitlines()
    assert rows[0].startswith("protocol,seconds,cpu_seconds,max_rss_mb") and rows[1].startswith("head,")
