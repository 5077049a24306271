"""The plastic recurrent network of Duan et al. (ICLR 2023), SPEC §1.

At each step ``t`` of an episode, per sample::

    x   = relu(in_fc(u_t))                          input layer
    h_t = cell(x, h_{t−1})                          plastic RNN or LSTM cell
    h_t ← LayerNorm(h_t)                            optional
    z_t = out_fc(h_t)   (n_out + extra_dim + modulation units)
    y_t = z_t[:, :n_out]                            the task output

and, unless ``rule="none"``, every plastic layer's fast weights then change
by the rule of :mod:`plasticnet.rules`. Fast weights are zero at the start of
each episode and live in the :class:`PlasticState`, never on the module.

**Batch note and the default inner rate.** The reference code's internal loss
is a mean over the batch *and* the output dims, so there a sample's gradient
is scaled by ``1/B`` and its dynamics depend on the batch it is in. Here each
sample's internal loss is ``inner_loss_scale · mean_d((z ⊙ ω)²)`` on its own,
so a sample's dynamics never depend on the batch. The default
``inner_loss_scale = 1/64`` with ``inner_lr = 0.1`` and ``inner_clip = 1`` is
exactly the reference's ``p_lr = 0.1`` at B = 64 (the batch of every sequence
task): the effective rate is ``0.1/64 ≈ 1.56e-3`` per unit of the per-sample
gradient, and the clip acts on the same scaled norm as there. To reproduce a
reference run at batch ``B``, pass ``inner_loss_scale = 1/B``.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Dict, NamedTuple, Optional, Union

import torch
from torch import Tensor, nn

from . import rules
from .cells import CELL_CLASSES, CELLS
from .checks import (
    check_bool,
    check_choice,
    check_finite,
    check_nonnegative,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
)
from .engine import ENGINE_CHOICES, Engine, get_engine, is_engine, resolve_engine
from .engine.base import LayerParams, NetSpec, check_state, plain_step
from .layers import INNER_LR_MODES, FastWeights, NoTorchScript, PlasticLinear

FUNC_TRANSFORM_RULES = {"fast": rules.RULES, "reference": ("hebbian", "none"), "kernel": ("none",)}
"""The rules each engine runs under ``torch.func`` transforms (``vmap`` over stacked models, ``grad``, ...)."""


def _func_wrapped(t: Tensor) -> bool:
    """Whether ``t`` is inside a ``torch.func`` transform (a batched or grad-tracking functorch tensor).

    Not asked while ``torch.compile`` traces (dynamo cannot trace the question; a graph break would warn).
    """
    if torch.compiler.is_compiling():
        return False
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


class PlasticState(NamedTuple):
    """State of :class:`PlasticRNN` between steps (a pytree).

    ``torch.func`` transforms work on it — e.g. ``vmap`` of ``functional_call``
    over ``stack_module_state`` of many models (many seeds at once) — with the
    ``fast`` engine for every rule, and with the ``reference`` engine except for
    the gradient rule (:data:`FUNC_TRANSFORM_RULES`; others are refused with an error).

    h: ``(B, H)`` hidden state fed to the next step (normalised when LayerNorm is on);
    c: ``(B, H)`` LSTM cell state, ``None`` for the RNN cell;
    fast: fast weights in the engine's form — ``{layer: FastWeights(w (B, in, out),
    b (B, out) or None)}`` for ``in_fc, h_fc, i_fc, out_fc`` under the reference
    engine, a factored history under the fast engine;
    :meth:`PlasticRNN.fast_weights` materialises them in the first form (and
    both engines accept a state holding that form); ``None`` for ``rule="none"``.
    """

    h: Tensor
    c: Optional[Tensor]
    fast: Optional[object]


@torch.compiler.disable
def _opaque(fn, *args):
    """``fn(*args)`` as one graph break under ``torch.compile`` (an engine that runs compiled code of its own)."""
    return fn(*args)


def matched_hidden_size(rule: str, cell: str, base: int = 128) -> int:
    """Model-size matching of every [D23] comparison (SPEC §1).

    ``base`` (128), ×1.5 for ``rule="none"``, ×2 for ``cell="rnn"``; both can
    apply (none + rnn = 384).
    """
    check_choice("rule", rule, rules.RULES)
    check_choice("cell", cell, CELLS)
    size = base * (3 if rule == "none" else 2) // 2
    return size * 2 if cell == "rnn" else size


class PlasticRNN(NoTorchScript, nn.Module):
    """in_fc → plastic RNN/LSTM cell → out_fc, with fast weights (SPEC §1).

    Args (defaults are the reference's):
        input_size, hidden_size, output_size: sizes of ``u_t``, ``h_t``, ``y_t``.
        cell: ``"rnn"`` (relu) or ``"lstm"``.
        rule: ``"gradient"``, ``"hebbian"`` or ``"none"`` (ordinary network).
        extra_dim: extra output units of out_fc (4) the internal loss can use.
        modulation: one more out_fc unit ``z[-1]``; ``m = 2σ(z[-1])`` scales
            the inner rate and decay (on).
        inner_lr_mode: init of the connection-wise rates ``Λ`` —
            ``random`` U(−1,1), ``uniform`` 1, ``neg_uniform`` −1, ``none`` (fixed 1).
        inner_lr: ``p_lr`` (0.1). inner_decay: ``p_wd`` (0.1).
        inner_clip: clip of the update norm over all plastic tensors (1).
        inner_loss_scale: the gradient rule's per-sample loss factor (1/64,
            see the module docstring's batch note).
        weight_clip: clamp fast weights and biases to ±this (``None``: off).
        layernorm: LayerNorm (eps 1e-5, affine) on ``h_t`` (off).
        init_scale: ``k = scale/sqrt(out)`` for in_fc and out_fc (1).
        cell_init_scale: the same for the cell's layers (``None``: 2 for
            LSTM, 1 for RNN).
        input_layer: with ``False`` there is no in_fc: ``u_t`` goes straight
            into the cell (``x = u_t``), as in the reference's image model
            where a CNN embedding is the cell's input.
        batch_first: ``inputs`` are ``(B, T, I)`` (True) or ``(T, B, I)``.
        engine: ``"auto"`` (the default: ``"kernel"`` on the CPU, ``"fast"``
            on other devices), ``"kernel"`` (compiled per-sample loop, cost
            linear in T; CPU, needs numba), ``"fast"`` (closed-form gradient
            rule, factored fast weights) or ``"reference"`` (materialised
            fast weights, autograd for the gradient rule: the oracle). All
            compute the same numbers (``tests/test_kernel_engine.py``,
            ``tests/test_fast_engine.py``). ``net.engine`` names the engine in use.
            Also a configured engine object (``plasticnet.engine.Engine``,
            e.g. ``KernelEngine(engine_threads=2)``); ``torch.compile`` works
            with every engine (the kernel's loops are one graph break), TorchScript with none.
        chunk_size: the fast engine's steps between folds of its factored
            history into a materialised ``F`` (``None``: never fold).
        engine_threads: the kernel engine's threads over the batch (``None``:
            torch's thread count); results do not depend on it.

    Shapes: ``forward(inputs (B, T, I), state) → (outputs (B, T, O), state)``;
    ``step(u_t (B, I), state) → (y_t (B, O), state)``.

    Example::

        >>> net = PlasticRNN(16, 128, 1, cell="lstm", rule="gradient")
        >>> inputs = torch.rand(4, 20, 16)                 # (B, T, I)
        >>> out, state = net(inputs)                       # fast weights start at zero
        >>> out.shape
        torch.Size([4, 20, 1])
        >>> y_t, state = net.step(torch.rand(4, 16), state)  # one more step, explicit state
        >>> net.fast_weights(state)["h_fc"].w.shape       # (B, H, 4H)
        torch.Size([4, 128, 512])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        *,
        cell: str = "lstm",
        rule: str = "gradient",
        extra_dim: int = 4,
        modulation: bool = True,
        inner_lr_mode: str = "random",
        inner_lr: float = 0.1,
        inner_decay: float = 0.1,
        inner_clip: float = 1.0,
        inner_loss_scale: float = 1 / 64,
        weight_clip: Optional[float] = None,
        layernorm: bool = False,
        init_scale: float = 1.0,
        cell_init_scale: Optional[float] = None,
        input_layer: bool = True,
        batch_first: bool = True,
        engine: Union[str, Engine] = "auto",
        chunk_size: Optional[int] = 32,
        engine_threads: Optional[int] = None,
    ):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("output_size", output_size)):
            check_positive_int(name, value)
        check_choice("cell", cell, CELLS)
        check_choice("rule", rule, rules.RULES)
        check_choice("inner_lr_mode", inner_lr_mode, INNER_LR_MODES)
        if not is_engine(engine):
            check_choice("engine", engine, ENGINE_CHOICES)
        check_nonnegative_int("extra_dim", extra_dim)
        check_bool("modulation", modulation)
        check_bool("layernorm", layernorm)
        check_bool("input_layer", input_layer)
        check_bool("batch_first", batch_first)
        check_finite("inner_lr", inner_lr)
        check_nonnegative("inner_decay", inner_decay)
        check_positive("init_scale", init_scale)
        check_positive("cell_init_scale", cell_init_scale, allow_none=True)
        check_positive("inner_clip", inner_clip)
        check_positive("inner_loss_scale", inner_loss_scale)
        check_positive("weight_clip", weight_clip, allow_none=True)
        check_positive_int("chunk_size", chunk_size, allow_none=True)
        check_positive_int("engine_threads", engine_threads, allow_none=True)

        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.cell_type, self.rule = cell, rule
        self.extra_dim, self.modulation = extra_dim, bool(modulation)
        self.inner_lr_mode = inner_lr_mode
        self.inner_lr, self.inner_decay, self.inner_clip = float(inner_lr), float(inner_decay), float(inner_clip)
        self.inner_loss_scale = float(inner_loss_scale)
        self.weight_clip = None if weight_clip is None else float(weight_clip)
        self.batch_first = batch_first

        plastic = rule != "none"
        kw = dict(plastic=plastic, plastic_bias=rule == "gradient", inner_lr_mode=inner_lr_mode)
        # the extra and modulation units only matter to a plastic rule
        self.full_output_size = output_size + (extra_dim + self.modulation if plastic else 0)
        self.in_fc = PlasticLinear(input_size, hidden_size, init_scale=init_scale, **kw) if input_layer else None
        cell_input = hidden_size if input_layer else input_size
        self.cell = CELL_CLASSES[cell](cell_input, hidden_size, init_scale=cell_init_scale, **kw)
        self.layernorm = nn.LayerNorm(hidden_size) if layernorm else None
        self.out_fc = PlasticLinear(hidden_size, self.full_output_size, init_scale=init_scale, **kw)
        self.omega = nn.Parameter(torch.ones(self.full_output_size)) if rule == "gradient" else None
        self.engine_options = dict(chunk_size=chunk_size, engine_threads=engine_threads)
        self.engine_choice = engine
        self._set_engine(resolve_engine(engine, self.out_fc.weight.device.type) if isinstance(engine, str)
                         else engine)

    def _set_engine(self, engine) -> None:
        """Use ``engine`` (a registry name or an engine object); ``net.engine`` names it."""
        self._engine = get_engine(engine, **self.engine_options) if isinstance(engine, str) else engine
        self.engine = self._engine.name

    def _use_engine_for(self, x: Tensor) -> None:
        """With ``engine="auto"``, switch to the engine for ``x``'s device (``net.engine`` names it)."""
        if self.engine_choice == "auto":
            name = resolve_engine("auto", x.device.type)
            if name != self.engine:
                self._set_engine(name)
        devices = getattr(self._engine, "devices", None)
        if devices is not None and x.device.type not in devices:
            raise ValueError(f"the {self.engine} engine runs on {', '.join(devices)} only, got inputs on "
                             f"{x.device}; use engine='fast' or 'reference' (or 'auto') on other devices")

    def spec(self) -> NetSpec:
        """The network as an engine receives it: parameters as tensors, configuration as values."""
        ln = self.layernorm
        layers = {k: LayerParams(m.weight, m.bias, m.lr_weight, m.lr_bias, m.plastic_bias)
                  for k, m in self.plastic_layers().items()}
        return NetSpec(self.cell_type, self.rule, self.hidden_size, self.output_size, self.modulation,
                       self.inner_lr, self.inner_decay, self.inner_clip, self.inner_loss_scale, self.weight_clip,
                       layers, self.omega, None if ln is None else ln.weight, None if ln is None else ln.bias,
                       None if ln is None else ln.eps)

    # ------------------------------------------------------------------ state
    def plastic_layers(self) -> Dict[str, PlasticLinear]:
        """The plastic layers in order: ``in_fc`` (if any), ``h_fc, i_fc, out_fc``."""
        layers = {"in_fc": self.in_fc} if self.in_fc is not None else {}
        layers.update(h_fc=self.cell.h_fc, i_fc=self.cell.i_fc, out_fc=self.out_fc)
        return layers

    def initial_state(self, batch_size: int, device=None, dtype=None) -> PlasticState:
        """State at the start of an episode: zero hidden state, zero fast weights."""
        check_positive_int("batch_size", batch_size)
        device = device or self.out_fc.weight.device
        dtype = dtype or self.out_fc.weight.dtype
        h = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        c = torch.zeros_like(h) if self.cell_type == "lstm" else None
        fast = None
        if self.rule != "none":
            fast = self._engine.zero_fast(self.spec(), batch_size, device, dtype)  # in the engine's own form
        return PlasticState(h, c, fast)

    @staticmethod
    def make_state(h, c, fast) -> PlasticState:
        """``PlasticState(h, c, fast)``."""
        return PlasticState(h, c, fast)

    def fast_weights(self, state: PlasticState) -> Optional[Dict[str, FastWeights]]:
        """The fast weights of ``state`` as ``{layer: FastWeights((B, in, out), (B, out))}``."""
        if state.fast is None:
            return None
        return self._engine.fast_weights(self.spec(), state.fast, state.h)

    # ------------------------------------------------------------------ running
    def step(self, u_t: Tensor, state: Optional[PlasticState] = None):
        """One step: ``u_t (B, I)`` → ``(y_t (B, O), new state)``."""
        self._refuse_trace()
        if u_t.dim() != 2 or u_t.shape[-1] != self.input_size:
            raise ValueError(f"u_t must have shape (B, {self.input_size}), got {tuple(u_t.shape)}")
        self._use_engine_for(u_t)
        spec = self.spec()
        state = self._check_state(spec, state, u_t)
        res = self._run("step", spec, u_t, state, False)
        return res.out, PlasticState(res.h, res.c, res.fast)

    def forward(self, inputs: Tensor, state: Optional[PlasticState] = None, return_trace: bool = False):
        """Run a sequence: ``inputs (B, T, I)`` → ``(outputs (B, T, O), final state)``.

        With ``return_trace=True`` also returns ``{"modulation", "clip_scale",
        "fast_norm"}``, each ``(B, T)``: the modulation ``m_t``, the clip scale
        ``s_t`` and the norm of all fast weights after each step's update.
        """
        self._refuse_trace()
        if inputs.dim() != 3 or inputs.shape[-1] != self.input_size:
            order = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(f"inputs must have shape {order} with I = {self.input_size}, "
                             f"got {tuple(inputs.shape)}")
        if inputs.shape[1 if self.batch_first else 0] == 0:
            raise ValueError(f"inputs must hold at least one step, got T = 0 (shape {tuple(inputs.shape)})")
        if not self.batch_first:
            inputs = inputs.transpose(0, 1)
        self._use_engine_for(inputs)
        spec = self.spec()
        state = self._check_state(spec, state, inputs[:, 0])
        res = self._run("episode", spec, inputs, state, return_trace)
        out = res.out if self.batch_first else res.out.transpose(0, 1)
        state = PlasticState(res.h, res.c, res.fast)
        if return_trace:
            return out, state, res.trace or {}
        return out, state

    def _run(self, what: str, spec: NetSpec, u: Tensor, state: PlasticState, trace: bool):
        """The engine's ``episode`` or ``step`` (rule ``none``: the plain network, stepped here)."""
        if self.rule == "none":
            if what == "step":
                return plain_step(spec, u, state.h, state.c)
            h, c, outs = state.h, state.c, []
            for t in range(u.shape[1]):
                res = plain_step(spec, u[:, t], h, c)
                h, c = res.h, res.c
                outs.append(res.out)
            return res._replace(out=torch.stack(outs, dim=1))
        fn = getattr(self._engine, what)
        if getattr(self._engine, "compilable", True):
            return fn(spec, u, state.h, state.c, state.fast, trace)
        return _opaque(fn, spec, u, state.h, state.c, state.fast, trace)

    def _check_state(self, spec: NetSpec, state, u):
        """The state to start from (zeros when ``None``), after checking it and ``u`` fit this model.

        Inputs are not cast to the model's dtype: a silent cast would hide a float64 model fed float32
        data (or the reverse) and copy every input, so a mismatch is refused with what to do. Every field
        of the state is checked (:func:`~plasticnet.engine.base.check_state`) before an engine sees it.
        """
        self._check_func_transform(u)
        dtype = self.out_fc.weight.dtype
        if u.dtype != dtype:
            raise TypeError(f"input dtype {u.dtype} does not match the model's parameters ({dtype}); "
                            f"cast the input (inputs.to({dtype})) or the model (net.to({u.dtype}))")
        if state is None:
            return self.initial_state(u.shape[0], u.device, u.dtype)
        if not isinstance(state, tuple) or len(state) != 3:
            raise ValueError(f"state must be a PlasticState(h, c, fast), got {type(state).__name__}")
        state = PlasticState(*state)
        if isinstance(state.h, Tensor) and state.h.dtype != dtype:
            raise TypeError(f"state.h dtype {state.h.dtype} does not match the model's parameters ({dtype}); "
                            f"start from net.initial_state(batch_size) or cast the state")
        check_state(spec, state.h, state.c, state.fast, u)
        return state

    def _check_func_transform(self, u: Tensor) -> None:
        """Refuse, naming the engines that can, a ``torch.func`` transform this engine and rule cannot run under."""
        if self.rule in FUNC_TRANSFORM_RULES.get(self.engine, ()):
            return
        if _func_wrapped(u) or _func_wrapped(self.out_fc.weight):
            able = [e for e, r in FUNC_TRANSFORM_RULES.items() if self.rule in r]
            raise RuntimeError(
                f"torch.func transforms (vmap, grad, ...) do not work with engine={self.engine!r} and "
                f"rule={self.rule!r}" + {"reference": " (its gradient rule calls torch.autograd.grad)",
                                         "kernel": " (its compiled loop is opaque to torch.func)"}.get(self.engine, "")
                + f"; engines that support them for this rule: {', '.join(map(repr, able))}")

    def extra_repr(self) -> str:
        return (f"cell={self.cell_type!r}, rule={self.rule!r}, engine={self.engine!r}, "
                f"modulation={self.modulation}, extra_dim={self.extra_dim}")


# PlasticRNN arguments a task fixes itself (sizes, cell, rule, layout)
_FIXED_ARGS = {"input_size", "hidden_size", "output_size", "cell", "rule", "input_layer", "batch_first"}


def plastic_rnn_defaults() -> Dict[str, Any]:
    """``{"hidden_size": None, <every keyword option of PlasticRNN>: default}``.

    ``hidden_size=None`` means the size matching of SPEC §1
    (:func:`matched_hidden_size`). Read from the signature, so a
    new network option (an engine's, say) is reachable by ``--set`` at once.
    """
    params = inspect.signature(PlasticRNN.__init__).parameters
    defaults = {"hidden_size": None}
    defaults.update({k: p.default for k, p in params.items()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY and k not in _FIXED_ARGS})
    return defaults


def plastic_rnn_types() -> Dict[str, Any]:
    """Type hints of the options of :func:`plastic_rnn_defaults` (for ``--set`` checks)."""
    hints = typing.get_type_hints(PlasticRNN.__init__)
    types = {k: hints[k] for k in plastic_rnn_defaults() if k in hints}
    types["hidden_size"] = Optional[int]
    types["engine"] = str  # an engine object is for Python callers, not for configuration files
    return types
