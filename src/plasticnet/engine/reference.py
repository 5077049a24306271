"""Reference engine: materialised per-sample fast weights, autograd for the gradient rule.

Plain and obviously right, slow: every plastic tensor is a ``(B, in, out)``
tensor per step, and the gradient rule takes ``G = ∂L_t/∂F_t`` with
``torch.autograd.grad(..., create_graph=True)`` as the papers' code does, so
the outer loss is differentiated through it (second order). It is the oracle
for the tests and the baseline for the benchmarks.
"""

from __future__ import annotations

import torch

from .. import rules
from ..layers import FastWeights
from .base import EngineResult, StepEngine, apply_rule, dynamics, hebbian_pre_post, trace_values


class ReferenceEngine(StepEngine):
    """SPEC §1 one step at a time over materialised ``(B, in, out)`` fast weights (the oracle)."""

    name = "reference"

    def step(self, spec, u, h, c, fast, trace=False) -> EngineResult:
        """One step of SPEC §1: the output uses ``F_t``, the state holds ``F_{t+1}``."""
        if spec.rule != "gradient":
            return self._step(spec, u, h, c, fast, trace, outer_grad=torch.is_grad_enabled())
        outer_grad = torch.is_grad_enabled()
        with torch.enable_grad():  # the rule itself needs autograd, even in evaluation
            res = self._step(spec, u, h, c, fast, trace, outer_grad)
        return res if outer_grad else _detach(res)

    def _step(self, spec, u, h, c, fast, trace, outer_grad) -> EngineResult:
        if spec.rule == "gradient":
            fast = {k: FastWeights(*(_needs_grad(t) for t in v)) for k, v in fast.items()}
        v = dynamics(spec, u, h, c, fast)
        names = list(fast)
        if spec.rule == "hebbian":
            pre_post = hebbian_pre_post(spec, u, h, v)
            terms = {k: FastWeights(rules.hebbian_term(*pre_post[k]), None) for k in names}
        else:
            loss = rules.internal_loss(v.z, spec.omega, spec.inner_loss_scale).sum()
            flat = [t for k in names for t in fast[k]]
            grads = torch.autograd.grad(loss, flat, create_graph=outer_grad)
            terms = {k: FastWeights(grads[2 * i], grads[2 * i + 1]) for i, k in enumerate(names)}
        new_fast, m, s = apply_rule(spec, fast, terms, v.z)
        tr = trace_values(m, s, new_fast) if trace else None
        return EngineResult(v.z[:, : spec.output_size], v.h_next, v.c, new_fast, tr)


def _needs_grad(t):
    if t is None or t.requires_grad:
        return t
    return t.detach().requires_grad_()


def _detach(tree):
    if tree is None:
        return None
    if isinstance(tree, torch.Tensor):
        return tree.detach()
    if isinstance(tree, dict):
        return {k: _detach(v) for k, v in tree.items()}
    if isinstance(tree, tuple):
        vals = [_detach(v) for v in tree]
        return type(tree)(*vals) if hasattr(tree, "_fields") else tuple(vals)
    return tree
