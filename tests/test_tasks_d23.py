"""The [D23] sequence tasks (SPEC §2): shapes, ranges, targets from inputs, seeding, loss, model."""

import pytest
import torch

from plasticnet.tasks import make_task, task_names

TASKS = ["cue-reward", "seq-reproduction", "regression"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_registered():
    assert set(TASKS) <= set(task_names())


@pytest.mark.parametrize(
    "name, options, input_size, output_size, steps",
    [
        ("cue-reward", {}, 16, 1, 20),
        ("cue-reward", {"n_cues": 3, "steps": 8, "cue_dim": 4}, 6, 1, 8),
        ("seq-reproduction", {}, 3, 1, 60),
        ("seq-reproduction", {"seq_length": 5, "delay": 60}, 3, 1, 70),
        ("seq-reproduction", {"seq_length": 4, "delay": 0, "dim": 3}, 5, 3, 8),
        ("regression", {}, 14, 1, 40),
        ("regression", {"function": "mlp"}, 8, 1, 40),
        ("regression", {"function": "linear", "n": 10, "train_points": 10}, 12, 1, 30),
    ],
)
def test_shapes(name, options, input_size, output_size, steps):
    task = make_task(name, **options)
    assert (task.input_size, task.output_size) == (input_size, output_size)
    b = task.sample(5, gen())
    assert b.inputs.shape == (5, steps, input_size)
    assert b.targets.shape == (5, steps, output_size)
    assert b.mask.shape == (5, steps) and b.mask.dtype == torch.bool
    assert b.inputs.dtype == b.targets.dtype == torch.float32


@pytest.mark.parametrize("name", TASKS)
def test_seeding(name):
    task = make_task(name)
    a, b, c = task.sample(4, gen(1)), task.sample(4, gen(1)), task.sample(4, gen(2))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)
    g = gen(1)
    first, second = task.sample(4, g), task.sample(4, g)  # a stream: later batches differ
    assert torch.equal(first.inputs, a.inputs) and not torch.equal(first.inputs, second.inputs)


