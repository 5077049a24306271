"""The rules act as SPEC §1 says: values, not just shapes.

Each test compares one step of the library's network with the plain
per-sample implementation in ``plain_step.py`` (explicit ``W + F`` per
sample, Hebbian outer products written out, the gradient rule by autograd on
a single-sample function).
"""

import itertools

import pytest
import torch

from plain_step import plain_step, random_state
from plasticnet import PlasticRNN, rules
from plasticnet.engine.base import dynamics, hebbian_pre_post

TOL = dict(atol=1e-12, rtol=1e-10)

OPTIONS = [
    {},
    {"modulation": False},
    {"extra_dim": 0},
    {"inner_lr_mode": "uniform"},
    {"inner_lr_mode": "neg_uniform"},
    {"inner_lr_mode": "none"},
    {"layernorm": True},
    {"weight_clip": 0.05},
    {"inner_clip": 1e-3},
    {"inner_decay": 0.3, "inner_lr": 0.5},
    {"input_layer": False},
]


def make(rule, cell, seed=0, **kw):
    """A float64 network with the default engine (``auto``: the kernel engine on the CPU; ``engine=`` to choose)."""
    torch.manual_seed(seed)
    return PlasticRNN(5, 6, 2, rule=rule, cell=cell, inner_loss_scale=0.5, **kw).double()


@pytest.mark.parametrize("rule,cell,opts", [(r, c, o) for r, c in itertools.product(
    ("hebbian", "gradient"), ("rnn", "lstm")) for o in OPTIONS] + [("none", c, {}) for c in ("rnn", "lstm")])
