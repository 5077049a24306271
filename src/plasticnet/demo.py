"""``plasticnet demo``: the cue–reward comparison of the public reference figure.

Trains the [D23] vanilla RNN on cue–reward association (SPEC §2) with the
three rules of SPEC §1 at the size matching of SPEC §1 — gradient (hidden
256), Hebbian (256) and non-plastic (384) — for 5,000 batches of 64 episodes
on the CPU, prints a table of validation errors next to the reference
figure's, and writes the validation curves as a PNG.

``--size quick`` (the default, what ``make demo`` runs) trains the same
comparison at a quarter of the width — hidden 64 / 64 / 96, base 32 of the
size matching — for 3,000 batches, sized for a laptop CPU.
``--size paper`` is the reference figure's configuration.

The reference figure's values are in SPEC §2 (:data:`REFERENCE`); what the
demo reaches at each size, and how long it takes, is in
``docs/results/demo.md``. Each run is an ordinary run folder under
``--out``; running the demo again continues unfinished runs and reuses
finished ones.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Dict, Optional

from .checks import check_choice
from .config import parse_set, resolve_options
from .network import matched_hidden_size
from .rules import RULES

REFERENCE = {"gradient": 0.062, "hebbian": 0.063, "none": 0.144}  # the public README figure, 5,000 batches (SPEC §2)
DEMO_DEFAULTS = {"task": "cue-reward", "cell": "rnn", "batches": 5000, "val_every": 200,
                 "val_batches": 20}  # 20 held-out batches (1,280 episodes) per validation; the paper uses 100
SIZES = {"quick": (32, 3000), "paper": (128, 5000)}  # size-matching base, batches


def size_options(size: str, rule: str) -> Dict:
    """``hidden_size`` of ``rule`` (vanilla RNN) at demo size ``quick`` or ``paper``."""
    check_choice("demo size", size, SIZES)
    return {"hidden_size": matched_hidden_size(rule, "rnn", base=SIZES[size][0])}


def demo_options(rule: str, batches: int, seed: int, extra: Optional[Dict] = None) -> Dict:
    """The flat run options of one demo run."""
    return {**DEMO_DEFAULTS, "rule": rule, "batches": batches, "seed": seed, **(extra or {})}


def run_demo(out="runs/demo", batches: int = 5000, rules=RULES, jobs: int = 1, seed: int = 0,
             extra: Optional[Dict] = None, progress: bool = True, size: str = "paper") -> Dict[str, Dict]:
    """Train the comparison into ``out/<rule>``; returns ``{rule: summary}``.

    ``jobs > 1`` trains the rules in the sweep's process pool (one thread
    each, :mod:`plasticnet.sweep`); the progress bars then follow each run's
    ``metrics.csv`` (every validation). ``jobs = 1`` trains them one after the
    other in this process.
    """
    out = Path(out)
    options = {r: demo_options(r, batches, seed, {**size_options(size, r), **(extra or {})}) for r in rules}
    if jobs == 1:
        from .train import train_run

        return {r: train_run(options[r], out / r, resume=True, progress=progress) for r in rules}
    from .experiments import Trial
    from .sweep import Outcome, run_local_pool

    pending = [Outcome(Trial(r, options[r]), out / r, "new") for r in rules]
    done = threading.Event()
    bars = threading.Thread(target=_follow, args=(done, out, rules, batches), daemon=True) if progress else None
    if bars:
        bars.start()
    try:
        run_local_pool(pending, jobs, analyze=False, log=lambda line: None)
    finally:
        done.set()
        if bars:
            bars.join()
    failed = [f"{o.trial.name}: {o.error}" for o in pending if o.status != "finished"]
    if failed:
        raise RuntimeError("demo run(s) failed: " + "; ".join(failed))
    return {o.trial.name: o.summary for o in pending}


def _follow(done: threading.Event, out: Path, rules, batches: int) -> None:
    """One progress bar per rule, read from the runs' metrics.csv until ``done`` is set."""
    from tqdm.auto import tqdm

    bars = {r: tqdm(total=batches, desc=f"{r:9s}", position=i, unit="batch", dynamic_ncols=True)
            for i, r in enumerate(rules)}
    while True:
        finished = done.is_set()
        for r, bar in bars.items():
            try:
                with open(out / r / "metrics.csv") as fh:
                    last = fh.read().strip().splitlines()[-1].split(",")
                if last[0].isdigit():
                    bar.update(int(last[0]) - bar.n)
                    bar.set_postfix(val=f"{float(last[2]):.4f}")
            except (OSError, IndexError, ValueError):
                pass
        if finished:
            break
        done.wait(2.0)
    for bar in bars.values():
        bar.close()


