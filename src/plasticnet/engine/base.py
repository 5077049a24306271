"""The engine interface: what an engine receives, what it returns, and the step every engine may share.

An engine computes the equations of SPEC §1 over plain tensors. The network
(:class:`~plasticnet.network.PlasticRNN`) knows nothing of how: it hands an
engine a :class:`NetSpec` — its parameters as tensors and its configuration as
plain values — and asks for an episode or a step::

    spec = net.spec()                                     # NetSpec
    res = engine.episode(spec, inputs, h, c, fast, trace) # inputs (B, T, I) -> res.out (B, T, O)
    res = engine.step(spec, u, h, c, fast, trace)         # u (B, I)         -> res.out (B, O)
    res: EngineResult(out, h (B, H), c (B, H) or None, fast, trace)

``fast`` is the engine's own form of the fast weights (``zero_fast`` makes the
episode's first; ``fast_weights`` materialises them as ``{layer:
FastWeights(w (B, in, out), b (B, out) or None)}``, a form every engine also
accepts as input). ``trace``: with ``trace=True`` the result holds
``{"modulation", "clip_scale", "fast_norm"}``, each ``(B, T)`` for an episode,
``(B,)`` for a step (``m_t``, ``s_t``, ``‖F_{t+1}‖``); otherwise ``None``.
The state has been checked by :func:`check_state` before an engine sees it.
A spec with ``rule="none"`` never reaches an engine: the network runs the
ordinary RNN/LSTM itself (:func:`plain_step`).

A new engine is one file with a class that has the attributes of
:class:`Engine` (subclass :class:`StepEngine` to get ``episode`` as a loop over
``step``) and one line in the registry, ``plasticnet.engine.ENGINES``. Its
tests hold it equal to the ``reference`` engine (``tests/test_fast_engine.py``
shows how: outputs, final fast weights, trace and every outer gradient,
float64 to 1e-10).
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Protocol, Tuple, runtime_checkable

import torch
from torch import Tensor
from torch.nn import functional as nnf

from .. import rules
from ..cells import CELL_CLASSES, CellOutput
from ..layers import FastWeights, linear

LAYERS = ("in_fc", "h_fc", "i_fc", "out_fc")
TRACE_KEYS = ("modulation", "clip_scale", "fast_norm")


class LayerParams(NamedTuple):
    """One plastic layer's slow parameters: ``y = x (W + F) + (b + f)``.

    weight: ``W (in, out)``; bias: ``b (out,)``;
    lr_weight: ``Λ (in, out)``, ``None`` where it is the constant 1 (``inner_lr_mode="none"``);
    lr_bias: ``Λ_b (out,)`` where the bias is plastic and ``Λ`` trained, else ``None``;
    plastic_bias: whether the bias has a fast part ``f`` (the gradient rule).
    """

    weight: Tensor
    bias: Tensor
    lr_weight: Optional[Tensor]
    lr_bias: Optional[Tensor]
    plastic_bias: bool

    @property
    def in_features(self) -> int:
        return self.weight.shape[0]

    @property
    def out_features(self) -> int:
        return self.weight.shape[1]

    def rates(self) -> Tuple[Any, Any]:
        """``(Λ_w, Λ_b)``, ``1.0`` where not trained."""
        return (1.0 if self.lr_weight is None else self.lr_weight), (1.0 if self.lr_bias is None else self.lr_bias)


class NetSpec(NamedTuple):
    """Everything an engine receives about the network (SPEC §1), as plain tensors and values.

    cell: ``"rnn"`` or ``"lstm"``; rule: ``"hebbian"`` or ``"gradient"`` (``"none"`` is run by the network);
    hidden_size ``H``; output_size ``O`` (the task outputs ``z[:, :O]``); modulation: ``m = 2σ(z[:, -1])``;
    inner_lr ``p_lr``, inner_decay ``p_wd``, inner_clip, inner_loss_scale, weight_clip (``None``: off);
    layers: ``{name: LayerParams}`` in the order of :data:`LAYERS` (``in_fc`` absent without an input layer);
    omega: ``ω (D,)`` of the gradient rule's internal loss (else ``None``);
    ln_weight, ln_bias ``(H,)`` and ln_eps: the LayerNorm on ``h_t`` (``None`` when off).
    """

    cell: str
    rule: str
    hidden_size: int
    output_size: int
    modulation: bool
    inner_lr: float
    inner_decay: float
    inner_clip: float
    inner_loss_scale: float
    weight_clip: Optional[float]
    layers: Dict[str, LayerParams]
    omega: Optional[Tensor]
    ln_weight: Optional[Tensor]
    ln_bias: Optional[Tensor]
    ln_eps: Optional[float]

    @property
    def layernorm(self) -> bool:
        return self.ln_eps is not None

    @property
    def has_input_layer(self) -> bool:
        return "in_fc" in self.layers


class EngineResult(NamedTuple):
    """What an engine returns: ``out`` ``(B, T, O)`` (episode) or ``(B, O)`` (step), the state after it
    (``h (B, H)``, ``c (B, H)`` or ``None``, ``fast`` in the engine's form) and the trace (see the module
    docstring) or ``None``."""

    out: Tensor
    h: Tensor
    c: Optional[Tensor]
    fast: Any
    trace: Optional[Dict[str, Tensor]]


@runtime_checkable
class Engine(Protocol):
    """An implementation of SPEC §1. ``PlasticRNN(engine=...)`` takes a registry name or such an object.

    name: what ``net.engine`` reports;
    compilable: ``torch.compile`` may trace into ``episode``/``step`` (``False``: the network calls
        them as one opaque graph break, e.g. for compiled code outside torch);
    devices: the device types it runs on (``None``: any).
    """

    name: str
    compilable: bool
    devices: Optional[Tuple[str, ...]]

    def zero_fast(self, spec: NetSpec, batch_size: int, device, dtype) -> Any:
        """Fast weights at the start of an episode (zeros), in the engine's form."""

    def fast_weights(self, spec: NetSpec, fast: Any, like: Tensor) -> Dict[str, FastWeights]:
        """``fast`` materialised, ``{layer: FastWeights((B, in, out), (B, out) or None)}``; ``like (B, H)``
        gives batch size, device and dtype."""

    def episode(self, spec: NetSpec, inputs: Tensor, h: Tensor, c: Optional[Tensor], fast: Any,
                trace: bool = False) -> EngineResult:
        """The episode ``inputs (B, T, I)`` from the state ``(h, c, fast)``."""

    def step(self, spec: NetSpec, u: Tensor, h: Tensor, c: Optional[Tensor], fast: Any,
             trace: bool = False) -> EngineResult:
        """One step ``u (B, I)`` from the state ``(h, c, fast)``: the output uses ``F_t``, the state holds
        ``F_{t+1}``."""


