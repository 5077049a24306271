"""Plastic RNN and LSTM cells of Duan et al. (2023), SPEC §1 step 2.

Each cell has two plastic layers, ``h_fc`` (recurrent) and ``i_fc`` (input),
each with its own bias. A cell is called as ``nn.RNNCell`` / ``nn.LSTMCell``
are, with one more, optional argument, its fast weights::

    h' = PlasticRNNCell(...)(input, hx=None, fast=None)
    (h', c') = PlasticLSTMCell(...)(input, hx=None, fast=None)

``input`` is ``(B, I)`` or unbatched ``(I,)``; ``hx`` is ``h`` (RNN) or
``(h, c)`` (LSTM), zeros when ``None``. ``fast`` is the fast-weight state,
``{"h_fc": FastWeights(w (B, H, G), b (B, G)), "i_fc": FastWeights(w (B, I, G),
b (B, G))}`` with ``G = H`` (RNN) or ``4H`` (LSTM); either key may be missing,
either ``b`` may be ``None``; unbatched, drop the ``B``. Without ``fast`` the
cell is an ordinary RNN/LSTM cell. Fast weights are state, like ``hx``: the
cell reads them and never changes them; how they change is the caller's —
:class:`~plasticnet.network.PlasticRNN` makes the update of SPEC §1 (the rules
couple all layers: one update norm, one modulation signal, one internal loss)
through :meth:`_PlasticCell.step`, which also returns the Hebbian ``post``.

Differences from ``torch.nn`` (everything else is the same call):

- ``PlasticRNNCell``'s default ``nonlinearity`` is ``"relu"`` ([D23]);
  ``nn.RNNCell``'s is ``"tanh"`` (both are accepted).
- The weights are the plastic layers' ``h_fc.weight (H, G)`` and
  ``i_fc.weight (I, G)``, stored ``(in, out)`` as in [D23]'s code, with the
  biases ``h_fc.bias``, ``i_fc.bias`` and the rates ``Λ`` (``lr_weight``,
  ``lr_bias``); ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` give
  torch's ``(G, I)`` / ``(G, H)`` views of them (a state dict keeps the
  plastic names). Gate order i, f, g, o, as torch.
- ``bias=False`` is refused: a plastic layer always has a bias.
- Default initialisation ``U(−k, k)``, ``k = init_scale/sqrt(G)``: for the
  LSTM (scale 2) torch's own ``1/sqrt(H)``; for the RNN (scale 1) ``1/sqrt(H)``, as torch.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from .checks import check_choice
from .layers import FastWeights, NoTorchScript, PlasticLinear, check_positive_int

CELLS = ("rnn", "lstm")
NONLINEARITIES = ("relu", "tanh")
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

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 plastic: bool = True, plastic_bias: bool = True, inner_lr_mode: str = "random",
                 init_scale: Optional[float] = None):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        if bias is not True:
            raise ValueError(f"bias={bias!r}: a plastic cell always has biases (its layers' fast biases need them)")
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, True
        scale = self.default_init_scale if init_scale is None else init_scale
        out = hidden_size * self.gate_multiplier
        kw = dict(plastic=plastic, plastic_bias=plastic_bias, inner_lr_mode=inner_lr_mode, init_scale=scale)
        self.h_fc = PlasticLinear(hidden_size, out, **kw)
        self.i_fc = PlasticLinear(input_size, out, **kw)
        self.register_forward_pre_hook(NoTorchScript._refuse_trace)  # torch.jit.trace: say what to use
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    # torch's names and layout, as views of the plastic layers' parameters
    @property
    def weight_ih(self) -> Tensor:
        """``i_fc.weight`` as ``nn.RNNCell.weight_ih`` lays it out, ``(G, I)`` (a view)."""
        return self.i_fc.weight.t()

    @property
    def weight_hh(self) -> Tensor:
        """``h_fc.weight`` as ``nn.RNNCell.weight_hh`` lays it out, ``(G, H)`` (a view)."""
        return self.h_fc.weight.t()

    @property
    def bias_ih(self) -> Tensor:
        return self.i_fc.bias

    @property
    def bias_hh(self) -> Tensor:
        return self.h_fc.bias

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

    def _inputs(self, input: Tensor, fast) -> Tuple[Tensor, bool, Optional[FastWeights], Optional[FastWeights]]:
        """Check ``input (B, I)`` or ``(I,)`` and ``fast``; return ``(input (B, I), batched, fast_h, fast_i)``."""
        if not isinstance(input, Tensor) or input.dim() not in (1, 2) or input.shape[-1] != self.input_size:
            got = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"input must be a tensor of shape (B, {self.input_size}) or ({self.input_size},), "
                             f"got {got}")
        batched = input.dim() == 2
        if fast is None:
            return (input if batched else input.unsqueeze(0)), batched, None, None
        if not isinstance(fast, Mapping) or not set(fast) <= FAST_KEYS:
            raise ValueError(f"fast must be None or a dict with keys among {sorted(FAST_KEYS)} "
                             f"(FastWeights of the cell's layers 'h_fc' and 'i_fc'), got {fast!r:.200}")
        fast_h, fast_i = fast.get("h_fc"), fast.get("i_fc")
        if not batched:
            fast_h, fast_i = (None if f is None else FastWeights(f.w.unsqueeze(0), None if f.b is None
                                                                 else f.b.unsqueeze(0)) for f in (fast_h, fast_i))
            input = input.unsqueeze(0)
        return input, batched, fast_h, fast_i

    def _state(self, name: str, t, input: Tensor, batched: bool) -> Tensor:
        """``t`` checked against ``input`` (zeros when ``None``), with a batch dim."""
        B = input.shape[0]
        if t is None:
            return input.new_zeros(B, self.hidden_size)
        want = (B, self.hidden_size) if batched else (self.hidden_size,)
        if not isinstance(t, Tensor) or tuple(t.shape) != want:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a tensor of shape {want}, got {got}")
        return t if batched else t.unsqueeze(0)


class PlasticRNNCell(_PlasticCell):
    """``h' = relu(h_fc(h) + i_fc(x))`` with plastic ``h_fc``, ``i_fc`` (or ``tanh``).

    Args:
        input_size, hidden_size: as ``nn.RNNCell``.
        bias: must be ``True`` (a plastic layer always has a bias).
        nonlinearity: ``"relu"`` (default, [D23]) or ``"tanh"`` (``nn.RNNCell``'s default).
        device, dtype: as ``nn.RNNCell``.
        plastic, plastic_bias, inner_lr_mode, init_scale: keyword-only, the
            plastic layers' (:class:`~plasticnet.layers.PlasticLinear`); init
            scale ``None`` means 1 (``k = 1/sqrt(H)``, torch's init).

    Call: ``cell(input, hx=None, fast=None) -> h'``. ``input (B, I)`` or
    ``(I,)``; ``hx (B, H)`` or ``(H,)``, zeros when ``None``; ``fast`` the
    fast-weight state (module docstring); ``h'`` has ``hx``'s shape.

    Example::

        >>> cell = PlasticRNNCell(10, 20)           # as nn.RNNCell(10, 20, nonlinearity="relu")
        >>> input = torch.randn(6, 3, 10)
        >>> hx = torch.randn(3, 20)
        >>> output = []
        >>> for i in range(6):
        ...     hx = cell(input[i], hx)
        ...     output.append(hx)
        >>> fast = {"h_fc": cell.h_fc.zero_fast(3)}  # fast weights: state, passed like hx
        >>> for i in range(6):
        ...     h_new = cell(input[i], hx, fast)
        ...     w = 0.9 * fast["h_fc"].w + 0.1 * hx.unsqueeze(2) * h_new.unsqueeze(1)  # a Hebbian trace
        ...     hx, fast = h_new, {"h_fc": FastWeights(w, None)}
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "relu",
                 device=None, dtype=None, **plastic_options):
        check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
        super().__init__(input_size, hidden_size, bias, device, dtype, **plastic_options)
        self.nonlinearity = nonlinearity

    def step(self, x: Tensor, h: Tensor, c: Optional[Tensor] = None,
             fast_h: Optional[FastWeights] = None, fast_i: Optional[FastWeights] = None) -> CellOutput:
        """``CellOutput(h_t, None, post = h_t)`` (see :meth:`_PlasticCell.step`)."""
        gates = self.preactivation(x, h, fast_h, fast_i)
        if self.nonlinearity == "tanh":
            h_new = torch.tanh(gates)
            return CellOutput(h_new, None, h_new)
        return self.activate(gates, c)

    @staticmethod
    def activate(gates: Tensor, c: Optional[Tensor] = None) -> CellOutput:
        """``h_t = relu(gates)``: the network's nonlinearity ([D23]) on its preactivation ``gates (B, H)``."""
        h_new = torch.relu(gates)
        return CellOutput(h_new, None, h_new)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None,
                fast: Optional[Mapping[str, FastWeights]] = None) -> Tensor:
        """``h'``, shaped as ``hx`` (``(B, H)``, or ``(H,)`` for an unbatched input)."""
        x, batched, fast_h, fast_i = self._inputs(input, fast)
        h = self._state("hx", hx, x, batched)
        h_new = self.step(x, h, None, fast_h, fast_i).h
        return h_new if batched else h_new.squeeze(0)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r}"


