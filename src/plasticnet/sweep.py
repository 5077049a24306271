"""``plasticnet sweep``: run every trial of an experiment file, each into its own run folder.

Trials (:mod:`plasticnet.experiments`) go to ``OUT/<experiment name>/<trial name>/``
and are trained by :func:`plasticnet.train.train_run`. A sweep is restartable:

- a trial whose ``summary.json`` says ``finished`` is skipped;
- a trial with a ``last.pt`` but no finished summary is resumed
  (``train_run(..., resume=True)``), so a sweep killed halfway continues
  where it stopped;
- a run folder made with other options than the trial's (the file was edited)
  is refused rather than mixed (:func:`plasticnet.runfolder.resume_config`,
  the check ``train --resume`` makes), and so is a folder holding other files;
- a trial whose folder another process holds (a second sweep into the same
  ``--out``, a ``train`` by hand) is skipped (status ``held``), not trained twice.

Backends (the same trials and folders either way, so one report reads both):

- ``local`` (default): a process pool of ``--workers`` processes (one torch
  thread each); ``--workers 1`` (default) runs the trials one after the other
  in this process.
- ``ray``: each trial is a Ray Tune trial (``tune.Tuner`` over a grid of the
  pending trials, ``tune.with_resources`` one CPU each, at most ``--workers``
  at once; by default as many as the CPUs Ray sees) on a local ``ray.init()`` or an existing cluster (``--address``;
  the run folders must then be on a file system the driver can read).
  Needs ``pip install 'plasticnet[sweep]'``.

After training, each trial's analysis (:mod:`plasticnet.analysis`) is written
into its folder (``--no-analysis`` to skip).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .checks import check_choice
from .config import resolve_options
from .experiments import Experiment, Trial
from .runfolder import RunLockedError, check_folder, lock_holder, read_summary, resume_config

BACKENDS = ("local", "ray")
RAY_HINT = "the ray backend needs Ray Tune: pip install 'plasticnet[sweep]'"


@dataclass
class Outcome:
    """What happened to one trial: ``status`` ∈ {finished, skipped, held (by another process), failed,
    and before running: new, partial}."""

    trial: Trial
    run_dir: Path
    status: str
    summary: Optional[Dict[str, Any]] = None
    error: str = ""


def trial_state(run_dir: Path, batches: int) -> str:
    """``held`` (another process holds the folder's lock), ``finished`` (summary says so, at ``batches``
    or more), ``partial`` (a ``last.pt`` to resume from, e.g. a killed trial or one asked for more
    batches now) or ``new``."""
    if lock_holder(run_dir) is not None:
        return "held"
    summary = read_summary(run_dir)
    if summary and summary.get("finished") and summary.get("batches", 0) >= batches:
        return "finished"
    return "partial" if (Path(run_dir) / "last.pt").is_file() else "new"


def check_run_folder(run_dir: Path, options: Dict[str, Any]) -> None:
    """Refuse a trial's folder that holds other files, or a run made with other options than ``options``.

    The same check as ``train --resume`` (:func:`plasticnet.runfolder.resume_config`), with the trial's
    options taken as the whole run: only the keys a resumed run may change (``batches``, ``device``, ...)
    may differ; an option added to the library after the run was written takes its default.
    """
    if check_folder(run_dir, resume=True):
        resume_config(run_dir, options, complete=True)


def run_trial(options: Dict[str, Any], run_dir: str, analyze: bool = True, threads: int = 1) -> Dict[str, Any]:
    """Train (or resume) one trial into ``run_dir``, then analyse it; returns the summary
    (``{"held": message}`` when another process holds the folder).

    Runs in a worker process (or a Ray worker), so it sets torch's thread count.
    """
    import torch

    from .train import train_run

    torch.set_num_threads(threads)
    run_dir = Path(run_dir)
    try:
        summary = train_run(dict(options), run_dir, resume=True, progress=False)
    except RunLockedError as err:  # another process took the trial since the plan: leave it to it
        return {"held": str(err)}
    if analyze:
        from .analysis import analyze_run

        try:
            analyze_run(run_dir)
        except ValueError as err:  # a model the analysis does not cover: the run itself is fine
            print(f"analysis skipped for {run_dir}: {err}")
    return summary


def plan(experiment: Experiment, out: Path) -> List[Outcome]:
    """Every trial with its run folder and state (``finished``, ``partial``, ``new``).

    Each trial's options are resolved by the trainer's rules first, so a bad key
    or value fails here, naming the trial, before any trial runs.
    """
    root = Path(out).resolve() / experiment.name
    outcomes = []
    for trial in experiment.trials():
        run_dir = root / trial.name
        try:
            config = resolve_options(trial.options)  # bad keys or values: refused before anything runs
            check_run_folder(run_dir, trial.options)
        except ValueError as err:
            raise ValueError(f"experiment {experiment.name!r}, trial {trial.name}: {err}") from None
        outcomes.append(Outcome(trial, run_dir, trial_state(run_dir, config["batches"])))
    return outcomes


def _die_with_parent(parent: int) -> None:
    """Pool initializer: on Linux, end this worker when the sweep process dies (a killed sweep must not
    leave trainers writing into run folders that a restarted sweep resumes)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the sweep died before this worker got here
            os._exit(1)


