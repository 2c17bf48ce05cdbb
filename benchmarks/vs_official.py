"""pjepa's I-JEPA training step beside the official I-JEPA code's, on one configuration and one machine.

What it measures. For each implementation, the training step on synthetic images of the configuration's
resolution: ``--warmup`` untimed steps, ``--steps`` timed steps (img/s = batch / median step seconds), then
the timed steps replayed on the same inputs under ``torch.utils.flop_counter`` (``pjepa.profiling.count_flops``:
the matmul, convolution and attention arithmetic of forward and backward that the implementation actually
performs on the token counts its masks drew in the timed steps, so neither truncating nor padding a context
can flatter a ratio; the replay costs about as long again as the timed steps). It prints img/s, GFLOP per
image, achieved GFLOP/s (GFLOP/img x img/s) and the context / target tokens per image of each side (means
over the timed steps), and two ratios, pjepa / official: in img/s (what a user waits for) and in GFLOP/s
(speed per unit of arithmetic).

The two sides run in separate subprocesses (the script calls itself with ``--worker``), alternating in
every round and swapping which goes first from one round to the next, so the drift of a shared machine
hits both; the table holds medians over ``--rounds``.

* official: the step of ``src/train.py`` in github.com/facebookresearch/ijepa, as its ``gpu_timer`` times
  it: the target encoder under no_grad, ``F.layer_norm`` over the features, ``apply_masks`` with the
  predictor masks and ``repeat_interleave_batch``; the context encoder on the encoder masks; the
  predictor; ``F.smooth_l1_loss``; backward and AdamW (no weight decay on biases and 1-d parameters; a
  GradScaler in bf16 on a GPU, as there); the per-step gradient-norm log (``grad_logger``) and
  ``float(loss)``; the EMA of the target encoder (momentum: the config's start value, held constant).
  bf16 is autocast (``torch.autocast``, CPU or CUDA). Masks come from its ``MaskCollator``, which cuts
  every image's context to the batch minimum; the collation runs outside the timed step, as in its
  DataLoader workers, and its time is reported apart. Left out: DistributedDataParallel and the loss
  all-reduce (one process), the learning-rate / weight-decay schedulers (constant values) and the
  image transforms.
* pjepa: ``Trainer.train_step`` as ``pjepa bench`` runs it (``pjepa.train.bench.bench_config``):
  device-side augmentation and mask sampling, forward, backward, gradient clipping, fused AdamW, EMA.

The official model is sized from the resolved pjepa config: image size, patch, encoder width / depth /
heads / MLP ratio, predictor width / depth / heads, batch, and the mask settings (target blocks, target
scale and aspect, context scale, ``min_keep = min_context - 1``: the official test is ``len > min_keep``,
pjepa's ``count >= min_context``). Default configuration (the reference): ``tin100/deterministic`` with
``model.predictor.embed_dim=384 model.predictor.num_heads=8 optim.batch_size=64`` (64 px, patch 8, ViT
384 x 10, predictor 384 x 4, batch 64); ``--config PRESET|FILE key=value ...`` compares another one.

``--precision auto`` lets pjepa's rule decide (``pjepa.train.precision.resolve_precision``; on a CPU a
cached probe), then both sides run at that precision: each at its best precision as pjepa defines it.

The official code is licensed CC BY-NC and is not part of pjepa: nothing of it is copied here; it is
imported at run time from ``--official PATH``, the root of a clone:

    git clone https://github.com/facebookresearch/ijepa /path/to/ijepa

CPU:  python benchmarks/vs_official.py --official /path/to/ijepa --threads 2 --precision auto
GPU:  python benchmarks/vs_official.py --official /path/to/ijepa --device cuda --precision bf16

``--json FILE`` writes everything (settings, rows, ratios, every round of each side).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from pjepa.config import Config  # noqa: E402
from pjepa.errors import PJepaError  # noqa: E402
from pjepa.masking.multiblock import block_size  # noqa: E402
from pjepa.profiling import count_flops  # noqa: E402
from pjepa.train.bench import bench_config  # noqa: E402
from pjepa.train.precision import cpu_model, resolve_precision  # noqa: E402

PROG = "vs_official.py"
IMPLS = ("official", "pjepa")
#: the reference configuration: TIN-100 64 px, patch 8, ViT 384 x 10, predictor 384 x 4, batch 64
REFERENCE = ("tin100/deterministic", ["model.predictor.embed_dim=384", "model.predictor.num_heads=8",
                                      "optim.batch_size=64"])
#: the files of the official clone this script imports (relative to its root)
OFFICIAL_FILES = ("src/models/vision_transformer.py", "src/masks/multiblock.py", "src/masks/utils.py",
                  "src/utils/tensors.py")


class UsageError(Exception):
    """A bad input the user can fix: printed as one line, exit code 2."""


# ---------------------------------------------------------------- arguments


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be >= {low}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                 epilog="Overrides (key=value) apply to the pjepa config; the official model is "
                                        "sized from it. See the module docstring for what is counted.")
    ap.add_argument("--official", metavar="PATH",
                    help="root of a clone of github.com/facebookresearch/ijepa (holds src/models/vision_transformer.py)")
    ap.add_argument("--config", default=None,
                    help=f"pjepa preset or YAML (default: the reference, {REFERENCE[0]} {' '.join(REFERENCE[1])})")
    ap.add_argument("--rounds", type=_int_at_least(2), default=4,
                    help="rounds; each runs both sides, alternating which goes first (default 4)")
    ap.add_argument("--steps", type=_int_at_least(1), default=10, help="timed steps per side and round (default 10)")
    ap.add_argument("--warmup", type=_int_at_least(0), default=3, help="untimed steps first (default 3)")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                    help="auto: pjepa's rule decides, both sides use its choice (default auto)")
    ap.add_argument("--threads", type=_int_at_least(1), default=None, metavar="N",
                    help="CPU threads for both sides (default: torch's, usually every core)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default cpu")
    ap.add_argument("--json", metavar="FILE", default=None, help="also write everything as JSON to FILE")
    ap.add_argument("--worker", choices=IMPLS, default=None, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="dotted pjepa config overrides")
    return ap


def check_official(path: str | None) -> Path:
    """The clone's root, or a UsageError saying what is expected."""
    want = ("expected the root of a clone of github.com/facebookresearch/ijepa, holding "
            "src/models/vision_transformer.py (git clone https://github.com/facebookresearch/ijepa)")
    if not path:
        raise UsageError(f"--official PATH is required: {want}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UsageError(f"--official {path}: no such directory; {want}")
    missing = [f for f in OFFICIAL_FILES if not (root / f).is_file()]
    if missing:
        raise UsageError(f"--official {path}: {', '.join(missing)} not found; {want}")
    return root.resolve()


def config_and_overrides(args: argparse.Namespace) -> tuple[str, list[str]]:
    if args.config is None:
        return REFERENCE[0], [*REFERENCE[1], *args.overrides]
    return args.config, list(args.overrides)


def resolved_config(config: str, overrides: list[str]) -> tuple[list[str], Config]:
    """(the overrides pjepa bench trains with: synthetic data etc., the resolved config)."""
    try:
        _, final, cfg = bench_config(config, overrides, real_data=False)
    except (PJepaError, FileNotFoundError) as e:
        raise UsageError(f"--config {config} {' '.join(overrides)}: {e}".replace("\n", " ")) from None
    return final, cfg


# ---------------------------------------------------------------- the official model's settings


def official_settings(cfg: Config) -> dict[str, Any]:
    """The official model and MaskCollator arguments that match pjepa's resolved config, or a UsageError for a
    config the official code cannot run (another method or mask sampler, or masks its collator never returns)."""
    from pjepa.masking import build_mask_sampler

    if cfg.method.name != "ijepa" or cfg.mask.name != "multiblock":
        raise UsageError(f"method.name={cfg.method.name}, mask.name={cfg.mask.name}: the official code is I-JEPA "
                         "with multi-block masks (method.name=ijepa, mask.name=multiblock)")
    e, p = cfg.model.encoder, cfg.model.predictor
    size, patch = cfg.data.image_size, e.patch_size
    grid = size // patch
    sampler = build_mask_sampler(cfg.mask.name, grid, cfg.mask.options)  # the options with their defaults
    s = {
        "image_size": size, "patch_size": patch, "num_patches": grid * grid, "batch_size": cfg.optim.batch_size,
        "embed_dim": e.embed_dim, "depth": e.depth, "num_heads": e.num_heads, "mlp_ratio": e.mlp_ratio,
        "pred_embed_dim": p.embed_dim, "pred_depth": p.depth, "pred_num_heads": p.num_heads,
        "pred_mlp_ratio": p.mlp_ratio,
        "npred": sampler.num_targets, "nenc": 1, "pred_mask_scale": list(sampler.target_scale),
        "aspect_ratio": list(sampler.target_aspect), "enc_mask_scale": list(sampler.context_scale),
        "min_keep": sampler.min_context - 1, "allow_overlap": False,
        "lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay, "ema": cfg.train.ema[0],
        "pjepa_context_aspect": list(sampler.context_aspect),
        "pjepa_sets_per_image": int(getattr(sampler, "sets_per_image", 1)),
    }
    # The official sampler redraws a block until it has more than min_keep patches; a target block never
    # can if its size is too small (targets are not constrained), and it would loop forever.
    def smallest(scale: list[float], aspect: list[float]) -> tuple[int, int]:
        us = [i / 200 for i in range(201)]  # one uniform for scale and aspect, as the official sampler draws them
        sizes = [block_size(scale[0] + u * (scale[1] - scale[0]), aspect[0] + u * (aspect[1] - aspect[0]),
                            (grid, grid), "official") for u in us]
        return min(sizes, key=lambda hw: hw[0] * hw[1])

    for name, scale, aspect in (("target", s["pred_mask_scale"], s["aspect_ratio"]),
                                ("context", s["enc_mask_scale"], [1.0, 1.0])):
        h, w = smallest(scale, aspect)
        if h * w <= s["min_keep"]:
            raise UsageError(f"the official MaskCollator would never return: its smallest {name} block on the "
                             f"{grid}x{grid} grid is {h}x{w} = {h * w} patches, not more than min_keep = "
                             f"mask.options.min_context - 1 = {s['min_keep']}; lower mask.options.min_context")
    return s


def notes(cfg: Config, s: dict[str, Any]) -> list[str]:
    """What differs between the two steps beyond speed, for the reader of the table."""
    out = []
    if s["pjepa_context_aspect"] != [1.0, 1.0]:
        out.append(f"pjepa's context aspect is {s['pjepa_context_aspect']}; the official context block is square")
    if s["pjepa_sets_per_image"] != 1:
        out.append(f"pjepa draws {s['pjepa_sets_per_image']} mask sets per image; the official code one")
    head = f"{cfg.head.name} {cfg.head.options}" if cfg.head.options else cfg.head.name
    out.append(f"pjepa's head: {head}; reg: {cfg.reg.name}; predictor layout: {cfg.model.predictor.layout}; "
               f"grad clip {cfg.optim.grad_clip}. The official step: smooth L1 on a linear projection of the "
               "predictor, one predictor pass per target block (the context repeated), no clipping")
    return out


# ---------------------------------------------------------------- the workers


def _sync(device: torch.device):
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def _processor(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (host: {cpu_model()})"
    return cpu_model()


def measure(step, sync, warmup: int, steps: int, batch: int, prepare=None) -> dict[str, Any]:
    """Run ``step(x) -> (context tokens, target tokens)`` ``warmup`` times untimed and ``steps`` times timed, then
    replay the timed steps' inputs under the FLOP counter, so the FLOPs are those of exactly the steps timed.
    ``x`` is ``prepare(i)`` (untimed) for step ``i``, or ``i`` itself (pjepa's step ``i`` draws its batch and
    masks from generators seeded by ``i``, so a replay sees the same token counts)."""
    prepare = prepare or (lambda i: i)
    for i in range(warmup):
        step(prepare(i))
    sync()
    times, tokens, inputs = [], [], []
    for i in range(warmup, warmup + steps):
        x = prepare(i)
        t0 = time.perf_counter()
        c, t = step(x)
        sync()
        times.append(time.perf_counter() - t0)
        tokens.append((float(c), float(t)))
        inputs.append(x)
    flops, replayed = [], []
    for x in inputs:
        n, (c, t) = count_flops(lambda: step(x))  # noqa: B023 (called at once)
        flops.append(n)
        replayed.append((float(c), float(t)))
    median = statistics.median(times)
    return {
        "batch_size": batch, "step_s": times, "median_step_s": median, "images_per_s": batch / median,
        "flops_per_step": flops, "gflop_per_image": statistics.mean(flops) / batch / 1e9,
        "context_tokens": statistics.mean(c for c, _ in tokens), "target_tokens": statistics.mean(t for _, t in tokens),
        "tokens_per_step": tokens, "flop_replay_matches": replayed == tokens,
    }


def pjepa_worker(args: argparse.Namespace, config: str, overrides: list[str], device: torch.device) -> dict[str, Any]:
    from pjepa.config import load_config
    from pjepa.presets import resolve_config_path
    from pjepa.train.loop import Trainer

    final, _ = resolved_config(config, overrides)
    extra = [f"train.precision={args.precision}", f"train.device={device}"]
    if args.threads:
        extra.append(f"train.num_threads={args.threads}")
    with tempfile.TemporaryDirectory(prefix="pjepa-vs-official-") as tmp:
        trainer = Trainer(load_config(resolve_config_path(config), [*final, *extra]), Path(tmp) / "run")

        def step(i: int) -> tuple[float, float]:
            _, out, _ = trainer.train_step(i)
            return out.metrics["mask/num_context"], out.metrics["mask/num_target"]

        res = measure(step, _sync(trainer.device), args.warmup, args.steps, trainer.batcher.local_batch)
        res["resolved_precision"] = trainer.precision.name
    return res


def official_worker(args: argparse.Namespace, cfg: Config, root: Path, device: torch.device) -> dict[str, Any]:
    import torch.nn as nn
    import torch.nn.functional as F

    sys.path.insert(0, str(root))
    for name in [m for m in sys.modules if m == "src" or m.startswith("src.")]:
        del sys.modules[name]
    from src.masks.multiblock import MaskCollator
    from src.masks.utils import apply_masks
    from src.models import vision_transformer as vit
    from src.utils.tensors import repeat_interleave_batch

    s = official_settings(cfg)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train.py sets it
    bf16 = args.precision == "bf16"
    norm = partial(nn.LayerNorm, eps=1e-6)  # what the official vit_* and vit_predictor builders pass
    encoder = vit.VisionTransformer(img_size=[s["image_size"]], patch_size=s["patch_size"], embed_dim=s["embed_dim"],
                                    depth=s["depth"], num_heads=s["num_heads"], mlp_ratio=s["mlp_ratio"],
                                    qkv_bias=True, norm_layer=norm).to(device)
    predictor = vit.VisionTransformerPredictor(
        num_patches=s["num_patches"], embed_dim=s["embed_dim"], predictor_embed_dim=s["pred_embed_dim"],
        depth=s["pred_depth"], num_heads=s["pred_num_heads"], mlp_ratio=s["pred_mlp_ratio"], qkv_bias=True,
        norm_layer=norm).to(device)
    target_encoder = copy.deepcopy(encoder)
    for p in target_encoder.parameters():
        p.requires_grad = False

    def groups(model: nn.Module) -> tuple[list, list]:  # train.py's rule: no weight decay on biases and 1-d
        named = list(model.named_parameters())
        decay = [p for n, p in named if "bias" not in n and p.dim() != 1]
        return decay, [p for n, p in named if "bias" in n or p.dim() == 1]

    (ed, en), (pd, pn) = groups(encoder), groups(predictor)
    wd = s["weight_decay"]
    optimizer = torch.optim.AdamW([{"params": ed, "weight_decay": wd}, {"params": pd, "weight_decay": wd},
                                   {"params": en, "weight_decay": 0.0}, {"params": pn, "weight_decay": 0.0}],
                                  lr=s["lr"])
    scaler = torch.amp.GradScaler("cuda") if bf16 and device.type == "cuda" else None
    collator = MaskCollator(input_size=s["image_size"], patch_size=s["patch_size"],
                            pred_mask_scale=tuple(s["pred_mask_scale"]), enc_mask_scale=tuple(s["enc_mask_scale"]),
                            aspect_ratio=tuple(s["aspect_ratio"]), nenc=s["nenc"], npred=s["npred"],
                            allow_overlap=s["allow_overlap"], min_keep=s["min_keep"])
    B, m = s["batch_size"], s["ema"]
    pool = torch.randn(B, 3, s["image_size"], s["image_size"])  # synthetic, already normalised images
    collate_s: list[float] = []

    def collate(i: int) -> tuple:
        """The DataLoader's part (its workers collate while the previous step runs): timed apart."""
        t0 = time.perf_counter()
        udata, masks_enc, masks_pred = collator([(pool[j], 0) for j in range(B)])
        collate_s.append(time.perf_counter() - t0)
        # train.py's load_imgs(), also before its timed step
        return (udata[0].to(device, non_blocking=True), [u.to(device, non_blocking=True) for u in masks_enc],
                [u.to(device, non_blocking=True) for u in masks_pred])

    def step(batch: tuple) -> tuple[float, float]:
        imgs, masks_enc, masks_pred = batch
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                h = target_encoder(imgs)
                h = F.layer_norm(h, (h.size(-1),))
                h = apply_masks(h, masks_pred)
                h = repeat_interleave_batch(h, len(imgs), repeat=len(masks_enc))
            z = encoder(imgs, masks_enc)
            z = predictor(z, masks_enc, masks_pred)
            loss = F.smooth_l1_loss(z, h)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        # train.py logs gradient norms every step (grad_logger: one host read per weight matrix)
        _grad_norms = [float(torch.norm(p.grad)) for n, p in encoder.named_parameters()
                       if p.grad is not None and not (n.endswith(".bias") or p.dim() == 1)]
        optimizer.zero_grad()
        with torch.no_grad():
            for q, k in zip(encoder.parameters(), target_encoder.parameters()):
                k.mul_(m).add_((1.0 - m) * q.detach())
        float(loss)
        return (sum(x.shape[1] for x in masks_enc), sum(x.shape[1] for x in masks_pred))

    res = measure(step, _sync(device), args.warmup, args.steps, B, prepare=collate)
    res["collate_ms"] = 1e3 * statistics.median(collate_s)
    res["resolved_precision"] = args.precision
    res["settings"] = s
    return res


def worker(args: argparse.Namespace) -> int:
    config, overrides = config_and_overrides(args)
    device = torch.device(args.device)
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # only the result line goes to stdout
        if args.worker == "official":
            root = check_official(args.official)
            _, cfg = resolved_config(config, overrides)
            res = official_worker(args, cfg, root, device)
        else:
            res = pjepa_worker(args, config, overrides, device)
    res.update(impl=args.worker, precision=args.precision, threads=torch.get_num_threads(), device=str(device),
               processor=_processor(device))
    print(json.dumps(res), file=out, flush=True)
    return 0


# ---------------------------------------------------------------- the driver


def run_worker(impl: str, args: argparse.Namespace, root: Path, config: str, overrides: list[str],
               precision: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, "--official", str(root),
           "--config", config, "--steps", str(args.steps), "--warmup", str(args.warmup), "--precision", precision,
           "--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run([*cmd, *overrides], capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.strip()]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
        raise RuntimeError(f"the {impl} worker failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


def summarise(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rows = {}
    for impl in IMPLS:
        rs = [r[impl] for r in rounds]
        med = {k: statistics.median(x[k] for x in rs)
               for k in ("images_per_s", "gflop_per_image", "context_tokens", "target_tokens")}
        med["gflops"] = med["gflop_per_image"] * med["images_per_s"]
        med["ms_per_step"] = 1e3 * statistics.median(x["median_step_s"] for x in rs)
        if impl == "official":
            med["collate_ms"] = statistics.median(x["collate_ms"] for x in rs)
        rows[impl] = med
    return rows


def render(report: dict[str, Any]) -> str:
    rows, ratios = report["rows"], report["ratios"]
    out = [
        "## pjepa vs the official I-JEPA training step", "",
        f"`{report['command']}`", "",
        f"{report['processor']} · threads {report['threads']} · {report['device']} · torch {report['torch']} · "
        f"{report['date']}",
        f"config: {report['config']} {' '.join(report['overrides'])}".rstrip(),
        f"precision: {report['precision']} ({report['precision_reason']})",
        f"{report['rounds']} rounds x ({report['warmup']} warm-up + {report['steps']} timed steps) per side, "
        "alternating; medians over rounds", "",
        "| implementation | img/s | GFLOP/img | GFLOP/s | context tokens/img | target tokens/img |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for impl in IMPLS:
        r = rows[impl]
        out.append(f"| {impl} | {r['images_per_s']:.2f} | {r['gflop_per_image']:.3f} | {r['gflops']:.1f} | "
                   f"{r['context_tokens']:.1f} | {r['target_tokens']:.1f} |")
    out += ["", f"pjepa / official: **{ratios['images_per_s']:.2f}x** img/s, **{ratios['gflops']:.2f}x** GFLOP/s "
                "(per FLOP)", "",
            "per round (img/s; GFLOP/img over its timed steps):", "",
            "| round | order | official img/s | pjepa img/s | official GFLOP/img | pjepa GFLOP/img |",
            "|---:|---|---:|---:|---:|---:|"]
    for i, r in enumerate(report["per_round"], 1):
        o, p = r["official"], r["pjepa"]
        out.append(f"| {i} | {', '.join(r['order'])} | {o['images_per_s']:.2f} | {p['images_per_s']:.2f} | "
                   f"{o['gflop_per_image']:.3f} | {p['gflop_per_image']:.3f} |")
    out += ["", f"official mask collation (outside its timed step, as in DataLoader workers): "
                f"{rows['official']['collate_ms']:.1f} ms/batch; pjepa's step includes its augmentation and masks."]
    if not all(r[impl]["flop_replay_matches"] for r in report["per_round"] for impl in IMPLS):
        out.append("warning: a FLOP replay drew other token counts than its timed step: GFLOP/img is approximate")
    out += [f"note: {n}" for n in report["notes"]]
    return "\n".join(out)


def drive(args: argparse.Namespace) -> int:
    root = check_official(args.official)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA device")
    config, overrides = config_and_overrides(args)
    _, cfg = resolved_config(config, overrides)
    settings = official_settings(cfg)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    resolved = resolve_precision(args.precision, device, cfg.model.encoder.embed_dim, threads)
    if resolved.name not in ("fp32", "bf16"):
        raise UsageError(f"--precision {args.precision} resolves to {resolved.name} here; the official code trains "
                         "in fp32 or bf16: pass --precision fp32 or bf16")
    rounds = []
    for r in range(args.rounds):
        order = IMPLS if r % 2 == 0 else IMPLS[::-1]
        res = {"order": list(order)}
        for impl in order:
            print(f"[vs_official] round {r + 1}/{args.rounds}: {impl}", file=sys.stderr, flush=True)
            res[impl] = run_worker(impl, args, root, config, overrides, resolved.name)
            print(f"[vs_official]   {res[impl]['images_per_s']:.2f} img/s, {res[impl]['gflop_per_image']:.3f} "
                  "GFLOP/img", file=sys.stderr, flush=True)
        rounds.append(res)
    rows = summarise(rounds)
    first = rounds[0]["pjepa"]
    report = {
        "command": " ".join(["python", *map(shlex.quote, sys.argv)]), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "processor": first["processor"], "threads": first["threads"], "device": first["device"],
        "torch": torch.__version__, "config": config, "overrides": overrides, "precision": resolved.name,
        "precision_requested": args.precision, "precision_reason": resolved.describe(),
        "rounds": args.rounds, "steps": args.steps, "warmup": args.warmup, "official": str(root),
        "official_settings": settings, "rows": rows,
        "ratios": {"images_per_s": rows["pjepa"]["images_per_s"] / rows["official"]["images_per_s"],
                   "gflops": rows["pjepa"]["gflops"] / rows["official"]["gflops"]},
        "notes": notes(cfg, settings), "per_round": rounds,
    }
    print(render(report), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_intermixed_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        ap.error(f"overrides take the form key=value, got {' '.join(bad)}")
    try:
        return worker(args) if args.worker else drive(args)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
