"""Hebbian-trace networks (plasticnet.hebbian_trace): equations, shapes, gradients."""

import pytest
import torch

from plasticnet.hebbian_trace import (
    RULES,
    TRACE_RULES,
    RecurrentTraceNet,
    RecurrentTraceState,
    TraceLinear,
    TraceState,
    TwoLayerTraceNet,
    plastic_read,
    trace_update,
)


def _outer(x, y):
    return x.unsqueeze(2) * y.unsqueeze(1)


# ------------------------------------------------------------------ the rules
@pytest.mark.parametrize("rule", TRACE_RULES)
def test_trace_update_equations(rule):
    g = torch.Generator().manual_seed(0)
    B, n_in, n_out = 2, 3, 4
    hebb, elig = torch.randn(B, n_in, n_out, generator=g), torch.randn(B, n_in, n_out, generator=g)
    x, y, m = torch.randn(B, n_in, generator=g), torch.randn(B, n_out, generator=g), torch.randn(B, n_out, generator=g)
    rate = 0.3
    new_h, new_e = trace_update(rule, hebb, elig, x, y, rate, m, clip=None)
    if rule in ("trace", "trace-learned"):
        want = 0.7 * hebb + 0.3 * _outer(x, y)
    elif rule == "oja":  # Hebb_ki += η y_i (x_k − y_i Hebb_ki)
        want = torch.empty_like(hebb)
        for b in range(B):
            for k in range(n_in):
                for i in range(n_out):
                    want[b, k, i] = hebb[b, k, i] + rate * y[b, i] * (x[b, k] - y[b, i] * hebb[b, k, i])
    elif rule == "neuromod":  # one M per post-synaptic neuron
        want = hebb + m.unsqueeze(1) * _outer(x, y)
    else:  # retroactive: Hebb uses the eligibility trace *before* this step's product
        want = hebb + m.unsqueeze(1) * elig
        torch.testing.assert_close(new_e, 0.7 * elig + 0.3 * _outer(x, y))
    torch.testing.assert_close(new_h, want)
    clipped, _ = trace_update(rule, hebb, elig, x, y, rate, m, clip=0.5)
    torch.testing.assert_close(clipped, want.clamp(-0.5, 0.5))



def test_plastic_read_value_and_gradients():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    alpha = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    hebb = torch.randn(3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(plastic_read(x, alpha, hebb), torch.einsum("bk,kj,bkj->bj", x, alpha, hebb))
    assert torch.autograd.gradcheck(plastic_read, (x, alpha, hebb))

def test_trace_update_unknown_rule():
    z = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="'hebbian'.*allowed"):
        trace_update("hebbian", z, None, torch.zeros(1, 2), torch.zeros(1, 2), 0.1)


def test_output_uses_previous_trace_then_updates():
    """y_1 sees a zero trace; Hebb_1 = γ x_1⊗y_1; y_2 uses Hebb_1 (published order)."""
    torch.manual_seed(0)
    layer = TraceLinear(3, 2, rule="trace", gamma=0.3)
    x = torch.randn(4, 2, 3)
    out, state = layer(x)
    W, a, b = layer.weight, layer.alpha, layer.bias
    y1 = torch.tanh(x[:, 0] @ W + b)
    h1 = 0.3 * _outer(x[:, 0], y1)
    y2 = torch.tanh(x[:, 1] @ W + torch.einsum("bk,bki->bi", x[:, 1], a * h1) + b)
    torch.testing.assert_close(out[:, 0], y1)
    torch.testing.assert_close(out[:, 1], y2)
    torch.testing.assert_close(state.hebb, 0.7 * h1 + 0.3 * _outer(x[:, 1], y2))


