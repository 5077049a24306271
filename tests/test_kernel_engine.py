"""The kernel engine computes the reference engine's numbers.

Outputs, final fast weights, the trace and the outer gradient of every
parameter (and of the input and the initial state), for every rule × cell ×
option at T ∈ {1, 20, 70}: float64 to ``1e-10``, float32 within
``FLOAT32_TOL``. Also: gradcheck on tiny sizes, batch independence,
thread-count independence, the checkpoint interval that keeps the undone
fast weights exact, and the state semantics shared with the other engines.
"""

import math

import pytest
import torch
from torch.func import functional_call

from plasticnet import PlasticRNN
from plasticnet.engine import kernel, resolve_engine
from plasticnet.engine.kernel import MAX_AMPLIFICATION, checkpoint_interval
from test_fast_engine import FLOAT32_TOL, GRID, TOL64, assert_same, inputs_for, make_pair, run

pytestmark = pytest.mark.skipif(not kernel.available(), reason="numba is not installed")


def pair(rule, cell, dtype=torch.float64, **kw):
    return make_pair(rule, cell, None, dtype=dtype, engine="kernel", **kw)


@pytest.mark.parametrize("rule,cell,opts", GRID)
@pytest.mark.parametrize("T", [1, 20])
def test_kernel_equals_reference_float64(rule, cell, opts, T):
    ref, ker = pair(rule, cell, **opts)
    inputs = inputs_for(ref, 3, T)
    a, b = run(ref, inputs), run(ker, inputs)
    assert_same(a, b, TOL64)
    if "inner_clip" in opts:  # the clip really acts
        assert (a[2]["clip_scale"] < 0.5).all()


@pytest.mark.parametrize("rule,cell,opts", GRID)
def test_kernel_equals_reference_several_samples_per_group(rule, cell, opts):
    """B = 37: each of the backward's 16 groups holds 2 or 3 samples, whose Λ adjoints it sums in turn
    (at the other tests' B ≤ 16 a group holds one); every number is still the reference's."""
    ref, ker = pair(rule, cell, **opts)
    inputs = inputs_for(ref, 37, 20)
    assert_same(run(ref, inputs), run(ker, inputs), TOL64)


@pytest.mark.parametrize("rule,cell", [("hebbian", "rnn"), ("hebbian", "lstm"), ("gradient", "rnn"),
                                       ("gradient", "lstm")])
def test_several_samples_per_group_without_fast_weight_adjoints(rule, cell):
    """The same with a loss on the outputs only: each sample's dF then lives in the backward's scratch."""
    ref, ker = pair(rule, cell)
    inputs = inputs_for(ref, 37, 20)
    grads = []
    for net in (ref, ker):
        out, _ = net(inputs)
        params = dict(net.named_parameters())
        grads.append(torch.autograd.grad(out.square().sum(), list(params.values())))
    for name, a, b in zip(dict(ref.named_parameters()), *grads):
        torch.testing.assert_close(b, a, **TOL64, msg=name)


@pytest.mark.parametrize("rule,cell,opts", [
    ("hebbian", "rnn", {}), ("hebbian", "lstm", {"layernorm": True}), ("gradient", "rnn", {"layernorm": True}),
    ("gradient", "lstm", {}), ("gradient", "lstm", {"weight_clip": 0.05, "inner_lr_mode": "uniform"}),
    ("hebbian", "lstm", {"inner_decay": 0.6, "inner_lr": 0.5}),
])
def test_kernel_equals_reference_long_episode(rule, cell, opts):
    """T = 70, the longest paper task: the undone fast weights stay exact over many steps."""
    ref, ker = pair(rule, cell, **opts)
    inputs = inputs_for(ref, 2, 70)
    assert_same(run(ref, inputs), run(ker, inputs), TOL64)


@pytest.mark.parametrize("rule,cell", [("hebbian", "rnn"), ("hebbian", "lstm"), ("gradient", "rnn"),
                                       ("gradient", "lstm")])
@pytest.mark.parametrize("T", [20, 70])
def test_kernel_equals_reference_float32(rule, cell, T):
    ref, ker = pair(rule, cell, dtype=torch.float32)
    inputs = inputs_for(ref, 4, T, dtype=torch.float32)
    assert_same(run(ref, inputs), run(ker, inputs), FLOAT32_TOL)


@pytest.mark.parametrize("decay", [0.45, 0.499, 0.5])
def test_strong_decay_near_one(decay):
    """``p_wd·m`` close to 1: undoing would divide by ~0, so F is checkpointed (every step at 0.5)."""
    ref, ker = pair("gradient", "lstm", inner_decay=decay, inner_lr=0.5)
    inputs = inputs_for(ref, 2, 70)
    assert_same(run(ref, inputs), run(ker, inputs), TOL64)