@pytest.mark.parametrize("engine", ["reference", "fast", "kernel"])
def test_step_matches_plain_implementation(rule, cell, opts, engine):
    net = make(rule, cell, engine=engine, **opts)
    B = 3
    state = random_state(net, B)
    in_size = net.input_size
    u = torch.rand(B, in_size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out, new_state = net.step(u, state)
    ref_out, ref_h, ref_c, ref_fast, *_ = plain_step(net, u, state)
    torch.testing.assert_close(out, ref_out, **TOL)
    torch.testing.assert_close(new_state.h, ref_h, **TOL)
    if cell == "lstm":
        torch.testing.assert_close(new_state.c, ref_c, **TOL)
    if rule == "none":
        assert new_state.fast is None
        return
    for n in range(B):
        for k, (w, b) in ref_fast[n].items():
            torch.testing.assert_close(net.fast_weights(new_state)[k].w[n], w, **TOL)
            if b is None:
                assert net.fast_weights(new_state)[k].b is None
            else:
                torch.testing.assert_close(net.fast_weights(new_state)[k].b[n], b, **TOL)


def test_hebbian_term_is_outer_product():
    pre, post = torch.randn(4, 3), torch.randn(4, 5)
    g = rules.hebbian_term(pre, post)
    for n in range(4):
        torch.testing.assert_close(g[n], torch.outer(pre[n], post[n]))


def test_hebbian_pre_post_per_layer():
    """pre/post as SPEC §1 lists them: in_fc relu output, cell h_t / gates, out_fc raw z."""
    for cell in ("rnn", "lstm"):
        net = make("hebbian", cell, layernorm=True)
        state = random_state(net, 2)
        u = torch.rand(2, 5, dtype=torch.float64)
        v = dynamics(net.spec(), u, state.h, state.c, state.fast)
        pp = hebbian_pre_post(net.spec(), u, state.h, v)
        assert torch.equal(pp["in_fc"][0], u) and torch.equal(pp["in_fc"][1], v.x)
        assert (v.x >= 0).all()
        assert torch.equal(pp["h_fc"][0], state.h) and torch.equal(pp["i_fc"][0], v.x)
        post = v.cell.post
        assert post.shape[-1] == (6 if cell == "rnn" else 24)
        if cell == "rnn":  # post is h_t before LayerNorm
            assert torch.equal(post, v.cell.h) and not torch.allclose(post, v.h_next)
        assert torch.equal(pp["out_fc"][0], v.h_next) and torch.equal(pp["out_fc"][1], v.z)


def test_gradient_rule_equals_gradient_of_internal_loss():
    """G of the gradient rule = ∂L/∂F per sample; the update is p_lr·m·s·Λ⊙G."""
    net = make("gradient", "lstm", inner_clip=1e6)
    state = random_state(net, 3)
    u = torch.rand(3, 5, dtype=torch.float64)
    _, new_state, trace = net(u.unsqueeze(1), state, return_trace=True)
    *_, ms, ss, Gs = plain_step(net, u, state)
    assert all(s == 1.0 for s in ss)
    for n in range(3):
        m = trace["modulation"][n, 0]
        assert m.item() == pytest.approx(ms[n], rel=1e-12)
        for k, layer in net.plastic_layers().items():
            lw, lb = layer.rates()
            expected_w = (1 - 0.1 * m) * state.fast[k].w[n] + 0.1 * m * lw * Gs[n][k][0]
            torch.testing.assert_close(net.fast_weights(new_state)[k].w[n], expected_w, **TOL)
            expected_b = (1 - 0.1 * m) * state.fast[k].b[n] + 0.1 * m * lb * Gs[n][k][1]
            torch.testing.assert_close(net.fast_weights(new_state)[k].b[n], expected_b, **TOL)


def test_clip_limits_update_norm():
    """With Λ = 1, m = 1, no decay: ‖F' − F‖ = p_lr·min(‖G‖, clip) over all tensors."""
    for clip, active in ((1e-4, True), (1e6, False)):
        net = make("hebbian", "rnn", inner_lr_mode="none", modulation=False, inner_decay=0.0,
                   inner_clip=clip, inner_lr=0.7)
        state = random_state(net, 2)
        u = torch.rand(2, 5, dtype=torch.float64)
        _, new_state, trace = net(u.unsqueeze(1), state, return_trace=True)
        deltas = [net.fast_weights(new_state)[k].w - state.fast[k].w for k in state.fast]
        norm = rules.update_norm(deltas)
        *_, Gs = plain_step(net, u, state)
        g_norm = torch.tensor([rules.update_norm([g[k][0].unsqueeze(0) for k in g]).item() for g in Gs],
                              dtype=torch.float64)
        expected = 0.7 * torch.minimum(g_norm, torch.full_like(g_norm, clip))
        torch.testing.assert_close(norm, expected, **TOL)
        assert bool((trace["clip_scale"][:, 0] < 1).all()) == active


def test_decay_and_modulation_scale_fast_weights():
    """With p_lr = 0 the fast weights only decay: F' = (1 − p_wd·m)·F, m = 2σ(z[-1])."""
    net = make("gradient", "rnn", inner_lr=0.0, inner_decay=0.25)
    state = random_state(net, 2)
    u = torch.rand(2, 5, dtype=torch.float64)
    new_state = net.step(u, state)[1]
    z = dynamics(net.spec(), u, state.h, state.c, state.fast).z
    m = 2 * torch.sigmoid(z[:, -1])
    assert not torch.allclose(m, torch.ones_like(m))
    new = net.fast_weights(new_state)
    for k in state.fast:
        torch.testing.assert_close(new[k].w, (1 - 0.25 * m).view(-1, 1, 1) * state.fast[k].w, **TOL)
        torch.testing.assert_close(new[k].b, (1 - 0.25 * m).view(-1, 1) * state.fast[k].b, **TOL)
    # without modulation m = 1
    net = make("gradient", "rnn", inner_lr=0.0, inner_decay=0.25, modulation=False)
    state = random_state(net, 2)
    new_state = net.step(u, state)[1]
    for k in state.fast:
        torch.testing.assert_close(net.fast_weights(new_state)[k].w, 0.75 * state.fast[k].w, **TOL)


@pytest.mark.parametrize("mode", ["random", "uniform", "neg_uniform", "none"])
def test_connection_wise_rates(mode):
    """Λ per connection, initialised by inner_lr_mode; ``none`` has no parameter (Λ = 1)."""
    net = make("gradient", "lstm", inner_lr_mode=mode)
    for layer in net.plastic_layers().values():
        if mode == "none":
            assert layer.lr_weight is None and layer.lr_bias is None
            continue
        lw, lb = layer.lr_weight, layer.lr_bias
        assert lw.shape == layer.weight.shape and lb.shape == layer.bias.shape
        assert lw.requires_grad
        if mode == "uniform":
            assert torch.all(lw == 1) and torch.all(lb == 1)
        elif mode == "neg_uniform":
            assert torch.all(lw == -1) and torch.all(lb == -1)
        else:
            assert lw.min() >= -1 and lw.max() <= 1 and lw.std() > 0.3
    # a connection with Λ = 0 never changes
    net = make("hebbian", "rnn", inner_lr_mode="uniform")
    with torch.no_grad():
        net.cell.h_fc.lr_weight[0, 0] = 0.0
    out, state = net(torch.rand(2, 4, 5, dtype=torch.float64))
    assert torch.all(net.fast_weights(state)["h_fc"].w[:, 0, 0] == 0)
    assert torch.all(net.fast_weights(state)["h_fc"].w[:, 1, 1] != 0)


def test_weight_clip_bounds_fast_weights():
    net = make("gradient", "rnn", weight_clip=0.01, inner_lr=5.0, inner_clip=100.0)
    _, state = net(torch.rand(2, 6, 5, dtype=torch.float64))
    for fw in net.fast_weights(state).values():
        assert fw.w.abs().max() <= 0.01 + 1e-15 and fw.b.abs().max() <= 0.01 + 1e-15
    assert max(fw.w.abs().max().item() for fw in net.fast_weights(state).values()) == pytest.approx(0.01)


def test_clip_scale_finite_at_zero_norm():
    s = rules.clip_scale(torch.tensor([0.0, 0.5, 4.0], requires_grad=True), 1.0)
    assert s.tolist() == [1.0, 1.0, 0.25]
