"""Plastic linear layer: slow weights ``W, b``, connection-wise rates ``Λ``.

A plastic layer computes, per sample ``n`` of a batch,

    y_n = x_n @ (W + F_n) + (b + f_n)

where ``W (in, out)`` and ``b (out,)`` are slow parameters trained by the outer
optimiser and ``F_n (in, out)``, ``f_n (out,)`` are the sample's fast weights,
held in the network state (never on the module) and changed inside an episode
by a plasticity rule (see :mod:`plasticnet.rules`). Weights are stored
``(in, out)`` as in the reference code of Duan et al. (2023).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from .checks import check_choice, check_positive_int  # noqa: F401  (re-exported: engine/, network use them)

INNER_LR_MODES = ("random", "uniform", "neg_uniform", "none")
JIT_MESSAGE = ("plasticnet's modules do not support TorchScript (torch.jit.script / torch.jit.trace): their state "
               "and fast weights are Python structures, and the kernel engine runs compiled code outside torch; "
               "use torch.compile(model) instead")


class NoTorchScript:
    """Mixin of the package's modules: ``torch.jit.script`` and ``torch.jit.trace`` refuse them with
    :data:`JIT_MESSAGE` (rather than failing deep inside TorchScript); ``torch.compile`` works."""

    def __prepare_scriptable__(self):
        raise RuntimeError(JIT_MESSAGE)

    def _refuse_trace(self, *_):
        """A forward pre-hook: ``torch.jit.trace`` stops at the first call."""
        if torch.jit.is_tracing():
            raise RuntimeError(JIT_MESSAGE)


class FastWeights(NamedTuple):
    """Per-sample fast weights of one plastic layer.

    w: ``(B, in, out)``; b: ``(B, out)``, or ``None`` when the rule does not
    change biases (Hebbian).
    """

    w: Tensor
    b: Optional[Tensor]

    def read(self, x: Tensor) -> Tensor:
        """The fast part of the layer's output, ``x F + f``: ``(B, in) → (B, out)``."""
        y = torch.bmm(x.unsqueeze(1), self.w).squeeze(1)
        return y if self.b is None else y + self.b

    def read_t(self, d: Tensor) -> Tensor:
        """``F d`` (a gradient sent back through ``F``): ``(B, out) → (B, in)``."""
        return torch.bmm(self.w, d.unsqueeze(-1)).squeeze(-1)


def linear(x: Tensor, weight: Tensor, bias: Tensor, fast=None) -> Tensor:
    """``y = x (W + F) + (b + f)``: ``x (B, in)`` → ``(B, out)``; ``fast`` anything with ``read(x) = x F + f``."""
    y = x @ weight + bias
    return y if fast is None else y + fast.read(x)


def linear_t(d: Tensor, weight: Tensor, fast=None) -> Tensor:
    """``d (W + F)ᵀ``: a gradient ``d (B, out)`` at the output sent to the input ``(B, in)``."""
    y = d @ weight.t()
    return y if fast is None else y + fast.read_t(d)


def init_inner_lr(shape, mode: str) -> Optional[nn.Parameter]:
    """Connection-wise inner rate ``Λ`` initialised by ``mode``.

    ``random``: U(−1, 1); ``uniform``: 1; ``neg_uniform``: −1; ``none``: no
    parameter (``Λ`` is the constant 1, not trained).
    """
    check_choice("inner_lr_mode", mode, INNER_LR_MODES)
    if mode == "none":
        return None
    if mode == "random":
        return nn.Parameter(torch.rand(shape) * 2 - 1)
    return nn.Parameter(torch.full(shape, 1.0 if mode == "uniform" else -1.0))


class PlasticLinear(NoTorchScript, nn.Module):
    """``y = x @ (W + F) + (b + f)`` with per-sample fast weights ``F, f``.

    Args:
        in_features, out_features: sizes of ``x`` and ``y``.
        plastic: whether the layer has fast weights (and rates ``Λ``).
        plastic_bias: whether the bias has a fast part too (gradient rule);
            the Hebbian rule leaves biases alone.
        inner_lr_mode: initialisation of ``Λ`` (see :func:`init_inner_lr`).
        init_scale: ``W, b ~ U(−k, k)``, ``k = init_scale / sqrt(out_features)``.

    Shapes: ``x (B, in)`` → ``y (B, out)``; fast ``w (B, in, out)``, ``b (B, out)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        plastic: bool = True,
        plastic_bias: bool = True,
        inner_lr_mode: str = "random",
        init_scale: float = 1.0,
    ):
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        check_choice("inner_lr_mode", inner_lr_mode, INNER_LR_MODES)
        self.in_features, self.out_features = in_features, out_features
        self.plastic = plastic
        self.plastic_bias = plastic and plastic_bias
        k = init_scale / math.sqrt(out_features)
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-k, k))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-k, k))
        self.lr_weight = init_inner_lr((in_features, out_features), inner_lr_mode) if plastic else None
        self.lr_bias = init_inner_lr((out_features,), inner_lr_mode) if self.plastic_bias else None

    def forward(self, x: Tensor, fast: Optional[FastWeights] = None) -> Tensor:
        """``x (B, in)`` → ``(B, out)``; ``fast``: ``FastWeights``, or an engine's reader with the same ``read()``."""
        return linear(x, self.weight, self.bias, fast)

    def backward_input(self, d: Tensor, fast=None) -> Tensor:
        """``d (W + F)ᵀ``: the gradient ``d (B, out)`` at the output sent to the input ``(B, in)``."""
        return linear_t(d, self.weight, fast)

    def zero_fast(self, batch_size: int, device=None, dtype=None) -> FastWeights:
        """Fast weights at the start of an episode: all zeros."""
        device = device or self.weight.device
        dtype = dtype or self.weight.dtype
        w = torch.zeros(batch_size, self.in_features, self.out_features, device=device, dtype=dtype)
        b = torch.zeros(batch_size, self.out_features, device=device, dtype=dtype) if self.plastic_bias else None
        return FastWeights(w, b)

    def rates(self):
        """``(Λ_w, Λ_b)``: the connection-wise rates, ``1.0`` where not trained."""
        lw = self.lr_weight if self.lr_weight is not None else 1.0
        lb = self.lr_bias if self.lr_bias is not None else 1.0
        return lw, lb

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, plastic={self.plastic}, plastic_bias={self.plastic_bias}"
