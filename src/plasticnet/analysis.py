"""What a trained plastic network learned about *when* to learn ([D23] analyses).

For a finished run folder, :func:`analyze_run` loads the best checkpoint,
runs the network on fresh validation episodes and records, at every step
``t`` of the episode (SPEC §1):

- ``modulation``: ``m_t = 2·sigmoid(z_t[-1])`` (1 without modulation);
- ``inner_lr``: the modulated inner learning rate ``η_t = p_lr · m_t``;
- ``effective_lr``: ``η_t · s_t``, the rate after the norm clip
  ``s_t = min(1, clip / ‖G_t‖)``;
- ``clip_scale``: ``s_t``;
- ``fast_norm``: ``‖F_t‖``, the norm of all fast weights after step ``t``.

Each is saved as its mean and standard deviation over episodes
(``<key>_mean``, ``<key>_std``, shape ``(T,)``) in ``analysis.npz`` in the run
folder, with ``step`` (0..T-1), ``mask_frac`` (the fraction of episodes whose
loss covers step ``t``) and ``episodes``. Rule ``none`` has no fast weights,
so nothing is written for it. ``plasticnet analyze RUN_DIR...`` runs it from
the command line; the sweep runner calls it after each trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch

from . import rules
from .network import PlasticRNN
from .runfolder import load_run, save_npz_atomic

ANALYSIS_FILE = "analysis.npz"
TRACE_KEYS = ("modulation", "inner_lr", "effective_lr", "clip_scale", "fast_norm")


def episode_trace(model: PlasticRNN, inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per-step trace of one batch: ``inputs (B, T, I)`` → ``{key: (B, T)}`` for :data:`TRACE_KEYS`.

    Empty for rule ``none``.
    """
    with torch.no_grad():
        _, _, trace = model(inputs, return_trace=True)
    if not trace:
        return {}
    m, s = trace["modulation"], trace["clip_scale"]
    inner_lr, _ = rules.rate_and_decay(m, 1.0, model.inner_lr, model.inner_decay)  # η_t before the clip
    effective_lr, _ = rules.rate_and_decay(m, s, model.inner_lr, model.inner_decay)
    return {"modulation": m, "inner_lr": inner_lr, "effective_lr": effective_lr,
            "clip_scale": s, "fast_norm": trace["fast_norm"]}


def analyze_run(run_dir: Union[str, Path], episodes: int = 256, batch_size: int = 64,
                seed: int = 1234, save: bool = True) -> Optional[Dict[str, np.ndarray]]:
    """Trace the trained network of ``run_dir`` over ``episodes`` fresh episodes.

    Returns the arrays saved in ``analysis.npz`` (see the module docstring),
    or ``None`` when the network has no fast weights (rule ``none``).
    Episodes come from ``torch.Generator().manual_seed(seed)``, so the result
    is reproducible. Raises ``ValueError`` for a model that is not a
    :class:`~plasticnet.PlasticRNN` reading tensor inputs.
    """
    run_dir = Path(run_dir)
    task, model, _ = load_run(run_dir)
    if not isinstance(model, PlasticRNN):
        raise ValueError(f"{run_dir}: the analysis traces a PlasticRNN, got {type(model).__name__}")
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    chunks: Dict[str, list] = {k: [] for k in TRACE_KEYS}
    masks = []
    done = 0
    while done < episodes:
        n = min(batch_size, episodes - done)
        batch = task.sample(n, gen)
        if not isinstance(batch.inputs, torch.Tensor):
            raise ValueError(f"{run_dir}: the analysis needs tensor inputs (B, T, I)")
        trace = episode_trace(model, batch.inputs.to(device))
        if not trace:
            return None
        for k in TRACE_KEYS:
            chunks[k].append(trace[k].double().cpu())
        masks.append(batch.mask.double().cpu())
        done += n
    out: Dict[str, np.ndarray] = {}
    for k in TRACE_KEYS:
        x = torch.cat(chunks[k])  # (episodes, T)
        out[f"{k}_mean"] = x.mean(0).numpy()
        out[f"{k}_std"] = x.std(0, unbiased=False).numpy()
    T = out["modulation_mean"].shape[0]
    out["step"] = np.arange(T)
    out["mask_frac"] = torch.cat(masks).mean(0).numpy()  # (T,)
    out["episodes"] = np.array(episodes)
    if save:
        save_npz_atomic(run_dir / ANALYSIS_FILE, out)
    return out


def load_analysis(run_dir: Union[str, Path]) -> Optional[Dict[str, np.ndarray]]:
    """The arrays of ``run_dir/analysis.npz``, or ``None`` if it has none."""
    path = Path(run_dir) / ANALYSIS_FILE
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


__all__ = ["analyze_run", "episode_trace", "load_analysis", "ANALYSIS_FILE", "TRACE_KEYS"]