# ------------------------------------------------------------ the networks
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("net", ["layer", "two-layer", "recurrent"])
def test_shapes_state_and_backward(rule, net):
    torch.manual_seed(0)
    B, T = 3, 5
    if net == "layer":
        model, n_in, n_out = TraceLinear(4, 6, rule=rule), 4, 6
    elif net == "two-layer":
        model, n_in, n_out = TwoLayerTraceNet(4, 3, 2, rule=rule), 4, 2
    else:
        model, n_in, n_out = RecurrentTraceNet(5, rule=rule), 5, 5
    x = torch.randn(B, T, n_in)
    out, state = model(x)
    assert out.shape == (B, T, n_out)
    assert isinstance(state, RecurrentTraceState if net == "recurrent" else TraceState)
    if rule == "none":
        assert state.hebb is None
    else:
        hidden = {"layer": (4, 6), "two-layer": (4, 3), "recurrent": (5, 5)}[net]
        assert state.hebb.shape == (B, *hidden)
        assert (state.elig is not None) == (rule == "neuromod-retro")
    # running in two halves with the explicit state gives the same outputs
    out1, s1 = model(x[:, :2])
    out2, s2 = model(x[:, 2:], s1)
    torch.testing.assert_close(torch.cat([out1, out2], 1), out)
    out.square().sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads.values()), grads.keys()
    # nothing is stored on the module between calls
    assert not [k for k, v in vars(model).items() if isinstance(v, torch.Tensor)]


@pytest.mark.parametrize("rule", ["trace-learned", "oja", "neuromod-retro"])
def test_trained_rate_gets_gradient(rule):
    torch.manual_seed(0)
    layer = TraceLinear(3, 3, rule=rule)
    out, _ = layer(torch.randn(2, 4, 3))
    out.sum().backward()
    assert layer.rate.grad is not None and layer.rate.grad.abs() > 0


def test_neuromod_uses_network_modulation():
    """With a zero modulator output the neuromodulated trace never changes."""
    torch.manual_seed(0)
    layer = TraceLinear(3, 3, rule="neuromod")
    with torch.no_grad():
        layer.fanout.weight.zero_()
        layer.fanout.bias.zero_()
    _, state = layer(torch.randn(2, 4, 3))
    assert state.hebb.abs().max() == 0
    assert layer.clip == 2.0


def test_nonneg_alpha_constraint():
    torch.manual_seed(0)
    layer = TraceLinear(4, 2, alpha_constraint="nonneg")
    assert (layer.alpha < 0).any()
    assert (layer.effective_alpha() >= 0).all()
    torch.testing.assert_close(layer.effective_alpha(), layer.alpha.abs())


def test_recurrent_no_plastic_self_connections():
    torch.manual_seed(0)
    net = RecurrentTraceNet(4, rule="trace")
    out, _ = net(torch.randn(2, 6, 4))
    out.sum().backward()
    assert torch.diagonal(net.layer.alpha.grad).abs().max() == 0
    assert torch.diagonal(net.layer.effective_alpha()).abs().max() == 0
    assert net.layer.alpha.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(rule="hebbian"), "rule 'hebbian'"),
    (dict(alpha_constraint="positive"), "alpha_constraint 'positive'"),
    (dict(gamma=1.5), "gamma must be in"),
    (dict(clip=-1.0), "clip must be"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TraceLinear(3, 3, **kwargs)


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"\(B, T, 3\)"):
        TraceLinear(3, 3)(torch.zeros(2, 3))



# ------------------------------------- recurrent net: factored trace form
def _twin_recurrent(rule, plastic_self, bias=True, size=6):
    torch.manual_seed(0)
    kw = dict(rule=rule, gamma=0.3, init_std=0.5, plastic_self=plastic_self, bias=bias)
    explicit = RecurrentTraceNet(size, trace_form="explicit", **kw).double()
    factored = RecurrentTraceNet(size, trace_form="factored", **kw).double()
    factored.load_state_dict(explicit.state_dict())
    return explicit, factored


@pytest.mark.parametrize("rule", ["trace", "trace-learned"])
@pytest.mark.parametrize("plastic_self, bias", [(False, True), (True, False)])
def test_factored_trace_form_matches_explicit(rule, plastic_self, bias):
    """Outputs, final trace, a continued episode and every gradient agree (float64)."""
    explicit, factored = _twin_recurrent(rule, plastic_self, bias)
    x = torch.randn(3, 7, 6, dtype=torch.float64)
    losses = []
    for net in (explicit, factored):
        out1, s1 = net(x)
        out2, s2 = net(x[:, :4], s1)          # continue from a non-zero trace
        losses.append((out1, s1, out2, s2))
        (out1.square().sum() + out2.sum() + (s2.hebb * s2.hebb.sign().detach()).sum()).backward()
    (a1, sa1, a2, sa2), (b1, sb1, b2, sb2) = losses
    for want, got in [(a1, b1), (sa1.hebb, sb1.hebb), (sa1.h, sb1.h), (a2, b2), (sa2.hebb, sb2.hebb)]:
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert sb1.elig is None and sa1.hebb.abs().sum() > 0
    for (name, p), q in zip(explicit.named_parameters(), factored.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=name)