# ---------------------------------------------------------------------------- one step, plain tensors
class StepValues(NamedTuple):
    """Intermediate values of one step: ``x (B, H)`` input-layer output, the cell's :class:`CellOutput`,
    ``h_next (B, H)`` (after LayerNorm), ``c``, and ``z (B, D)`` the full output of ``out_fc``."""

    x: Tensor
    cell: CellOutput
    h_next: Tensor
    c: Optional[Tensor]
    z: Tensor


def dynamics(spec: NetSpec, u: Tensor, h: Tensor, c: Optional[Tensor], fast=None) -> StepValues:
    """Forward equations of one step (SPEC §1) with fast weights ``fast`` (``{layer: reader}`` or ``None``)::

        x = relu(u (W_in + F_in) + b_in + f_in)      (x = u without an input layer)
        (h_c, c, post) = cell(h (W_h + F_h) + x (W_i + F_i) + biases, c)
        h_next = LayerNorm(h_c) (optional);  z = h_next (W_out + F_out) + b_out + f_out

    A reader is anything with ``read(x)`` (``FastWeights`` or an engine's own).
    """
    f = fast or {}
    L = spec.layers
    x = torch.relu(linear(u, L["in_fc"].weight, L["in_fc"].bias, f.get("in_fc"))) if spec.has_input_layer else u
    gates = linear(h, L["h_fc"].weight, L["h_fc"].bias, f.get("h_fc")) + \
        linear(x, L["i_fc"].weight, L["i_fc"].bias, f.get("i_fc"))
    cell_out = CELL_CLASSES[spec.cell].activate(gates, c)
    h_next = cell_out.h
    if spec.layernorm:
        h_next = nnf.layer_norm(h_next, (spec.hidden_size,), spec.ln_weight, spec.ln_bias, spec.ln_eps)
    z = linear(h_next, L["out_fc"].weight, L["out_fc"].bias, f.get("out_fc"))
    return StepValues(x, cell_out, h_next, cell_out.c, z)