def test_checkpoint_interval_bounds_the_amplification():
    for dtype, amp in MAX_AMPLIFICATION.items():
        for decay in (0.0, 0.1, 0.3, 0.45):
            K = checkpoint_interval(decay, True, None, 1000, dtype)
            kmin = 1 - 2 * decay
            assert kmin ** -K <= amp * (1 + 1e-12)
            if decay > 0:
                assert kmin ** -(K + 1) > amp  # the largest such interval
        assert checkpoint_interval(0.1, False, None, 1000, dtype) == int(math.log(amp) / -math.log(0.9))
    assert checkpoint_interval(0.0, True, None, 70, torch.float32) == 70  # nothing decays: never
    assert checkpoint_interval(0.5, True, None, 70, torch.float64) == 1  # keep reaches 0
    assert checkpoint_interval(0.7, False, None, 70, torch.float64) > 1  # keep = 0.3 only
    assert checkpoint_interval(0.1, True, 0.05, 70, torch.float64) == 1  # a clamp cannot be undone


def test_input_and_initial_state_gradients():
    """Gradients reach the inputs and a non-zero initial state (h, c, fast weights) as in the reference."""
    ref, ker = pair("gradient", "lstm", layernorm=True)
    inputs = inputs_for(ref, 2, 9)
    _, st = ref(inputs[:, :4])
    grads = []
    for net in (ref, ker):
        u = inputs[:, 4:].clone().requires_grad_()
        h, c = st.h.detach().clone().requires_grad_(), st.c.detach().clone().requires_grad_()
        fast = {k: type(fw)(fw.w.detach().clone().requires_grad_(), fw.b.detach().clone().requires_grad_())
                for k, fw in st.fast.items()}
        out, end = net(u, net.make_state(h, c, fast))
        loss = out.square().sum() + end.c.sum() + sum((fw.w * 0.3).cos().sum() for fw in end.fast.values())
        leaves = [u, h, c] + [t for fw in fast.values() for t in fw]
        grads.append(torch.autograd.grad(loss, leaves))
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, **TOL64)


@pytest.mark.parametrize("rule,weight_clip", [("hebbian", None), ("gradient", None), ("gradient", 0.05)])
def test_which_fast_weight_adjoints_are_kept(rule, weight_clip):
    """The backward keeps per-sample dF in a scratch unless dF_0 is wanted, and never stores a zero F_0.

    Two cases against the reference, parameter gradients in float64, each also under ``weight_clip``
    (a checkpoint every step but a zero first one, which is restored as zeros):
    (a) zero F_0, loss through the final fast weights (the adjoint of F_T is given, dF_0 kept);
    (b) a non-zero F_0 that needs no gradient, loss on the outputs only (dF in a scratch, F_0 checkpointed).
    """
    ref, ker = pair(rule, "rnn", weight_clip=weight_clip)
    inputs = inputs_for(ref, 3, 7)
    _, st = ref(inputs[:, :3])
    fast0 = {k: type(fw)(*(None if x is None else x.detach() for x in fw)) for k, fw in st.fast.items()}
    for case in ("a", "b"):
        grads = []
        for net in (ref, ker):
            state = None if case == "a" else net.make_state(st.h.detach(), None, fast0)
            out, end = net(inputs[:, 3:], state)
            loss = out.square().sum()
            if case == "a":
                loss = loss + sum((fw.w * 0.7).sin().sum() for fw in end.fast.values())
            grads.append(torch.autograd.grad(loss, list(net.parameters())))
        for a, b in zip(*grads):
            torch.testing.assert_close(b, a, **TOL64)


@pytest.mark.parametrize("rule,cell,opts", [
    ("hebbian", "rnn", {}), ("gradient", "lstm", {}), ("gradient", "rnn", {"layernorm": True}),
    ("gradient", "lstm", {"inner_lr_mode": "none"}), ("hebbian", "lstm", {"input_layer": False}),
    ("gradient", "rnn", {"inner_decay": 0.6, "inner_lr": 0.5}),
])
def test_gradcheck_kernel_engine(rule, cell, opts):
    torch.manual_seed(0)
    net = PlasticRNN(3, 3, 2, rule=rule, cell=cell, inner_loss_scale=0.5, engine="kernel", **opts).double()
    names = [n for n, _ in net.named_parameters()]
    inputs = inputs_for(net, 2, 5).requires_grad_()

    def f(u, *params):
        return functional_call(net, dict(zip(names, params)), (u,))[0]

    assert torch.autograd.gradcheck(f, (inputs, *[p.detach().clone().requires_grad_() for p in net.parameters()]))


