"""Fast engine: the equations of SPEC §1 without materialised fast weights or double backward.

Two things make the reference engine slow: it keeps a ``(B, in, out)`` fast
weight per layer per step in the autograd graph, and the gradient rule takes
``G = ∂L_t/∂F_t`` by ``autograd.grad(create_graph=True)`` (a double backward).
This engine computes the same numbers another way:

- **the gradient rule in closed form** (:func:`plasticnet.rules.gradient_factors`). With the
  internal loss ``L = scale · mean_d((z ⊙ ω)²)``, one manual backward step
  gives every plastic tensor's ``G`` as ``pre ⊗ δ`` (weights) and ``δ``
  (biases)::

      δ_out = ∂L/∂z = scale·2·(z ⊙ ω) ⊙ ω / D                   out_fc:  pre = h_t (after LayerNorm)
      d_h   = LayerNormᵀ(δ_out (W_out + F_out)ᵀ)
      δ_cell = d_h ⊙ [h_t > 0]                                   RNN
      δ_cell = [dc⊙g⊙σ'(i), dc⊙c_{t−1}⊙σ'(f), dc⊙i⊙(1−g²), d_h⊙tanh(c_t)⊙σ'(o)],
               dc = d_h ⊙ o ⊙ (1 − tanh²c_t)                     LSTM
                                                                 h_fc: pre = h_{t−1};  i_fc: pre = x
      δ_in  = δ_cell (W_i + F_i)ᵀ ⊙ [x > 0]                      in_fc:  pre = u_t

  and the update norm from the factors, ``‖G‖² = Σ_layers ‖pre‖²‖δ‖² + ‖δ‖²``
  (``‖p ⊗ q‖ = ‖p‖·‖q‖``). The outer loss is differentiated through these
  ordinary operations (still second order in the network, first order for autograd).
- **fast weights in factored form** (:mod:`.factored`): the state keeps the
  episode's ``(pre, q)`` vectors and the coefficients ``a_{t,s}``; reads are
  GEMMs, and every ``chunk_size`` steps the history is folded into a
  materialised ``F_c`` (default 32, chosen by measurement: docs/engines.md;
  episodes of up to 32 steps, like cue–reward, never fold).
- **fallback**: ``weight_clip`` clamps every fast weight after every update,
  which no sum of rank-one terms can express, so with ``weight_clip`` set the
  fast weights are kept materialised as in the reference engine (still with
  the closed-form gradient rule); that path is as memory-hungry as the
  reference.

Hebbian ``pre ⊗ post`` terms are factored the same way. Same API and state
semantics as the reference engine; :meth:`FastEngine.fast_weights` materialises.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from .. import rules
from ..checks import check_positive_int
from ..layers import FastWeights, linear_t
from .base import EngineResult, StepEngine, apply_rule, dynamics, hebbian_pre_post, trace_values
from .factored import FactoredFast, factored_read, fold, materialise

DEFAULT_CHUNK_SIZE = 32


class _Reader:
    """A layer's fast weights seen by ``PlasticLinear``: ``read(x) = x F_t + f_t``, ``read_t(d) = F_t d``.

    ``F_t = D_t·base + Σ_s a_{t,s} Λ ⊙ (p_s ⊗ q_s)`` with any part absent (``None``).
    """

    def __init__(self, base, decay, coef, lam, P, Q, bias):
        self.base, self.decay, self.coef, self.lam, self.P, self.Q, self.bias = base, decay, coef, lam, P, Q, bias

    def _base(self, y: Tensor) -> Tensor:
        return y if self.decay is None else self.decay.unsqueeze(-1) * y

    def read(self, x: Tensor) -> Tensor:
        y = 0
        if self.base is not None:
            y = self._base(torch.bmm(x.unsqueeze(1), self.base).squeeze(1))
        if self.P is not None:
            y = y + factored_read(x, self.coef, self.lam, self.P, self.Q)
        if self.bias is not None:
            y = y + self.bias
        return y

    def read_t(self, d: Tensor) -> Tensor:
        y = 0
        if self.base is not None:
            y = self._base(torch.bmm(self.base, d.unsqueeze(-1)).squeeze(-1))
        if self.P is not None:
            lam_t = None if self.lam is None else self.lam.t()
            y = y + factored_read(d, self.coef, lam_t, self.Q, self.P)
        return y

    def __bool__(self) -> bool:
        return self.base is not None or self.P is not None or self.bias is not None


def _reader(fast: FactoredFast, k: str, lam) -> _Reader:
    base = fast.base[k] if fast.base is not None else None
    return _Reader(base, fast.decay, fast.coef, lam, fast.pre.get(k), fast.post.get(k), fast.bias.get(k))


class FastEngine(StepEngine):
    """Closed-form gradient rule and factored fast weights (see the module docstring).

    ``chunk_size``: steps kept in factored form before they are folded into a
    materialised ``F_c`` (``None``: never fold).
    """

    name = "fast"

    def __init__(self, chunk_size: Optional[int] = DEFAULT_CHUNK_SIZE):
        check_positive_int("chunk_size", chunk_size, allow_none=True)
        self.chunk_size = chunk_size

    # ------------------------------------------------------------------ state
    def zero_fast(self, spec, batch_size, device, dtype):
        """Zero fast weights: an empty history (materialised zeros under ``weight_clip``)."""
        if spec.weight_clip is not None:
            return super().zero_fast(spec, batch_size, device, dtype)
        return FactoredFast(None, None, None, {}, {}, {}, {})

    def fast_weights(self, spec, fast, like: Tensor) -> Dict[str, FastWeights]:
        """``{layer: FastWeights((B, in, out), (B, out) or None)}`` of ``fast``; ``like (B, H)`` gives batch
        size, device and dtype."""
        if isinstance(fast, dict):
            return fast
        B, dev, dt = like.shape[0], like.device, like.dtype
        out = {}
        for k, p in spec.layers.items():
            w = materialise(fast, k, p.lr_weight)
            w = torch.zeros(B, p.in_features, p.out_features, device=dev, dtype=dt) if w is None else w
            b = fast.bias.get(k)
            if b is None and p.plastic_bias:
                b = torch.zeros(B, p.out_features, device=dev, dtype=dt)
            out[k] = FastWeights(w, b)
        return out

    def _factored(self, fast):
        if isinstance(fast, FactoredFast):
            return fast
        base = {k: fw.w for k, fw in fast.items()}
        bias = {k: fw.b for k, fw in fast.items() if fw.b is not None}
        return FactoredFast(base or None, None, None, {}, {}, bias, {})

    # ---------------------------------------------------------------- running
    def step(self, spec, u, h, c, fast, trace=False) -> EngineResult:
        """One step of SPEC §1: the output uses ``F_t``, the state holds ``F_{t+1}``."""
        if spec.weight_clip is not None:
            return self._step_materialised(spec, u, h, c, fast, trace)
        return self._step_factored(spec, u, h, c, fast, trace)

    @staticmethod
    def _factors(spec, u, h, c, v, read_t):
        if spec.rule == "hebbian":
            return hebbian_pre_post(spec, u, h, v)
        return rules.gradient_factors(spec, u, h, c, v, read_t)

    def _step_factored(self, spec, u, h, c, fast, trace):
        fast = self._factored(fast)
        layers = spec.layers
        readers = {k: _reader(fast, k, p.lr_weight) for k, p in layers.items()}
        readers = {k: r for k, r in readers.items() if r}
        v = dynamics(spec, u, h, c, readers)

        def read_t(k, d):
            return linear_t(d, layers[k].weight, readers.get(k))

        factors = self._factors(spec, u, h, c, v, read_t)
        with_bias = spec.rule == "gradient"
        m = rules.modulation_factor(v.z, spec.modulation)
        s = rules.clip_scale(rules.factored_norm(factors, with_bias), spec.inner_clip)
        e, decay_t = rules.rate_and_decay(m, s, spec.inner_lr, spec.inner_decay)  # (B,)
        keep = 1 - decay_t

        coef = e.unsqueeze(1) if fast.coef is None else torch.cat([fast.coef * keep.unsqueeze(1), e.unsqueeze(1)], 1)
        decay = None if fast.base is None else (keep if fast.decay is None else fast.decay * keep)
        pre, post, done = {}, {}, {}
        for k in layers:
            p, q = factors[k]
            pre[k] = _append(fast.pre.get(k), p)
            if id(q) not in done:  # h_fc and i_fc share q (post, or δ of the cell): one history
                done[id(q)] = _append(fast.post.get(k), q)
            post[k] = done[id(q)]
        bias = dict(fast.bias)
        if with_bias:
            for k, p in layers.items():
                _, lb = p.rates()
                term = e.unsqueeze(-1) * (lb * factors[k][1])
                bias[k] = term if k not in bias else keep.unsqueeze(-1) * bias[k] + term
        new = FactoredFast(fast.base, decay, coef, pre, post, bias, {})
        if self.chunk_size is not None and new.steps >= self.chunk_size:
            new = fold(new, {k: layers[k].lr_weight for k in pre})
        tr = trace_values(m, s, self.fast_weights(spec, new, v.h_next)) if trace else None
        return EngineResult(v.z[:, : spec.output_size], v.h_next, v.c, new, tr)

    def _step_materialised(self, spec, u, h, c, fast, trace):
        fast = self.fast_weights(spec, fast, h)
        layers = spec.layers
        v = dynamics(spec, u, h, c, fast)

        def read_t(k, d):
            return linear_t(d, layers[k].weight, fast[k])

        factors = self._factors(spec, u, h, c, v, read_t)
        bias = spec.rule == "gradient"
        terms = {k: FastWeights(rules.hebbian_term(p, q), q if bias else None) for k, (p, q) in factors.items()}
        new, m, s = apply_rule(spec, fast, terms, v.z)
        tr = trace_values(m, s, new) if trace else None
        return EngineResult(v.z[:, : spec.output_size], v.h_next, v.c, new, tr)


def _append(hist: Optional[Tensor], v: Tensor) -> Tensor:
    """``hist (B, t, n)`` with ``v (B, n)`` appended as step ``t + 1``."""
    v = v.unsqueeze(1)
    return v if hist is None else torch.cat([hist, v], 1)