def hebbian_pre_post(spec: NetSpec, u: Tensor, h_prev: Tensor, v: StepValues) -> Dict[str, Tuple[Tensor, Tensor]]:
    """``{layer: (pre, post)}`` of the Hebbian rule (SPEC §1): in_fc ``(u, x)``, h_fc ``(h_{t−1}, post)``,
    i_fc ``(x, post)``, out_fc ``(h_next, z)``; the cell's ``post`` is its activated gates (LSTM) or ``h``."""
    pairs = {"in_fc": (u, v.x)} if spec.has_input_layer else {}
    pairs.update(h_fc=(h_prev, v.cell.post), i_fc=(v.x, v.cell.post), out_fc=(v.h_next, v.z))
    return pairs


def apply_rule(spec: NetSpec, fast: Dict[str, FastWeights], terms: Dict[str, FastWeights], z: Tensor):
    """``F_{t+1}`` of every layer from ``F_t`` and the rule's terms ``G`` (materialised); returns
    ``(fast, m, s)``, ``m`` the modulation and ``s`` the clip scale, ``(B,)`` each (:mod:`plasticnet.rules`)."""
    m = rules.modulation_factor(z, spec.modulation)
    s = rules.clip_scale(rules.update_norm([t for k in terms for t in terms[k]]), spec.inner_clip)
    eta, decay = rules.rate_and_decay(m, s, spec.inner_lr, spec.inner_decay)
    new = {}
    for k, g in terms.items():
        lw, lb = spec.layers[k].rates()
        w = rules.plastic_update(fast[k].w, g.w, lw, eta, decay, spec.weight_clip)
        b = None if g.b is None else rules.plastic_update(fast[k].b, g.b, lb, eta, decay, spec.weight_clip)
        new[k] = FastWeights(w, b)
    return new, m, s


def trace_values(m: Tensor, s: Tensor, fast: Dict[str, FastWeights]) -> Dict[str, Tensor]:
    """The step's trace: modulation ``m``, clip scale ``s`` and ``‖F_{t+1}‖`` over all fast tensors, ``(B,)`` each."""
    norm = rules.update_norm([t for k in fast for t in fast[k]])
    return {"modulation": m.detach(), "clip_scale": s.detach(), "fast_norm": norm.detach()}


def plain_step(spec: NetSpec, u: Tensor, h: Tensor, c: Optional[Tensor]) -> EngineResult:
    """One step of the ordinary network (``rule="none"``: no fast weights, no update)."""
    v = dynamics(spec, u, h, c, None)
    return EngineResult(v.z[:, : spec.output_size], v.h_next, v.c, None, None)


def zero_fast_weights(spec: NetSpec, batch_size: int, device, dtype) -> Dict[str, FastWeights]:
    """Materialised zero fast weights of every plastic layer."""
    def zeros(*shape):
        return torch.zeros(batch_size, *shape, device=device, dtype=dtype)

    return {k: FastWeights(zeros(p.in_features, p.out_features), zeros(p.out_features) if p.plastic_bias else None)
            for k, p in spec.layers.items()}


def stack_trace(steps) -> Optional[Dict[str, Tensor]]:
    """Per-step traces ``[{key: (B,)}]`` stacked to ``{key: (B, T)}`` (``None`` when there are none)."""
    steps = [s for s in steps if s is not None]
    if not steps:
        return None
    return {k: torch.stack([s[k] for s in steps], dim=1) for k in TRACE_KEYS}


