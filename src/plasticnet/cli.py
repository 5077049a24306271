"""The ``plasticnet`` command: the command-line parsing of every sub-command, in one place.

Each sub-command has here its parser (``_add_<command>``: arguments, help
texts, defaults) and its handler (``_<command>``, set as the parser's
``func``). A handler checks what names a flag, turns the parsed arguments
into one call of a plain library function with keyword arguments
(:func:`plasticnet.train.train_run`, :func:`plasticnet.sweep.run_sweep`,
:func:`plasticnet.reproduce.reproduce`, ...), prints what it returns and
returns the exit code; the library modules never see ``argparse``.

Building the parser imports only the light modules whose names and help
texts it shows; each handler imports what does the work when it runs, so
``plasticnet --help`` stays cheap. Bad input (``ValueError``, ``OSError``,
raised before anything is written) ends as ``plasticnet CMD: error: ...``
on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import bench, demo
from .checks import check_nonnegative_int, check_positive_int
from .data import DATASETS, SPLITS
from .experiments import MAX_TRIALS
from .hebbian_trace import TRACE_RULES
from .reproduce import SIZES as CLAIM_SIZES
from .rules import RULES
from .sweep import BACKENDS
from .tasks import task_names


# ------------------------------------------------------------------ train, eval
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one run (task × rule × cell) into a run folder",
                       description="Train one run. Options not given keep the task's paper defaults; "
                                   "--set reaches every trainer, task and model option.")
    p.add_argument("task", help=f"task name ({', '.join(task_names())})")
    p.add_argument("--rule", help=f"plasticity rule: {', '.join(RULES)} for the [D23] tasks; "
                   f"{', '.join(TRACE_RULES)}, none for the Miconi tasks")
    p.add_argument("--cell", help="recurrent cell (lstm, rnn)")
    p.add_argument("--batches", type=int, help="training batches (default: the task's paper length)")
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("--run-dir", help="run folder (default runs/TASK-RULE-CELL-seedS)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any option, value read as YAML (repeatable), e.g. --set hidden_size=64")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _train(args) -> int:
    from .config import parse_set
    from .tasks import get_task_class
    from .train import default_run_dir, train_run

    options = {"task": args.task, **parse_set(args.set or [])}
    if args.task in task_names() and getattr(get_task_class(args.task), "cells", None) == () \
            and (args.cell is not None or "cell" in options):
        raise ValueError(f"task {args.task!r} has no --cell (its network is fixed); leave it out")
    for key in ("rule", "cell", "batches", "seed"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    run_dir = default_run_dir(options, resume=args.resume) if args.run_dir is None else Path(args.run_dir)
    pretrained = options.get("pretrained")
    if pretrained and not args.resume and not Path(str(pretrained)).is_file():  # a resumed run's checkpoint has it
        raise FileNotFoundError(f"pretrained encoder {str(pretrained)!r} not found "
                                f"(write one with `plasticnet pretrain`)")
    summary = train_run(options, run_dir, resume=args.resume, progress=not args.quiet)
    extra = "".join(f", {k} {v:.5f}" for k, v in (summary.get("final_val_metrics") or {}).items()
                    if k in ("query_error", "recall_error"))  # regression's val_error covers every step
    print(f"{run_dir}: best val_error {summary['best_val_error']:.5f}, final {summary['final_val_error']:.5f}"
          f"{extra} after {summary['batches']} batches ({summary['elapsed_s']:.0f} s)")
    return 0


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help="re-evaluate a run's checkpoint on fresh episodes")
    e.add_argument("run_dir", help="run folder")
    e.add_argument("--checkpoint", default="best", choices=("best", "last"))
    e.add_argument("--batches", type=int, help="batches of episodes, >= 1 (default: the run's val_batches)")
    e.add_argument("--seed", type=int, help="seed of the fresh episodes (default: the run's; a stream "
                                            "distinct from training and validation)")
    e.set_defaults(func=_eval)


def _eval(args) -> int:
    from .stats import t_interval
    from .train import evaluate, load_run, validation_batches

    if args.batches is not None:
        check_positive_int("--batches", args.batches)
    if args.seed is not None:
        check_nonnegative_int("--seed", args.seed)
    # evaluate_run's episodes, one batch at a time: the mean over batches and its 95 % t-interval
    task, model, config = load_run(args.run_dir, args.checkpoint)
    batches = config["val_batches"] if args.batches is None else args.batches
    seed = config["seed"] if args.seed is None else args.seed
    per_batch = [evaluate(task, model, [b], config["device"])
                 for b in validation_batches(task, config, "test", batches, seed)]
    print(f"{args.run_dir} ({args.checkpoint} checkpoint), {batches} batches of fresh episodes (seed {seed}); "
          f"mean ± 95 % t-interval over batches:")
    for k in per_batch[0]:
        mean, half, _ = t_interval([m[k] for m in per_batch])
        print(f"  {k}: {mean:.6f}" + (f" ± {half:.6f}" if half == half else ""))
    return 0


# ------------------------------------------------------------------ demo
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="cue–reward comparison of gradient / Hebbian / non-plastic RNNs (CPU)",
                       description=demo.__doc__.split("\n\n")[1])
    p.add_argument("--size", choices=list(demo.SIZES), default=demo.DEFAULT_SIZE,
                   help="figure (default): hidden 128/128/192, 5,000 batches, the reference figure's own "
                        "configuration (minutes on 2 cores: docs/results/demo.md); quick: hidden 64/64/96; "
                        "paper: hidden 256/256/384, the paper's size matching in full (about 4x the figure's time)")
    p.add_argument("--batches", type=int, default=None, help="training batches per rule (default: the size's)")
    p.add_argument("--out", default="runs/demo", help="folder of the run folders and the figure")
    p.add_argument("--rules", default=",".join(demo.RULES), help="comma-separated rules (default: all three)")
    p.add_argument("--jobs", type=int, default=min(len(demo.RULES), os.cpu_count() or 1),
                   help="train the rules in this many parallel processes, one thread each "
                        "(default: one per rule, at most one per CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any run option, e.g. engine=reference")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    from .config import parse_set

    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    if not rules:
        raise ValueError(f"--rules names no rule; allowed: {', '.join(map(repr, demo.RULES))}")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    repeated = sorted({r for r in rules if rules.count(r) > 1})
    if repeated:
        raise ValueError(f"--rules names {', '.join(map(repr, repeated))} more than once; each rule is one run "
                         f"folder of the comparison")
    demo.run_comparison(out=args.out, size=args.size, batches=args.batches, rules=rules, jobs=args.jobs,
                        seed=args.seed, extra=parse_set(args.set or []), progress=not args.quiet)
    return 0


# ------------------------------------------------------------------ data show
def _add_data(sub) -> None:
    p = sub.add_parser("data", help="inspect the few-shot image datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    s = dsub.add_parser("show", help="write a PNG grid of samples (one class per row)")
    s.add_argument("dataset", choices=DATASETS)
    s.add_argument("--split", choices=SPLITS, default="train")
    s.add_argument("--out", help="PNG path (default: DATASET-SPLIT.png)")
    s.add_argument("--rows", type=int, default=10)
    s.add_argument("--cols", type=int, default=10)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--data-dir", dest="data_dir", help="folder of a real dataset (or $PLASTICNET_DATA)")
    s.add_argument("--image-size", dest="image_size", type=int)
    s.set_defaults(func=_data_show)


def _data_show(args) -> int:
    from .data.show import write_sample_grid

    out, data = write_sample_grid(args.dataset, split=args.split, out=args.out, rows=args.rows, cols=args.cols,
                                  seed=args.seed, data_dir=args.data_dir, image_size=args.image_size)
    print(f"{args.dataset} {args.split}: {data.n_classes} classes, {len(data.labels)} images of "
          f"{data.channels}×{data.image_size}×{data.image_size}; wrote {out}")
    return 0


# ------------------------------------------------------------------ pretrain
def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="pre-train an image encoder by classification on the training classes",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="glyphs", help="glyphs | omniglot | cifar-fs | mini-imagenet")
    p.add_argument("--encoder", default="conv4", help="conv4 | resnet12")
    p.add_argument("--channels", type=int, default=64, help="encoder width (the task's encoder_channels)")
    p.add_argument("--out", required=True, help="checkpoint path to write")
    p.add_argument("--steps", type=int, default=1000, help="training steps")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=128, help="images per step")
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate")
    p.add_argument("--weight-decay", dest="weight_decay", type=float, default=1e-4, help="weight decay")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--data-dir", dest="data_dir", help="folder of a real dataset (or $PLASTICNET_DATA)")
    p.add_argument("--image-size", dest="image_size", type=int, default=0,
                   help="image side in pixels (0: the dataset's)")
    p.set_defaults(func=_pretrain)


def _pretrain(args) -> int:
    from .pretrain import pretrain_encoder

    res = pretrain_encoder(args.out, dataset=args.dataset, encoder=args.encoder, channels=args.channels,
                           steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                           seed=args.seed, data_dir=args.data_dir or "", image_size=args.image_size)
    print(f"saved {res['path']} (train accuracy {res['train_accuracy']:.3f}, {res['elapsed_s']:.0f} s); "
          f"use it with --set pretrained={res['path']}")
    return 0


# ------------------------------------------------------------------ bench
def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="time and peak memory of a training step: kernel, triton, fast, reference, "
                       "non-plastic", description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(bench.TASKS), help=f"comma-separated, from {', '.join(bench.TASKS)}")
    p.add_argument("--cells", default=",".join(bench.CELLS), help="comma-separated: rnn,lstm")
    p.add_argument("--rules", default=",".join(bench.RULES), help="comma-separated: hebbian,gradient")
    p.add_argument("--engines", default=None,
                   help="comma-separated: kernel,triton,fast,reference,none (none = the non-plastic network; "
                   "kernel on cpu only, triton on cuda, or on cpu under TRITON_INTERPRET=1); default: "
                   + "; ".join(f"{','.join(e)} on {d}" for d, e in bench.DEFAULT_ENGINES.items()))
    p.add_argument("--device", default="cpu", help="cpu (CPU time, one thread) or cuda (wall time, synchronised)")
    p.add_argument("--threads", default="1",
                   help="comma-separated thread counts; counts above 1 add kernel-engine runs (its scaling)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per run (after --warmup)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (they count for the memory peak)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden-scale", type=float, default=1.0,
                   help="factor on every matched hidden size (1: the paper's; smaller for quick checks)")
    p.add_argument("--chunk-size", type=int, default=0, help="fast engine's chunk size (0: its default)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per run before it is abandoned")
    p.add_argument("--memory-fraction", type=float, default=0.8,
                   help="skip a reference run whose estimated peak exceeds this fraction of the available memory")
    p.add_argument("--json", action="store_true", help="one JSON object per run on stdout (table on stderr)")
    p.set_defaults(func=_bench)


def _bench(args) -> int:
    check_positive_int("--repeats", args.repeats)
    try:
        threads = [int(n) for n in args.threads.split(",")]
    except ValueError:
        threads = [0]
    if not threads or min(threads) < 1:
        raise ValueError(f"--threads must be comma-separated positive integers, got {args.threads!r}")

    def show(cfg, res) -> None:
        if args.json:
            print(json.dumps(res), flush=True)
        else:
            digits = 1 if cfg.device == "cuda" else 0
            msg = res.get("error") or f"{res['ms_per_step']:.{digits}f} ms/step, {res['peak_mb']:.0f} MB"
            print(f"  {cfg.task} {cfg.cell} {cfg.rule} {cfg.engine} ({cfg.threads} thr): {msg}", file=sys.stderr,
                  flush=True)

    results, rate = bench.run_bench(
        tasks=args.tasks.split(","), cells=args.cells.split(","), rules=args.rules.split(","),
        engines=None if args.engines is None else args.engines.split(","), threads=threads, repeats=args.repeats,
        warmup=args.warmup, batch_size=args.batch_size, chunk_size=args.chunk_size, timeout=args.timeout,
        memory_fraction=args.memory_fraction, device=args.device, hidden_scale=args.hidden_scale, on_result=show)
    print(bench.report(results, rate), file=sys.stderr if args.json else sys.stdout)
    return 0


# ------------------------------------------------------------------ sweep
def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="run every trial of an experiment file (local pool or Ray Tune)")
    p.add_argument("file", help="experiment file (experiments/*.yaml)")
    p.add_argument("--backend", choices=BACKENDS, default="local", help="local process pool (default) or ray")
    p.add_argument("--workers", type=int, default=None,
                   help="trials run at once (local: 1; ray: as many as the CPUs Ray sees)")
    p.add_argument("--out", default="runs", help="root folder of the run folders (runs)")
    p.add_argument("--address", default=None, help="Ray cluster address (ray backend; default: local ray.init())")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a base option for every trial")
    p.add_argument("--seeds", type=int, default=None, help="use seeds 0..N-1 instead of the file's")
    p.add_argument("--no-analysis", action="store_true", help="skip the per-run analysis after training")
    p.add_argument("--dry-run", action="store_true", help="list the trials and their state, run nothing")
    p.add_argument("--max-trials", type=int, default=MAX_TRIALS,
                   help="refuse an experiment with more trials than this (counted before any is made)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (batches of all trials, time left)")
    p.set_defaults(func=_sweep)


def _sweep(args) -> int:
    from .config import parse_set
    from .experiments import load_experiment
    from .sweep import plan, run_sweep

    for flag, value in (("--seeds", args.seeds), ("--max-trials", args.max_trials), ("--workers", args.workers)):
        if value is not None:
            check_positive_int(flag, value)
    experiment = load_experiment(args.file)
    for note in experiment.apply_overrides(parse_set(args.set or [])):
        print(f"note: {note}")
    if args.seeds is not None:
        experiment.seeds = list(range(args.seeds))
    experiment.max_trials = args.max_trials
    root = Path(args.out) / experiment.name
    if args.dry_run:
        outcomes = plan(experiment, Path(args.out))
        print(f"{experiment.name}: {len(outcomes)} trials under {root}/")
        for o in outcomes:
            print(f"  [{o.status:8s}] {o.trial.name}")
        return 0
    try:
        outcomes = run_sweep(experiment, out=args.out, backend=args.backend, workers=args.workers,
                             address=args.address, analyze=not args.no_analysis, progress=not args.quiet)
    except ImportError as err:  # the ray backend without Ray: its install hint as the error
        raise ValueError(str(err)) from None
    failed = [o for o in outcomes if o.status == "failed"]
    held = [o for o in outcomes if o.status == "held"]
    for o in failed:
        print(f"failed: {o.run_dir}\n{o.error}")
    done = len(outcomes) - len(failed) - len(held)
    print(f"{done}/{len(outcomes)} trials finished under {root}/"
          + (f"; {len(held)} left to the other process that holds them" if held else ""))
    return 1 if failed else 0


# ------------------------------------------------------------------ report, analyze
def _add_report(sub) -> None:
    p = sub.add_parser("report", help="Markdown tables and PNG figures from run folders")
    p.add_argument("dir", help="folder holding run folders (e.g. runs/cue_reward_rules_cells)")
    p.add_argument("--out", default=None, help="where report.md and figures/ go (default: DIR)")
    p.add_argument("--title", default=None, help="report title")
    p.add_argument("--analyze", action="store_true",
                   help="first write analysis.npz for finished runs that lack it (loads the models)")
    p.set_defaults(func=_report)


def _report(args) -> int:
    from .report import analyze_missing, write_report

    if args.analyze:
        analyze_missing(args.dir)
    print(f"report: {write_report(args.dir, out=args.out, title=args.title)}")
    return 0


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="trace modulation and fast-weight norm of trained runs (analysis.npz)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run folders")
    p.add_argument("--episodes", type=int, default=256, help="validation episodes to average over (256)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the validation episodes (1234)")
    p.set_defaults(func=_analyze)


def _analyze(args) -> int:
    from .analysis import ANALYSIS_FILE, analyze_run

    for run_dir in args.run_dirs:
        if not (Path(run_dir) / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir!r} is not a run folder (no config.yaml)")
        result = analyze_run(run_dir, episodes=args.episodes, seed=args.seed)
        if result is None:
            print(f"{run_dir}: rule none, no fast weights: nothing to analyse")
        else:
            m, f = result["modulation_mean"], result["fast_norm_mean"]
            print(f"{run_dir}: m_t {m.min():.3f}..{m.max():.3f}, ‖F_T‖ {f[-1]:.4f} -> {Path(run_dir) / ANALYSIS_FILE}")
    return 0


# ------------------------------------------------------------------ reproduce
def _add_reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="run the papers' claims and judge each (holds / fails / inconclusive)",
                       description="Run the papers' findings as claims (plasticnet/claims/*.yaml) through the "
                                   "sweep machinery and write a report per claim plus a summary.")
    p.add_argument("claims", nargs="*", metavar="CLAIM", help="claim ids (default: all; see --list)")
    p.add_argument("--list", action="store_true",
                   help="list the claims: id, the paper's statement, runs per size and the training time measured "
                        "in --out or docs/results")
    p.add_argument("--size", choices=CLAIM_SIZES, default="quick",
                   help="quick: a 2-core CPU in minutes per claim (default); standard: every comparison run, 4 seeds, "
                        "hours per claim on a 2-core CPU; paper: the paper's configuration; smoke: seconds, for tests")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 instead of the size's")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="sweep backend")
    p.add_argument("--workers", type=int, default=None, help="runs at once (local default 1)")
    p.add_argument("--out", default="runs/reproduce", help="root of the run folders (runs/reproduce)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="an option for every run, e.g. engine=kernel or device=cuda (not one a claim varies)")
    p.add_argument("--report-only", action="store_true", help="judge the existing run folders, train nothing")
    p.add_argument("--write-docs", metavar="DOCS", default=None,
                   help="train nothing: write DOCS/reproduction.md and DOCS/results/summary.md from the evidence in "
                        "DOCS/results/<size>/<claim>/ (result.json, why.md)")
    p.add_argument("--claims-dir", default=None, help=argparse.SUPPRESS)  # tests: another claims folder
    p.set_defaults(func=_reproduce)


def _reproduce(args) -> int:
    from .config import parse_set
    from .reproduce import load_claims, reproduce

    if args.list:
        from .reproduce import claim_listing

        roots = [args.out] + (["docs/results"] if Path("docs/results").is_dir() else [])
        print("\n".join(claim_listing(list(load_claims(args.claims_dir).values()), roots)))
        return 0
    if args.write_docs is not None:
        from .reproduce_docs import write_docs

        for path in write_docs(args.write_docs):
            print(f"wrote {path}")
        return 0
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    done = reproduce(args.claims, out=args.out, size=args.size, seeds=args.seeds, backend=args.backend,
                     workers=args.workers, overrides=parse_set(args.set or []), report_only=args.report_only,
                     claims_dir=args.claims_dir)
    print(f"summary: {done.summary}")
    if done.failed:
        print(f"plasticnet reproduce: {done.failed} run(s) failed (their errors are above); the verdicts "
              "judge only the runs that finished", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------ the command
COMMANDS = [_add_train, _add_eval, _add_demo, _add_data, _add_pretrain, _add_bench, _add_sweep, _add_report,
            _add_analyze, _add_reproduce]  # in --help order


def build_parser() -> argparse.ArgumentParser:
    """The ``plasticnet`` parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="plasticnet",
        description="Plastic recurrent networks: train, evaluate, compare rules, sweep, report.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    """Run ``plasticnet`` with ``argv`` (default: the process's arguments); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:  # bad input, missing or unreadable files: a message, no traceback
        print(f"plasticnet {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