def run_local_pool(pending: List[Outcome], workers: int, analyze: bool = True,
                   log: Callable[[str], None] = print) -> None:
    """Train the ``pending`` trials (:func:`run_trial`) in a pool of ``workers`` processes, one torch thread each.

    ``workers = 1`` trains them one after the other in this process. Each
    outcome is updated in place (status ``finished``, ``held`` by another
    process, or ``failed`` with the error: one failed trial does not stop
    the others) and ``log`` gets its line. Workers are fresh interpreters
    (``spawn``) and, on Linux, end when this process dies. ``analyze``:
    write each run's analysis after training.
    """
    def finish(o: Outcome, fn: Callable[[], Dict[str, Any]]) -> None:
        try:
            o.summary, o.status = fn(), "finished"
            if "held" in o.summary:
                o.status, o.error, o.summary = "held", o.summary["held"], None
        except Exception as err:  # one failed trial must not stop the others
            o.status, o.error = "failed", f"{type(err).__name__}: {err}"
            if workers == 1:
                o.error += "\n" + traceback.format_exc()
        log(_line(o))

    if workers == 1:
        for o in pending:
            finish(o, lambda o=o: run_trial(o.trial.options, str(o.run_dir), analyze))
        return
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(run_trial, o.trial.options, str(o.run_dir), analyze): o for o in pending}
        for fut in as_completed(futures):
            finish(futures[fut], fut.result)


def _tune_trainable(config: Dict[str, Any], jobs: Dict[str, Any]) -> None:
    """A Ray Tune function trainable: train the trial named ``config["trial"]``."""
    from ray import tune

    options, run_dir, analyze = jobs[config["trial"]]
    summary = run_trial(options, run_dir, analyze)
    tune.report({k: v for k, v in summary.items() if isinstance(v, (int, float, bool))})


