"""The ``pjepa`` command: thin subcommands, each parses and calls one library function.

    pjepa train --config FILE|PRESET [--out DIR] [--dry-run] [key=value ...]
    pjepa train --resume DIR [key=value ...]
    pjepa eval PROTOCOL --run DIR ...       (protocols: pjepa.eval.protocols, one file each)
    pjepa sweep --config FILE|PRESET --out SWEEP_DIR [--eval knn,linear] [--baselines] [key=v1,v2 ...]
    pjepa table RUN_DIR|SWEEP_DIR... [--format md|csv|both] [--csv FILE] [--pairs]
    pjepa presets
    pjepa export --run DIR --out FILE [--encoder target|context] [--checkpoint last|best]
    pjepa import --from FILE --out FILE [--kind auto|ijepa|mae] [--encoder target|context] [--num-heads N]
    pjepa plot WHAT RUN_DIR... [--out DIR]   (figures: pjepa.viz.figures; into RUN/figures/ by default)
    pjepa report RUN_DIR... --out DIR [--study STUDY_DIR] [--title T] [--no-tensorboard]
    pjepa bench --config FILE|PRESET [--precision fp32,bf16] [--steps N] [--json] [key=value ...]
    pjepa gen study --runs RUN_DIR... --out DIR [--preset cifar10_cpu] [--inception-weights FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from pjepa.errors import PJepaError


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pretrain a model (or continue one with --resume)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="experiment YAML, or a preset name (e.g. smoke, cifar10/cpu; see `pjepa presets`)")
    src.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--out", type=Path, help="run directory (default: runs/NNNNN-<config name>)")
    p.add_argument("--dry-run", action="store_true", help="check and print the resolved config, then exit")
    p.add_argument("--auto-resume", action="store_true",
                   help="with --config and --out: continue the run in --out from its newest complete checkpoint "
                        "if it has one, else start it (what preemptible clusters need)")
    p.add_argument("--force", action="store_true",
                   help="with --config: delete the run already in --out (its checkpoints, log, evaluations) first")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. optim.lr=1e-3")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from pjepa.eval.protocols import PROTOCOLS

    p = sub.add_parser("eval", help="evaluate a run directory (results go to RUN/eval/*.json)")
    esub = p.add_subparsers(dest="protocol", required=True)
    for name in PROTOCOLS.names():
        protocol = PROTOCOLS.get(name)
        sp = esub.add_parser(name, help=protocol.help)
        protocol.add_arguments(sp)
        _add_threads(sp)


def _add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads N``: CPU threads for the command's computation (training takes train.num_threads)."""
    from pjepa.eval.protocols.base import positive_int

    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU threads to compute with (default: torch's, usually every core; 1 beside other jobs)")


def _apply_threads(args: argparse.Namespace) -> None:
    threads = getattr(args, "threads", None)
    if threads:
        import torch

        torch.set_num_threads(threads)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    from pjepa.eval.protocols.base import non_negative_int, positive_int

    p = sub.add_parser("sweep", help="train and evaluate a grid of overrides (key=v1,v2 ...), one run each",
                       description="Every override key=v1,v2,... (commas outside [] and {}) is an axis of the grid; "
                                   "key=value applies to every run. Each run: pjepa train --auto-resume, then the "
                                   "evaluations; finished runs and current evaluations are skipped, so the same "
                                   "command continues an interrupted sweep.")
    p.add_argument("--config", required=True, help="experiment YAML, or a preset name (see `pjepa presets`)")
    p.add_argument("--out", type=Path, required=True, metavar="SWEEP_DIR", help="one run directory per grid point")
    p.add_argument("--eval", default="", metavar="P1,P2", help="evaluation protocols after training, e.g. knn,linear; knn_val: kNN on the validation split (for choices)")
    p.add_argument("--baselines", action="store_true", help="also rate the untrained encoder and raw pixels (kNN, and linear when --eval has it)")
    p.add_argument("--launcher", choices=["local", "submitit"], default="local",
                   help="local: one run after another here; submitit: one SLURM job per run with work left")
    p.add_argument("--max-runs", type=positive_int, default=1000, metavar="N",
                   help="refuse a grid of more than N runs (default 1000): a typo in a list of values should not "
                        "queue a million runs")
    p.add_argument("--dry-run", action="store_true", help="check every run's config, print the grid, exit")
    s = p.add_argument_group("submitit launcher")
    s.add_argument("--slurm-partition", help="SLURM partition")
    s.add_argument("--slurm-time-min", type=positive_int, default=240, help="time limit per job, minutes")
    s.add_argument("--slurm-gpus", type=non_negative_int, default=1, help="GPUs per job")
    s.add_argument("--slurm-cpus", type=positive_int, default=8, help="CPUs per job")
    s.add_argument("--cluster", choices=["slurm", "local"], default="slurm",
                   help="submitit executor: slurm, or local to run the jobs on this machine (trying it out)")
    s.add_argument("--wait", action="store_true", help="wait for the jobs and report how each ended")
    p.add_argument("overrides", nargs="*", metavar="key=v1,v2", help="dotted overrides; commas make an axis")


def _add_table(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help="kNN@1 table of run directories (both votes, budgets, head metrics)")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="run directories, folders of runs (a pjepa sweep --out) standing for their runs, or per-run "
                        "CSV files (--per-run) standing for the runs they list")
    p.add_argument("--format", choices=["md", "csv", "both"], default="both")
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write the CSV to FILE")
    p.add_argument("--per-run", action="store_true",
                   help="the CSV (printed and --csv) has one row per run and seed instead of one per group: what the "
                        "grouped table and its statistics are computed from; `pjepa table FILE.csv` groups it again")
    p.add_argument("--pairs", action="store_true",
                   help="also print every pair of rows under Welch's t-test over seeds (p-values and verdicts)")
    p.add_argument("--by", metavar="COLUMN",
                   help="the column vs_best and --pairs compare on (default knn); knn_val for a choice, "
                        "which must read the validation split")
    p.add_argument("--correct", choices=["auto", "holm", "none"], default="auto",
                   help="multiple-comparison correction of the vs_best and --pairs p-values: holm "
                        "(Holm-Bonferroni step-down over the family of tests: the rows tested against the best; "
                        "every pair for --pairs), none (raw p-values), auto (default: holm when the family has "
                        "more than one test). Verdicts read the corrected p; the CSV also has the raw one")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run's encoder as timm-layout safetensors (+ FILE.json architecture)")
    p.add_argument("--run", type=Path, required=True, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="e.g. encoder.safetensors")
    p.add_argument("--encoder", choices=["target", "context"], default="target")
    p.add_argument("--checkpoint", choices=["last", "best"], default="last")


