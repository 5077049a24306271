"""The fast engine computes the reference engine's numbers.

Outputs, final fast weights (materialised) and the outer gradients of every
parameter, for every rule × cell × option, short and long episodes, with the
chunk size small enough that the history is folded several times (chunk
boundaries inside and at the end of the episode). Tolerances: float64
``1e-10`` (absolute, on values of order 1); float32 ``FLOAT32_TOL`` below.
"""

import itertools

import pytest
import torch
from torch.func import functional_call

from plasticnet import PlasticRNN
from plasticnet.engine.factored import factored_read
from plasticnet.engine.fast import FastEngine

TOL64 = dict(atol=1e-10, rtol=0)
FLOAT32_TOL = dict(atol=2e-4, rtol=2e-4)

OPTIONS = [
    {},
    {"modulation": False, "extra_dim": 0},
    {"inner_lr_mode": "uniform"},
    {"inner_lr_mode": "neg_uniform"},
    {"inner_lr_mode": "none"},
    {"layernorm": True},
    {"weight_clip": 0.05},
    {"input_layer": False},
    {"inner_clip": 1e-3},  # the clip is active at every step
    {"inner_decay": 0.6, "inner_lr": 0.5},  # 1 − p_wd·m < 0 for large m: factors of both signs
]
GRID = [(r, c, o) for r, c in itertools.product(("hebbian", "gradient"), ("rnn", "lstm")) for o in OPTIONS]


def make_pair(rule, cell, chunk_size, dtype=torch.float64, seed=0, engine="fast", **kw):
    """The same network twice: reference engine and ``engine`` (the fast one with ``chunk_size``)."""
    nets = []
    for name in ("reference", engine):
        torch.manual_seed(seed)
        nets.append(PlasticRNN(5, 6, 2, rule=rule, cell=cell, inner_loss_scale=0.5, engine=name,
                               chunk_size=chunk_size, **kw).to(dtype))
    return nets


def run(net, inputs):
    """Outputs, materialised final fast weights, trace, and the gradients of an outer loss of all three."""
    out, state, trace = net(inputs, return_trace=True)
    fast = net.fast_weights(state)
    loss = out.square().sum() + state.h.sum()
    if fast is not None:
        loss = loss + sum((fw.w * 0.1).sin().sum() + (0 if fw.b is None else fw.b.sum()) for fw in fast.values())
    params = dict(net.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    return out, fast, trace, grads


def assert_same(a, b, tol):
    out_a, fast_a, trace_a, grads_a = a
    out_b, fast_b, trace_b, grads_b = b
    torch.testing.assert_close(out_b, out_a, **tol)
    assert (fast_a is None) == (fast_b is None)
    for k in fast_a or {}:
        torch.testing.assert_close(fast_b[k].w, fast_a[k].w, **tol, msg=f"fast {k}.w")
        assert (fast_a[k].b is None) == (fast_b[k].b is None)
        if fast_a[k].b is not None:
            torch.testing.assert_close(fast_b[k].b, fast_a[k].b, **tol, msg=f"fast {k}.b")
    for k in trace_a:
        torch.testing.assert_close(trace_b[k], trace_a[k], **tol, msg=f"trace {k}")
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], **tol, msg=f"grad {k}")


