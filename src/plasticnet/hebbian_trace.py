"""Hebbian-trace plastic networks of Miconi et al. (SPEC §3 and §4).

[M16] Miconi, *Learning to learn with backpropagation of Hebbian plasticity*
(arXiv 1609.02228); [M18] Miconi, Clune, Stanley, *Differentiable
plasticity* (ICML 2018); [M19] Miconi et al., *Backpropamine* (ICLR 2019).

Every plastic connection ``k → i`` has a baseline weight ``W_ki``, a
plasticity coefficient ``α_ki`` (trained, may be negative) and a Hebbian
trace ``Hebb_ki`` that is zero at the start of each episode. One step, per
sample, with ``x`` the layer's input and ``y`` its output::

    y_t    = tanh( x_t @ (W + α ⊙ Hebb_{t−1}) + b [+ drive_t] )
    Hebb_t = rule(Hebb_{t−1}, x_t, y_t)

The output reads the trace of the *previous* steps and the trace is updated
after the output (as in the published code of all three papers: the [M16]
gradients sum over ``t_u < t_z``). ``rule`` (:func:`trace_update`):

- ``trace``          ``Hebb ← (1 − γ)·Hebb + γ·x⊗y``, fixed γ   ([M16]; ALPHATRACE = 1 − γ)
- ``trace-learned``  the same with γ trained (a scalar, [M18] ``eta``)
- ``oja``            ``Hebb ← Hebb + η·y·(x − y·Hebb)``, η trained ([M18] Omniglot)
- ``neuromod``       ``Hebb ← clip(Hebb + M_t·x⊗y)``                ([M19] simple)
- ``neuromod-retro`` ``Hebb ← clip(Hebb + M_t·E)``, then
                     ``E ← (1 − η)·E + η·x⊗y``, η trained          ([M19] retroactive)
- ``none``           no plasticity: ``y = tanh(x @ W + b)``.

The modulation is produced by the network from its own output:
``M_t = fanout(tanh(mod_fc(y_t)))``, one value per post-synaptic neuron
(``mod_fc: out → 1``, ``fanout: 1 → out``, as in the [M19] code). Optional
``clip`` clamps the trace to ``[−clip, clip]`` after each update (default:
off for the trace rules, 2 for the neuromodulated ones, as in [M19]).

``alpha_constraint="nonneg"`` uses ``|α|`` in place of ``α`` (the [M16]
reversal ablation: non-negative plasticity coefficients).

Three networks share one layer, :class:`TraceLinear`:

- :class:`TraceLinear` alone: a feed-forward plastic layer (pattern completion);
- :class:`TwoLayerTraceNet`: input → plastic hidden (tanh) → linear logits
  (softmax in the loss); only input→hidden is plastic (one-shot, reversal);
- :class:`RecurrentTraceNet`: a fully recurrent plastic network whose external
  input is added to the neurons' drive ([M18] binary pattern memorisation).

All are batched, keep their state in named tuples and store nothing between
calls: ``forward(inputs (B, T, I), state=None) → (outputs (B, T, O), state)``.

Memory: backpropagating through an episode keeps, per step, one
``(B, in, out)`` tensor (the trace, read by :func:`plastic_read`; two with a
clip); the recurrent net's default ``trace_form="auto"`` keeps none for the
running-average rules (see :class:`RecurrentTraceNet`), which is what makes
the 1,000-neuron memorisation task fit a CPU.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from .checks import check_bool, check_choice, check_positive_int, check_range
from .engine import factored_read

RULES = ("none", "trace", "trace-learned", "oja", "neuromod", "neuromod-retro")  # the family's rules
TRACE_RULES = tuple(r for r in RULES if r != "none")  # the rules with a Hebbian trace
NEUROMOD_RULES = tuple(r for r in RULES if r.startswith("neuromod"))  # gated by the network's modulation
ALPHA_CONSTRAINTS = ("none", "nonneg")
TRACE_FORMS = ("auto", "explicit", "factored")
NEUROMOD_CLIP = 2.0  # [M19] code's clip of the neuromodulated trace


class TraceState(NamedTuple):
    """State of a :class:`TraceLinear` (a pytree).

    hebb: ``(B, in, out)`` Hebbian trace, ``None`` for ``rule="none"``;
    elig: ``(B, in, out)`` eligibility trace of ``neuromod-retro``, else ``None``.
    """

    hebb: Optional[Tensor]
    elig: Optional[Tensor]


class RecurrentTraceState(NamedTuple):
    """State of a :class:`RecurrentTraceNet`: ``h (B, N)`` plus the traces."""

    h: Tensor
    hebb: Optional[Tensor]
    elig: Optional[Tensor]


def trace_update(rule: str, hebb: Tensor, elig: Optional[Tensor], pre: Tensor, post: Tensor,
                 rate=None, m: Optional[Tensor] = None, clip: Optional[float] = None
                 ) -> Tuple[Tensor, Optional[Tensor]]:
    """One step of a trace rule (see the module docstring): ``→ (hebb, elig)``.

    Shapes: ``hebb, elig (B, in, out)``, ``pre (B, in)``, ``post (B, out)``,
    ``m (B, out)`` the modulation (neuromodulated rules), ``rate`` γ or η
    (a float or a 0-d tensor).

    Each rule is written as ``decay ⊙ Hebb + x ⊗ v`` with a per-column
    ``decay`` and ``v (B, out)`` (e.g. Oja: ``decay = 1 − η·y²``, ``v = η·y``),
    one ``baddbmm``, so that autograd keeps only the ``(B, in)``/``(B, out)``
    factors of the outer product, not a ``(B, in, out)`` copy of it.
    """
    x, y = pre.unsqueeze(2), post.unsqueeze(1)  # (B, in, 1), (B, 1, out)
    if rule in ("trace", "trace-learned"):
        hebb = torch.baddbmm(hebb * (1 - rate), x, y * rate)
    elif rule == "oja":  # Hebb + η·y·(x − y·Hebb)
        hebb = torch.baddbmm(hebb * (1 - rate * y * y), x, y * rate)
    elif rule == "neuromod":
        hebb = torch.baddbmm(hebb, x, m.unsqueeze(1) * y)
    elif rule == "neuromod-retro":
        hebb = hebb + m.unsqueeze(1) * elig
        elig = torch.baddbmm(elig * (1 - rate), x, y * rate)
    else:
        check_choice("trace rule", rule, TRACE_RULES)
        raise AssertionError(f"trace rule {rule!r} has no update")  # a rule listed but not implemented
    if clip is not None:
        hebb = hebb.clamp(-clip, clip)
    return hebb, elig


class _PlasticRead(torch.autograd.Function):
    """``x @ (α ⊙ Hebb)`` per sample: ``x (B, in), α (in, out), Hebb (B, in, out) → (B, out)``.

    The same as ``bmm(x, α ⊙ Hebb)``, but the backward pass recomputes
    ``α ⊙ Hebb`` instead of keeping it: one ``(B, in, out)`` tensor less per
    step (``Hebb`` itself is the state, kept anyway).
    """

    @staticmethod
    def forward(ctx, x, alpha, hebb):
        ctx.save_for_backward(x, alpha, hebb)
        return torch.bmm(x.unsqueeze(1), alpha * hebb).squeeze(1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, alpha, hebb = ctx.saved_tensors
        gx = ga = gh = None
        if ctx.needs_input_grad[0]:
            gx = torch.bmm(alpha * hebb, g.unsqueeze(2)).squeeze(2)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            xg = x.unsqueeze(2) * g.unsqueeze(1)  # (B, in, out)
            if ctx.needs_input_grad[1]:
                ga = (xg * hebb).sum(0)
            if ctx.needs_input_grad[2]:
                gh = xg * alpha
        return gx, ga, gh


def plastic_read(x: Tensor, alpha: Tensor, hebb: Tensor) -> Tensor:
    """``Σ_k x_k α_ki Hebb_ki``: ``x (B, in), α (in, out), Hebb (B, in, out) → (B, out)``."""
    return _PlasticRead.apply(x, alpha, hebb)


class TraceLinear(nn.Module):
    """Plastic layer ``y = tanh(x @ (W + α ⊙ Hebb) + b)`` with a Hebbian trace.

    Args:
        in_features, out_features: sizes of ``x`` and ``y``.
        rule: one of :data:`RULES` (``"trace"``).
        gamma: γ of ``trace`` (fixed), initial γ/η of the trained-rate rules (0.02).
        alpha_constraint: ``"none"`` or ``"nonneg"`` (``|α|`` is used).
        clip: clamp the trace to ±clip after each update; ``None`` = the
            rule's default (off, 2 for the neuromodulated rules); ``0`` = off.
        init_std: ``W, α, b ~ N(0, init_std²)`` (0.1 as in [M16]).
        bias: whether the layer has ``b``.
        alpha_mask: optional ``(in, out)`` 0/1 tensor, the connections that
            may be plastic (e.g. no plastic self-connections).

    Shapes: ``step(x (B, in), state) → (y (B, out), state)``;
    ``forward(inputs (B, T, in), state) → (outputs (B, T, out), state)``.
    """

    def __init__(self, in_features: int, out_features: int, *, rule: str = "trace", gamma: float = 0.02,
                 alpha_constraint: str = "none", clip: Optional[float] = None, init_std: float = 0.1,
                 bias: bool = True, alpha_mask: Optional[Tensor] = None):
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        check_choice("rule", rule, RULES)
        check_choice("alpha_constraint", alpha_constraint, ALPHA_CONSTRAINTS)
        check_range("gamma", gamma, 0, 1, low_open=True)
        check_range("clip", clip, low=0, allow_none=True)
        check_range("init_std", init_std, low=0)
        check_bool("bias", bias)
        self.in_features, self.out_features, self.rule = in_features, out_features, rule
        self.alpha_constraint = alpha_constraint
        if clip is None:
            clip = NEUROMOD_CLIP if rule in NEUROMOD_RULES else 0.0
        self.clip = float(clip) if clip else None
        self.weight = nn.Parameter(init_std * torch.randn(in_features, out_features))
        self.bias = nn.Parameter(init_std * torch.randn(out_features)) if bias else None
        plastic = rule != "none"
        self.alpha = nn.Parameter(init_std * torch.randn(in_features, out_features)) if plastic else None
        if alpha_mask is not None:
            if tuple(alpha_mask.shape) != (in_features, out_features):
                raise ValueError(f"alpha_mask must have shape ({in_features}, {out_features}), "
                                 f"got {tuple(alpha_mask.shape)}")
            self.register_buffer("alpha_mask", alpha_mask.to(torch.get_default_dtype()))
        else:
            self.alpha_mask = None
        # γ of "trace" is a constant; the other rate-based rules train it
        self.gamma = float(gamma)
        self.rate = nn.Parameter(torch.tensor(float(gamma))) if rule in ("trace-learned", "oja",
                                                                      "neuromod-retro") else None
        if rule in NEUROMOD_RULES:
            self.mod_fc = nn.Linear(out_features, 1)    # y_t → modulator
            self.fanout = nn.Linear(1, out_features)    # modulator → one M per post neuron
        else:
            self.mod_fc = self.fanout = None

    @property
    def plastic(self) -> bool:
        return self.rule != "none"

    def effective_alpha(self) -> Optional[Tensor]:
        """``α`` as used in the forward pass (``|α|`` under ``nonneg``, masked)."""
        if self.alpha is None:
            return None
        a = self.alpha.abs() if self.alpha_constraint == "nonneg" else self.alpha
        return a if self.alpha_mask is None else a * self.alpha_mask

    def initial_state(self, batch_size: int, device=None, dtype=None) -> TraceState:
        """Zero traces at the start of an episode."""
        check_positive_int("batch_size", batch_size)
        if not self.plastic:
            return TraceState(None, None)
        shape = (batch_size, self.in_features, self.out_features)
        z = torch.zeros(shape, device=device or self.weight.device, dtype=dtype or self.weight.dtype)
        return TraceState(z, torch.zeros_like(z) if self.rule == "neuromod-retro" else None)

    def check_state(self, state, batch_size: int) -> None:
        """Raise ``ValueError`` naming the field of ``state`` (a :class:`TraceState` or a state with
        ``hebb``/``elig``) that does not fit this layer and a batch of ``batch_size``."""
        shape = (batch_size, self.in_features, self.out_features)
        for name in ("hebb", "elig"):
            value = getattr(state, name, None)
            needed = self.plastic and (name == "hebb" or self.rule == "neuromod-retro")
            if not needed:
                if value is not None:
                    raise ValueError(f"state.{name} must be None for rule {self.rule!r}, got a tensor")
                continue
            if not isinstance(value, Tensor):
                raise ValueError(f"state.{name} must be a tensor of shape {shape} for rule {self.rule!r}, "
                                 f"got {type(value).__name__}")
            if tuple(value.shape) != shape:
                raise ValueError(f"state.{name} must have shape {shape}, got {tuple(value.shape)}")
            if value.dtype != self.weight.dtype:
                raise ValueError(f"state.{name} must have the model's dtype {self.weight.dtype}, got {value.dtype}")

    def modulation(self, y: Tensor) -> Tensor:
        """``M_t = fanout(tanh(mod_fc(y_t)))``: ``(B, out) → (B, out)``."""
        return self.fanout(torch.tanh(self.mod_fc(y)))

    def step(self, x: Tensor, state: TraceState, drive: Optional[Tensor] = None,
             alpha: Optional[Tensor] = None) -> Tuple[Tensor, TraceState]:
        """One step: ``x (B, in)`` → ``(y (B, out), state)``; ``drive (B, out)``
        is added before the tanh (a recurrent net's external input)."""
        r = x @ self.weight
        if self.bias is not None:
            r = r + self.bias
        if drive is not None:
            r = r + drive
        if not self.plastic:
            return torch.tanh(r), state
        alpha = self.effective_alpha() if alpha is None else alpha
        r = r + plastic_read(x, alpha, state.hebb)  # x @ (α ⊙ Hebb), per sample
        y = torch.tanh(r)
        rate = self.gamma if self.rate is None else self.rate
        m = self.modulation(y) if self.mod_fc is not None else None
        hebb, elig = trace_update(self.rule, state.hebb, state.elig, x, y, rate, m, self.clip)
        return y, TraceState(hebb, elig)

    def forward(self, inputs: Tensor, state: Optional[TraceState] = None) -> Tuple[Tensor, TraceState]:
        """Run a sequence ``inputs (B, T, in)`` → ``(outputs (B, T, out), final state)``."""
        _check_inputs(inputs, self.in_features)
        if state is None:
            state = self.initial_state(inputs.shape[0], inputs.device, inputs.dtype)
        else:
            self.check_state(state, inputs.shape[0])
        alpha = self.effective_alpha()
        ys = []
        for t in range(inputs.shape[1]):
            y, state = self.step(inputs[:, t], state, alpha=alpha)
            ys.append(y)
        return torch.stack(ys, dim=1), state

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, rule={self.rule!r}, gamma={self.gamma}, "
                f"alpha_constraint={self.alpha_constraint!r}, clip={self.clip}")


