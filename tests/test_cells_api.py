"""PyTorch-shaped plastic cells, torch.func over stacked models, dtype errors."""

import copy

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from plasticnet import FastWeights, PlasticLSTMCell, PlasticRNN, PlasticRNNCell
from plasticnet.rules import RULES


def _fast(cell, B, seed=0):
    g = torch.Generator().manual_seed(seed)

    def fw(layer):
        w = torch.randn(B, layer.in_features, layer.out_features, generator=g, dtype=torch.float64) * 0.1
        return FastWeights(w, torch.randn(B, layer.out_features, generator=g, dtype=torch.float64) * 0.1)

    return {"h_fc": fw(cell.h_fc), "i_fc": fw(cell.i_fc)}


def _torch_twin(cell, torch_cls, **kw):
    """A torch cell holding the plastic cell's slow weights (through the torch-layout views)."""
    ref = torch_cls(cell.input_size, cell.hidden_size, **kw).to(cell.h_fc.weight.dtype)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, name).copy_(getattr(cell, name))
    return ref


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
def test_rnn_cell_is_a_drop_in_for_nn_rnncell(nonlinearity):
    """The same calls and results as nn.RNNCell: batched, unbatched, hx=None; h' returned alone."""
    torch.manual_seed(0)
    cell = PlasticRNNCell(5, 6, nonlinearity=nonlinearity).double()
    ref = _torch_twin(cell, torch.nn.RNNCell, nonlinearity=nonlinearity)
    xs = torch.randn(4, 3, 5, dtype=torch.float64)  # (T, B, I) as torch's example
    hx = ref_hx = None
    for t in range(4):
        hx, ref_hx = cell(xs[t], hx), ref(xs[t], ref_hx)
        assert isinstance(hx, torch.Tensor)
        torch.testing.assert_close(hx, ref_hx, atol=1e-12, rtol=0)
    h1 = torch.randn(6, dtype=torch.float64)
    torch.testing.assert_close(cell(xs[0, 0], h1), ref(xs[0, 0], h1), atol=1e-12, rtol=0)  # unbatched
    assert cell(xs[0, 0]).shape == (6,)
    assert cell.weight_ih.shape == ref.weight_ih.shape and cell.weight_hh.shape == ref.weight_hh.shape