def _run_ray(pending: List[Outcome], workers: Optional[int], analyze: bool, address: Optional[str],
             storage: Path, name: str, log: Callable[[str], None]) -> None:
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ImportError(RAY_HINT) from None
    import plasticnet

    started = False
    if not ray.is_initialized():
        if address is None:  # local workers import the same plasticnet as this driver
            src = str(Path(plasticnet.__file__).resolve().parents[1])
            path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
            runtime_env = {"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}}
            ray.init(num_cpus=workers, include_dashboard=False, runtime_env=runtime_env,
                     log_to_driver=False, configure_logging=False)
        else:  # a cluster: ship the package with the job
            ray.init(address=address, runtime_env={"py_modules": [str(Path(plasticnet.__file__).parent)]},
                     log_to_driver=False)
        started = True
    try:
        jobs = {o.trial.name: (o.trial.options, str(o.run_dir), analyze) for o in pending}
        trainable = tune.with_resources(tune.with_parameters(_tune_trainable, jobs=jobs), {"cpu": 1})
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([o.trial.name for o in pending])},
            tune_config=tune.TuneConfig(max_concurrent_trials=workers),
            run_config=tune.RunConfig(name=name, storage_path=str(storage.resolve()), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        results = tuner.fit()
        errors = {}
        for result in results:
            if result.error is not None:
                errors[result.config["trial"]] = f"{type(result.error).__name__}: {result.error}"
        for o in pending:
            o.summary = read_summary(o.run_dir)
            if o.trial.name not in errors and not (o.summary and o.summary.get("finished")) \
                    and lock_holder(o.run_dir) is not None:
                o.status, o.error = "held", f"held by {lock_holder(o.run_dir)}"
            elif o.trial.name in errors or not (o.summary and o.summary.get("finished")):
                o.status, o.error = "failed", errors.get(o.trial.name, "no finished summary.json")
            else:
                o.status = "finished"
            log(_line(o))
    finally:
        if started:
            ray.shutdown()


def _last_batch(run_dir: Path) -> int:
    """The batch of the last row of ``run_dir/metrics.csv`` (0 when there is none yet)."""
    try:
        with open(Path(run_dir) / "metrics.csv", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
        return int(float(lines[-1].split(",")[0])) if len(lines) > 1 or not lines[-1].startswith("batch") else 0
    except (OSError, ValueError, IndexError):
        return 0


class SweepProgress:
    """One progress bar over the batches of a sweep's pending trials, with the time left.

    Each run's progress is read from its run folder (the batch of the last row
    of ``metrics.csv``, written at every validation) by a thread that polls every
    ``interval`` seconds, so it works for trials in this process, in a pool or
    on Ray workers that share the file system. ``log`` lines go above the bar.
    Use as a context manager; ``enabled=False`` shows nothing.
    """

    def __init__(self, pending: List[Outcome], enabled: bool = True, interval: float = 2.0,
                 log: Callable[[str], None] = print):
        from .progress import progress_bar

        self.runs = {str(o.run_dir): resolve_options(o.trial.options)["batches"] for o in pending}
        self.start = {d: min(_last_batch(Path(d)), n) for d, n in self.runs.items()}
        self.finished, self.interval, self._log = 0, interval, log
        self.bar = progress_bar(sum(self.runs.values()), sum(self.start.values()), desc=f"{len(self.runs)} trials",
                                enabled=enabled, smoothing=0.1)
        self._done: Dict[str, int] = {}
        self._stop = None

    def poll(self) -> None:
        """Read every run's batch now and move the bar."""
        n = sum(self._done.get(d, min(_last_batch(Path(d)), total)) for d, total in self.runs.items())
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)
        self.bar.set_postfix_str(f"{self.finished}/{len(self.runs)} trials done", refresh=True)

    def log(self, line: str) -> None:
        """A trial's closing line (``run_local_pool``'s ``log``): printed above the bar, the trial counted done."""
        self.finished += 1
        if self.bar.disable:
            self._log(line)
        else:
            self.bar.write(line)
        self.poll()

    def trial_done(self, run_dir) -> None:
        """Count ``run_dir``'s trial whole (stopped or failed early, its batches count as done)."""
        self._done[str(run_dir)] = self.runs.get(str(run_dir), 0)

    def __enter__(self) -> "SweepProgress":
        import threading

        self._stop = threading.Event()

        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.poll()

        if not self.bar.disable:
            threading.Thread(target=loop, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.poll()
        self.bar.close()


def _line(o: Outcome) -> str:
    if o.status == "failed":
        return f"{o.trial.name}: FAILED {o.error.splitlines()[0] if o.error else ''}"
    if o.status == "held":
        return f"{o.trial.name}: skipped, {o.error}"
    if o.summary:
        return f"{o.trial.name}: {o.status}, final val_error {o.summary.get('final_val_error', float('nan')):.4g}"
    return f"{o.trial.name}: {o.status}"


def run_sweep(experiment: Experiment, out="runs", backend: str = "local", workers: Optional[int] = None,
              address: Optional[str] = None, analyze: bool = True,
              log: Callable[[str], None] = print, progress: bool = True) -> List[Outcome]:
    """Run the pending trials of ``experiment`` under ``out/<name>/``; returns one :class:`Outcome` per trial.

    ``progress``: one bar over all pending trials' batches with the time left (:class:`SweepProgress`).

    Finished trials are skipped (status ``skipped``), partial ones resumed, trials another
    process holds left to it (status ``held``). Failed trials are reported in their outcome
    (status ``failed``), not raised.
    """
    check_choice("backend", backend, BACKENDS)
    if workers is None and backend == "local":
        workers = 1
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    outcomes = plan(experiment, Path(out))
    pending = [o for o in outcomes if o.status in ("new", "partial")]
    held = [o for o in outcomes if o.status == "held"]
    for o in outcomes:
        if o.status == "finished":
            o.status, o.summary = "skipped", read_summary(o.run_dir)
        elif o.status == "held":
            o.error = f"held by {lock_holder(o.run_dir) or 'another process (now done)'}"
    log(f"{experiment.name}: {len(outcomes)} trials, {sum(o.status == 'skipped' for o in outcomes)} already "
        f"finished, {len(held)} held by another process, {sum(o.status == 'partial' for o in pending)} to resume, "
        f"backend {backend}")
    for o in held:
        log(_line(o))
    if pending:
        root = Path(out).resolve() / experiment.name
        root.mkdir(parents=True, exist_ok=True)
        with SweepProgress(pending, enabled=progress, log=log) as bar:
            def done(line: str) -> None:
                for o in pending:
                    if line.startswith(f"{o.trial.name}:") and o.status != "finished":
                        bar.trial_done(o.run_dir)
                bar.log(line)

            if backend == "local":
                run_local_pool(pending, workers, analyze, done)
            else:
                stamp = time.strftime("%Y%m%d-%H%M%S")  # one Tune experiment per invocation
                _run_ray(pending, workers, analyze, address, root / ".ray", f"{experiment.name}-{stamp}", done)
    return outcomes


__all__ = ["Outcome", "SweepProgress", "check_run_folder", "plan", "read_summary", "run_local_pool", "run_sweep",
           "run_trial", "trial_state", "BACKENDS"]
