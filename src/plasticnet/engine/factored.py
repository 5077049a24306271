"""Fast weights in factored form: reads are GEMMs over the episode's history.

Every rule of SPEC §1 writes rank-one terms ``Λ ⊙ (p_s ⊗ q_s)`` (Hebbian:
``pre ⊗ post``; gradient: ``pre ⊗ δ``) with a per-sample factor
``e_s = p_lr·m_s·s_s`` and decays everything by ``(1 − λ_r)``, ``λ_r = p_wd·m_r``.
So, per sample, with ``F_c`` the fast weight at the start of the current chunk::

    F_t = D_t·F_c + Σ_{c≤s<t} a_{t,s} Λ ⊙ (p_s ⊗ q_s)
    a_{t,s} = e_s · Π_{s<r<t} (1 − λ_r),     D_t = Π_{c≤r<t} (1 − λ_r)

and a read never needs ``F_t`` itself::

    x F_t   = D_t·(x F_c) + Σ_s a_{t,s} q_s ⊙ ((x ⊙ p_s) Λ)        (factored_read)
    F_t δ   = D_t·(F_c δ) + Σ_s a_{t,s} p_s ⊙ ((δ ⊙ q_s) Λᵀ)       (the same, transposed)

``(x ⊙ p_s) Λ`` for all ``s`` is one ``(B·t, in) @ (in, out)`` GEMM; with
``Λ = 1`` (``inner_lr_mode="none"``) it is linear attention,
``Σ_s a_{t,s} (x·p_s) q_s``. The coefficients ``a_{t,s}`` are kept as a
``(B, t)`` tensor updated by one multiplication per step
(``a_{t+1,s} = (1 − λ_t)·a_{t,s}``, ``a_{t+1,t} = e_t``): the decay products
are formed as running products, exactly as the materialised update forms
them, so nothing under- or overflows and negative factors
(``p_wd·m > 1``) are fine. Every ``chunk`` steps the history is folded into
``F_c`` (:func:`fold`, one batched GEMM) so the cost of a read stays bounded
on long episodes.
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional

import torch
from torch import Tensor


class FactoredFast(NamedTuple):
    """Fast weights of all plastic layers in factored form (a pytree).

    base: ``{layer: (B, in, out)}`` materialised ``F_c`` at the chunk start
        (``Λ`` included), ``None`` while it is zero;
    decay: ``(B,)`` ``D_t`` since the chunk start (``None``: 1);
    coef: ``(B, t)`` ``a_{t,s}`` of the ``t`` steps of this chunk (``None``: no step yet);
    pre, post: ``{layer: P (B, t, in)}``, ``{layer: Q (B, t, out)}``, the vectors
        ``p_s``, ``q_s`` of those steps (``h_fc`` and ``i_fc`` share one ``Q``);
    bias: ``{layer: f_t (B, out)}`` fast biases, kept materialised (gradient rule only);
    dense: ``{layer: F_t (B, in, out)}`` the layers kept materialised (a small
        ``in`` or ``out``: there a materialised update costs less than a factored read).
    """

    base: Optional[Dict[str, Tensor]]
    decay: Optional[Tensor]
    coef: Optional[Tensor]
    pre: Dict[str, Tensor]
    post: Dict[str, Tensor]
    bias: Dict[str, Tensor]
    dense: Dict[str, Tensor]

    @property
    def steps(self) -> int:
        """Number of steps held in factored form (since the last fold)."""
        return 0 if self.coef is None else self.coef.shape[1]


class _FactoredRead(torch.autograd.Function):
    """``y = Σ_s a_s q_s ⊙ ((x ⊙ p_s) Λ)`` with a hand-written backward.

    ``x (B, in)``, ``a (B, t)``, ``Λ (in, out)`` or ``None`` (= 1), ``P (B, t, in)``,
    ``Q (B, t, out)``. Forward is one ``(B·t, in) @ (in, out)`` GEMM, backward
    two (``dX = dR Λᵀ``, ``dΛ = Xᵀ dR``); the product ``R = (x ⊙ P) Λ``
    (``x·p_s`` when ``Λ = 1``) is kept for backward. Written in the
    ``setup_context`` style with only torch operations in forward and backward,
    so ``torch.func`` transforms (``vmap``, ``grad``, ...) compose with it
    (``generate_vmap_rule``): ``R`` is therefore a second, non-differentiable
    output rather than a value saved inside forward.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, coef, lam, P, Q):
        B, t, n_in = P.shape
        if lam is None:
            R = torch.bmm(P, x.unsqueeze(-1)).squeeze(-1)  # (B, t): x·p_s
            return torch.bmm((R * coef).unsqueeze(1), Q).squeeze(1), R
        R = ((x.unsqueeze(1) * P).reshape(B * t, n_in) @ lam).reshape(B, t, -1)  # (B, t, out)
        return torch.bmm(coef.unsqueeze(1), R * Q).squeeze(1), R

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, coef, lam, P, Q = inputs
        _, R = output
        ctx.mark_non_differentiable(R)
        ctx.has_lam = lam is not None
        ctx.save_for_backward(x, coef, lam, P, Q, R)

    @staticmethod
    def backward(ctx, g, _g_R):
        x, coef, lam, P, Q, R = ctx.saved_tensors
        B, t, n_in = P.shape
        gq = g.unsqueeze(1)  # (B, 1, out)
        dlam = None
        if not ctx.has_lam:
            s = R  # x·p_s
            dQ = (s * coef).unsqueeze(-1) * gq
            r = torch.bmm(Q, g.unsqueeze(-1)).squeeze(-1)  # (B, t): g·q_s
            dcoef = r * s
            ra = (r * coef).unsqueeze(1)  # (B, 1, t)
            dx = torch.bmm(ra, P).squeeze(1)
            dP = ra.transpose(1, 2) * x.unsqueeze(1)
        else:
            c3 = coef.unsqueeze(-1)
            RG = R * gq
            dQ = RG * c3
            dcoef = (RG * Q).sum(-1)
            dR = (Q * c3) * gq  # (B, t, out)
            dX = (dR.reshape(B * t, -1) @ lam.t()).reshape(B, t, n_in)
            dx = (dX * P).sum(1)
            dP = dX * x.unsqueeze(1)
            if ctx.needs_input_grad[2]:
                dlam = (x.unsqueeze(1) * P).reshape(B * t, n_in).t() @ dR.reshape(B * t, -1)
        return dx, dcoef, dlam, dP, dQ