def test_batch_independence_and_thread_count():
    """A sample's numbers do not depend on its batch, nor on the number of threads (bit for bit)."""
    results = []
    for threads in (1, 2):
        torch.manual_seed(0)
        net = PlasticRNN(5, 8, 2, rule="gradient", cell="lstm", engine="kernel", engine_threads=threads)
        inputs = inputs_for(net, 6, 12, dtype=torch.float32)
        out, _ = net(inputs)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in net.parameters()]))
        alone, _ = net(inputs[2:3])
        torch.testing.assert_close(alone, out[2:3].detach(), atol=1e-6, rtol=1e-6)
        # B = 37: several samples in each of the backward's groups, the groups split across the threads
        big = inputs_for(net, 37, 12, dtype=torch.float32, seed=2)
        out37, _ = net(big)
        net.zero_grad()
        out37.square().sum().backward()
        results.append((out37.detach(), [p.grad.clone() for p in net.parameters()]))
        net.zero_grad()
    for (out1, g1), (out2, g2) in zip(results[:2], results[2:]):
        assert torch.equal(out1, out2)
        assert all(torch.equal(a, b) for a, b in zip(g1, g2))


def test_same_seed_same_numbers():
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        net = PlasticRNN(4, 6, 1, rule="hebbian", cell="rnn", engine="kernel")
        out, _ = net(torch.rand(3, 10, 4))
        out.sum().backward()
        outs.append((out.detach(), net.out_fc.weight.grad.clone()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("rule", ("hebbian", "gradient"))
def test_state_semantics(rule):
    """step() = forward(); an episode continues from a state; the state is materialised."""
    ref, ker = pair(rule, "lstm")
    inputs = inputs_for(ref, 2, 7)
    out, state = ker(inputs)
    st, outs = None, []
    for t in range(inputs.shape[1]):
        y, st = ker.step(inputs[:, t], st)
        outs.append(y)
    torch.testing.assert_close(torch.stack(outs, 1), out, **TOL64)
    _, st_ker = ker(inputs[:, :5])
    _, st_ref = ref(inputs[:, :5])
    out2, _ = ker(inputs[:, 5:], st_ref)
    torch.testing.assert_close(out2, out[:, 5:], **TOL64)
    for k, fw in ker.fast_weights(st_ker).items():
        torch.testing.assert_close(fw.w, st_ref.fast[k].w, **TOL64)
    with torch.no_grad():
        out3, st3 = ker(inputs)
    assert not out3.requires_grad and not st3.fast["h_fc"].w.requires_grad


def test_auto_picks_the_kernel_on_the_cpu():
    net = PlasticRNN(3, 4, 1)
    assert net.engine_choice == "auto" and net.engine == "kernel"
    assert resolve_engine("auto", "cuda") == "fast"
    assert resolve_engine("reference", "cpu") == "reference"


def test_fallback_without_numba(monkeypatch):
    """Where the kernel cannot load, ``auto`` warns once and trains with the fast engine; ``kernel`` says why."""
    import plasticnet.engine as engines

    monkeypatch.setattr(kernel, "kernel_ops", None)
    monkeypatch.setattr(kernel, "IMPORT_ERROR", "No module named 'numba'")
    monkeypatch.setattr(engines, "_warned", [])
    with pytest.warns(UserWarning, match="kernel engine is unavailable"):
        net = PlasticRNN(3, 4, 1, rule="hebbian")
    assert net.engine == "fast"
    out, _ = net(torch.rand(2, 5, 3))
    out.sum().backward()
    with pytest.raises(RuntimeError, match=r"needs numba .*plasticnet\[kernel\]"):
        PlasticRNN(3, 4, 1, engine="kernel")


def test_kernel_rejects_what_it_cannot_run():
    net = PlasticRNN(3, 4, 1, rule="hebbian", engine="kernel")
    with pytest.raises(ValueError, match="float32 or float64"):
        net.to(torch.bfloat16)(torch.rand(2, 5, 3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="engine_threads must be a positive integer or null, got 0"):
        PlasticRNN(3, 4, 1, engine="kernel", engine_threads=0)
    none = PlasticRNN(3, 4, 1, rule="none", engine="kernel")  # the plain network, no fast weights
    out, st = none(torch.rand(2, 5, 3))
    assert out.shape == (2, 5, 1) and st.fast is None