class PlasticLSTMCell(_PlasticCell):
    """LSTM cell with plastic ``h_fc``, ``i_fc`` (``(·, 4H)``, gate order i, f, g, o).

    ``gates = h_fc(h) + i_fc(x)``; ``c' = σ(f)·c + σ(i)·tanh(g)``;
    ``h' = σ(o)·tanh(c')``.

    Args:
        input_size, hidden_size, bias, device, dtype: as ``nn.LSTMCell``
            (``bias`` must be ``True``).
        plastic, plastic_bias, inner_lr_mode, init_scale: keyword-only, the
            plastic layers'; init scale ``None`` means 2 (``k = 2/sqrt(4H) =
            1/sqrt(H)``, torch's init).

    Call: ``cell(input, hx=None, fast=None) -> (h', c')``. ``input (B, I)``
    or ``(I,)``; ``hx = (h, c)``, each ``(B, H)`` or ``(H,)``, zeros when
    ``None``; ``fast`` the fast-weight state (module docstring).

    Example::

        >>> cell = PlasticLSTMCell(10, 20)          # as nn.LSTMCell(10, 20)
        >>> input = torch.randn(2, 3, 10)            # (time_steps, batch, input_size)
        >>> hx, cx = torch.randn(3, 20), torch.randn(3, 20)
        >>> output = []
        >>> for i in range(input.size()[0]):
        ...     hx, cx = cell(input[i], (hx, cx))
        ...     output.append(hx)
        >>> output = torch.stack(output, dim=0)
        >>> fast = {"h_fc": cell.h_fc.zero_fast(3), "i_fc": cell.i_fc.zero_fast(3)}
        >>> hx, cx = cell(input[0], (hx, cx), fast)  # reads the fast weights, never changes them
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

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None,
                fast: Optional[Mapping[str, FastWeights]] = None) -> Tuple[Tensor, Tensor]:
        """``(h', c')``, each shaped as ``hx``'s (``(B, H)``, or ``(H,)`` for an unbatched input)."""
        x, batched, fast_h, fast_i = self._inputs(input, fast)
        if hx is None:
            h = c = self._state("hx", None, x, batched)
        elif isinstance(hx, (tuple, list)) and len(hx) == 2:
            h, c = self._state("hx[0] (h)", hx[0], x, batched), self._state("hx[1] (c)", hx[1], x, batched)
        else:
            raise ValueError(f"hx of an LSTM cell must be None or a pair (h, c), got {type(hx).__name__}")
        out = self.step(x, h, c, fast_h, fast_i)
        return (out.h, out.c) if batched else (out.h.squeeze(0), out.c.squeeze(0))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


CELL_CLASSES = {"rnn": PlasticRNNCell, "lstm": PlasticLSTMCell}
