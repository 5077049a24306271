"""Plastic RNN and LSTM cells of Duan et al. (2023), SPEC §1 step 2.

Each cell has two plastic layers, ``h_fc`` (recurrent) and ``i_fc`` (input),
each with its own bias. Like ``nn.RNNCell`` / ``nn.LSTMCell``, a cell is called
as ``cell(input, state=None, fast=None)`` and returns ``(h, state)``, with a
zero state by default, so it fits into any model; ``fast`` holds the
per-sample fast weights of its layers (``{"h_fc": FastWeights, "i_fc":
FastWeights}``, either may be missing; ``None``: no fast weights, the cell is
an ordinary RNN/LSTM cell). A cell never changes its fast weights: the
plasticity update is the caller's — :class:`~plasticnet.network.PlasticRNN`
makes it, because the rules of SPEC §1 couple all layers (one update norm,
one modulation signal, one internal loss), and it calls :meth:`step`, which
also returns the Hebbian ``post`` of the cell's layers.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from .layers import FastWeights, NoTorchScript, PlasticLinear, check_positive_int

CELLS = ("rnn", "lstm")
FAST_KEYS = frozenset({"in_fc", "h_fc", "i_fc", "out_fc"})  # a network's fast weights may be passed whole


class CellOutput(NamedTuple):
    """What a cell step gives.

    h: ``(B, H)`` new hidden state (before any LayerNorm);
    c: ``(B, H)`` new LSTM cell state, ``None`` for the RNN;
    post: Hebbian ``post`` of ``h_fc`` and ``i_fc`` — ``h`` for the RNN,
    ``[σ(i), σ(f), tanh(g), σ(o)]`` ``(B, 4H)`` for the LSTM.
    """

    h: Tensor
    c: Optional[Tensor]
    post: Tensor


class _PlasticCell(NoTorchScript, nn.Module):
    gate_multiplier = 1
    default_init_scale = 1.0

    def __init__(self, input_size: int, hidden_size: int, *, plastic: bool = True,
                 plastic_bias: bool = True, inner_lr_mode: str = "random",
                 init_scale: Optional[float] = None):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        scale = self.default_init_scale if init_scale is None else init_scale
        out = hidden_size * self.gate_multiplier
        kw = dict(plastic=plastic, plastic_bias=plastic_bias, inner_lr_mode=inner_lr_mode, init_scale=scale)
        self.h_fc = PlasticLinear(hidden_size, out, **kw)
        self.i_fc = PlasticLinear(input_size, out, **kw)
        self.register_forward_pre_hook(NoTorchScript._refuse_trace)  # torch.jit.trace: say what to use

    def preactivation(self, x: Tensor, h: Tensor, fast_h: Optional[FastWeights],
                      fast_i: Optional[FastWeights]) -> Tensor:
        """``h @ (W_h + F_h) + b_h + f_h + x @ (W_i + F_i) + b_i + f_i``."""
        return self.h_fc(h, fast_h) + self.i_fc(x, fast_i)

    def step(self, x: Tensor, h: Tensor, c: Optional[Tensor] = None, fast_h: Optional[FastWeights] = None,
             fast_i: Optional[FastWeights] = None) -> CellOutput:
        """One step with explicit state and fast weights, as the network needs it (with the Hebbian ``post``).

        ``fast_h``, ``fast_i``: anything with ``read(x)`` (``FastWeights`` or an engine's reader), or ``None``.
        """
        raise NotImplementedError

    def _inputs(self, input: Tensor, fast) -> Tuple[Optional[FastWeights], Optional[FastWeights]]:
        """Check ``input (B, I)`` and ``fast``; return ``(fast_h, fast_i)``."""
        if not isinstance(input, Tensor) or input.dim() != 2 or input.shape[-1] != self.input_size:
            got = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"input must be a tensor of shape (B, {self.input_size}), got {got}")
        if fast is None:
            return None, None
        if not isinstance(fast, Mapping) or not set(fast) <= FAST_KEYS:
            raise ValueError(f"fast must be None or a dict with keys among {sorted(FAST_KEYS)} "
                             f"(FastWeights of the cell's layers 'h_fc' and 'i_fc'), got {fast!r:.200}")
        return fast.get("h_fc"), fast.get("i_fc")

    def _zeros(self, input: Tensor) -> Tensor:
        return input.new_zeros(input.shape[0], self.hidden_size)

    def _check_h(self, name: str, t, input: Tensor) -> None:
        if not isinstance(t, Tensor) or t.shape != (input.shape[0], self.hidden_size):
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a tensor of shape ({input.shape[0]}, {self.hidden_size}), got {got}")


class PlasticRNNCell(_PlasticCell):
    """``h_t = relu(h_fc(h_{t−1}) + i_fc(x))`` with plastic ``h_fc``, ``i_fc``.

    ``cell(input (B, I), h (B, H) or None, fast) → (h_t, h_t)``: the state is
    the hidden state itself, zero when ``None`` (as ``nn.RNNCell``). Init scale 1.

    Example::

        cell = PlasticRNNCell(8, 32)
        h, state = cell(torch.randn(4, 8))                      # no fast weights
        fast = {"h_fc": cell.h_fc.zero_fast(4), "i_fc": cell.i_fc.zero_fast(4)}
        h, state = cell(torch.randn(4, 8), state, fast)         # with fast weights
    """

    def step(self, x: Tensor, h: Tensor, c: Optional[Tensor] = None,
             fast_h: Optional[FastWeights] = None, fast_i: Optional[FastWeights] = None) -> CellOutput:
        """``CellOutput(h_t, None, post = h_t)`` (see :meth:`_PlasticCell.step`)."""
        return self.activate(self.preactivation(x, h, fast_h, fast_i), c)

    @staticmethod
    def activate(gates: Tensor, c: Optional[Tensor] = None) -> CellOutput:
        """``h_t = relu(gates)``: the cell's nonlinearity on its preactivation ``gates (B, H)``."""
        h_new = torch.relu(gates)
        return CellOutput(h_new, None, h_new)

    def forward(self, input: Tensor, state: Optional[Tensor] = None,
                fast: Optional[Mapping[str, FastWeights]] = None) -> Tuple[Tensor, Tensor]:
        """``(h_t, state)`` with ``state = h_t`` (B, H); ``state=None``: zeros."""
        fast_h, fast_i = self._inputs(input, fast)
        h = self._zeros(input) if state is None else state
        self._check_h("state", h, input)
        out = self.step(input, h, None, fast_h, fast_i)
        return out.h, out.h


class PlasticLSTMCell(_PlasticCell):
    """LSTM cell with plastic ``h_fc``, ``i_fc`` (``(·, 4H)``, gate order i, f, g, o).

    ``gates = h_fc(h_{t−1}) + i_fc(x)``; ``c_t = σ(f)·c_{t−1} + σ(i)·tanh(g)``;
    ``h_t = σ(o)·tanh(c_t)``. Shapes: ``x (B, I)``, ``h, c (B, H)``. Init scale 2
    (so ``k = 2/sqrt(4H) = 1/sqrt(H)``, PyTorch's own LSTMCell init).
    """

    gate_multiplier = 4
    default_init_scale = 2.0

    def step(self, x: Tensor, h: Tensor, c: Optional[Tensor] = None,
             fast_h: Optional[FastWeights] = None, fast_i: Optional[FastWeights] = None) -> CellOutput:
        """``CellOutput(h_t, c_t, post = [σ(i), σ(f), tanh(g), σ(o)])`` (see :meth:`_PlasticCell.step`)."""
        return self.activate(self.preactivation(x, h, fast_h, fast_i), c)

    @staticmethod
    def activate(gates: Tensor, c: Optional[Tensor] = None) -> CellOutput:
        """``c_t = σ(f)·c + σ(i)·tanh(g)``, ``h_t = σ(o)·tanh(c_t)`` from the preactivation ``gates (B, 4H)``."""
        i, f, g, o = gates.chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_new = f * c + i * g
        h_new = o * torch.tanh(c_new)
        return CellOutput(h_new, c_new, torch.cat([i, f, g, o], dim=-1))

    def forward(self, input: Tensor, state: Optional[Tuple[Tensor, Tensor]] = None,
                fast: Optional[Mapping[str, FastWeights]] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        """``(h_t, (h_t, c_t))``, each (B, H); ``state=None``: zeros (as ``nn.LSTMCell``)."""
        fast_h, fast_i = self._inputs(input, fast)
        if state is None:
            h = c = self._zeros(input)
        elif isinstance(state, (tuple, list)) and len(state) == 2:
            h, c = state
        else:
            raise ValueError(f"state of an LSTM cell must be None or a pair (h, c), got {type(state).__name__}")
        self._check_h("state h", h, input)
        self._check_h("state c", c, input)
        out = self.step(input, h, c, fast_h, fast_i)
        return out.h, (out.h, out.c)


CELL_CLASSES = {"rnn": PlasticRNNCell, "lstm": PlasticLSTMCell}