class EpisodeEngine:
    """Base of the engines that run a whole episode in one call (compiled loops): ``step`` is the episode
    of length 1; fast weights are materialised, so ``fast_weights`` returns them as they are."""

    def episode(self, spec, inputs, h, c, fast, trace=False) -> EngineResult:
        raise NotImplementedError

    def step(self, spec, u, h, c, fast, trace=False) -> EngineResult:
        """One step: the episode of length 1 from the state."""
        res = self.episode(spec, u.unsqueeze(1), h, c, fast, trace)
        tr = None if res.trace is None else {k: v[:, 0] for k, v in res.trace.items()}
        return res._replace(out=res.out[:, 0], trace=tr)

    def fast_weights(self, spec, fast, like):
        """The materialised fast weights of ``fast`` (already materialised here)."""
        return fast


class StepEngine:
    """Base of the engines that step: ``episode`` loops :meth:`step`; fast weights start as materialised zeros."""

    name = ""
    compilable = True
    devices: Optional[Tuple[str, ...]] = None

    def step(self, spec, u, h, c, fast, trace=False) -> EngineResult:
        raise NotImplementedError

    def episode(self, spec, inputs, h, c, fast, trace=False) -> EngineResult:
        """Loop :meth:`step` over ``inputs (B, T, I)``."""
        outs, traces = [], []
        for t in range(inputs.shape[1]):
            res = self.step(spec, inputs[:, t], h, c, fast, trace)
            h, c, fast = res.h, res.c, res.fast
            outs.append(res.out)
            traces.append(res.trace)
        return EngineResult(torch.stack(outs, dim=1), h, c, fast, stack_trace(traces) if trace else None)

    def zero_fast(self, spec, batch_size, device, dtype):
        return zero_fast_weights(spec, batch_size, device, dtype)

    def fast_weights(self, spec, fast, like):
        return fast


# ---------------------------------------------------------------------------- the state at the boundary
def check_state(spec: NetSpec, h: Tensor, c: Optional[Tensor], fast, like: Tensor) -> None:
    """Refuse a state that does not fit ``spec`` and the input ``like (B, ·)``, naming the field.

    ``ValueError`` for a shape, device or structure, ``TypeError`` for a dtype.

    Every tensor of the state must be on ``like``'s device, of its dtype and of its batch size: ``h, c (B, H)``
    (``c`` only for the LSTM), and materialised fast weights ``{layer: FastWeights(w (B, in, out), b (B, out)
    or None)}`` with exactly the plastic layers of the spec and a bias where the rule changes biases. An
    engine's own form of fast weights (not a dict) is left to the engine. Compiled engines read raw memory:
    nothing that fails here may reach them.
    """
    B, H = like.shape[0], spec.hidden_size

    def tensor(name, t, shape):
        if not isinstance(t, Tensor):
            raise ValueError(f"state {name} must be a tensor of shape {shape}, got {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise ValueError(f"state {name} must have shape {shape} for this input and model, got {tuple(t.shape)}")
        if t.dtype != like.dtype:
            raise TypeError(f"state {name} must have dtype {like.dtype} (the input's), got {t.dtype}")
        if t.device != like.device:
            raise ValueError(f"state {name} must be on {like.device} (the input's device), got {t.device}")

    tensor("h", h, (B, H))
    if spec.cell == "lstm":
        tensor("c", c, (B, H))
    elif c is not None:
        raise ValueError(f"state c must be None for the RNN cell, got {type(c).__name__}")
    if spec.rule == "none":
        if fast is not None:
            raise ValueError(f"state fast must be None for rule='none', got {type(fast).__name__}")
        return
    if fast is None:
        raise ValueError(f"state fast must hold fast weights for rule={spec.rule!r}, got None "
                         "(start from net.initial_state(batch_size))")
    if not isinstance(fast, dict):
        return
    if set(fast) != set(spec.layers):
        raise ValueError(f"state fast must have the layers {list(spec.layers)}, got {list(fast)}")
    for k, p in spec.layers.items():
        fw = fast[k]
        if not isinstance(fw, tuple) or len(fw) != 2:
            raise ValueError(f"state fast[{k!r}] must be FastWeights(w, b), got {type(fw).__name__}")
        tensor(f"fast[{k!r}].w", fw.w, (B, p.in_features, p.out_features))
        if p.plastic_bias:
            tensor(f"fast[{k!r}].b", fw.b, (B, p.out_features))
        elif fw.b is not None:
            raise ValueError(f"state fast[{k!r}].b must be None for rule={spec.rule!r} (biases are not plastic), "
                             f"got {type(fw.b).__name__}")
