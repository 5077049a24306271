"""The triton engine computes the reference engine's numbers.

Without a GPU the Triton programs run in the interpreter (``TRITON_INTERPRET=1``,
set here before the kernels are imported) on CPU tensors, with tiles of
``4 × 8`` so that the tiny odd sizes span several masked tiles. The same
equality grid as the kernel engine — outputs, final fast weights, the trace
and every outer gradient; float64 to ``1e-10``, float32 within
``FLOAT32_TOL`` — a few cases of it in the default suite (the interpreter is
slow), every rule × cell × option at T ∈ {1, 20, 70} under ``-m slow``.
Tests marked ``gpu`` compile for a real device and are skipped without CUDA.
"""

import os
import subprocess
import sys

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton program is defined

from plasticnet import PlasticRNN  # noqa: E402
from plasticnet.engine import resolve_engine, triton_engine  # noqa: E402
from test_fast_engine import FLOAT32_TOL, GRID, TOL64, assert_same, inputs_for, make_pair, run  # noqa: E402

try:
    import triton  # noqa: F401
except ImportError:
    HAVE_TRITON = False
else:
    HAVE_TRITON = True

needs_triton = pytest.mark.skipif(not HAVE_TRITON or triton_engine.available() is not None,
                                  reason="triton is not installed (or neither CUDA nor TRITON_INTERPRET=1)")
needs_gpu = pytest.mark.skipif(not CUDA or not HAVE_TRITON, reason="needs CUDA and triton")
DEVICE = "cuda" if CUDA else "cpu"


@pytest.fixture(autouse=True)
def small_groups(monkeypatch):
    """Two samples share a backward group at B = 3 (the Λ, ω and LayerNorm sums run over each group in turn)."""
    monkeypatch.setattr(triton_engine, "GROUPS", 2)


def pair(rule, cell, dtype=torch.float64, **kw):
    ref, tri = make_pair(rule, cell, None, dtype=dtype, engine="triton", **kw)
    return ref.to(DEVICE), tri.to(DEVICE)


def check(rule, cell, opts, B, T, dtype=torch.float64):
    ref, tri = pair(rule, cell, dtype=dtype, **opts)
    inputs = inputs_for(ref, B, T, dtype=dtype).to(DEVICE)
    a, b = run(ref, inputs), run(tri, inputs)
    assert_same(a, b, TOL64 if dtype == torch.float64 else FLOAT32_TOL)
    return a


# ---------------------------------------------------------------- default suite: a few cases, tiny sizes
QUICK = [
    ("hebbian", "rnn", {"modulation": False, "extra_dim": 0, "inner_lr_mode": "none"}),
    ("hebbian", "lstm", {"layernorm": True}),
    ("gradient", "rnn", {"weight_clip": 0.05, "input_layer": False}),
    ("gradient", "lstm", {}),
]


@needs_triton
@pytest.mark.parametrize("rule,cell,opts", QUICK)
def test_triton_equals_reference_float64(rule, cell, opts):
    check(rule, cell, opts, 3 if rule == "gradient" else 2, 3)


@needs_triton
def test_triton_one_step_and_float32():
    check("gradient", "rnn", {"layernorm": True}, 2, 1)
    check("gradient", "lstm", {"inner_decay": 0.6, "inner_lr": 0.5}, 2, 3, dtype=torch.float32)


@needs_triton
def test_gradcheck_triton_engine():
    """Second-order gradient rule through in_fc and the RNN cell: input, ω and h_fc's Λ by finite differences."""
    torch.manual_seed(0)
    net = PlasticRNN(2, 2, 1, rule="gradient", cell="rnn", extra_dim=1, inner_loss_scale=0.5,
                     engine="triton").double().to(DEVICE)
    inputs = inputs_for(net, 1, 2).to(DEVICE).requires_grad_()
    names = ["omega", "cell.h_fc.lr_weight"]

    def f(u, *params):
        out = torch.func.functional_call(net, dict(zip(names, params)), (u,), strict=False)[0]
        return out

    params = [dict(net.named_parameters())[n].detach().clone().requires_grad_() for n in names]
    assert torch.autograd.gradcheck(f, (inputs, *params))


