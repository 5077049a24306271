"""The episodic trainer (SPEC §1, outer training), behind ``plasticnet train`` / ``eval``.

One run = one flat option dict (:mod:`plasticnet.config`) and one run folder
(:mod:`plasticnet.runfolder`: ``config.yaml``, ``metrics.csv``, ``best.pt``,
``last.pt``, ``tb/``, ``summary.json``), locked while the run writes it.

The loop, per batch ``b = 1..batches``: fresh episodes from the training
generator, ``loss = task.loss + task.regularizer``, backward, clip the
gradient norm, one optimizer step (AdamW with amsgrad by default, as the
reference). Validation at batch 0, every ``val_every`` batches and at the
end, on the same held-out episodes each time (drawn from the seed's
validation stream). Checkpoints are written atomically (temp file +
``os.replace``) and hold only what ``torch.load(weights_only=True)`` reads:
model and optimizer state, the batch counter and the RNG states, so
``resume=True`` continues a killed run to the same numbers as an
uninterrupted one. A non-finite loss, gradient or validation error stops
the run, naming the batch, and leaves the last good checkpoint in place
(its validation error is finite). Every option is checked, and the folder
too (new, empty, or a run folder to resume), before anything is written.
"""

from __future__ import annotations

import inspect
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
import yaml
from torch import nn

from .checks import check_nonnegative_int, check_positive_int
from .config import TRAIN_DEFAULTS, build, resolve_options, resolved_config
from .environment import environment
from .runfolder import (
    RESUME_FIELDS,
    RESUME_MAY_CHANGE,
    Metrics,
    RunLock,
    RunLockedError,
    check_checkpoint_config,
    check_folder,
    check_run_path,
    load_checkpoint,
    load_run,
    lock_holder,
    read_metrics,
    remove_stale_temps,
    resume_config,
    save_atomic,
    tensorboard,
    write_text_atomic,
)
from .tasks.base import Batch, Task

__all__ = ["ENVIRONMENT_FILE", "NonFiniteError", "RESUME_MAY_CHANGE", "build", "default_run_dir", "evaluate",
           "evaluate_run", "record_environment", "episode_generator", "load_checkpoint", "load_run", "lr_at",
           "make_optimizer", "read_metrics",
           "resolved_config", "save_atomic", "test_best", "train_run", "validation_batches", "TEST_SEED"]

STREAMS = {"train": 0, "val": 1, "test": 2}
ENVIRONMENT_FILE = "environment.json"  # the software and machine of each stretch of the run
TEST_SEED = 0  # the held-out test episodes: one fixed set for every run (the test stream of seed 0)


class NonFiniteError(ValueError):
    """The loss or the gradient became NaN/inf; the run stopped."""


def episode_generator(seed: int, stream: str) -> torch.Generator:
    """The generator of one episode stream of a seed: ``train``, ``val`` (held-out) or ``test``."""
    return torch.Generator().manual_seed(3 * seed + STREAMS[stream])