def factored_read(x: Tensor, coef: Tensor, lam: Optional[Tensor], P: Tensor, Q: Tensor) -> Tensor:
    """``Σ_s a_s q_s ⊙ ((x ⊙ p_s) Λ)``: ``x (B, in)`` → ``(B, out)`` (``Λ = None``: 1)."""
    return _FactoredRead.apply(x, coef, lam, P, Q)[0]


def outer_sum(coef: Tensor, P: Tensor, Q: Tensor) -> Tensor:
    """``Σ_s a_s p_s ⊗ q_s`` per sample: one ``(B, in, t) @ (B, t, out)`` GEMM."""
    return torch.bmm((P * coef.unsqueeze(-1)).transpose(1, 2), Q)


def materialise(fast: FactoredFast, layer: str, lam) -> Tensor:
    """``F_t`` of ``layer`` as ``(B, in, out)``: ``D_t·F_c + Λ ⊙ Σ_s a_{t,s} p_s ⊗ q_s``."""
    if layer in fast.dense:
        return fast.dense[layer]
    base = fast.base.get(layer) if fast.base is not None else None
    if fast.decay is not None and base is not None:
        base = fast.decay.view(-1, 1, 1) * base
    if fast.steps == 0 or layer not in fast.pre:
        return base
    new = outer_sum(fast.coef, fast.pre[layer], fast.post[layer])
    new = new if lam is None else lam * new
    return new if base is None else base + new


def fold(fast: FactoredFast, rates: Dict[str, Optional[Tensor]]) -> FactoredFast:
    """Materialise the history into ``F_c`` and start a new chunk (same fast weights)."""
    if fast.steps == 0:
        return fast
    base = {k: materialise(fast, k, rates[k]) for k in fast.pre} or None
    return FactoredFast(base, None, None, {}, {}, fast.bias, fast.dense)
