"""Plasticity rules of Duan et al. (2023), SPEC §1 — the equations in one place.

For every plastic tensor ``F`` of a sample (weights ``(in, out)``, biases
``(out,)``) at step ``t``::

    m_t = 2·sigmoid(z_t[-1])  if modulation else 1          (modulation_factor)
    s_t = min(1, clip / ‖G_t‖)  ‖G_t‖ over ALL plastic tensors (clip_scale)
    F_{t+1} = (1 − p_wd·m_t)·F_t + p_lr·m_t·s_t·(Λ ⊙ G_t)     (plastic_update)
    optional: clamp F_{t+1} to ±weight_clip

with the rule's ``G``:

- ``hebbian``:  ``G = pre ⊗ post`` for weights (:func:`hebbian_term`); biases
  are not changed.
- ``gradient``: ``G = ∂L_t/∂F_t`` for weights and biases with the internal loss
  ``L_t = scale · mean_d((z_t ⊙ ω)_d²)`` (:func:`internal_loss`), taken
  through step ``t`` only. Its closed form is ``G = pre ⊗ δ``, ``δ`` the error
  back-propagated by one step (used by the fast engine).
- ``none``: no fast weights at all.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

RULES = ("gradient", "hebbian", "none")


def hebbian_term(pre: Tensor, post: Tensor) -> Tensor:
    """``G = pre ⊗ post`` per sample: ``(B, in), (B, out) → (B, in, out)``."""
    return pre.unsqueeze(-1) * post.unsqueeze(-2)


def internal_loss(z: Tensor, omega: Tensor, scale: float) -> Tensor:
    """Per-sample internal loss ``L = scale · mean_d((z ⊙ ω)_d²)``: ``(B, D) → (B,)``.

    The target is 0; the trained ``ω`` and the extra output dims let the
    network choose what it drives towards it. ``scale`` is the per-sample
    factor the reference code's batch mean applied (``1/B``).
    """
    return scale * (z * omega).square().mean(dim=-1)


def internal_loss_grad(z: Tensor, omega: Tensor, scale: float) -> Tensor:
    """``∂L/∂z = scale · 2·(z ⊙ ω) ⊙ ω / D`` of :func:`internal_loss`: ``(B, D) → (B, D)``.

    The error ``δ`` at out_fc's output from which the gradient rule's closed
    form back-propagates one step.
    """
    return (scale / z.shape[-1]) * (2 * (z * omega)) * omega


def modulation_factor(z: Tensor, modulation: bool) -> Tensor:
    """``m_t = 2·sigmoid(z[:, -1])`` if ``modulation`` else ``1``: ``(B, D) → (B,)``."""
    if modulation:
        return 2 * torch.sigmoid(z[:, -1])
    return torch.ones_like(z[:, -1])


def update_norm(terms: Sequence[Optional[Tensor]]) -> Tensor:
    """‖G‖ of each sample over all plastic tensors: list of ``(B, ...)`` → ``(B,)``."""
    sq = 0
    for g in terms:
        if g is not None:
            sq = sq + g.square().flatten(1).sum(dim=1)
    return torch.sqrt(sq)


def clip_scale(norm: Tensor, clip: float) -> Tensor:
    """``s = min(1, clip/‖G‖)`` written as ``clip / max(‖G‖, clip)`` (finite at ‖G‖ = 0)."""
    return clip / torch.clamp(norm, min=clip)


def plastic_update(fast: Tensor, term: Tensor, rate, eta: Tensor, decay: Tensor,
                   weight_clip: Optional[float] = None) -> Tensor:
    """``F' = (1 − decay)·F + eta·(Λ ⊙ G)``, optionally clamped to ±weight_clip.

    ``fast, term: (B, ...)``; ``rate``: ``Λ`` of the tensor's shape (or 1);
    ``eta, decay: (B,)`` — ``eta = p_lr·m·s``, ``decay = p_wd·m``.
    """
    shape = (-1,) + (1,) * (fast.dim() - 1)
    new = (1 - decay.view(shape)) * fast + eta.view(shape) * (rate * term)
    if weight_clip is not None:
        new = new.clamp(-weight_clip, weight_clip)
    return new