def make_optimizer(config: Dict[str, Any], params) -> torch.optim.Optimizer:
    """The outer optimizer: ``adamw`` (amsgrad, as the reference), ``adam`` or ``rmsprop``."""
    lr, wd = config["lr"], config["weight_decay"]
    if config["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, amsgrad=True)
    if config["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)


def lr_at(config: Dict[str, Any], batch: int) -> float:
    """Learning rate of training batch ``batch`` (0-based).

    constant: ``lr``; cosine: ``lr_min + (lr − lr_min)·(1 + cos(π·batch/batches))/2``.
    """
    if config["lr_schedule"] == "constant":
        return config["lr"]
    frac = min(batch / config["batches"], 1.0)
    return config["lr_min"] + (config["lr"] - config["lr_min"]) * 0.5 * (1 + math.cos(math.pi * frac))


def validation_batches(task: Task, config: Dict[str, Any], stream: str = "val",
                       batches: Optional[int] = None, seed: Optional[int] = None) -> Iterator[Batch]:
    """The held-out episodes: the same ``val_batches`` batches at every call (drawn afresh, not stored)."""
    g = episode_generator(config["seed"] if seed is None else seed, stream)
    # a task with class splits (few-shot images) draws held-out episodes from its held-out classes
    split = {"split": stream} if "split" in inspect.signature(task.sample).parameters else {}
    for _ in range(config["val_batches"] if batches is None else batches):
        yield task.sample(config["batch_size"], g, **split)


@torch.no_grad()
def evaluate(task: Task, model: nn.Module, batches, device="cpu") -> Dict[str, float]:
    """Mean of ``task.metrics`` over ``batches`` (model in eval mode, no outer graph)."""
    was_training = model.training
    model.eval()
    sums: Dict[str, float] = {}
    n = 0
    for batch in batches:
        batch = batch.to(device)
        for k, v in task.metrics(task.forward(model, batch), batch).items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n += 1
    model.train(was_training)
    return {k: v / n for k, v in sums.items()}


# ------------------------------------------------------------------ training
def train_run(options: Dict[str, Any], run_dir, resume: bool = False, progress: bool = True) -> Dict[str, Any]:
    """Train one run into ``run_dir``; returns its summary (also ``summary.json``).

    ``options``: flat dict with at least ``task`` (see :mod:`plasticnet.config`).
    ``run_dir`` must be new, empty, or — with ``resume`` — a run folder:
    ``resume`` continues from ``run_dir/last.pt`` with the saved options
    (``options`` may change only :data:`~plasticnet.runfolder.RESUME_MAY_CHANGE`;
    a run folder without ``last.pt``, killed before its first checkpoint,
    starts again with its saved options). Without ``resume`` a folder that
    already holds a run is refused; so is, always, a folder holding other
    files or checkpoints without their ``config.yaml``. Options and folder are
    checked before anything is written; the folder is locked for the whole run
    (:class:`~plasticnet.runfolder.RunLock`: a second writer is refused at once).
    """
    run_dir = check_run_path(run_dir)
    holder = lock_holder(run_dir) if run_dir.is_dir() else None
    if holder is not None:
        raise RunLockedError(f"run folder {run_dir} is in use by another writer ({holder}); "
                             f"wait for it to finish or stop it, then resume")
    built = None
    if not check_folder(run_dir, resume):  # a fresh start: every option checked before anything is written
        built = resolved_config(options)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot make the run folder {run_dir}: {err.strerror}") from None
    with RunLock(run_dir):
        remove_stale_temps(run_dir)  # left by writers killed mid-save
        if check_folder(run_dir, resume):  # again under the lock: another writer may have been first
            built = resume_config(run_dir, options)
        elif built is None:
            built = resolved_config(options)
        return _train(*built, run_dir, progress)


def _train(config: Dict[str, Any], task: Task, model: nn.Module, run_dir: Path, progress: bool) -> Dict[str, Any]:
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    resuming = last_path.is_file()  # the caller checked that the folder is this run's
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    device = torch.device(config["device"])
    model.to(device)
    optimizer = make_optimizer(config, model.parameters())
    train_gen = episode_generator(config["seed"], "train")
    start, best, elapsed, last_val = 0, math.inf, 0.0, math.nan

    if resuming:
        ck = load_checkpoint(last_path, map_location=device, keys=RESUME_FIELDS,
                             hint="best.pt may still be intact (plasticnet eval RUN --checkpoint best); "
                                  "to train again, use a new run folder")
        check_checkpoint_config(ck, config, last_path, run_dir / "config.yaml")
        if ck["batch"] > config["batches"]:
            raise ValueError(f"{run_dir} is at batch {ck['batch']}, beyond batches={config['batches']}")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        train_gen.set_state(ck["train_rng"])
        torch.set_rng_state(ck["torch_rng"])
        start, best, elapsed, last_val = ck["batch"], ck["best_val_error"], ck["elapsed_s"], ck["val_error"]
        summary_path = run_dir / "summary.json"
        if start == config["batches"] and summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            if summary.get("finished"):
                return summary
    (run_dir / "summary.json").unlink(missing_ok=True)
    if not resuming:  # a run killed before its first checkpoint: its events, metrics and best.pt go
        best_path.unlink(missing_ok=True)
        if (run_dir / "tb").is_dir():
            for f in (run_dir / "tb").iterdir():
                f.unlink()
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    record_environment(run_dir, model, config, start)
    metrics = Metrics(run_dir / "metrics.csv", keep_upto=start if resuming else None)
    tb = tensorboard(run_dir, purge_step=start + 1 if resuming else None)
    n_params = sum(p.numel() for p in model.parameters())

    def checkpoint(batch: int, val: float) -> Dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "batch": batch,
                "train_rng": train_gen.get_state(), "torch_rng": torch.get_rng_state(),
                "best_val_error": best, "val_error": val, "elapsed_s": elapsed + time.time() - t0,
                "config": config}

    def finish(summary: Dict[str, Any]) -> Dict[str, Any]:
        if tb is not None:
            tb.close()
        write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary

    def stop(what: str, batch: int, done: int) -> None:
        """End the run on a non-finite ``what`` at ``batch``, keeping the last good checkpoint."""
        bar.close()
        if last_path.is_file():
            kept = f"last good checkpoint {last_path} (batch {load_checkpoint(last_path)['batch']}) kept"
        else:
            kept = "no checkpoint was written (the initial model already fails; check the options)"
        msg = f"non-finite {what} at batch {batch}: run stopped; {kept}"
        finish({"finished": False, "error": msg, "best_val_error": best, "final_val_error": last_val,
                "batches": done, "elapsed_s": elapsed + time.time() - t0, "parameters": n_params})
        raise NonFiniteError(msg)

    def validate(batch: int, train_loss: Optional[float]) -> None:
        nonlocal best, last_val
        vals = evaluate(task, model, validation_batches(task, config), device)
        metrics.write(batch, train_loss, vals)
        if not math.isfinite(vals["error"]):  # nothing of this model is kept
            stop(f"validation error {vals['error']}", batch, batch)
        if tb is not None:
            for k, v in vals.items():
                tb.add_scalar(f"val/{k}", v, batch)
            if train_loss is not None:
                tb.add_scalar("train/loss", train_loss, batch)
            tb.add_scalar("train/lr", lr_at(config, max(batch - 1, 0)), batch)
            tb.flush()
        improved = vals["error"] < best
        best = min(best, vals["error"])
        last_val = vals["error"]
        ck = checkpoint(batch, vals["error"])
        if improved:  # best before last: a run killed in between re-validates this batch on resume
            save_atomic(ck, best_path)
        save_atomic(ck, last_path)

    t0 = time.time()
    bar = _progress(progress, config, start)
    if not resuming:
        validate(0, None)  # before any training: no training loss
    loss_sum, loss_n = 0.0, 0
    model.train()
    for b in range(start, config["batches"]):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config, b)
        batch = task.sample(config["batch_size"], train_gen).to(device)
        loss = task.loss(task.forward(model, batch), batch) + task.regularizer(model)
        optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"] or math.inf)
        if not torch.isfinite(loss) or not torch.isfinite(norm):
            what = f"loss {loss.item()}" if not torch.isfinite(loss) else f"gradient norm {norm.item()}"
            stop(what, b + 1, b)
        optimizer.step()
        loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
        done = b + 1
        if done % config["val_every"] == 0 or done == config["batches"]:
            validate(done, loss_sum / loss_n)
            loss_sum, loss_n = 0.0, 0
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", val=f"{last_val:.4f}", refresh=False)
    bar.close()
    final_val = {k.removeprefix("val_"): float(v[-1]) for k, v in read_metrics(run_dir).items()
                 if k not in ("batch", "train_loss")}
    test = test_best(task, model, config, best_path, device)
    return finish({"finished": True, "best_val_error": best, "final_val_error": last_val,
                   "final_val_metrics": final_val,
                   **test, "batches": config["batches"], "elapsed_s": elapsed + time.time() - t0,
                   "parameters": n_params})


