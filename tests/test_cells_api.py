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


@pytest.mark.parametrize("cls,torch_cls", [(PlasticRNNCell, torch.nn.RNNCell), (PlasticLSTMCell, torch.nn.LSTMCell)])
def test_cell_without_fast_weights_is_the_torch_cell(cls, torch_cls):
    """``cell(input)`` starts from zeros and, without fast weights, computes nn.RNNCell(relu) / nn.LSTMCell."""
    torch.manual_seed(0)
    cell = cls(5, 6).double()
    kw = {"nonlinearity": "relu"} if torch_cls is torch.nn.RNNCell else {}
    ref = torch_cls(5, 6, **kw).double()
    with torch.no_grad():
        ref.weight_ih.copy_(cell.i_fc.weight.t())
        ref.weight_hh.copy_(cell.h_fc.weight.t())
        ref.bias_ih.copy_(cell.i_fc.bias)
        ref.bias_hh.copy_(cell.h_fc.bias)
    xs = torch.randn(3, 4, 5, dtype=torch.float64)
    state, ref_state = None, None
    for t in range(4):
        h, state = cell(xs[:, t], state)
        ref_state = ref(xs[:, t], ref_state)
        ref_h = ref_state if torch_cls is torch.nn.RNNCell else ref_state[0]
        torch.testing.assert_close(h, ref_h, atol=1e-12, rtol=0)
    if cls is PlasticLSTMCell:
        assert isinstance(state, tuple) and len(state) == 2
        torch.testing.assert_close(state[1], ref_state[1], atol=1e-12, rtol=0)
    else:
        assert torch.equal(state, h)


@pytest.mark.parametrize("cls", [PlasticRNNCell, PlasticLSTMCell])
def test_cell_forward_is_the_networks_step(cls):
    """``cell(input, state, fast)`` gives the h (and c) of the step the network uses, and reads the fast weights."""
    torch.manual_seed(1)
    cell = cls(5, 6).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    h0, c0 = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    fast = _fast(cell, 3)
    state = h0 if cls is PlasticRNNCell else (h0, c0)
    h, new = cell(x, state, fast)
    want = cell.step(x, h0, c0 if cls is PlasticLSTMCell else None, fast["h_fc"], fast["i_fc"])
    assert torch.equal(h, want.h)
    if cls is PlasticLSTMCell:
        assert torch.equal(new[1], want.c)
    h_plain, _ = cell(x, state)
    assert not torch.allclose(h, h_plain)  # the fast weights are read
    zero = {k: FastWeights(torch.zeros_like(v.w), torch.zeros_like(v.b)) for k, v in fast.items()}
    torch.testing.assert_close(cell(x, state, zero)[0], h_plain, atol=1e-14, rtol=0)
    h_default, _ = cell(x, None)
    zeros = torch.zeros(3, 6, dtype=torch.float64)
    torch.testing.assert_close(h_default, cell(x, zeros if cls is PlasticRNNCell else (zeros, zeros))[0])


def test_cell_takes_a_networks_fast_weights_whole():
    torch.manual_seed(0)
    net = PlasticRNN(4, 6, 1, cell="rnn", rule="hebbian").double()
    u = torch.rand(2, 3, 4, dtype=torch.float64)
    _, state = net(u)
    fast = net.fast_weights(state)  # in_fc, h_fc, i_fc, out_fc
    x = torch.rand(2, 6, dtype=torch.float64)
    h, _ = net.cell(x, state.h, fast)
    assert torch.equal(h, net.cell.step(x, state.h, None, fast["h_fc"], fast["i_fc"]).h)


def test_cell_bad_arguments():
    rnn, lstm = PlasticRNNCell(5, 6), PlasticLSTMCell(5, 6)
    with pytest.raises(ValueError, match=r"input must be a tensor of shape \(B, 5\), got \(3, 4\)"):
        rnn(torch.rand(3, 4))
    with pytest.raises(ValueError, match=r"state must be a tensor of shape \(3, 6\), got \(2, 6\)"):
        rnn(torch.rand(3, 5), torch.rand(2, 6))
    with pytest.raises(ValueError, match=r"state of an LSTM cell must be None or a pair \(h, c\)"):
        lstm(torch.rand(3, 5), torch.rand(3, 6))
    with pytest.raises(ValueError, match=r"state c must be a tensor of shape \(3, 6\)"):
        lstm(torch.rand(3, 5), (torch.rand(3, 6), torch.rand(3, 7)))
    with pytest.raises(ValueError, match=r"fast must be None or a dict with keys among"):
        rnn(torch.rand(3, 5), None, {"w": 1})


def test_plastic_cell_in_a_user_model_learns():
    """A plastic cell inside an ordinary nn.Module, with a Hebbian update the model makes itself, trains."""

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell, self.head = PlasticRNNCell(3, 16), torch.nn.Linear(16, 1)

        def forward(self, xs):
            state, fast = None, None
            outs = []
            for x in xs.unbind(1):
                h_prev = state
                h, state = self.cell(x, state, fast)
                if h_prev is not None:
                    w = 0.5 * h_prev.unsqueeze(-1) * h.unsqueeze(-2)
                    fast = {"h_fc": FastWeights(w if fast is None else 0.9 * fast["h_fc"].w + w, None)}
                outs.append(self.head(h))
            return torch.stack(outs, 1)

    torch.manual_seed(0)
    model = Model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xs = torch.rand(8, 5, 3)
    target = xs[:, :, :1].cumsum(1)
    losses = []
    for _ in range(30):
        loss = (model(xs) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert model.cell.h_fc.weight.grad is not None


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
