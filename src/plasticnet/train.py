"""The episodic trainer (SPEC §1, outer training) and ``plasticnet train`` / ``eval``.

One run = one flat option dict (:mod:`plasticnet.config`) and one run folder::

    config.yaml    the resolved options
    metrics.csv    batch, train_loss, val_error, val_<key>...   (one row per validation)
    best.pt        checkpoint with the lowest val_error so far
    last.pt        checkpoint of the last validation
    tb/            TensorBoard events (when tensorboard is installed)
    summary.json   {"finished", "best_val_error", "final_val_error", "batches", "elapsed_s", ...}

The loop, per batch ``b = 1..batches``: fresh episodes from the training
generator, ``loss = task.loss + task.regularizer``, backward, clip the
gradient norm, one optimizer step (AdamW with amsgrad by default, as the
reference). Validation at batch 0, every ``val_every`` batches and at the
end, on the same held-out episodes each time (drawn from the seed's
validation stream). Checkpoints are written atomically (temp file +
``os.replace``) and hold only what ``torch.load(weights_only=True)`` reads:
model and optimizer state, the batch counter and the RNG states, so
``resume=True`` continues a killed run to the same numbers as an
uninterrupted one. A non-finite loss or gradient stops the run, naming the
batch, and leaves the last good checkpoint in place.
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
import yaml
from torch import nn

from .config import TRAIN_DEFAULTS, parse_set, resolve_options, split_options
from .hebbian_trace import TRACE_RULES
from .rules import RULES
from .runfolder import Metrics, load_checkpoint, read_metrics, save_atomic, tensorboard, write_text_atomic
from .tasks import make_task, task_names
from .tasks.base import Batch, Task

__all__ = ["NonFiniteError", "build", "evaluate", "episode_generator", "load_checkpoint", "load_run", "lr_at",
           "make_optimizer", "read_metrics", "resolved_config", "save_atomic", "train_run", "validation_batches"]

STREAMS = {"train": 0, "val": 1, "test": 2}


class NonFiniteError(ValueError):
    """The loss or the gradient became NaN/inf; the run stopped."""


def episode_generator(seed: int, stream: str) -> torch.Generator:
    """The generator of one episode stream of a seed: ``train``, ``val`` (held-out) or ``test``."""
    return torch.Generator().manual_seed(3 * seed + STREAMS[stream])


def build(config: Dict[str, Any]) -> Tuple[Task, nn.Module]:
    """Task and freshly initialised model of a resolved ``config`` (model init seeded by ``seed``).

    Bad option values (rejected by the task or model constructors) become ``ValueError``.
    """
    _, task_opts, model_opts = split_options(config)
    try:
        task = make_task(config["task"], **task_opts)
        torch.manual_seed(config["seed"])
        model = task.build_model(config["rule"], config["cell"], **model_opts)
    except TypeError as err:
        raise ValueError(f"bad option value: {err}") from err
    return task, model


def resolved_config(options: Dict[str, Any]) -> Tuple[Dict[str, Any], Task, nn.Module]:
    """Resolve ``options``, build task and model; ``config`` records the task's own resolution."""
    config = resolve_options(options)
    task, model = build(config)
    for k, v in vars(task.options).items():  # e.g. regression's n=None → the paper's n
        config[k] = v
    if "hidden_size" in config and config["hidden_size"] is None and hasattr(model, "hidden_size"):
        config["hidden_size"] = model.hidden_size  # the size matching of SPEC §1, as built
    if config["device"] != "cpu":
        try:
            dev = torch.device(config["device"])
        except RuntimeError as err:
            raise ValueError(f"bad device {config['device']!r}: {err}") from err
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {config['device']!r} requested but CUDA is not available")
    return config, task, model


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
RESUME_MAY_CHANGE = ("batches", "device", "threads", "val_batches", "engine")


def _resume_config(options: Dict[str, Any], run_dir: Path) -> Dict[str, Any]:
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    # an option added to the library after the run was written takes its current default
    before = resolve_options(saved)
    merged = resolve_options({**saved, **options})
    changed = [k for k in merged if k not in RESUME_MAY_CHANGE and merged[k] != before[k]]
    if changed:
        raise ValueError(f"cannot resume {run_dir} with other options: "
                         + ", ".join(f"{k}={merged[k]!r} (run has {before[k]!r})" for k in changed)
                         + f"; only {', '.join(RESUME_MAY_CHANGE)} may change")
    return merged