def record_environment(run_dir: Path, model: nn.Module, config: Dict[str, Any], start: int) -> None:
    """Write ``environment.json``: what this run runs on (:func:`plasticnet.environment.environment`).

    A fresh run writes ``{"batch": 0, ...}``; a resumed one keeps the earlier
    records under ``"earlier"`` (oldest first), so the file says where every
    stretch of batches ran.
    """
    path = run_dir / ENVIRONMENT_FILE
    record = {"batch": start, **environment(model, config)}
    earlier = []
    if start and path.is_file():
        try:
            old = json.loads(path.read_text())
            earlier = [*old.pop("earlier", []), old] if isinstance(old, dict) else []
        except (json.JSONDecodeError, UnicodeDecodeError, OSError, TypeError):
            earlier = []
    write_text_atomic(path, json.dumps({**record, **({"earlier": earlier} if earlier else {})}, indent=2) + "\n")


def test_best(task: Task, model: nn.Module, config: Dict[str, Any], best_path: Path, device) -> Dict[str, Any]:
    """The reference's score: the best-validation checkpoint on the fixed test episodes.

    Loads ``best_path`` into ``model`` and evaluates it on ``val_batches``
    batches of the test stream of :data:`TEST_SEED` (the same episodes for
    every run of a task, distinct from every training and validation
    stream). Returns ``test_error`` (the task's ``error``), ``test_metrics``
    (every metric of the task), ``test_seed``, ``test_batches`` and
    ``best_batch`` (the batch of the checkpoint).
    """
    ck = load_checkpoint(best_path, map_location=device, keys=("model", "batch"))
    model.load_state_dict(ck["model"])
    vals = evaluate(task, model, validation_batches(task, config, "test", seed=TEST_SEED), device)
    return {"test_error": vals["error"], "test_metrics": vals, "test_seed": TEST_SEED,
            "test_batches": config["val_batches"], "best_batch": ck["batch"]}


