"""``plasticnet demo``: the cue–reward comparison of the public reference figure.

Trains the [D23] vanilla RNN on cue–reward association (SPEC §2) with the
three rules of SPEC §1 — gradient, Hebbian and non-plastic — for 5,000
batches of 64 episodes on the CPU, prints a table of validation errors next
to the reference figure's, and writes the validation curves as a PNG.

``--size figure`` (the default, what ``make demo`` runs) is exactly the
reference figure's configuration: hidden 128 / 128 / 192 (its experiment
applies the ×1.5 of the non-plastic network but not the ×2 of the RNN cell:
base 64 of the size matching), 5,000 batches. ``--size quick`` is the same
comparison at half that width (64 / 64 / 96); ``--size paper`` applies the
paper's size matching in full (256 / 256 / 384), which the figure did not.

The reference figure's values are in SPEC §2 (:data:`REFERENCE`); what the
demo reaches at each size, and how long it takes, is in
``docs/results/demo.md``. Each run is an ordinary run folder under
``--out``; running the demo again continues unfinished runs and reuses
finished ones.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from .checks import check_choice, check_positive_int
from .config import resolve_options
from .network import matched_hidden_size
from .rules import RULES

REFERENCE = {"gradient": 0.062, "hebbian": 0.063, "none": 0.144}  # the public README figure, 5,000 batches (SPEC §2)
DEMO_DEFAULTS = {"task": "cue-reward", "cell": "rnn", "batches": 5000, "val_every": 200,
                 "val_batches": 20}  # 20 held-out batches (1,280 episodes) per validation; the paper uses 100
SIZES = {"figure": (64, 5000), "quick": (32, 5000), "paper": (128, 5000)}  # size-matching base, batches
DEFAULT_SIZE = "figure"
DECLARED = {"task": "the demo is the cue-reward comparison", "cell": "the demo compares vanilla RNNs",
            "rule": "each run's rule is one of --rules", "seed": "use --seed", "batches": "use --batches"}
# options the demo sets itself: an --set of one would train another comparison than its labels say


def size_options(size: str, rule: str) -> Dict:
    """``hidden_size`` of ``rule`` (vanilla RNN) at demo size ``figure``, ``quick`` or ``paper``."""
    check_choice("demo size", size, SIZES)
    return {"hidden_size": matched_hidden_size(rule, "rnn", base=SIZES[size][0])}


def demo_options(rule: str, batches: int, seed: int, extra: Optional[Dict] = None) -> Dict:
    """The flat run options of one demo run."""
    return {**DEMO_DEFAULTS, "rule": rule, "batches": batches, "seed": seed, **(extra or {})}


def run_demo(out="runs/demo", batches: int = 5000, rules=RULES, jobs: int = 1, seed: int = 0,
             extra: Optional[Dict] = None, progress: bool = True, size: str = DEFAULT_SIZE) -> Dict[str, Dict]:
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
    from .progress import progress_bar

    bars = {r: progress_bar(batches, desc=f"{r:9s}", position=i) for i, r in enumerate(rules)}
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


def run_comparison(out="runs/demo", size: str = DEFAULT_SIZE, batches: Optional[int] = None, rules=RULES, jobs: int = 1,
                   seed: int = 0, extra: Optional[Dict] = None, progress: bool = True,
                   log: Callable[[str], None] = print) -> Dict[str, Any]:
    """What ``plasticnet demo`` does: check, train the comparison, tabulate it and plot its curves.

    Every rule's run options are checked before anything trains.
    ``batches``: per rule (default: the size's, :data:`SIZES`); ``extra``:
    options laid over every run; ``jobs``, ``progress``: as
    :func:`run_demo`, which trains the runs into ``out/<rule>``. ``log``
    then gets the table (:func:`table`), whether the plastic rules end well
    below the non-plastic network (every one below 0.75 × its final error;
    when both were trained) and where the curves went
    (``out/cue_reward_curves.png``, :func:`plot_curves`).

    Returns ``{"summaries": {rule: summary}, "hidden": {rule: hidden_size},
    "figure": the PNG's path, "plastic_below_none": that verdict, or ``None``}``.
    """
    import yaml

    rules = list(rules)
    for r in rules:
        check_choice("rule", r, RULES)
    if len(set(rules)) != len(rules):
        raise ValueError(f"rules {rules!r} name a rule more than once; each rule is one run folder")
    declared = sorted(set(extra or {}) & set(DECLARED))
    if declared:
        raise ValueError(f"--set {declared[0]} conflicts with the demo, which sets it: {DECLARED[declared[0]]}")
    check_choice("demo size", size, SIZES)
    check_positive_int("jobs", jobs)
    batches = SIZES[size][1] if batches is None else batches
    for r in rules:  # refuse bad options before anything trains
        resolve_options(demo_options(r, batches, seed, {**size_options(size, r), **(extra or {})}))
    t0 = time.time()
    summaries = run_demo(out, batches, rules, jobs, seed, extra, progress=progress, size=size)
    hidden = {r: yaml.safe_load((Path(out) / r / "config.yaml").read_text())["hidden_size"] for r in rules}
    log("")
    log(table(summaries, hidden))
    figure = Path(out) / "cue_reward_curves.png"
    plot_curves(out, rules, figure)
    plastic = [summaries[r]["final_val_error"] for r in rules if r != "none"]
    below = max(plastic) < 0.75 * summaries["none"]["final_val_error"] if "none" in summaries and plastic else None
    if below is not None:
        log(f"plastic rules well below the non-plastic network: {'yes' if below else 'no'}")
    log(f"curves: {figure}   run folders: {out}/<rule>   wall time {time.time() - t0:.0f} s")
    return {"summaries": summaries, "hidden": hidden, "figure": figure, "plastic_below_none": below}
