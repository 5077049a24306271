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

from typing import Dict, Optional, Sequence

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


def rate_and_decay(m: Tensor, s, p_lr: float, p_wd: float):
    """``(η, λ) = (p_lr·m·s, p_wd·m)``: the update's rate and decay of each sample, ``(B,)`` each.

    The only place they are formed in torch (engines, the network's trace and
    the analyses call it); the compiled kernel forms the same two products.
    """
    return p_lr * m * s, p_wd * m


def factored_norm(factors, with_bias: bool) -> Tensor:
    """‖G‖ of each sample from the factors ``{layer: (pre (B, in), q (B, out))}`` of ``G_w = pre ⊗ q``.

    ``‖p ⊗ q‖² = ‖p‖²‖q‖²``, plus ``‖q‖²`` per layer where the bias gets ``G_b = q``
    (``with_bias``: the gradient rule): the same number as :func:`update_norm`
    of the materialised terms.
    """
    sq = 0
    for p, q in factors.values():
        qq = q.square().sum(-1)
        sq = sq + p.square().sum(-1) * qq + (qq if with_bias else 0)
    return torch.sqrt(sq)


def layernorm_backward(h: Tensor, d: Tensor, weight: Optional[Tensor], eps: float) -> Tensor:
    """``d (∂ LayerNorm(h)/∂h)``: the gradient ``d`` at the LayerNorm output sent to ``h (B, H)``.

    ``weight``: the LayerNorm's ``γ (H,)`` (``None``: not affine); ``eps`` its epsilon.
    """
    mu = h.mean(-1, keepdim=True)
    var = (h - mu).square().mean(-1, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    n = (h - mu) * rstd
    dn = d * weight if weight is not None else d
    return rstd * (dn - dn.mean(-1, keepdim=True) - n * (dn * n).mean(-1, keepdim=True))


def gradient_factors(spec, u: Tensor, h_prev: Tensor, c_prev: Optional[Tensor], v, read_t) -> Dict:
    """Closed-form gradient rule: ``{layer: (pre (B, in), δ (B, out))}``, ``G_w = pre ⊗ δ``, ``G_b = δ``.

    ``spec`` is the network's :class:`~plasticnet.engine.base.NetSpec`, ``v`` the step's
    :class:`~plasticnet.engine.base.StepValues`; ``read_t(layer, d)`` returns ``d (W + F_t)ᵀ`` for that layer.
    """
    d_out = internal_loss_grad(v.z, spec.omega, spec.inner_loss_scale)  # (B, D)
    factors = {"out_fc": (v.h_next, d_out)}
    dh = read_t("out_fc", d_out)  # (B, H)
    if spec.layernorm:
        dh = layernorm_backward(v.cell.h, dh, spec.ln_weight, spec.ln_eps)
    if spec.cell == "rnn":
        d = dh * (v.cell.h > 0)
    else:
        i, f, g, o = v.cell.post.chunk(4, dim=-1)
        tc = torch.tanh(v.c)
        dc = dh * o * (1 - tc * tc)
        d = torch.cat([dc * g * (i * (1 - i)), dc * c_prev * (f * (1 - f)),
                       dc * i * (1 - g * g), dh * tc * (o * (1 - o))], dim=-1)  # (B, 4H)
    factors["h_fc"], factors["i_fc"] = (h_prev, d), (v.x, d)
    if spec.has_input_layer:
        factors["in_fc"] = (u, read_t("i_fc", d) * (v.x > 0))
    return factors