def test_cue_reward_targets_follow_inputs():
    task = make_task("cue-reward", noise=0.0)
    b = task.sample(64, gen())
    x, y = b.inputs, b.targets[..., 0]
    T = x.shape[1]
    assert b.mask.all()  # loss on every step
    assert ((y >= -1) & (y <= 1)).all()
    cue = x[..., :14]
    assert ((cue >= 0) & (cue <= 1)).all()
    # first half shows the reward and flag 0, second half no reward and flag 1
    assert torch.equal(x[:, : T // 2, 14], y[:, : T // 2])
    assert (x[:, T // 2:, 14] == 0).all()
    assert (x[:, : T // 2, 15] == 0).all() and (x[:, T // 2:, 15] == 1).all()
    # without noise: at most 5 distinct cues per episode, and a cue always has the same reward
    for n in range(8):
        cues, idx = torch.unique(cue[n], dim=0, return_inverse=True)
        assert len(cues) <= 5
        for k in range(len(cues)):
            assert torch.unique(y[n][idx == k]).numel() == 1
    # noise: the shown cue is a noisy copy of the clean one (same draws otherwise)
    noisy = make_task("cue-reward").sample(64, gen())
    d = noisy.inputs[..., :14] - cue
    assert abs(d.std().item() - 0.1) < 0.01 and torch.equal(noisy.targets, b.targets)


@pytest.mark.parametrize("L, delay, d", [(20, 20, 1), (5, 0, 2), (3, 7, 1)])
def test_seq_reproduction_targets_follow_inputs(L, delay, d):
    task = make_task("seq-reproduction", seq_length=L, delay=delay, dim=d)
    b = task.sample(16, gen())
    x, y, m = b.inputs, b.targets, b.mask
    seq = x[:, :L, :d]
    assert ((seq >= -1) & (seq <= 1)).all() and seq.abs().max() > 0.5
    assert (x[:, :L, d] == 1).all() and (x[:, :L, d + 1] == 0).all()
    assert (x[:, L:L + delay] == 0).all()  # blank delay
    assert (x[:, L + delay:, :d + 1] == 0).all() and (x[:, L + delay:, d + 1] == 1).all()
    assert torch.equal(y[:, L + delay:], seq)  # reproduce in order
    assert (m[:, L + delay:]).all() and not m[:, : L + delay].any()  # loss on the last L steps


@pytest.mark.parametrize("function, n", [("linear", 12), ("mlp", 6), ("linear", 3)])
def test_regression_targets_follow_inputs(function, n):
    task = make_task("regression", function=function, n=n, noise=0.0)
    b = task.sample(32, gen())
    x, y = b.inputs, b.targets[..., 0]
    P = task.options.train_points
    assert b.mask.all()
    assert ((x[..., :n] >= -1) & (x[..., :n] <= 1)).all()
    # standardised per episode
    assert torch.allclose(y.mean(1), torch.zeros(32), atol=1e-5)
    assert torch.allclose(y.std(1), torch.ones(32), atol=1e-5)
    # train steps show the value and flag 1, test steps zeros
    assert torch.allclose(x[:, :P, n], y[:, :P]) and (x[:, :P, n + 1] == 1).all()
    assert (x[:, P:, n:] == 0).all()
    # linear: the targets are an exact affine function of x in every episode
    feats = torch.cat([x[..., :n], torch.ones_like(y).unsqueeze(-1)], -1).double()
    coef = torch.linalg.lstsq(feats, y.double().unsqueeze(-1)).solution
    resid = (feats @ coef).squeeze(-1) - y.double()
    if function == "linear":
        assert resid.abs().max() < 1e-4
    else:  # a tanh MLP is not affine in general
        assert resid.abs().max() > 1e-3
    noisy = make_task("regression", function=function, n=n).sample(32, gen())
    assert torch.equal(noisy.targets, b.targets)
    assert abs((noisy.inputs[:, :P, n] - y[:, :P]).std().item() - 0.1) < 0.01


def test_regression_paper_sizes_and_bad_function():
    assert make_task("regression").options.n == 12
    assert make_task("regression", function="mlp").options.n == 6
    with pytest.raises(ValueError, match="'linear', 'mlp'"):
        make_task("regression", function="cubic")
    with pytest.raises(ValueError, match="valid keys: seq_length, delay, dim"):
        make_task("seq-reproduction", length=3)


@pytest.mark.parametrize("name", TASKS)
def test_loss_covers_only_masked_steps(name):
    task = make_task(name)
    b = task.sample(4, gen())
    out = torch.zeros_like(b.targets)
    loss = task.loss(out, b)
    expected = b.targets[b.mask].square().mean()
    assert torch.allclose(loss, expected)
    changed = out.clone()
    changed[~b.mask] = 5.0
    assert torch.allclose(task.loss(changed, b), loss)
    assert task.metrics(out, b)["error"] == pytest.approx(loss.item())


@pytest.mark.parametrize("rule, cell, hidden", [("gradient", "lstm", 128), ("hebbian", "lstm", 128),
                                                ("none", "lstm", 192), ("gradient", "rnn", 256),
                                                ("hebbian", "rnn", 256), ("none", "rnn", 384)])
def test_model_size_matching(rule, cell, hidden):
    task = make_task("cue-reward")
    model = task.build_model(rule, cell, **{**task.model_defaults, "hidden_size": None})
    assert (model.input_size, model.hidden_size, model.output_size) == (16, hidden, 1)
    assert task.build_model(rule, cell, hidden_size=8).hidden_size == 8


@pytest.mark.parametrize("name", TASKS)
def test_forward_backward(name):
    task = make_task(name)
    model = task.build_model("hebbian", "lstm", hidden_size=8)
    b = task.sample(3, gen())
    loss = task.loss(task.forward(model, b), b)
    loss.backward()
    assert torch.isfinite(loss) and model.out_fc.weight.grad is not None