def train_run(options: Dict[str, Any], run_dir, resume: bool = False, progress: bool = True) -> Dict[str, Any]:
    """Train one run into ``run_dir``; returns its summary (also ``summary.json``).

    ``options``: flat dict with at least ``task`` (see :mod:`plasticnet.config`).
    ``resume``: continue from ``run_dir/last.pt`` (only the keys of
    :data:`RESUME_MAY_CHANGE` may differ from the saved config; a folder
    without ``last.pt`` starts afresh). Without ``resume`` a folder that
    already holds a run is refused.
    """
    run_dir = Path(run_dir)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    resuming = resume and last_path.is_file() and (run_dir / "config.yaml").is_file()
    if not resume and last_path.is_file():
        raise ValueError(f"{run_dir} already holds a run; pass resume (--resume) or another run folder")
    if resuming:
        options = _resume_config(options, run_dir)
    config, task, model = resolved_config(options)
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    device = torch.device(config["device"])
    model.to(device)
    optimizer = make_optimizer(config, model.parameters())
    train_gen = episode_generator(config["seed"], "train")
    start, best, elapsed, last_val = 0, math.inf, 0.0, math.nan

    if resuming:
        ck = load_checkpoint(last_path, map_location=device)
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
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").unlink(missing_ok=True)
    if not resuming and (run_dir / "tb").is_dir():  # events of a run killed before its first checkpoint
        shutil.rmtree(run_dir / "tb")
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    metrics = Metrics(run_dir / "metrics.csv", keep_upto=start if resuming else None)
    tb = tensorboard(run_dir, purge_step=start + 1 if resuming else None)
    n_params = sum(p.numel() for p in model.parameters())

    def checkpoint(batch: int, val: float) -> Dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "batch": batch,
                "train_rng": train_gen.get_state(), "torch_rng": torch.get_rng_state(),
                "best_val_error": best, "val_error": val, "elapsed_s": elapsed + time.time() - t0,
                "config": config}

    def validate(batch: int, train_loss: float) -> float:
        nonlocal best
        vals = evaluate(task, model, validation_batches(task, config), device)
        metrics.write(batch, train_loss, vals)
        if tb is not None:
            for k, v in vals.items():
                tb.add_scalar(f"val/{k}", v, batch)
            if not math.isnan(train_loss):
                tb.add_scalar("train/loss", train_loss, batch)
            tb.add_scalar("train/lr", lr_at(config, max(batch - 1, 0)), batch)
            tb.flush()
        improved = vals["error"] < best
        best = min(best, vals["error"])
        ck = checkpoint(batch, vals["error"])
        if improved:  # best before last: a run killed in between re-validates this batch on resume
            save_atomic(ck, best_path)
        save_atomic(ck, last_path)
        return vals["error"]

    def finish(summary: Dict[str, Any]) -> Dict[str, Any]:
        if tb is not None:
            tb.close()
        write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary

    t0 = time.time()
    if not resuming:
        last_val = validate(0, math.nan)
    bar = _progress(progress, config, start)
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
            ck_batch = load_checkpoint(last_path)["batch"] if last_path.is_file() else None
            msg = (f"non-finite {what} at batch {b + 1}: run stopped; "
                   f"last good checkpoint {last_path} (batch {ck_batch}) kept")
            bar.close()
            finish({"finished": False, "error": msg, "best_val_error": best, "final_val_error": last_val,
                    "batches": b, "elapsed_s": elapsed + time.time() - t0, "parameters": n_params})
            raise NonFiniteError(msg)
        optimizer.step()
        loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
        done = b + 1
        if done % config["val_every"] == 0 or done == config["batches"]:
            last_val = validate(done, loss_sum / loss_n)
            loss_sum, loss_n = 0.0, 0
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", val=f"{last_val:.4f}", refresh=False)
    bar.close()
    return finish({"finished": True, "best_val_error": best, "final_val_error": last_val,
                   "batches": config["batches"], "elapsed_s": elapsed + time.time() - t0,
                   "parameters": n_params})


def _progress(enabled: bool, config, start: int):
    from tqdm.auto import tqdm

    return tqdm(total=config["batches"], initial=start, disable=not enabled, dynamic_ncols=True,
                desc=f"{config['task']} {config['rule']}/{config['cell']}", unit="batch")


def load_run(run_dir, which: str = "best") -> Tuple[Task, nn.Module, Dict[str, Any]]:
    """``(task, model, config)`` of a run folder with checkpoint ``which`` (best/last) loaded."""
    run_dir = Path(run_dir)
    if which not in ("best", "last"):
        raise ValueError(f"unknown checkpoint {which!r}; allowed: 'best', 'last'")
    cfg_path, ck_path = run_dir / "config.yaml", run_dir / f"{which}.pt"
    for p in (cfg_path, ck_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found (is {run_dir} a run folder?)")
    config = yaml.safe_load(cfg_path.read_text())
    config = {**config, "device": "cpu"} if not torch.cuda.is_available() else config
    config, task, model = resolved_config(config)
    model.load_state_dict(load_checkpoint(ck_path)["model"])
    model.eval()
    return task, model, config


# ------------------------------------------------------------------ CLI
def _cmd_train(args) -> int:
    options: Dict[str, Any] = {"task": args.task}
    options.update(parse_set(args.set or []))
    for key in ("rule", "cell", "batches", "seed"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.run_dir is None:
        probe = resolve_options(options) if not args.resume else {**TRAIN_DEFAULTS, **options}
        run_dir = Path("runs") / f"{args.task}-{probe['rule']}-{probe['cell']}-seed{probe['seed']}"
    else:
        run_dir = Path(args.run_dir)
    summary = train_run(options, run_dir, resume=args.resume, progress=not args.quiet)
    print(f"{run_dir}: best val_error {summary['best_val_error']:.5f}, final {summary['final_val_error']:.5f} "
          f"after {summary['batches']} batches ({summary['elapsed_s']:.0f} s)")
    return 0


def _cmd_eval(args) -> int:
    task, model, config = load_run(args.run_dir, args.checkpoint)
    batches = args.batches or config["val_batches"]
    seed = config["seed"] if args.seed is None else args.seed
    vals = evaluate(task, model, validation_batches(task, config, "test", batches, seed), config["device"])
    print(f"{args.run_dir} ({args.checkpoint} checkpoint), {batches} batches of fresh episodes (seed {seed}):")
    for k, v in vals.items():
        print(f"  {k}: {v:.6f}")
    return 0


def add_parser(sub) -> None:
    """``plasticnet train`` and ``plasticnet eval``."""
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
    p.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="re-evaluate a run's checkpoint on fresh episodes")
    e.add_argument("run_dir", help="run folder")
    e.add_argument("--checkpoint", default="best", choices=("best", "last"))
    e.add_argument("--batches", type=int, help="batches of episodes (default: the run's val_batches)")
    e.add_argument("--seed", type=int, help="seed of the fresh episodes (default: the run's; a stream "
                                            "distinct from training and validation)")
    e.set_defaults(func=_cmd_eval)