@needs_triton
def test_batch_independence_and_determinism():
    """A sample's numbers do not depend on its batch; the same call gives the same bits (no atomics)."""
    torch.manual_seed(0)
    net = PlasticRNN(5, 6, 2, rule="hebbian", cell="rnn", engine="triton").to(DEVICE)
    inputs = inputs_for(net, 3, 3, dtype=torch.float32).to(DEVICE)
    results = []
    for _ in range(2):
        out, _ = net(inputs)
        net.zero_grad()
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in net.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))
    alone, _ = net(inputs[1:2])
    torch.testing.assert_close(alone, results[0][0][1:2], atol=1e-6, rtol=1e-6)


@needs_triton
def test_state_semantics():
    """step() = forward(); an episode continues from a state (the reference's); evaluation without grad."""
    ref, tri = pair("gradient", "rnn")
    inputs = inputs_for(ref, 2, 3).to(DEVICE)
    out, state = tri(inputs)
    st, outs = None, []
    for t in range(inputs.shape[1]):
        y, st = tri.step(inputs[:, t], st)
        outs.append(y)
    torch.testing.assert_close(torch.stack(outs, 1), out, **TOL64)
    _, st_ref = ref(inputs[:, :2])
    out2, _ = tri(inputs[:, 2:], st_ref)
    torch.testing.assert_close(out2, out[:, 2:], **TOL64)
    with torch.no_grad():
        out3, st3 = tri(inputs)
    assert not out3.requires_grad and not st3.fast["h_fc"].w.requires_grad


@needs_triton
def test_triton_rejects_what_it_cannot_run(monkeypatch):
    net = PlasticRNN(3, 4, 1, rule="hebbian", engine="triton")
    with pytest.raises(ValueError, match="float32 or float64"):
        net.to(torch.bfloat16)(torch.rand(2, 5, 3, dtype=torch.bfloat16).to(DEVICE))
    with pytest.raises(ValueError, match="tile must be two powers of two"):
        triton_engine.TritonEngine(tile=(3, 8))
    none = PlasticRNN(3, 4, 1, rule="none", engine="triton")  # the plain network, no fast weights
    out, st = none(torch.rand(2, 5, 3))
    assert out.shape == (2, 5, 1) and st.fast is None
    if not CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(ValueError, match="(?i)runs on cuda"):
            net.float()(torch.rand(2, 5, 3))
        with pytest.raises(RuntimeError, match="no CUDA device"):
            PlasticRNN(3, 4, 1, engine="triton")


def test_auto_never_picks_triton():
    assert resolve_engine("auto", "cuda") == "fast"
    assert resolve_engine("auto", "cpu") in ("kernel", "fast")