def _add_import(sub: argparse._SubParsersAction) -> None:
    from pjepa.eval.protocols.base import positive_int

    p = sub.add_parser("import", help="convert an official I-JEPA / MAE checkpoint to timm-layout safetensors")
    p.add_argument("--from", dest="src", type=Path, required=True, metavar="FILE", help="official .pth / .pth.tar")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="e.g. encoder.safetensors")
    p.add_argument("--kind", choices=["auto", "ijepa", "mae"], default="auto")
    p.add_argument("--encoder", choices=["target", "context"], default="target", help="I-JEPA only")
    p.add_argument("--num-heads", type=positive_int, help="attention heads; required unless the checkpoint records them (the official I-JEPA and "
                        "MAE checkpoints do not: ViT-H 16, ViT-L 16, ViT-B 12, ViT-S 6)")


def _add_plot(sub: argparse._SubParsersAction) -> None:
    from pjepa.eval.protocols.base import positive_int
    from pjepa.viz.figures import FIGURES

    p = sub.add_parser("plot", help="make one figure from run directories (into RUN/figures/)",
                       epilog="figures: " + "; ".join(f"{f.name}: {f.help}" for f in FIGURES.values()))
    p.add_argument("what", choices=list(FIGURES), metavar="WHAT", help=f"one of: {', '.join(FIGURES)}")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, metavar="DIR", help="write here instead of RUN/figures/")
    p.add_argument("--format", choices=["png", "pdf", "svg"], default="png",
                   help="file format (default png; pdf and svg are vector, ready for a paper)")
    p.add_argument("--dpi", type=positive_int, default=200, help="resolution of PNGs and of images inside "
                   "PDF/SVG files (default 200)")
    _add_threads(p)