def inputs_for(net, B, T, dtype=torch.float64, seed=1):
    return torch.rand(B, T, net.input_size, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("rule,cell,opts", GRID)
@pytest.mark.parametrize("T,chunk", [(3, None), (11, 4)])
def test_fast_equals_reference_float64(rule, cell, opts, T, chunk):
    ref, fast = make_pair(rule, cell, chunk, **opts)
    inputs = inputs_for(ref, 3, T)
    a, b = run(ref, inputs), run(fast, inputs)
    assert_same(a, b, TOL64)
    if "inner_clip" in opts:  # the clip really acts
        assert (a[2]["clip_scale"] < 0.5).all()


@pytest.mark.parametrize("rule,cell", list(itertools.product(("hebbian", "gradient"), ("rnn", "lstm"))))
@pytest.mark.parametrize("T,chunk", [(12, 4), (25, 8), (25, None)])
def test_long_episodes_and_chunk_boundaries(rule, cell, T, chunk):
    ref, fast = make_pair(rule, cell, chunk, layernorm=cell == "lstm")
    inputs = inputs_for(ref, 2, T)
    assert_same(run(ref, inputs), run(fast, inputs), TOL64)


@pytest.mark.parametrize("rule,cell", list(itertools.product(("hebbian", "gradient"), ("rnn", "lstm"))))
def test_fast_equals_reference_float32(rule, cell):
    ref, fast = make_pair(rule, cell, 4, dtype=torch.float32)
    inputs = inputs_for(ref, 4, 10, dtype=torch.float32)
    assert_same(run(ref, inputs), run(fast, inputs), FLOAT32_TOL)


@pytest.mark.parametrize("rule", ("hebbian", "gradient"))
def test_state_semantics(rule):
    """step() = forward(); episodes continue from a state; a materialised state is accepted."""
    ref, fast = make_pair(rule, "lstm", 3)
    inputs = inputs_for(ref, 2, 7)
    out, state = fast(inputs)
    # step by step
    st, outs = None, []
    for t in range(inputs.shape[1]):
        y, st = fast.step(inputs[:, t], st)
        outs.append(y)
    torch.testing.assert_close(torch.stack(outs, 1), out, **TOL64)
    # continuing an episode from a state, against the reference engine
    _, st_fast = fast(inputs[:, :5])
    _, st_ref = ref(inputs[:, :5])
    out2, st2 = fast(inputs[:, 5:], st_fast)
    torch.testing.assert_close(out2, out[:, 5:], **TOL64)
    # the fast engine takes the reference engine's materialised state and vice versa
    out3, st3 = fast(inputs[:, 5:], st_ref)
    out4, st4 = ref(inputs[:, 5:], fast.make_state(st_fast.h, st_fast.c, fast.fast_weights(st_fast)))
    torch.testing.assert_close(out3, out2, **TOL64)
    torch.testing.assert_close(out4, out2, **TOL64)
    for k, fw in fast.fast_weights(st3).items():
        torch.testing.assert_close(fw.w, st4.fast[k].w, **TOL64)
    # an initial state materialises to zeros of the right shapes
    zero = fast.fast_weights(fast.initial_state(2))
    assert zero["h_fc"].w.shape == (2, 6, 24) and not zero["h_fc"].w.any()


@pytest.mark.parametrize("rule", ("hebbian", "gradient"))
def test_evaluation_without_grad(rule):
    ref, fast = make_pair(rule, "rnn", 4)
    inputs = inputs_for(ref, 2, 9)
    with torch.no_grad():
        out_f, st_f = fast(inputs)
        out_r, _ = ref(inputs)
    assert not out_f.requires_grad
    held = [st_f.fast.coef, *st_f.fast.pre.values(), *st_f.fast.post.values(), *st_f.fast.bias.values()]
    assert held and not any(t.requires_grad for t in held)
    torch.testing.assert_close(out_f, out_r, **TOL64)


def test_engine_options_are_checked():
    with pytest.raises(ValueError, match="chunk_size must be a positive integer or null, got 0"):
        FastEngine(0)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer or null, got 0"):
        PlasticRNN(3, 4, 1, engine="fast", chunk_size=0)


@pytest.mark.parametrize("rule,cell,opts", [
    ("hebbian", "rnn", {}), ("gradient", "lstm", {}), ("gradient", "rnn", {"layernorm": True}),
    ("gradient", "lstm", {"inner_lr_mode": "none"}), ("hebbian", "lstm", {"input_layer": False}),
    ("gradient", "rnn", {"weight_clip": 10.0}),  # the materialised fallback (no clamp acts: no kinks)
])
def test_gradcheck_fast_engine(rule, cell, opts):
    torch.manual_seed(0)
    net = PlasticRNN(3, 3, 2, rule=rule, cell=cell, inner_loss_scale=0.5, engine="fast", chunk_size=2,
                     **opts).double()
    names = [n for n, _ in net.named_parameters()]
    inputs = inputs_for(net, 2, 5).requires_grad_()

    def f(u, *params):
        return functional_call(net, dict(zip(names, params)), (u,))[0]

    assert torch.autograd.gradcheck(f, (inputs, *[p.detach().clone().requires_grad_() for p in net.parameters()]))


@pytest.mark.parametrize("with_rates", (True, False))
def test_gradcheck_factored_read(with_rates):
    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    x, coef, P, Q = rnd(2, 3), rnd(2, 4), rnd(2, 4, 3), rnd(2, 4, 5)
    lam = rnd(3, 5) if with_rates else None
    args = (x, coef, lam, P, Q)
    assert torch.autograd.gradcheck(factored_read, args)
    # and it is the sum of rank-one terms it claims to be
    F = torch.einsum("bs,bsi,bsj->bij", coef, P, Q) * (lam if with_rates else 1)
    torch.testing.assert_close(factored_read(*args), torch.einsum("bi,bij->bj", x, F), **TOL64)