class TwoLayerTraceNet(nn.Module):
    """Input → plastic hidden (tanh) → linear output logits ([M16] one-shot, reversal).

    Only the input→hidden connections are plastic (a :class:`TraceLinear`);
    the output layer is an ordinary linear map, softmax is left to the loss.
    Keyword arguments other than the sizes go to the :class:`TraceLinear`.

    Shapes: ``forward(inputs (B, T, I), state) → (logits (B, T, O), TraceState)``.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, **layer_kwargs):
        super().__init__()
        check_positive_int("output_size", output_size)
        self.hidden = TraceLinear(input_size, hidden_size, **layer_kwargs)
        self.out = nn.Linear(hidden_size, output_size)
        std = layer_kwargs.get("init_std", 0.1)
        nn.init.normal_(self.out.weight, std=std)
        nn.init.normal_(self.out.bias, std=std)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> TraceState:
        return self.hidden.initial_state(batch_size, device, dtype)

    def forward(self, inputs: Tensor, state: Optional[TraceState] = None) -> Tuple[Tensor, TraceState]:
        h, state = self.hidden(inputs, state)
        return self.out(h), state


class RecurrentTraceNet(nn.Module):
    """Fully recurrent plastic network ([M18] binary pattern memorisation)::

        h_t = tanh( h_{t−1} @ (W + α ⊙ Hebb_{t−1}) + b + u_t ),   Hebb_t = rule(Hebb_{t−1}, h_{t−1}, h_t)

    The external input ``u_t`` is added to the neurons' drive (no input
    weights), so the input size equals the number of neurons ``size``.

    Args: ``size``, ``plastic_self`` (False: no plastic self-connections, as
    in the [M18] code), ``init_std`` (0.01 as in [M18]), ``trace_form`` (see
    below) and the :class:`TraceLinear` keyword arguments (``rule``,
    ``gamma``, ``clip``, ...).

    ``trace_form``: how the running-average rules (``trace``,
    ``trace-learned``, no clip) are computed; the result is the same.
    ``"explicit"`` keeps the ``(B, N, N)`` trace and updates it each step
    (autograd then stores a few ``(B, N, N)`` tensors per step; memory in
    ``docs/results/miconi.md``). ``"factored"`` never forms the trace: unrolling
    ``Hebb_{t−1} = (1−γ)^t·Hebb_init + Σ_{s<t} γ(1−γ)^{t−1−s} x_s ⊗ y_s``
    (``x_s = h_{s−1}``, ``y_s = h_s``) gives the plastic drive::

        [x_t @ (α ⊙ Hebb_{t−1})]_j = Σ_{s<t} γ(1−γ)^{t−1−s} · y_sj · [(x_t ⊙ x_s) @ α]_j  (+ the Hebb_init term)

    one ``(B·t, N) @ (N, N)`` matmul per step, keeping only ``(B, t, N)``
    tensors for the backward pass; the final trace is formed once at the end
    for the returned state. ``"auto"`` (default): factored where it applies.

    Shapes: ``forward(inputs (B, T, N), state) → (h (B, T, N), RecurrentTraceState)``.
    """

    def __init__(self, size: int, *, plastic_self: bool = False, init_std: float = 0.01,
                 trace_form: str = "auto", **layer_kwargs):
        super().__init__()
        check_positive_int("size", size)
        check_choice("trace_form", trace_form, TRACE_FORMS)
        check_bool("plastic_self", plastic_self)
        self.size = size
        mask = None if plastic_self else 1.0 - torch.eye(size)
        self.layer = TraceLinear(size, size, init_std=init_std, alpha_mask=mask, **layer_kwargs)
        factorable = self.layer.rule in ("trace", "trace-learned") and self.layer.clip is None
        if trace_form == "factored" and not factorable:
            raise ValueError(f"trace_form 'factored' needs rule 'trace' or 'trace-learned' without clip, "
                             f"got rule {self.layer.rule!r}, clip {self.layer.clip!r}; use 'explicit' or 'auto'")
        self.factored = factorable and trace_form != "explicit"

    def initial_state(self, batch_size: int, device=None, dtype=None) -> RecurrentTraceState:
        ts = self.layer.initial_state(batch_size, device, dtype)
        w = self.layer.weight
        h = torch.zeros(batch_size, self.size, device=device or w.device, dtype=dtype or w.dtype)
        return RecurrentTraceState(h, ts.hebb, ts.elig)

    def forward(self, inputs: Tensor, state: Optional[RecurrentTraceState] = None
                ) -> Tuple[Tensor, RecurrentTraceState]:
        _check_inputs(inputs, self.size)
        if state is not None:
            self.layer.check_state(state, inputs.shape[0])
            if not isinstance(state.h, Tensor) or tuple(state.h.shape) != (inputs.shape[0], self.size):
                got = tuple(state.h.shape) if isinstance(state.h, Tensor) else type(state.h).__name__
                raise ValueError(f"state.h must have shape ({inputs.shape[0]}, {self.size}), got {got}")
        if self.factored:
            return self._forward_factored(inputs, state)
        if state is None:
            state = self.initial_state(inputs.shape[0], inputs.device, inputs.dtype)
        h, ts = state.h, TraceState(state.hebb, state.elig)
        alpha = self.layer.effective_alpha()
        hs = []
        for t in range(inputs.shape[1]):
            h, ts = self.layer.step(h, ts, drive=inputs[:, t], alpha=alpha)
            hs.append(h)
        return torch.stack(hs, dim=1), RecurrentTraceState(h, ts.hebb, ts.elig)

    def _forward_factored(self, inputs: Tensor, state: Optional[RecurrentTraceState]
                          ) -> Tuple[Tensor, RecurrentTraceState]:
        """The ``"factored"`` form of :meth:`forward` (see the class docstring)."""
        layer = self.layer
        B, T, N = inputs.shape
        alpha = layer.effective_alpha()
        rate = layer.gamma if layer.rate is None else layer.rate
        keep = 1 - rate
        drive = inputs if layer.bias is None else inputs + layer.bias
        if state is None:  # a fresh episode: zero activity and trace
            h, a_init = inputs.new_zeros(B, N), None
        else:
            h, a_init = state.h, alpha * state.hebb  # (B, N, N), read with weight (1 − γ)^t
        steps = torch.arange(T, device=inputs.device, dtype=inputs.dtype)
        xs, hs = [], []  # pre- (h_{t−1}) and post-synaptic (h_t) activity of the steps so far
        for t in range(T):
            r = h @ layer.weight + drive[:, t]
            if t:  # Σ_s γ(1−γ)^{t−1−s} y_s ⊙ ((x_t ⊙ x_s) @ α): the fast engine's factored read
                pre, post = torch.stack(xs, 1), torch.stack(hs, 1)              # (B, t, N)
                coef = (rate * keep ** steps[:t].flip(0)).expand(B, t)          # γ(1−γ)^{t−1−s}
                r = r + factored_read(h, coef, alpha, pre, post)
            if a_init is not None:
                r = r + keep ** t * torch.bmm(h.unsqueeze(1), a_init).squeeze(1)
            xs.append(h)
            h = torch.tanh(r)
            hs.append(h)
        pre, post = torch.stack(xs, 1), torch.stack(hs, 1)
        coef = rate * keep ** steps.flip(0)
        hebb = torch.bmm((pre * coef.unsqueeze(-1)).transpose(1, 2), post)       # Hebb_T, (B, N, N)
        if state is not None:
            hebb = hebb + keep ** T * state.hebb
        return post, RecurrentTraceState(h, hebb, None)


def _check_inputs(inputs: Tensor, size: int) -> None:
    if inputs.dim() != 3 or inputs.shape[-1] != size or inputs.shape[0] < 1 or inputs.shape[1] < 1:
        raise ValueError(f"inputs must have shape (B, T, {size}) with B, T >= 1, got {tuple(inputs.shape)}")