def _add_report(sub: argparse._SubParsersAction) -> None:
    from pjepa.eval.protocols.base import positive_int

    p = sub.add_parser("report", help="one self-contained HTML page: tables, every figure, each run's config")
    p.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="writes DIR/index.html and DIR/figures/")
    p.add_argument("--study", type=Path, action="append", default=[], metavar="DIR",
                   help="a pjepa gen study folder: its table, sample grids and reconstructions (repeatable)")
    p.add_argument("--title", default="pjepa report")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write RUN/tb/{hparams,figures}")
    p.add_argument("--format", choices=["png", "pdf", "svg"], action="append", default=[], metavar="FMT",
                   help="also write every figure as FMT beside the page (pdf, svg; repeatable); the page itself "
                        "inlines PNGs")
    p.add_argument("--dpi", type=positive_int, default=200, help="resolution of the PNGs (default 200)")
    _add_threads(p)


def _add_gen(sub: argparse._SubParsersAction) -> None:
    from pjepa.studies.generative.config import study_presets

    p = sub.add_parser("gen", help="the generative study: latent diffusion over frozen encoders' patch tokens")
    gsub = p.add_subparsers(dest="gen_command", required=True)
    s = gsub.add_parser("study", help="tokens -> VAE -> diffusion -> decoder -> metrics for each run, one table",
                        description="Every stage is resumable: the same command skips what is done. Writes "
                                    "DIR/table.md, DIR/table.json, sample grids and DIR/<run>/timings.json.")
    s.add_argument("--runs", nargs="+", type=Path, required=True, metavar="RUN_DIR",
                   help="run directories (pjepa train), or folders of encoders brought in with pjepa import")
    s.add_argument("--out", type=Path, required=True, metavar="DIR")
    s.add_argument("--preset", default="cifar10_cpu", help=f"study preset ({', '.join(study_presets())}) or a YAML")
    s.add_argument("--inception-weights", type=Path, metavar="FILE",
                   help="local FID InceptionV3 weights (pt_inception-2015-12-05-6726825d.pth): InceptionV3 columns too")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_threads(s)
    s.add_argument("overrides", nargs="*", metavar="key=value", help="dotted study overrides, e.g. sample.n=500")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pjepa", description="Joint-Embedding Predictive Architectures")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_eval(sub)
    _add_sweep(sub)
    _add_table(sub)
    _add_export(sub)
    _add_import(sub)
    _add_plot(sub)
    _add_report(sub)
    _add_gen(sub)
    _add_bench(sub)
    sub.add_parser("presets", help="list the built-in presets (usable as --config NAME)")
    return parser


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from pjepa.eval.protocols.base import non_negative_int, positive_int

    p = sub.add_parser("bench", help="time a configuration's training step: img/s, GFLOP/s against the matmul "
                                     "peak, peak memory, the time of each part",
                       description="Runs the configuration's real training step on synthetic images of its "
                                   "resolution (--real-data: its dataset) in each precision and prints img/s, "
                                   "GFLOP per image, achieved GFLOP/s and fraction_of_peak against the matmul peak "
                                   "measured in the same run, peak memory and ms per part of the step.")
    p.add_argument("--config", required=True, help="experiment YAML, or a preset name (see `pjepa presets`)")
    p.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16 (default fp32,bf16)")
    p.add_argument("--steps", type=positive_int, default=20, help="timed steps per precision (default 20)")
    p.add_argument("--warmup", type=non_negative_int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--flop-steps", type=non_negative_int, default=2, help="steps under the FLOP counter (default 2)")
    p.add_argument("--part-steps", type=non_negative_int, default=5, help="steps timed part by part (default 5)")
    p.add_argument("--real-data", action="store_true", help="train on the configuration's dataset, not synthetic images")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--budget-min", type=float, default=0.0, metavar="M",
                   help="also print how many steps fit in M minutes of training at each precision's median step "
                        "time: the step count (train.max_steps) of an M-minute compute budget on this machine")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. optim.batch_size=64")


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from pjepa.train.bench import format_bench, run_bench

    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    result = run_bench(args.config, args.overrides, precisions, steps=args.steps, warmup=args.warmup,
                       flop_steps=args.flop_steps, part_steps=args.part_steps, real_data=args.real_data,
                       budget_min=args.budget_min)
    print(json.dumps(result.to_dict(), indent=1) if args.json else format_bench(result))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pjepa.checks import check_config
    from pjepa.config import build_config, dump_config, load_config
    from pjepa.errors import ConfigError
    from pjepa.presets import resolve_config_path
    from pjepa.runs import Run, RunLock, check_resume_overrides
    from pjepa.runs.precision import check_requested
    from pjepa.train.loop import train
    from pjepa.utils import next_run_dir

    resume = args.resume is not None
    if resume:
        run_dir = args.resume
        run = Run(run_dir)
        check_resume_overrides(args.overrides)
        cfg = build_config(run.raw_config, run.resume_overrides() + args.overrides)
    else:
        path = resolve_config_path(args.config)
        cfg = load_config(path, args.overrides)
        if args.out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("under torchrun pass --out DIR so that every process writes to the same run")
        if args.auto_resume and args.out is None:
            raise ConfigError("--auto-resume needs --out DIR: the run directory to continue or start")
        run_dir = args.out or next_run_dir(Path("runs"), path.stem)
    cfg = check_config(cfg)
    check_requested(cfg.train.precision, cfg.train.device)  # fp16 on a CPU
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if main_rank:
        from pjepa.runs.writable import writable_dir

        writable_dir(run_dir, "run directory (--out)")
    # refuse now if another process writes there (train() holds the lock again until it ends)
    with RunLock(run_dir) if main_rank else contextlib.nullcontext():
        resume, cfg = _settle_run_dir(args, run_dir, resume, cfg, main_rank)
    result = train(cfg, run_dir, resume=resume)
    if result.get("exit_code"):  # stopped by SIGTERM / SIGINT after saving checkpoints/last
        return int(result["exit_code"])
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[pjepa] finished at step {result['step']}; run directory: {run_dir}")
    return 0