def _saved_nn_tensors(net, x):
    """Number of tensors autograd saves for backward with trailing shape (N, N) and a batch dim."""
    n, count = x.shape[-1], [0]

    def pack(t):
        if t.dim() == 3 and tuple(t.shape[-2:]) == (n, n):
            count[0] += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = net(x)
    out.sum().backward()
    return count[0]


def test_factored_form_keeps_no_per_step_trace_for_backward():
    explicit, factored = _twin_recurrent("trace-learned", False, size=8)
    x = torch.randn(2, 6, 8, dtype=torch.float64)  # T < N: (B, t, N) never looks like (B, N, N)
    assert _saved_nn_tensors(explicit, x) >= 6      # a (B, N, N) tensor per step at least
    assert _saved_nn_tensors(factored, x) == 0      # only (B, t, N) activity


def test_trace_form_choice():
    assert RecurrentTraceNet(4, rule="trace").factored                  # auto
    assert not RecurrentTraceNet(4, rule="trace", trace_form="explicit").factored
    assert not RecurrentTraceNet(4, rule="oja").factored                 # auto falls back
    assert not RecurrentTraceNet(4, rule="trace", clip=1.0).factored
    with pytest.raises(ValueError, match="trace_form 'factored' needs rule"):
        RecurrentTraceNet(4, rule="neuromod", trace_form="factored")
    with pytest.raises(ValueError, match="trace_form 'fast'.*'explicit'"):
        RecurrentTraceNet(4, rule="trace", trace_form="fast")


# ------------------------------------------------- [M16] recursive gradients
def recursive_gradients(x, W, alpha, b, gamma, C):
    """dL/dW, dL/dα, dL/db of L = Σ_t Σ_i C_ti y_ti by the recursions of [M16].

    With the published order (y_t reads Hebb_{t−1}, then
    Hebb_t = (1−γ) Hebb_{t−1} + γ x_t⊗y_t), i.e. Hebb_{t−1} = Σ_{u<t} c_tu x_u⊗y_u
    with c_tu = γ(1−γ)^{t−1−u}, and ``r_t`` the pre-activation::

      ∂r_ti/∂W_ki = x_tk + Σ_l α_li x_tl Σ_{u<t} c_tu x_ul ∂y_ui/∂W_ki
      ∂r_ti/∂α_ki = x_tk Hebb_{t−1,ki} + Σ_l α_li x_tl Σ_{u<t} c_tu x_ul ∂y_ui/∂α_ki
      ∂r_ti/∂b_i  = 1 + Σ_l α_li x_tl Σ_{u<t} c_tu x_ul ∂y_ui/∂b_i
      ∂y_ti/∂θ    = (1 − y_ti²) ∂r_ti/∂θ

    (a post-synaptic neuron's output depends only on its own column of
    parameters). One sample: ``x (T, n_in)``, ``C (T, n_out)``.
    """
    T, n_in = x.shape
    hebb = torch.zeros_like(W)
    zW, zB = torch.zeros(n_in, *W.shape, dtype=W.dtype), torch.zeros(n_in, *b.shape, dtype=W.dtype)
    xs, dW, dA, dB = [], [], [], []
    gW, gA, gB = torch.zeros_like(W), torch.zeros_like(W), torch.zeros_like(b)
    for t in range(T):
        xt = x[t]
        y = torch.tanh(xt @ (W + alpha * hebb) + b)
        c = [gamma * (1 - gamma) ** (t - 1 - u) for u in range(t)]
        # Σ_u c_tu x_ul ∂y_ui/∂θ_ki, shape (l, k, i)
        sW = sum((c[u] * xs[u][:, None, None] * dW[u][None] for u in range(t)), zW)
        sA = sum((c[u] * xs[u][:, None, None] * dA[u][None] for u in range(t)), zW)
        sB = sum((c[u] * xs[u][:, None] * dB[u][None] for u in range(t)), zB)
        drW = xt[:, None] + torch.einsum("li,l,lki->ki", alpha, xt, sW)
        drA = xt[:, None] * hebb + torch.einsum("li,l,lki->ki", alpha, xt, sA)
        drB = 1 + torch.einsum("li,l,li->i", alpha, xt, sB)
        d = 1 - y ** 2
        dW.append(d * drW)
        dA.append(d * drA)
        dB.append(d * drB)
        xs.append(xt)
        gW += C[t] * dW[-1]
        gA += C[t] * dA[-1]
        gB += C[t] * dB[-1]
        hebb = (1 - gamma) * hebb + gamma * torch.outer(xt, y)
    return gW, gA, gB


