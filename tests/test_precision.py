"""train.precision: the resolution table, the per-machine probe cache, CPU autocast in the training step,
the stored choice reused by a resume and followed by evaluation, fp16 on a CPU refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SMOKE, TINY

import pjepa.train.precision as precision
from pjepa.cli.main import main
from pjepa.config import load_config
from pjepa.errors import ConfigError
from pjepa.heads import HEADS, build_head
from pjepa.runs import Run
from pjepa.runs.precision import DTYPES, eval_amp_dtype
from pjepa.train.precision import ProbeResult, cache_path, probe_cpu_bf16, resolve_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda:0")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PJEPA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "precision.json"


@pytest.fixture
def probe(monkeypatch, cache):
    """A fake probe: set ``probe.ratio`` (None = bf16 unsupported); ``probe.calls`` counts measurements."""

    class Fake:
        ratio: float | None = 3.0
        busy: bool = False  # as a probe on a busy machine reports it (measured on one thread)
        calls: list[tuple[int, int, int, int]] = []

        def __call__(self, m, k, n, threads):
            self.calls.append((m, k, n, threads))
            if self.ratio is None:
                return ProbeResult(False, 0.0, 0.0, 0.0, (m, k, n), threads)
            return ProbeResult(True, self.ratio, 1.0 * self.ratio, 1.0, (m, k, n), threads,
                               0.4 if self.busy else 1.0, self.busy)

    fake = Fake()
    fake.calls = []
    monkeypatch.setattr(precision, "probe_cpu_bf16", fake)
    return fake


@pytest.fixture
def no_probe(monkeypatch, cache):
    def fail(*args):
        raise AssertionError("the probe ran")

    monkeypatch.setattr(precision, "probe_cpu_bf16", fail)


def fake_cuda(monkeypatch, bf16: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "FakeGPU")


# -- the resolution table


@pytest.mark.parametrize("ratio, name", [(3.0, "bf16"), (1.3, "bf16"), (1.29, "fp32"), (0.6, "fp32"), (None, "fp32")])
def test_auto_on_cpu_follows_the_probe_ratio(probe, ratio, name):
    probe.ratio = ratio
    p = resolve_precision("auto", CPU, width=128, threads=2)
    assert (p.name, p.use_scaler) == (name, False)
    assert p.amp_dtype == (torch.bfloat16 if name == "bf16" else None)
    assert probe.calls == [(precision.PROBE_ROWS, 128, 512, 2)]  # the configuration's shape and threads
    assert str(cache_path()) in p.reason
    assert (f"{ratio:.2f}x" in p.reason) if ratio is not None else ("unsupported" in p.reason)
    assert p.describe().startswith(f"auto -> {name} (")


@pytest.mark.parametrize("bf16, name, scaler", [(True, "bf16", False), (False, "fp16", True)])
def test_auto_on_cuda_is_bf16_where_supported_else_fp16(monkeypatch, no_probe, bf16, name, scaler):
    fake_cuda(monkeypatch, bf16)
    p = resolve_precision("auto", CUDA, width=384, threads=8)
    assert (p.name, p.amp_dtype, p.use_scaler, p.device_type) == (name, DTYPES[name], scaler, "cuda")


@pytest.mark.parametrize("requested, device, dtype, scaler", [
    ("fp32", CPU, None, False), ("fp32", CUDA, None, False),
    ("bf16", CPU, torch.bfloat16, False), ("bf16", CUDA, torch.bfloat16, False),  # explicit bf16: autocast on CPU too
    ("fp16", CUDA, torch.float16, True),
])
def test_explicit_values_are_honoured_without_probing(no_probe, requested, device, dtype, scaler):
    p = resolve_precision(requested, device, width=128, threads=1)
    assert (p.name, p.amp_dtype, p.use_scaler) == (requested, dtype, scaler)
    assert p.reason == f"train.precision={requested}"


def test_fp16_on_cpu_is_a_config_error_naming_the_value(no_probe):
    with pytest.raises(ConfigError, match="train.precision='fp16'.*CUDA"):
        resolve_precision("fp16", CPU, width=128, threads=1)
    with pytest.raises(ConfigError, match="'fp8'"):
        resolve_precision("fp8", CPU, width=128, threads=1)


def test_cli_dry_run_rejects_fp16_on_cpu_in_one_line(capsys):
    assert main(["train", "--config", "smoke", "--dry-run", "train.device=cpu", "train.precision=fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.precision='fp16'" in err and "auto, fp32 or bf16" in err
    assert main(["train", "--config", "smoke", "--dry-run", "train.device=cpu"]) == 0
    assert "precision: auto" in capsys.readouterr().out  # the default


# -- the probe and its cache


def test_the_real_probe_measures_both_dtypes_quickly():
    r = probe_cpu_bf16(128, 16, 64, threads=1)
    assert r.shape == (128, 16, 64) and r.threads == 1
    if r.supported:  # every CPU build of torch here has a bf16 matmul; a ratio exists either way
        assert r.ratio > 0 and r.fp32_ms > 0 and r.bf16_ms > 0


def test_the_cache_is_written_reused_and_keyed_by_shape_and_threads(probe, cache):
    first = resolve_precision("auto", CPU, width=128, threads=2)
    assert cache.is_file() and "measured now" in first.reason
    again = resolve_precision("auto", CPU, width=128, threads=2)
    assert len(probe.calls) == 1 and again.name == first.name and "cached in" in again.reason
    resolve_precision("auto", CPU, width=384, threads=2)  # another shape
    resolve_precision("auto", CPU, width=128, threads=1)  # other threads
    assert len(probe.calls) == 3
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == 3 and all(precision.cpu_model() in key for key in entries)
    assert {tuple(e["shape"]) for e in entries.values()} == {(1024, 128, 512), (1024, 384, 1536)}


def test_a_busy_machines_probe_is_a_one_thread_probe_and_is_not_cached(probe, cache):
    probe.busy = True
    first = resolve_precision("auto", CPU, width=128, threads=2)
    assert first.name == "bf16" and "busy" in first.reason and "40 %" in first.reason and "not cached" in first.reason
    assert "1 threads" in first.reason  # the ratio shown is the 1-thread one
    probe.busy = False  # quiet now: measured again, and this answer is cached
    again = resolve_precision("auto", CPU, width=128, threads=2)
    assert len(probe.calls) == 2 and "measured now" in again.reason and "2 threads" in again.reason
    resolve_precision("auto", CPU, width=128, threads=2)
    assert len(probe.calls) == 2


def test_the_real_probe_falls_back_to_one_thread_below_the_busy_share(monkeypatch):
    monkeypatch.setattr(precision, "BUSY_SHARE", 1.01)  # every multi-thread probe counts as busy
    r = probe_cpu_bf16(128, 16, 64, threads=2)
    assert r.busy and r.threads == 2 and 0 < r.cpu_share <= 1.0
    if r.supported:
        assert r.ratio > 0 and r.fp32_ms > 0
    monkeypatch.setattr(precision, "BUSY_SHARE", 0.0)  # never busy: the 2-thread wall-time rounds decide
    assert not probe_cpu_bf16(128, 16, 64, threads=2).busy


def test_a_bf16_matmul_on_one_thread_does_not_read_as_a_busy_machine(monkeypatch):
    """Emulated bf16 may run on one thread of two: the CPU share is read on the fp32 rounds only."""

    class Clock:  # a quiet 2-core machine: fp32 keeps both threads busy, bf16 one, each round 1 s of wall time
        cpu = wall = 0.0

    def fake_seconds(step, bf16, reps, clock):
        Clock.wall += 1.0
        Clock.cpu += 1.0 if bf16 else 2.0
        return 10.0 if bf16 else 1.0

    monkeypatch.setattr(precision, "_bf16_works", lambda: True)
    monkeypatch.setattr(precision, "_seconds", fake_seconds)
    monkeypatch.setattr(precision.time, "process_time", lambda: Clock.cpu)
    monkeypatch.setattr(precision.time, "perf_counter", lambda: Clock.wall)
    r = probe_cpu_bf16(128, 16, 64, threads=2)
    assert not r.busy and r.cpu_share == pytest.approx(1.0) and r.ratio == pytest.approx(0.1)


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", '{"version": 1, "entries": {"k": 3}}', "\xff\xfe"])
def test_a_corrupt_cache_is_ignored_and_written_again(probe, cache, garbage):
    cache.parent.mkdir(parents=True)
    cache.write_text(garbage)
    assert resolve_precision("auto", CPU, width=64, threads=1).name == "bf16"
    data = json.loads(cache.read_text())
    assert data["version"] == precision.CACHE_VERSION and len(data["entries"]) >= 1
    resolve_precision("auto", CPU, width=64, threads=1)
    assert len(probe.calls) == 1


# -- the heads keep densities in fp32 under CPU autocast


@pytest.mark.parametrize("name", [n for n in HEADS.names() if build_head(n, 16, 8).has_log_prob])
def test_densities_stay_fp32_under_cpu_autocast(name, one_thread):
    torch.manual_seed(0)
    head = build_head(name, 16, 8)
    h, y = torch.randn(2, 5, 16).bfloat16(), torch.randn(2, 5, 8)  # h as a bf16 trunk hands it over
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp = head.log_prob(h, y)
    assert lp.dtype == torch.float32
    torch.testing.assert_close(lp, head.log_prob(h.float(), y))


# -- training: the step under autocast, the choice stored and reused; evaluation follows it


def _trainer(run, extra, resume=False):
    from pjepa.train.loop import Trainer

    cfg = load_config(SMOKE, TINY + ["train.eval_every=0", "train.max_steps=2", *extra])
    return Trainer(cfg, run, resume=resume)


def _linear_dtypes(trainer) -> list[torch.dtype]:
    """Output dtypes of the method's first Linear during one training step."""
    seen: list[torch.dtype] = []
    linear = next(m for m in trainer.method.modules() if isinstance(m, torch.nn.Linear))
    handle = linear.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    trainer.train_step(trainer.state.step)
    handle.remove()
    return seen