def _settle_run_dir(args: argparse.Namespace, run_dir: Path, resume: bool, cfg, main_rank: bool):
    """(resume?, config) of the run directory's policy. --auto-resume continues a run that has a checkpoint
    (refusing a preset or overrides that would make it another run; those a resume may change are applied
    and recorded), starts one that does not exist, and restarts one that died before its first checkpoint
    after moving what it left into previous/N; it refuses a folder with results but no checkpoint (a kept
    or finished run). --force clears a run; anything else refuses to write over one. A resume's overrides
    are recorded in resumes.jsonl."""
    from pjepa.checks import check_config
    from pjepa.config import build_config
    from pjepa.errors import ConfigError
    from pjepa.runs import Run

    if not main_rank:  # rank 0 decides and writes; another rank may already see rank 0's new config.yaml
        if not resume and args.auto_resume and Run(run_dir).checkpoint("last") is not None:
            run = Run(run_dir)
            return True, check_config(build_config(run.raw_config, run.resume_overrides() + _changed(run, cfg)))
        return resume, cfg
    if not resume and (run_dir / "config.yaml").is_file():
        run = Run(run_dir)
        if args.auto_resume and run.checkpoint("last") is not None:
            changed = _changed(run, cfg)  # the preempted run: continue it, with its own config
            if changed:
                run.record_resume(run.load_checkpoint("last")[1]["step"], changed)
                print(f"[pjepa] {run_dir}: continuing it with {' '.join(changed)}", flush=True)
            return True, check_config(build_config(run.raw_config, run.resume_overrides()))
        if args.auto_resume and not args.force and run.results():
            raise ConfigError(f"{run_dir} holds results ({', '.join(run.results()[:4])}) but no checkpoint to "
                              "continue: a kept or finished run, which --auto-resume would train again over them. "
                              f"Rate it with pjepa eval / pjepa table as it is, or move it away (or pass --force "
                              "to replace it) to train it again")
        if args.auto_resume and not args.force:  # it died before its first checkpoint: start it again
            moved = run.move_aside()
            if moved is not None:
                print(f"[pjepa] {run_dir} had no checkpoint (the run died before its first one): what it "
                      f"left is in {moved}; starting it again", flush=True)
        elif args.force:
            run.clear()
        else:
            raise ConfigError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, "
                              "replace it with --force, or pick another --out")
    elif resume and args.overrides and main_rank:
        run = Run(run_dir)
        run.record_resume(run.load_checkpoint("last")[1]["step"], args.overrides)
    return resume, cfg


