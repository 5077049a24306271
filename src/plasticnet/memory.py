"""How much memory a run needs, from its options alone, before anything large is built.

:func:`step_memory` counts what one training step holds at least — the
parameters with their gradients and optimizer state, one batch of episodes,
the per-sample fast weights — on a ``meta``-device build of the model (shapes
without storage); :func:`check_memory` refuses a run whose count exceeds the
free memory, naming the options that set it (``hidden_size``,
``batch_size``), instead of a traceback minutes into training.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .tasks.base import Task

OPTIMIZER_STATES = {"adamw": 3, "adam": 2, "rmsprop": 1}  # tensors per parameter (AdamW's amsgrad keeps a third)


def _meta_model(config: Dict[str, Any], task: Task, model_opts: Dict[str, Any]) -> nn.Module:
    """The model of ``config`` on the ``meta`` device: its shapes, with no memory behind them."""
    if model_opts.get("pretrained"):  # the checkpoint is read by the real build
        model_opts = {**model_opts, "pretrained": ""}
    try:
        with torch.device("meta"):
            return task.build_model(config["rule"], config["cell"], **model_opts)
    except RuntimeError as err:  # e.g. "Storage size calculation overflowed"
        raise ValueError(f"the model of these options is too large to exist ({_size_options(config)}): "
                         f"{str(err).splitlines()[0]}") from None


def _size_options(config: Dict[str, Any]) -> str:
    sizes = [k for k in ("hidden_size", "encoder_channels") if config.get(k) is not None]
    return ", ".join(f"{k}={config[k]!r}" for k in sizes) or "the model's size options"


def step_memory(config: Dict[str, Any], task: Task, model_opts: Dict[str, Any]) -> Dict[str, int]:
    """Bytes a training step of ``config`` needs at least, by part, from the options alone.

    ``parameters``: the model's parameters, their gradients and the
    optimizer's state (counted on a ``meta``-device build: no memory used);
    ``episodes``: one batch of inputs and targets (one episode drawn to learn
    its size; a few-shot image task thereby also checks that every split has
    enough classes and images); ``fast weights``: one ``(in, out)`` matrix per
    plastic weight and sample (``× T`` steps for the reference engine, which
    keeps every step's). A floor, not a forecast: activations come on top.
    """
    from .layers import PlasticLinear

    model = _meta_model(config, task, model_opts)
    size = max((p.element_size() for p in model.parameters()), default=4)
    n_params = sum(p.numel() for p in model.parameters())
    plastic = getattr(model, "rule", config["rule"]) != "none" and config["rule"] != "none"
    fast = sum(m.weight.numel() for m in model.modules() if isinstance(m, PlasticLinear)) if plastic else 0
    fast += sum(m.alpha.numel() for m in model.modules() if getattr(m, "alpha", None) is not None
                and isinstance(m.alpha, torch.Tensor))
    episode, steps = 0, 1
    splits = ("train", "val", "test") if "split" in inspect.signature(task.sample).parameters else (None,)
    for split in splits:  # every split a run draws from: a data set too small for an episode fails here
        batch = task.sample(1, torch.Generator().manual_seed(0), **({"split": split} if split else {}))
        tensors = [t for t in (*_tensors(batch.inputs), *_tensors(batch.targets)) if t.dim() > 1]
        episode = max(episode, sum(t.numel() for t in tensors))
        steps = max([steps] + [t.shape[1] for t in tensors])
    kept = steps if model_opts.get("engine") == "reference" else 1
    B = config["batch_size"]
    return {"parameters": n_params * size * (2 + OPTIMIZER_STATES[config["optimizer"]]),
            "episodes": B * episode * size, "fast weights": B * fast * size * kept}


def _tensors(x) -> List[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in _tensors(item)]
    return []


def available_memory(device: str = "cpu") -> Optional[int]:
    """Bytes of memory free for a run on ``device`` now (``MemAvailable``, or the GPU's free memory); ``None``
    where unknown."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"


def check_memory(config: Dict[str, Any], task: Task, model_opts: Dict[str, Any]) -> None:
    """Refuse, naming the options that set it, a run whose :func:`step_memory` exceeds the free memory."""
    parts = step_memory(config, task, model_opts)
    free = available_memory(config["device"])
    total = sum(parts.values())
    if free is None or total <= free:
        return
    model = _size_options(config)
    causes = {"parameters": model, "episodes": f"batch_size={config['batch_size']!r} and the task's episode "
                                               f"options", "fast weights": f"batch_size={config['batch_size']!r} "
                                                                           f"and {model}"}
    worst = max(parts, key=parts.get)
    detail = ", ".join(f"{k} {_gb(v)}" for k, v in parts.items() if v)
    raise ValueError(f"a training step of these options needs at least {_gb(total)} ({detail}) but {_gb(free)} "
                     f"of memory is free on {config['device']}: the {worst} ({_gb(parts[worst])}) are set by "
                     f"{causes[worst]}; make them smaller")


__all__ = ["OPTIMIZER_STATES", "available_memory", "check_memory", "step_memory"]