def plot_curves(out, rules, path) -> None:
    """Validation MSE against batch, one line per rule: the report's learning-curve figure of the run folders."""
    from .report import Condition, load_runs
    from .report_figures import learning_curves

    conditions = [Condition((r,), load_runs(Path(out) / r)) for r in rules]
    learning_curves(("rule",), conditions, Path(path), title="Cue–reward association, vanilla RNN",
                    ylabel="validation MSE")


def table(summaries: Dict[str, Dict], hidden: Dict[str, int]) -> str:
    """The final and best validation errors beside the reference figure's."""
    lines = [f"{'rule':10s} {'hidden':>6s} {'batches':>7s} {'final MSE':>10s} {'best MSE':>9s} "
             f"{'reference':>9s} {'time':>7s}"]
    for rule, s in summaries.items():
        ref = REFERENCE.get(rule)
        lines.append(f"{rule:10s} {hidden[rule]:6d} {s['batches']:7d} {s['final_val_error']:10.4f} "
                     f"{s['best_val_error']:9.4f} {ref if ref is not None else float('nan'):9.3f} "
                     f"{s['elapsed_s']:6.0f}s")
    return "\n".join(lines)


def _cmd(args) -> int:
    import yaml

    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    if not rules:
        raise ValueError(f"--rules names no rule; allowed: {', '.join(map(repr, RULES))}")
    for r in rules:
        check_choice("rule", r, RULES)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    extra = parse_set(args.set or [])
    batches = args.batches if args.batches is not None else SIZES[args.size][1]
    for r in rules:  # refuse bad options before anything trains
        resolve_options(demo_options(r, batches, args.seed, {**size_options(args.size, r), **extra}))
    t0 = time.time()
    summaries = run_demo(args.out, batches, rules, args.jobs, args.seed, extra, progress=not args.quiet,
                         size=args.size)
    hidden = {}
    for r in rules:
        config = yaml.safe_load((Path(args.out) / r / "config.yaml").read_text())
        hidden[r] = config["hidden_size"]
    print()
    print(table(summaries, hidden))
    png = Path(args.out) / "cue_reward_curves.png"
    plot_curves(args.out, rules, png)
    plastic = [summaries[r]["final_val_error"] for r in rules if r != "none"]
    if "none" in summaries and plastic:
        verdict = "yes" if max(plastic) < 0.75 * summaries["none"]["final_val_error"] else "no"
        print(f"plastic rules well below the non-plastic network: {verdict}")
    print(f"curves: {png}   run folders: {args.out}/<rule>   wall time {time.time() - t0:.0f} s")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="cue–reward comparison of gradient / Hebbian / non-plastic RNNs (CPU)",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--size", choices=sorted(SIZES), default="quick",
                   help="quick: hidden 64/64/96, 3,000 batches (minutes on a CPU); "
                        "paper: hidden 256/256/384, 5,000 batches (the reference figure; hours on a CPU)")
    p.add_argument("--batches", type=int, default=None, help="training batches per rule (default: the size's)")
    p.add_argument("--out", default="runs/demo", help="folder of the run folders and the figure")
    p.add_argument("--rules", default=",".join(RULES), help="comma-separated rules (default: all three)")
    p.add_argument("--jobs", type=int, default=min(len(RULES), os.cpu_count() or 1),
                   help="train the rules in this many parallel processes, one thread each "
                        "(default: one per rule, at most one per CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any run option, e.g. engine=reference")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd)