@pytest.mark.parametrize("gamma", [0.02, 0.5])
def test_autograd_matches_m16_recursive_gradients(gamma):
    torch.manual_seed(1)
    layer = TraceLinear(3, 2, rule="trace", gamma=gamma, init_std=0.8).double()
    B, T = 3, 6
    x = torch.randn(B, T, 3, dtype=torch.float64)
    C = torch.randn(B, T, 2, dtype=torch.float64)
    out, _ = layer(x)
    (out * C).sum().backward()
    W, a, b = (p.detach() for p in (layer.weight, layer.alpha, layer.bias))
    want = [sum(gs) for gs in zip(*(recursive_gradients(x[s], W, a, b, gamma, C[s]) for s in range(B)))]
    torch.testing.assert_close(layer.weight.grad, want[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.alpha.grad, want[1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.bias.grad, want[2], rtol=1e-10, atol=1e-12)
    # the plastic part matters: the α gradient is not the trivial first term alone
    assert layer.alpha.grad.abs().sum() > 1e-3


def test_readme_example_runs():
    """The README's example of the Hebbian-trace section runs as written."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Hebbian-trace networks (Miconi)", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["y"].shape == (4, 2, 8) and scope["state"].h.shape == (4, 51)


# ---------------------------------------------------------------- bad arguments and states: a ValueError naming them
@pytest.mark.parametrize("kwargs, name", [({"init_std": float("nan")}, "init_std"), ({"init_std": -1.0}, "init_std"),
                                          ({"gamma": float("inf")}, "gamma"), ({"bias": "no"}, "bias")])
def test_bad_layer_arguments_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TraceLinear(4, 3, **kwargs)


def test_empty_sequences_refused():
    for net, size in ((TraceLinear(4, 3), 4), (TwoLayerTraceNet(4, 3, 2), 4), (RecurrentTraceNet(5), 5)):
        with pytest.raises(ValueError, match=r"B, T >= 1"):
            net(torch.zeros(2, 0, size))


@pytest.mark.parametrize("rule", ["trace", "neuromod-retro", "none"])
def test_mismatched_states_name_the_field(rule):
    layer = TraceLinear(4, 3, rule=rule)
    good = layer.initial_state(2)
    x = torch.zeros(2, 5, 4)
    if rule != "none":
        with pytest.raises(ValueError, match=r"state.hebb must have shape \(2, 4, 3\)"):
            layer(x, good._replace(hebb=torch.zeros(2, 3, 4)))
        with pytest.raises(ValueError, match=r"state.hebb must have the model's dtype"):
            layer(x, good._replace(hebb=good.hebb.double()))
    if rule == "neuromod-retro":
        with pytest.raises(ValueError, match="state.elig must be a tensor"):
            layer(x, good._replace(elig=None))
    else:
        with pytest.raises(ValueError, match="state.elig must be None"):
            layer(x, good._replace(elig=torch.zeros(2, 4, 3)))
    rnn = RecurrentTraceNet(5, rule=rule)
    state = rnn.initial_state(2)
    with pytest.raises(ValueError, match=r"state.h must have shape \(2, 5\)"):
        rnn(torch.zeros(2, 3, 5), state._replace(h=torch.zeros(3, 5)))
    with pytest.raises(ValueError, match=r"state.h"):
        rnn(torch.zeros(3, 3, 5), state)
