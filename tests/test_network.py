"""PlasticRNN: API, batch independence, determinism, gradients, helpful errors."""

import itertools
import re
from pathlib import Path

import pytest
import torch
from torch.func import functional_call

from plasticnet import PlasticRNN, PlasticRNNCell, PlasticState, matched_hidden_size
from plasticnet.cells import CELLS
from plasticnet.rules import RULES

GRID = list(itertools.product(RULES, CELLS))


def make(rule, cell, seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    return PlasticRNN(7, 8, 3, rule=rule, cell=cell, **kw).to(dtype)


@pytest.mark.parametrize("rule,cell", GRID)
def test_sample_alone_equals_sample_in_batch_of_64(rule, cell):
    net = make(rule, cell)
    inputs = torch.rand(64, 10, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out_batch, state_batch = net(inputs)
    for n in (0, 17, 63):
        out_alone, state_alone = net(inputs[n:n + 1])
        torch.testing.assert_close(out_alone[0], out_batch[n], atol=1e-12, rtol=0)
        if state_alone.fast is not None:
            alone, batch = net.fast_weights(state_alone), net.fast_weights(state_batch)
            for k in alone:
                torch.testing.assert_close(alone[k].w[0], batch[k].w[n], atol=1e-12, rtol=0)


@pytest.mark.parametrize("rule,cell", GRID)
def test_same_seed_same_numbers(rule, cell):
    inputs = torch.rand(4, 6, 7, dtype=torch.float64)
    out1, _ = make(rule, cell, seed=5)(inputs)
    out2, _ = make(rule, cell, seed=5)(inputs)
    out3, _ = make(rule, cell, seed=6)(inputs)
    assert torch.equal(out1, out2)
    assert not torch.allclose(out1, out3)


@pytest.mark.parametrize("rule,cell", GRID)
def test_step_by_step_equals_forward_and_no_state_on_module(rule, cell):
    net = make(rule, cell)
    inputs = torch.rand(3, 5, 7, dtype=torch.float64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out, state = net(inputs)
    st = net.initial_state(3)
    steps = []
    for t in range(5):
        y, st = net.step(inputs[:, t], st)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), out, atol=0, rtol=0)
    # continuing a sequence from a state = running it in one go
    out_a, st_a = net(inputs[:, :2])
    out_b, _ = net(inputs[:, 2:], st_a)
    torch.testing.assert_close(torch.cat([out_a, out_b], 1), out, atol=1e-14, rtol=0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert isinstance(state, PlasticState)
    assert (state.c is None) == (cell == "rnn")
    assert (state.fast is None) == (rule == "none")


class _WithFastWeights(torch.nn.Module):
    """``x → (outputs, materialised final fast weights)`` of ``net`` (for functional_call)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        out, state = self.net(x)
        fast = self.net.fast_weights(state)
        return (out,) + (tuple(fw.w for fw in fast.values()) if fast is not None else ())


@pytest.mark.parametrize("rule,cell", GRID)
@pytest.mark.parametrize("engine", ["reference", "fast", "kernel"])
def test_gradcheck_outer_gradients(rule, cell, engine):
    """Finite differences in float64 on a tiny network, w.r.t. inputs and every parameter."""
    torch.manual_seed(0)
    net = PlasticRNN(3, 3, 2, rule=rule, cell=cell, extra_dim=1, inner_lr=0.5,
                     inner_loss_scale=1.0, engine=engine).double()
    wrapped = _WithFastWeights(net)
    names = [n for n, _ in wrapped.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in net.parameters())
    inputs = torch.rand(2, 3, 3, dtype=torch.float64, requires_grad=True)

    def f(x, *ps):
        return functional_call(wrapped, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (inputs,) + params, eps=1e-6, atol=1e-6)


def test_gradient_rule_in_no_grad_evaluation():
    net = make("gradient", "lstm")
    inputs = torch.rand(2, 4, 7, dtype=torch.float64)
    out, state = net(inputs)
    with torch.no_grad():
        out_eval, state_eval = net(inputs)
    assert not out_eval.requires_grad
    assert not any(t.requires_grad for t in torch.utils._pytree.tree_leaves(state_eval) if t is not None)
    torch.testing.assert_close(out_eval, out.detach(), atol=1e-14, rtol=0)


def test_batch_first_false_and_trace():
    net = make("hebbian", "lstm", batch_first=False)
    inputs = torch.rand(6, 2, 7, dtype=torch.float64)  # (T, B, I)
    out, _, trace = net(inputs, return_trace=True)
    assert out.shape == (6, 2, 3)
    net.batch_first = True
    out_bf, _ = net(inputs.transpose(0, 1))
    torch.testing.assert_close(out_bf.transpose(0, 1), out)
    assert set(trace) == {"modulation", "clip_scale", "fast_norm"}
    assert all(v.shape == (2, 6) for v in trace.values())
    assert (trace["modulation"] > 0).all() and (trace["modulation"] < 2).all()
    assert (trace["fast_norm"] > 0).all()


def test_float32_and_parameter_counts():
    net = PlasticRNN(16, 128, 1, cell="lstm", rule="gradient")
    out, state = net(torch.rand(4, 5, 16))
    assert out.dtype == torch.float32 and out.shape == (4, 5, 1)
    assert net.fast_weights(state)["h_fc"].w.shape == (4, 128, 512)
    assert net.out_fc.weight.shape == (128, 1 + 4 + 1)
    assert PlasticRNN(16, 128, 1, rule="none").out_fc.weight.shape == (128, 1)


def test_matched_hidden_size():
    assert matched_hidden_size("gradient", "lstm") == 128
    assert matched_hidden_size("hebbian", "rnn") == 256
    assert matched_hidden_size("none", "lstm") == 192
    assert matched_hidden_size("none", "rnn") == 384
    with pytest.raises(ValueError, match="'gru'"):
        matched_hidden_size("none", "gru")


@pytest.mark.parametrize("kwargs,match", [
    ({"rule": "oja"}, r"unknown rule 'oja'; allowed: 'gradient', 'hebbian', 'none'"),
    ({"cell": "gru"}, r"unknown cell 'gru'; allowed: 'rnn', 'lstm'"),
    ({"inner_lr_mode": "ones"}, r"unknown inner_lr_mode 'ones'; allowed: 'random'"),
    ({"engine": "turbo"}, r"unknown engine 'turbo'"),
    ({"hidden_size": 0}, r"hidden_size must be a positive integer, got 0"),
    ({"input_size": -3}, r"input_size must be a positive integer, got -3"),
    ({"output_size": 2.5}, r"output_size must be a positive integer, got 2.5"),
    ({"extra_dim": -1}, r"extra_dim must be a non-negative integer, got -1"),
    ({"inner_clip": 0}, r"inner_clip must be > 0, got 0"),
    ({"weight_clip": -1.0}, r"weight_clip must be > 0 or null, got -1.0"),
    ({"chunk_size": 0}, r"chunk_size must be a positive integer or null, got 0"),
    ({"engine_threads": 1.5}, r"engine_threads must be a positive integer or null, got 1.5"),
])
def test_bad_construction_arguments(kwargs, match):
    args = {"input_size": 4, "hidden_size": 8, "output_size": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        PlasticRNN(**args)


def test_bad_input_shapes():
    net = PlasticRNN(4, 8, 1)
    with pytest.raises(ValueError, match=r"inputs must have shape \(B, T, I\) with I = 4, got \(2, 5, 3\)"):
        net(torch.rand(2, 5, 3))
    with pytest.raises(ValueError, match=r"got \(5, 4\)"):
        net(torch.rand(5, 4))
    with pytest.raises(ValueError, match=r"u_t must have shape \(B, 4\), got \(2, 5\)"):
        net.step(torch.rand(2, 5))
    with pytest.raises(ValueError, match=r"state.h must have shape \(3, 8\)"):
        net(torch.rand(3, 2, 4), net.initial_state(2))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        net.initial_state(0)


def test_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write run folders
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no python example"
    scopes = []
    for code in blocks:
        scopes.append({})
        exec(compile(code, "README.md", "exec"), scopes[-1])
    # the plastic cell inside a user's own model: it ran forward and backward through the fast weights
    user = [sc for code, sc in zip(blocks, scopes) if "PlasticRNNCell(" in code]
    assert user, "README shows no plastic cell inside a user model"
    model = user[0]["model"]
    assert isinstance(model.cell, PlasticRNNCell) and model.cell.h_fc.weight.grad is not None
