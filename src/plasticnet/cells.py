"""Plastic RNN and LSTM cells of Duan et al. (2023), SPEC §1 step 2.

Each cell has two plastic layers, ``h_fc`` (recurrent) and ``i_fc`` (input),
each with its own bias. A cell maps ``(x, (h, c), fast)`` to the new hidden
state and the Hebbian ``post`` of its layers; the plasticity update itself is
made by the network (:mod:`plasticnet.network`), because the rules of SPEC §1
couple all layers (one update norm, one modulation signal, one internal loss).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from .layers import FastWeights, PlasticLinear, check_positive_int

CELLS = ("rnn", "lstm")


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


class _PlasticCell(nn.Module):
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

    def preactivation(self, x: Tensor, h: Tensor, fast_h: Optional[FastWeights],
                      fast_i: Optional[FastWeights]) -> Tensor:
        """``h @ (W_h + F_h) + b_h + f_h + x @ (W_i + F_i) + b_i + f_i``."""
        return self.h_fc(h, fast_h) + self.i_fc(x, fast_i)


class PlasticRNNCell(_PlasticCell):
    """``h_t = relu(h_fc(h_{t−1}) + i_fc(x))`` with plastic ``h_fc``, ``i_fc``.

    Shapes: ``x (B, I)``, ``h (B, H)`` → ``h_t (B, H)``. Init scale 1.
    """

    def forward(self, x: Tensor, h: Tensor, c: Optional[Tensor] = None,
                fast_h: Optional[FastWeights] = None, fast_i: Optional[FastWeights] = None) -> CellOutput:
        h_new = torch.relu(self.preactivation(x, h, fast_h, fast_i))
        return CellOutput(h_new, None, h_new)


class PlasticLSTMCell(_PlasticCell):
    """LSTM cell with plastic ``h_fc``, ``i_fc`` (``(·, 4H)``, gate order i, f, g, o).

    ``gates = h_fc(h_{t−1}) + i_fc(x)``; ``c_t = σ(f)·c_{t−1} + σ(i)·tanh(g)``;
    ``h_t = σ(o)·tanh(c_t)``. Shapes: ``x (B, I)``, ``h, c (B, H)``. Init scale 2
    (so ``k = 2/sqrt(4H) = 1/sqrt(H)``, PyTorch's own LSTMCell init).
    """

    gate_multiplier = 4
    default_init_scale = 2.0

    def forward(self, x: Tensor, h: Tensor, c: Optional[Tensor] = None,
                fast_h: Optional[FastWeights] = None, fast_i: Optional[FastWeights] = None) -> CellOutput:
        gates = self.preactivation(x, h, fast_h, fast_i)
        i, f, g, o = gates.chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_new = f * c + i * g
        h_new = o * torch.tanh(c_new)
        return CellOutput(h_new, c_new, torch.cat([i, f, g, o], dim=-1))


CELL_CLASSES = {"rnn": PlasticRNNCell, "lstm": PlasticLSTMCell}