def _changed(run, cfg) -> list[str]:
    """The overrides that turn the stored run's config into ``cfg`` (what --auto-resume was given), as
    key=value; a ConfigError naming the keys when a resume may not change them (another preset, another
    learning rate: another experiment, not a continuation)."""
    import yaml

    from pjepa.checks import check_config
    from pjepa.config import build_config, config_to_dict
    from pjepa.errors import ConfigError
    from pjepa.runs.run import resumable

    stored = config_to_dict(check_config(build_config(run.raw_config, run.resume_overrides()), build=False))
    given = config_to_dict(check_config(cfg, build=False))
    diffs = _diff(stored, given)
    refused = [k for k in diffs if not resumable(k)]
    if refused:
        shown = "; ".join(f"{k}: {_get(stored, k)!r} in the run, {_get(given, k)!r} given" for k in refused[:4])
        raise ConfigError(f"{run.path} is another experiment than the one asked for ({shown}); --auto-resume "
                          "continues a run only with its own preset and overrides. Pick another --out, or pass "
                          "--force to replace it")
    return [f"{k}={yaml.safe_dump(_get(given, k), default_flow_style=True).strip().removesuffix('...').strip()}"
            for k in diffs]


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict) and not key.endswith("options"):
            out += _diff(a[k], b[k], key + ".")
        elif a.get(k) != b.get(k):
            out.append(key)
    return out


def _get(d: dict, key: str):
    for part in key.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def cmd_eval(args: argparse.Namespace) -> int:
    from pjepa.eval.protocols import PROTOCOLS
    from pjepa.runs.writable import writable_dir

    if Path(args.run).is_dir() and (Path(args.run) / "config.yaml").is_file():
        writable_dir(Path(args.run) / "eval", "the run's eval folder")  # before the evaluation, not after it

    for line in PROTOCOLS.get(args.protocol).run(args):
        print(line)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pjepa.runs.writable import writable_dir
    from pjepa.sweep import SlurmOptions, run_sweep

    if not args.dry_run:
        writable_dir(args.out, "sweep folder (--out)")

    slurm = SlurmOptions(args.slurm_partition, args.slurm_time_min, args.slurm_gpus, args.slurm_cpus, args.cluster,
                         args.wait)
    protocols = [name.strip() for name in args.eval.split(",") if name.strip()]
    return run_sweep(args.config, args.out, args.overrides, protocols, args.baselines, args.launcher, slurm,
                     args.dry_run, argv=["pjepa", *args.argv], echo=lambda line: print(line, flush=True),
                     max_runs=args.max_runs)


