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
from .base import Engine


class ReferenceEngine(Engine):
    """Runs :class:`~plasticnet.network.PlasticRNN` one step at a time."""

    name = "reference"

    def step(self, net, u, state, trace=None):
        """One step of SPEC §1: outputs use ``F_t``, the state holds ``F_{t+1}``."""
        if net.rule != "gradient":
            return self._step(net, u, state, trace, outer_grad=torch.is_grad_enabled())
        outer_grad = torch.is_grad_enabled()
        with torch.enable_grad():  # the rule itself needs autograd, even in evaluation
            out, new_state = self._step(net, u, state, trace, outer_grad)
        if not outer_grad:
            out, new_state = _detach(out), _detach(new_state)
        return out, new_state

    def fast_weights(self, net, state):
        """The materialised fast weights of ``state`` (already materialised here)."""
        return state.fast

    def _step(self, net, u, state, trace, outer_grad):
        fast = state.fast
        if net.rule == "gradient":
            fast = {k: FastWeights(*(_needs_grad(t) for t in v)) for k, v in fast.items()}
        v = net.dynamics(u, state.h, state.c, fast)
        out = v.z[:, : net.output_size]
        if net.rule == "none":
            return out, net.make_state(v.h_next, v.c, None)

        names = list(fast)
        if net.rule == "hebbian":
            pre_post = net.hebbian_pre_post(u, state.h, v)
            terms = {k: FastWeights(rules.hebbian_term(*pre_post[k]), None) for k in names}
        else:
            loss = rules.internal_loss(v.z, net.omega, net.inner_loss_scale).sum()
            flat = [t for k in names for t in fast[k]]
            grads = torch.autograd.grad(loss, flat, create_graph=outer_grad)
            terms = {k: FastWeights(grads[2 * i], grads[2 * i + 1]) for i, k in enumerate(names)}

        new_fast, m, s = net.apply_rule(fast, terms, v.z)
        if trace is not None:
            net.record_trace(trace, m, s, new_fast)
        return out, net.make_state(v.h_next, v.c, new_fast)


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