STEP_CASES = [(SMOKE, [f"head.name={name}"]) for name in HEADS.names()] + [
    (SMOKE.parent / "smoke" / "njepa_mdn.yaml", []),
    (SMOKE.parent / "smoke" / "mae.yaml", ["method.options={decoder_dim: 16, decoder_depth: 1, decoder_heads: 2}"]),
]


@pytest.mark.parametrize("config, extra", STEP_CASES, ids=lambda c: c.stem if hasattr(c, "stem") else "-".join(c))
def test_every_head_and_method_trains_a_step_under_cpu_bf16(tmp_path, no_probe, one_thread, config, extra):
    from pjepa.train.loop import Trainer

    cfg = load_config(config, TINY + ["train.eval_every=0", "train.precision=bf16", *extra])
    trainer = Trainer(cfg, tmp_path / "run")
    _, out, _ = trainer.train_step(0)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert _linear_dtypes(trainer) == [torch.bfloat16]


@pytest.fixture
def bf16_run(tmp_path, probe, one_thread, capsys):
    """A tiny run with train.precision=auto on a CPU whose (fake) probe says bf16 is 3x faster."""
    run = tmp_path / "run"
    trainer = _trainer(run, ["train.precision=auto"])
    assert "[pjepa] precision: auto -> bf16 (CPU bf16 block 3.00x fp32" in capsys.readouterr().out
    assert _linear_dtypes(trainer) == [torch.bfloat16]  # CPU autocast really is on in the step
    trainer.fit()
    return run


