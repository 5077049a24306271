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

For the Hebbian-trace networks of :mod:`plasticnet.hebbian_trace`
(:func:`trace_net_episode`) the same file holds ``modulation`` (the mean
``M_t`` of the neuromodulated rules, 1 otherwise) and ``fast_norm``
(``‖α ⊙ Hebb_t‖``, the plastic part of the weights). For every network it also
holds the spread over episodes (``<key>_q10``, ``<key>_q90``) and the fast
weights of the first episode at a few steps (``heatmap (k, in, out)`` at
``heatmap_steps (k,)``: ``α ⊙ Hebb`` of the trace layer, or the recurrent
``h_fc`` fast weights of a :class:`~plasticnet.PlasticRNN`).

Each is saved as its mean and standard deviation over episodes
(``<key>_mean``, ``<key>_std``, shape ``(T,)``) in ``analysis.npz`` in the run
folder, with ``step`` (0..T-1), ``mask_frac`` (the fraction of episodes whose
loss covers step ``t``) and ``episodes``. Rule ``none`` has no fast weights,
so nothing is written for it (nor for a trace network of rule ``none``).
``plasticnet analyze RUN_DIR...`` runs it from
the command line; the sweep runner calls it after each trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import torch

from . import rules
from .hebbian_trace import RecurrentTraceNet, TraceLinear, TraceState, TwoLayerTraceNet
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
    if trace_layer(model) is not None:
        return _analyze_trace_net(run_dir, task, model, episodes, batch_size, seed, save)
    if not isinstance(model, PlasticRNN):
        raise ValueError(f"{run_dir}: the analysis traces a PlasticRNN or a Hebbian-trace network, "
                         f"got {type(model).__name__}")
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
    out.update(_spread({k: torch.cat(chunks[k]) for k in ("modulation", "fast_norm")}))
    out.update(_rnn_heatmap(model, task.sample(1, torch.Generator().manual_seed(seed)).inputs.to(device)))
    if save:
        save_npz_atomic(run_dir / ANALYSIS_FILE, out)
    return out


# ------------------------------------------------------------------ every network: spread and heatmaps
HEATMAP_STEPS = 4  # fast-weight snapshots per episode, evenly spaced, the last step included


def heatmap_steps(T: int, k: int = HEATMAP_STEPS) -> List[int]:
    """``k`` steps of a ``T``-step episode, evenly spaced, ending at the last."""
    gap = max(1, T // k)
    return sorted({T - 1 - i * gap for i in range(k)} - set(range(-k * gap, 0)))


def _spread(series: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    """``<key>_q10``, ``<key>_q90`` over episodes of each ``(episodes, T)`` series."""
    out = {}
    for k, x in series.items():
        q = torch.quantile(x.double(), torch.tensor([0.1, 0.9], dtype=torch.float64), dim=0)
        out[f"{k}_q10"], out[f"{k}_q90"] = q[0].numpy(), q[1].numpy()
    return out


def _rnn_heatmap(model: PlasticRNN, inputs: torch.Tensor) -> Dict[str, np.ndarray]:
    """The recurrent fast weights ``h_fc`` of one episode ``inputs (1, T, I)`` at :func:`heatmap_steps`."""
    T = inputs.shape[1]
    steps = heatmap_steps(T)
    state, snaps = None, []
    with torch.no_grad():
        for t in range(T):
            _, state = model.step(inputs[:, t], state)
            if t in steps:
                snaps.append(model.fast_weights(state)["h_fc"].w[0].double().cpu())
    return {"heatmap": torch.stack(snaps).numpy(), "heatmap_steps": np.array(steps)}


# ------------------------------------------------------------------ Hebbian-trace networks
def trace_layer(model) -> Optional[TraceLinear]:
    """The plastic :class:`~plasticnet.hebbian_trace.TraceLinear` of a trace network, or ``None``."""
    if isinstance(model, TraceLinear):
        return model
    if isinstance(model, TwoLayerTraceNet):
        return model.hidden
    if isinstance(model, RecurrentTraceNet):
        return model.layer
    return None


def trace_net_episode(model, inputs: torch.Tensor, steps=()) -> Dict[str, torch.Tensor]:
    """Step a trace network through ``inputs (B, T, I)``: ``{"modulation", "fast_norm": (B, T)}`` and
    ``{"fast_<t>": (B, in, out)}``, ``α ⊙ Hebb`` after each step ``t`` of ``steps``.

    ``modulation``: the mean over post-synaptic units of ``M_t`` for the
    neuromodulated rules, 1 for the others; ``fast_norm``: ``‖α ⊙ Hebb_t‖``.
    Empty for rule ``none``.
    """
    layer = trace_layer(model)
    if layer is None or not layer.plastic:
        return {}
    recurrent = isinstance(model, RecurrentTraceNet)
    B, T = inputs.shape[:2]
    with torch.no_grad():
        alpha = layer.effective_alpha()
        if recurrent:
            st = model.initial_state(B, inputs.device, inputs.dtype)
            h, ts = st.h, TraceState(st.hebb, st.elig)
        else:
            ts = layer.initial_state(B, inputs.device, inputs.dtype)
        mods, norms, out = [], [], {}
        for t in range(T):
            if recurrent:
                h, ts = layer.step(h, ts, drive=inputs[:, t], alpha=alpha)
                y = h
            else:
                y, ts = layer.step(inputs[:, t], ts, alpha=alpha)
            m = layer.modulation(y).mean(-1) if layer.mod_fc is not None else torch.ones(B, dtype=y.dtype)
            fast = alpha * ts.hebb  # (B, in, out)
            mods.append(m)
            norms.append(fast.flatten(1).norm(dim=1))
            if t in steps:
                out[f"fast_{t}"] = fast
    return {"modulation": torch.stack(mods, 1), "fast_norm": torch.stack(norms, 1), **out}


def _analyze_trace_net(run_dir: Path, task, model, episodes: int, batch_size: int, seed: int,
                       save: bool) -> Optional[Dict[str, np.ndarray]]:
    """:func:`analyze_run` for a Hebbian-trace network."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    chunks: Dict[str, list] = {"modulation": [], "fast_norm": []}
    masks, heat, steps = [], None, []
    done = 0
    while done < episodes:
        n = min(batch_size, episodes - done)
        batch = task.sample(n, gen)
        steps = heatmap_steps(batch.inputs.shape[1])
        trace = trace_net_episode(model, batch.inputs, steps if heat is None else ())
        if not trace:
            return None
        if heat is None:
            heat = np.stack([trace[f"fast_{t}"][0].double().numpy() for t in steps])
        for k in chunks:
            chunks[k].append(trace[k].double())
        masks.append(batch.mask.double())
        done += n
    out: Dict[str, np.ndarray] = {}
    series = {k: torch.cat(v) for k, v in chunks.items()}
    for k, x in series.items():
        out[f"{k}_mean"] = x.mean(0).numpy()
        out[f"{k}_std"] = x.std(0, unbiased=False).numpy()
    out.update(_spread(series))
    T = out["modulation_mean"].shape[0]
    out.update(step=np.arange(T), mask_frac=torch.cat(masks).mean(0).numpy(), episodes=np.array(episodes),
               heatmap=heat, heatmap_steps=np.array(steps))
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


__all__ = ["analyze_run", "episode_trace", "heatmap_steps", "load_analysis", "trace_layer", "trace_net_episode",
           "ANALYSIS_FILE", "TRACE_KEYS"]