def test_lstm_cell_is_a_drop_in_for_nn_lstmcell():
    """A loop written for nn.LSTMCell runs unchanged on PlasticLSTMCell and gives the same (h', c')."""

    def run(cell, xs):
        hx, cx = torch.zeros(3, 6, dtype=xs.dtype), torch.zeros(3, 6, dtype=xs.dtype)
        out = []
        for i in range(xs.size()[0]):
            hx, cx = cell(xs[i], (hx, cx))
            out.append(hx)
        return torch.stack(out, dim=0), cx

    torch.manual_seed(0)
    cell = PlasticLSTMCell(5, 6, dtype=torch.float64)
    assert cell.h_fc.weight.dtype == torch.float64
    ref = _torch_twin(cell, torch.nn.LSTMCell)
    xs = torch.randn(4, 3, 5, dtype=torch.float64)
    for a, b in zip(run(cell, xs), run(ref, xs)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    for a, b in zip(cell(xs[0]), ref(xs[0])):  # hx=None: zeros
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    h1, c1 = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    for a, b in zip(cell(xs[0, 0], (h1, c1)), ref(xs[0, 0], (h1, c1))):  # unbatched
        assert a.shape == (6,)
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("cls", [PlasticRNNCell, PlasticLSTMCell])
def test_cell_forward_is_the_networks_step(cls):
    """``cell(input, hx, fast)`` gives the h (and c) of the step the network uses, and reads the fast weights."""
    torch.manual_seed(1)
    cell = cls(5, 6).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    h0, c0 = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    fast = _fast(cell, 3)
    lstm = cls is PlasticLSTMCell
    hx = (h0, c0) if lstm else h0
    new = cell(x, hx, fast)
    want = cell.step(x, h0, c0 if lstm else None, fast["h_fc"], fast["i_fc"])
    assert torch.equal(new[0] if lstm else new, want.h)
    if lstm:
        assert torch.equal(new[1], want.c)
    h = new[0] if lstm else new
    plain = cell(x, hx)
    h_plain = plain[0] if lstm else plain
    assert not torch.allclose(h, h_plain)  # the fast weights are read
    zero = {k: FastWeights(torch.zeros_like(v.w), torch.zeros_like(v.b)) for k, v in fast.items()}
    out = cell(x, hx, zero)
    torch.testing.assert_close(out[0] if lstm else out, h_plain, atol=1e-14, rtol=0)
    # unbatched fast weights: each sample on its own gives the batched row
    for n in range(3):
        fast_n = {k: FastWeights(v.w[n], v.b[n]) for k, v in fast.items()}
        hx_n = (h0[n], c0[n]) if lstm else h0[n]
        out_n = cell(x[n], hx_n, fast_n)
        torch.testing.assert_close(out_n[0] if lstm else out_n, h[n], atol=1e-14, rtol=0)


def test_cell_takes_a_networks_fast_weights_whole():
    torch.manual_seed(0)
    net = PlasticRNN(4, 6, 1, cell="rnn", rule="hebbian").double()
    u = torch.rand(2, 3, 4, dtype=torch.float64)
    _, state = net(u)
    fast = net.fast_weights(state)  # in_fc, h_fc, i_fc, out_fc
    x = torch.rand(2, 6, dtype=torch.float64)
    h = net.cell(x, state.h, fast)
    assert torch.equal(h, net.cell.step(x, state.h, None, fast["h_fc"], fast["i_fc"]).h)


def test_cell_bad_arguments():
    rnn, lstm = PlasticRNNCell(5, 6), PlasticLSTMCell(5, 6)
    with pytest.raises(ValueError, match=r"input must be a tensor of shape \(B, 5\) or \(5,\), got \(3, 4\)"):
        rnn(torch.rand(3, 4))
    with pytest.raises(ValueError, match=r"hx must be a tensor of shape \(3, 6\), got \(2, 6\)"):
        rnn(torch.rand(3, 5), torch.rand(2, 6))
    with pytest.raises(ValueError, match=r"hx must be a tensor of shape \(6,\), got \(1, 6\)"):
        rnn(torch.rand(5), torch.rand(1, 6))
    with pytest.raises(ValueError, match=r"hx of an LSTM cell must be None or a pair \(h, c\)"):
        lstm(torch.rand(3, 5), torch.rand(3, 6))
    with pytest.raises(ValueError, match=r"hx\[1\] \(c\) must be a tensor of shape \(3, 6\)"):
        lstm(torch.rand(3, 5), (torch.rand(3, 6), torch.rand(3, 7)))
    with pytest.raises(ValueError, match=r"fast must be None or a dict with keys among"):
        rnn(torch.rand(3, 5), None, {"w": 1})
    with pytest.raises(ValueError, match=r"bias=False: a plastic cell always has biases"):
        PlasticLSTMCell(5, 6, bias=False)
    with pytest.raises(ValueError, match=r"unknown nonlinearity .gelu.; allowed: .relu., .tanh."):
        PlasticRNNCell(5, 6, nonlinearity="gelu")


@pytest.mark.parametrize("cls", [PlasticRNNCell, PlasticLSTMCell, PlasticRNN])
def test_docstring_examples_run(cls):
    """The Example sections of the cells and of PlasticRNN run as written."""
    import doctest

    import plasticnet

    globs = {"torch": torch, "nn": torch.nn, **{k: getattr(plasticnet, k) for k in plasticnet.__all__}}
    tests = doctest.DocTestFinder(recurse=False).find(cls, cls.__name__, globs=globs)
    assert tests and tests[0].examples, f"{cls.__name__} has no Example section"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    assert runner.failures == 0


# --------------------------------------------------------------- torch.func
def _stacked_forward(models, x):
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def f(p, b, x):
        return functional_call(base, (p, b), (x,))[0]

    def loss(p, b, x):
        return f(p, b, x).square().sum()

    out = vmap(f, in_dims=(0, 0, None))(params, buffers, x)
    grads = vmap(torch.func.grad(loss), in_dims=(0, 0, None))(params, buffers, x)
    return out, grads


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("options", [{}, {"weight_clip": 0.05, "layernorm": True}, {"inner_lr_mode": "none"}])
def test_vmap_over_stacked_models_equals_a_loop_fast_engine(rule, cell, options):
    """Many seeds at once: vmap(functional_call) over stack_module_state = each model on its own."""
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(PlasticRNN(5, 6, 2, cell=cell, rule=rule, inner_loss_scale=1.0, engine="fast",
                                 **options).double())
    x = torch.rand(4, 40, 5, dtype=torch.float64)  # 40 steps: across a fold of the factored history
    out, grads = _stacked_forward(models, x)
    for i, m in enumerate(models):
        want = m(x)[0]
        torch.testing.assert_close(out[i], want, atol=1e-12, rtol=0)
        g = torch.autograd.grad(want.square().sum(), list(m.parameters()))
        for (name, _), gi in zip(m.named_parameters(), g):
            torch.testing.assert_close(grads[name][i], gi, atol=1e-10, rtol=1e-10, msg=name)


def test_vmap_reference_engine_hebbian_works_gradient_is_refused():
    torch.manual_seed(0)
    x = torch.rand(2, 4, 5)
    models = [PlasticRNN(5, 6, 1, rule="hebbian", engine="reference") for _ in range(2)]
    out, _ = _stacked_forward(models, x)
    torch.testing.assert_close(out[1], models[1](x)[0])
    models = [PlasticRNN(5, 6, 1, rule="gradient", engine="reference") for _ in range(2)]
    with pytest.raises(RuntimeError, match=r"engine='reference' and rule='gradient'.*support them for this rule: "
                                           r"'fast'"):
        _stacked_forward(models, x)
    models[0](x)  # outside a transform it runs


# ---------------------------------------------------------------------- dtype
def test_dtype_mismatch_is_a_clear_error():
    net = PlasticRNN(3, 4, 1).double()
    with pytest.raises(TypeError, match=r"input dtype torch.float32 does not match the model's parameters "
                                        r"\(torch.float64\); cast the input"):
        net(torch.rand(2, 5, 3))
    with pytest.raises(TypeError, match="input dtype torch.float32"):
        net.step(torch.rand(2, 3))
    with pytest.raises(TypeError, match=r"state.h dtype torch.float32"):
        net(torch.rand(2, 5, 3, dtype=torch.float64), PlasticRNN(3, 4, 1).initial_state(2))
    out, _ = net(torch.rand(2, 5, 3).double())  # what the message says to do
    assert out.dtype == torch.float64


def test_vmap_kernel_engine_is_refused_naming_the_engines_that_work():
    """The kernel engine's compiled loop cannot be batched by torch.func: a clear error, not a crash."""
    torch.manual_seed(0)
    models = [PlasticRNN(5, 6, 1, rule="hebbian", engine="kernel") for _ in range(2)]
    with pytest.raises(RuntimeError, match=r"engine='kernel' and rule='hebbian'.*'fast'"):
        _stacked_forward(models, torch.rand(2, 4, 5))