def cmd_table(args: argparse.Namespace) -> int:
    from pjepa.eval.table import pairs_markdown, per_run_csv, table_rows, to_csv, to_markdown

    if args.csv is not None:
        from pjepa.runs.writable import writable_file

        writable_file(args.csv, "--csv")
    rows = table_rows(args.runs, args.by, args.correct)
    csv_text = per_run_csv(args.runs) if args.per_run else to_csv(rows)
    if args.format in ("md", "both"):
        print(to_markdown(rows, args.by))
    if args.format in ("csv", "both"):
        print(csv_text, end="")
    if args.pairs:
        print("\n" + pairs_markdown(rows, args.by, args.correct), end="")
    if args.csv is not None:
        args.csv.write_text(csv_text)
        print(f"wrote {args.csv}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from pjepa.presets import list_presets

    presets = list_presets()
    width = max(len(name) for name, _ in presets)
    for name, line in presets:
        print(f"{name:<{width}}  {line}")
    return 0


def _print_written(path: Path) -> None:
    from pjepa.models.timm_format import describe, read_architecture, read_timm_file

    print(f"wrote {path} ({len(read_timm_file(path))} tensors, timm keys) and {path.with_suffix('.json')}: "
          f"{describe(read_architecture(path))}")


def cmd_export(args: argparse.Namespace) -> int:
    from pjepa.eval.sources import online_target
    from pjepa.methods.weights import export_run_encoder
    from pjepa.runs import Run
    from pjepa.runs.writable import writable_file

    writable_file(args.out, "--out")

    _print_written(export_run_encoder(args.run, args.out, encoder=args.encoder, checkpoint=args.checkpoint))
    if args.encoder == "target" and online_target(Run(args.run)):
        print("[pjepa] this run trained without an EMA teacher (online target): the exported encoder is its "
              "context encoder")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from pjepa.methods.weights import import_official
    from pjepa.runs.writable import writable_file

    writable_file(args.out, "--out")

    _print_written(import_official(args.src, args.out, kind=args.kind, which=args.encoder, num_heads=args.num_heads))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from pjepa.runs import Run
    from pjepa.runs.writable import writable_dir
    from pjepa.viz.figures import make_figure

    for folder in [args.out] if args.out else [Path(r) / "figures" for r in args.runs if Path(r).is_dir()]:
        writable_dir(folder, "figure folder")

    for path in make_figure(args.what, [Run(r) for r in args.runs], args.out, args.format, args.dpi):
        print(f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pjepa.runs.writable import writable_dir
    from pjepa.viz.report import write_report

    writable_dir(args.out, "report folder (--out)")

    path, _ = write_report(args.runs, args.out, args.title, tensorboard=not args.no_tensorboard,
                           echo=lambda line: print(f"  {line}", flush=True), studies=args.study,
                           formats=[f for f in args.format if f != "png"], dpi=args.dpi)
    print(f"wrote {path}")
    return 0


def cmd_gen(args: argparse.Namespace) -> int:
    from pjepa.studies.generative.study import load_study_config, run_study
    from pjepa.utils import seed_everything

    # `--runs A B key=value`: argparse gives the override to --runs; it is not a folder, so it is an override
    moved = [str(r) for r in args.runs if "=" in str(r) and not r.exists()]
    runs = [r for r in args.runs if str(r) not in moved]
    cfg = load_study_config(args.preset, moved + list(args.overrides))
    from pjepa.runs.writable import writable_dir

    writable_dir(args.out, "study folder (--out)")
    seed_everything(cfg.seed)
    from pjepa.viz.report import write_study_report

    table = run_study(runs, args.out, cfg, args.inception_weights, progress=not args.no_progress,
                      device=args.device, echo=lambda line: print(line, flush=True))
    page = write_study_report(args.out)
    print(f"[pjepa] study table: {table} (and {table.with_suffix('.json')}); grids and timings in {args.out}/<run>/; "
          f"page: {page}")
    return 0


COMMANDS = {
    "train": cmd_train, "eval": cmd_eval, "bench": cmd_bench, "sweep": cmd_sweep, "table": cmd_table, "presets": cmd_presets,
    "export": cmd_export, "import": cmd_import, "plot": cmd_plot, "report": cmd_report, "gen": cmd_gen,
}


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    """`parser`'s subcommands (the action holding them), or None for a parser without any."""
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _subcommand(parser: argparse.ArgumentParser, token: str) -> argparse.ArgumentParser | None:
    """The subparser `token` names under `parser`, or None."""
    subs = _subparsers(parser)
    return subs.choices.get(token) if subs else None


def _unknown_long_options(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """The `--options` typed that the (sub)command they follow does not have.

    Checked before argparse runs: a mistyped required option (`train --confg X`) would otherwise
    end in "one of the arguments --config --resume is required", which hides the typo. A word typed
    where a subcommand goes that names none exits here too (`_unknown_subcommand`)."""
    current, unknown, expect_sub = parser, [], True
    for token in argv:
        if token == "--":  # everything after it is positional
            break
        sub = _subcommand(current, token)
        if sub is not None:
            current, expect_sub = sub, True
            continue
        if expect_sub and not token.startswith("-"):
            _unknown_subcommand(current, token)  # `eval knnn --run X`: name the word, not the options after it
        expect_sub = False
        if token.startswith("--") and not any(o.startswith(token.split("=")[0]) for o in current._option_string_actions):
            unknown.append(token)  # (a prefix of a valid option is argparse's abbreviation: left to it)
    return unknown


def _unknown_subcommand(parser: argparse.ArgumentParser, token: str) -> None:
    """Exit 2 if `parser` takes a subcommand and `token` (the word typed where it goes) is not one of them.

    argparse itself would first report the options after the bad word as unrecognized, which sends the
    user after the wrong mistake (`pjepa eval knnn --run X` -> "unrecognized arguments: --run")."""

    subs = _subparsers(parser)
    if subs is None or token in subs.choices:
        return
    choices = list(subs.choices)
    close = _closest(token, choices)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    parser.error(f"argument {subs.dest}: invalid choice: {token!r} (choose from {', '.join(choices)}){hint}")


def _closest(word: str, choices: list[str]) -> list[str]:
    """Up to two valid spellings close to ``word``: the closest, and a second only if it is about as close
    (``--formt`` suggests ``--format``, not also ``--correct``)."""
    import difflib

    close = difflib.get_close_matches(word, choices, n=2, cutoff=0.6)
    score = [difflib.SequenceMatcher(None, word, c).ratio() for c in close]
    return [c for c, r in zip(close, score) if r >= score[0] - 0.1]


def _unrecognized(parser: argparse.ArgumentParser, argv: list[str], unknown: list[str]) -> None:
    """Exit 2 naming the unknown arguments, with the (sub)command's usage and the closest valid options."""

    current = parser  # follow the subcommands typed (pjepa eval knn ...) to the parser that read the options
    for token in argv:
        current = _subcommand(current, token) or current
    valid = [o for o in current._option_string_actions if o.startswith("--")]
    hints = []
    for u in unknown:
        close = _closest(u.split("=")[0], valid) if u.startswith("-") else []
        if close:
            hints.append(f"{u}: did you mean {' or '.join(close)}?")
    current.error(f"unrecognized arguments: {' '.join(unknown)}" + ("; " + "; ".join(hints) if hints else "")
                  + f" (see `{current.prog} --help`)")


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while the parsers and the command's modules are still being built
        print("pjepa: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come before or after options (`--out DIR key=value`): argparse
    # leaves trailing positionals unparsed, so collect every `key=value` left over.
    typed = list(argv if argv is not None else sys.argv[1:])  # as typed: pjepa sweep records it
    misspelled = _unknown_long_options(parser, typed)
    if misspelled:
        _unrecognized(parser, typed, misspelled)
    args, extra = parser.parse_known_args(typed)
    takes_overrides = args.command in ("train", "sweep", "gen", "bench")
    unknown = [e for e in extra if e.startswith("-") or "=" not in e or not takes_overrides]
    if unknown:
        _unrecognized(parser, typed, unknown)
    if takes_overrides:
        args.overrides = list(args.overrides) + extra
    args.argv = typed
    try:
        _apply_threads(args)
        from pjepa.cli import interrupted

        if interrupted():  # Ctrl-C while the parsers were built, swallowed by an import: stop before any work
            raise KeyboardInterrupt
        return COMMANDS[args.command](args)
    except PJepaError as e:
        print(f"pjepa: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pjepa: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pjepa ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