def _progress(enabled: bool, config, start: int):
    from .progress import progress_bar

    return progress_bar(config["batches"], start, desc=f"{config['task']} {config['rule']}/{config['cell']}",
                        enabled=enabled)


def default_run_dir(options: Dict[str, Any], resume: bool = False) -> Path:
    """``runs/TASK-RULE-CELL-seedS``: the run folder of ``options`` when none is named.

    ``options`` holds at least ``task``. Rule, cell and seed not in it take
    their defaults: the task's (``options`` are resolved by
    :func:`~plasticnet.config.resolve_options`, so unknown keys and bad
    values raise ``ValueError`` here) or, with ``resume``, the trainer's (a
    resumed run reads its own options from its folder).
    """
    probe = resolve_options(options) if not resume else {**TRAIN_DEFAULTS, **options}
    return Path("runs") / f"{options['task']}-{probe['rule']}-{probe['cell']}-seed{probe['seed']}"


def evaluate_run(run_dir, checkpoint: str = "best", batches: Optional[int] = None,
                 seed: Optional[int] = None) -> Tuple[Dict[str, float], int, int]:
    """Re-evaluate a run's ``checkpoint`` (``"best"`` or ``"last"``) on fresh episodes.

    ``batches`` batches of the run's batch size (default: its
    ``val_batches``), drawn from the test stream of ``seed`` (default: the
    run's seed; the stream is distinct from training and validation).
    Returns ``(metrics, batches, seed)``: the task's metrics, as
    :func:`evaluate` gives them, and the batches and seed used.
    """
    check_positive_int("batches", batches, allow_none=True)
    task, model, config = load_run(run_dir, checkpoint)
    batches = config["val_batches"] if batches is None else batches
    seed = config["seed"] if seed is None else seed
    check_nonnegative_int("seed", seed)
    metrics = evaluate(task, model, validation_batches(task, config, "test", batches, seed), config["device"])
    return metrics, batches, seed