def test_auto_stores_bf16_and_a_resume_reuses_it_without_probing(bf16_run, monkeypatch, capsys):
    stored = json.loads((bf16_run / "run_info.json").read_text())["precision"]
    assert stored["name"] == "bf16" and stored["requested"] == "auto" and stored["device_type"] == "cpu"
    assert "3.00x" in stored["reason"]
    monkeypatch.setattr(precision, "probe_cpu_bf16", lambda *a: pytest.fail("a resume probed again"))
    resumed = _trainer(bf16_run, ["train.precision=auto", "train.max_steps=4"], resume=True)
    out = capsys.readouterr().out
    assert "[pjepa] precision: bf16, stored in" in out and "reused without probing" in out
    assert resumed.precision.name == "bf16" and _linear_dtypes(resumed) == [torch.bfloat16]
    assert json.loads((bf16_run / "run_info.json").read_text())["precision"] == stored  # kept across resumes


def test_a_run_from_before_keeps_fp32_on_cpu(tmp_path, no_probe, one_thread, capsys):
    run = tmp_path / "old"
    _trainer(run, []).fit()  # TINY pins fp32
    info = json.loads((run / "run_info.json").read_text())
    del info["precision"]  # as pjepa wrote it before train.precision=auto
    (run / "run_info.json").write_text(json.dumps(info))
    assert Run(run).precision is None and Run(run).amp_dtype(CPU) is None
    resumed = _trainer(run, ["train.precision=bf16"], resume=True)  # the old default: meant fp32 on a CPU
    assert resumed.precision.name == "fp32" and "old rule" in capsys.readouterr().out
    assert _linear_dtypes(resumed) == [torch.float32]