def test_package_imports_and_trains_without_triton():
    """With triton unimportable, plasticnet imports and trains, and engine='triton' says why."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, plasticnet\n"
        "from plasticnet import PlasticRNN\n"
        "net = PlasticRNN(3, 4, 1, rule='hebbian', engine='fast')\n"
        "out, _ = net(torch.rand(2, 5, 3)); out.sum().backward()\n"
        "try:\n"
        "    PlasticRNN(3, 4, 1, engine='triton')\n"
        "except RuntimeError as err:\n"
        "    assert 'plasticnet[triton]' in str(err), err\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)


# ---------------------------------------------------------------- the whole grid (slow under the interpreter)
@pytest.mark.slow
@needs_triton
@pytest.mark.parametrize("rule,cell,opts", GRID)
@pytest.mark.parametrize("T", [1, 20])
def test_triton_equals_reference_grid(rule, cell, opts, T):
    a = check(rule, cell, opts, 3, T)
    if "inner_clip" in opts:  # the clip really acts
        assert (a[2]["clip_scale"] < 0.5).all()


@pytest.mark.slow
@needs_triton
@pytest.mark.parametrize("rule,cell,opts", [
    ("hebbian", "rnn", {}), ("hebbian", "lstm", {"layernorm": True}), ("gradient", "rnn", {"layernorm": True}),
    ("gradient", "lstm", {}), ("gradient", "lstm", {"weight_clip": 0.05, "inner_lr_mode": "uniform"}),
    ("hebbian", "lstm", {"inner_decay": 0.6, "inner_lr": 0.5}),
])
def test_triton_equals_reference_long_episode(rule, cell, opts):
    """T = 70: the undone fast weights stay exact over many steps (checkpoints every K steps)."""
    check(rule, cell, opts, 2, 70)


@pytest.mark.slow
@needs_triton
@pytest.mark.parametrize("rule,cell", [("hebbian", "rnn"), ("hebbian", "lstm"), ("gradient", "rnn"),
                                       ("gradient", "lstm")])
@pytest.mark.parametrize("T", [20, 70])
def test_triton_equals_reference_float32(rule, cell, T):
    check(rule, cell, {}, 2, T, dtype=torch.float32)


@pytest.mark.slow
@needs_triton
@pytest.mark.parametrize("decay", [0.45, 0.5])
def test_strong_decay_near_one(decay):
    """``p_wd·m`` close to 1: F is checkpointed often (every step at 0.5, where keep can reach 0)."""
    check("gradient", "lstm", {"inner_decay": decay, "inner_lr": 0.5}, 2, 30)


@pytest.mark.slow
@needs_triton
def test_gradcheck_triton_engine_lstm_layernorm():
    torch.manual_seed(0)
    net = PlasticRNN(2, 2, 1, rule="gradient", cell="lstm", extra_dim=1, inner_loss_scale=0.5, layernorm=True,
                     engine="triton").double().to(DEVICE)
    names = [n for n, _ in net.named_parameters()]
    inputs = inputs_for(net, 2, 3).to(DEVICE).requires_grad_()

    def f(u, *params):
        return torch.func.functional_call(net, dict(zip(names, params)), (u,))[0]

    assert torch.autograd.gradcheck(f, (inputs, *[p.detach().clone().requires_grad_() for p in net.parameters()]))


# ---------------------------------------------------------------- on a real device
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rule,cell", [("hebbian", "rnn"), ("hebbian", "lstm"), ("gradient", "rnn"),
                                       ("gradient", "lstm")])
@pytest.mark.parametrize("tile", [None, (16, 32)])
def test_gpu_equals_reference(rule, cell, dtype, tile, monkeypatch):
    """Compiled for the device (default tiles, and small ones), at a size with many tiles per layer."""
    if tile is not None:
        monkeypatch.setattr(triton_engine, "TILE", tile)
    nets = []
    for name in ("reference", "triton"):
        torch.manual_seed(0)
        nets.append(PlasticRNN(7, 45, 3, rule=rule, cell=cell, inner_loss_scale=0.5, engine=name,
                               layernorm=rule == "gradient").to(DEVICE, dtype))
    inputs = inputs_for(nets[0], 37, 20, dtype=dtype).to(DEVICE)
    assert_same(run(nets[0], inputs), run(nets[1], inputs), TOL64 if dtype == torch.float64 else FLOAT32_TOL)


@pytest.mark.gpu
@needs_gpu
def test_gpu_paper_size_runs_and_is_timed():
    """Hidden 256 LSTM (the paper's size-matched gradient network), B = 64, T = 70: compiles within the
    device's resource limits, trains a step, and prints its time next to the fast engine's."""
    import time

    times = {}
    for name in ("triton", "fast"):
        torch.manual_seed(0)
        net = PlasticRNN(16, 256, 1, rule="gradient", cell="lstm", engine=name).cuda()
        inputs = torch.rand(64, 70, 16, device="cuda")
        for _ in range(3):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out, _ = net(inputs)
            out.square().mean().backward()
            torch.cuda.synchronize()
            times[name] = time.perf_counter() - t0
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    print(f"\ntraining step, LSTM 256, B 64, T 70: triton {times['triton'] * 1e3:.1f} ms, "
          f"fast {times['fast'] * 1e3:.1f} ms")