def test_evaluation_follows_the_stored_precision(bf16_run, monkeypatch):
    import pjepa.eval.protocols.head as head_protocol
    import pjepa.eval.protocols.knn as knn_protocol
    import pjepa.eval.sources as sources

    run = Run(bf16_run)
    assert run.precision["name"] == "bf16" and run.amp_dtype(CPU) == torch.bfloat16
    assert run.amp_dtype(CUDA) is None  # another device type: fp32
    seen: list[torch.dtype | None] = []

    def spy(original):
        def wrapped(*args, **kwargs):
            seen.append(kwargs["amp_dtype"] if "amp_dtype" in kwargs else args[7])
            return original(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(sources, "extract_features", spy(sources.extract_features))
    monkeypatch.setattr(knn_protocol, "extract_features", spy(knn_protocol.extract_features))
    monkeypatch.setattr(head_protocol, "collect_pairs", spy(head_protocol.collect_pairs))
    res = knn_protocol.evaluate_knn(bf16_run, progress=False, device="cpu")
    assert res["feature_precision"] == "bf16"
    assert list((bf16_run / "eval" / "cache").glob("features_*_bf16.pt"))
    knn_protocol.evaluate_knn(bf16_run, progress=False, device="cpu", train_limit=16)  # extracted directly
    head_protocol.evaluate_head(bf16_run, eval_limit=8, num_samples=2, device="cpu")
    assert seen and set(seen) == {torch.bfloat16}


@pytest.mark.parametrize("record, device, dtype", [
    (None, CPU, None),
    ({"name": "fp32", "device_type": "cpu"}, CPU, None),
    ({"name": "bf16", "device_type": "cpu"}, CPU, torch.bfloat16),
    ({"name": "bf16", "device_type": "cpu"}, CUDA, None),
    ({"name": "bf16", "device_type": "cuda"}, CPU, None),
    ({"name": "fp16", "device_type": "cuda"}, CUDA, torch.float16),
    ({"name": "nonsense", "device_type": "cpu"}, CPU, None),
])
def test_eval_amp_dtype_table(monkeypatch, record, device, dtype):
    fake_cuda(monkeypatch, True)
    assert eval_amp_dtype(record, device) == dtype


def test_cpu_model_names_the_family_and_model_a_vm_hides_behind_a_generic_name(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    monkeypatch.setattr(precision, "Path", lambda p: info if p == "/proc/cpuinfo" else Path(p))
    assert precision.cpu_model() == "AMD EPYC (family 25 model 17) [avx512_bf16]"
