"""The engine boundary: one interface for every engine, and nothing unchecked reaches compiled code.

- every wrong shape of every state field, fed to every engine through
  ``forward`` and ``step``, is refused with a ``ValueError`` naming the field
  (the kernel engine used to read and write out of bounds: the crashing
  cases run in a subprocess, so a regression fails the test instead of
  killing the run);
- a configured engine object is accepted, and a new engine needs only the
  interface of ``plasticnet.engine.base``;
- ``torch.compile`` of a tiny model equals eager, without warnings;
  TorchScript is refused with a message naming ``torch.compile``;
- numba's compilation is announced once.
"""

import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from plasticnet import PlasticRNN
from plasticnet.engine import ENGINES, KernelEngine, ReferenceEngine, is_engine
from plasticnet.engine.base import EngineResult, NetSpec, StepEngine
from plasticnet.layers import FastWeights

ENGINE_NAMES = ["reference", "fast", "kernel"]


def _bad_states(net, B):
    """``(field name, state)`` for every field of a good state of batch ``B`` given a wrong shape."""
    good = net.initial_state(B)
    fast = {k: FastWeights(torch.zeros_like(fw.w), None if fw.b is None else torch.zeros_like(fw.b))
            for k, fw in net.fast_weights(good).items()}
    H = net.hidden_size
    cases = [("h", net.make_state(torch.zeros(B + 1, H), good.c, fast)),
             ("h", net.make_state(torch.zeros(B, H + 1), good.c, fast))]
    if good.c is not None:
        cases += [("c", net.make_state(good.h, torch.zeros(B, H - 1), fast)),
                  ("c", net.make_state(good.h, torch.zeros(2 * B, H), fast)),
                  ("c", net.make_state(good.h, torch.zeros(B), fast))]
    for k, fw in fast.items():
        for shape in ((1,) + fw.w.shape[1:], (B, fw.w.shape[1] + 1, fw.w.shape[2]),
                      (B, fw.w.shape[1], fw.w.shape[2] - 1), fw.w.shape[1:]):
            cases.append((f"fast['{k}'].w", net.make_state(good.h, good.c, {**fast, k: FastWeights(
                torch.zeros(shape), fw.b)})))
        if fw.b is not None:
            for shape in ((1, fw.b.shape[1]), (B, fw.b.shape[1] + 1)):
                cases.append((f"fast['{k}'].b", net.make_state(good.h, good.c, {**fast, k: FastWeights(
                    fw.w, torch.zeros(shape))})))
    return cases


@pytest.mark.parametrize("engine", ENGINE_NAMES)
@pytest.mark.parametrize("rule,cell", [("hebbian", "rnn"), ("hebbian", "lstm"), ("gradient", "rnn"),
                                       ("gradient", "lstm")])
def test_every_wrong_state_shape_is_refused_naming_the_field(engine, rule, cell):
    torch.manual_seed(0)
    net = PlasticRNN(3, 8, 2, rule=rule, cell=cell, engine=engine)
    B = 4
    for field, state in _bad_states(net, B):
        with pytest.raises(ValueError, match=r"state " + field.replace("[", r"\[").replace("]", r"\]")):
            net(torch.randn(B, 5, 3), state)
        with pytest.raises(ValueError, match=r"state " + field.replace("[", r"\[").replace("]", r"\]")):
            net.step(torch.randn(B, 3), state)


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_wrong_state_structure_dtype_and_missing_parts(engine):
    net = PlasticRNN(3, 8, 2, rule="gradient", cell="lstm", engine=engine)
    st = net.initial_state(4)
    fast = net.fast_weights(st)
    u = torch.randn(4, 5, 3)
    with pytest.raises(ValueError, match="state c must be a tensor"):
        net(u, net.make_state(st.h, None, fast))
    with pytest.raises(ValueError, match=r"state fast\['h_fc'\].b must be a tensor"):
        net(u, net.make_state(st.h, st.c, {**fast, "h_fc": FastWeights(fast["h_fc"].w, None)}))
    with pytest.raises(ValueError, match="state fast must have the layers"):
        net(u, net.make_state(st.h, st.c, {k: v for k, v in fast.items() if k != "out_fc"}))
    with pytest.raises(ValueError, match="state fast must hold fast weights"):
        net(u, net.make_state(st.h, st.c, None))
    with pytest.raises(TypeError, match=r"state fast\['in_fc'\].w must have dtype torch.float32"):
        net(u, net.make_state(st.h, st.c, {**fast, "in_fc": FastWeights(fast["in_fc"].w.double(),
                                                                          fast["in_fc"].b)}))
    with pytest.raises(ValueError, match="state must be a PlasticState"):
        net(u, (st.h, st.c))


_CRASH = textwrap.dedent("""
    import torch
    from plasticnet import PlasticRNN
    from plasticnet.layers import FastWeights
    torch.manual_seed(0)
    net = PlasticRNN(3, 8, 2, rule="hebbian", cell={cell!r}, engine="kernel")
    st = net.initial_state(4)
    case = {case!r}
    if case == "fast":
        one = net.initial_state(1)
        fast = {{k: FastWeights(torch.randn(fw.w.shape[1:]).expand(1, *fw.w.shape[1:]).contiguous(), fw.b)
                 for k, fw in one.fast.items()}}
        st = net.make_state(st.h, st.c, fast)
    elif case == "c-short":
        st = net.make_state(st.h, torch.zeros(4, 3), st.fast)
    else:
        st = net.make_state(st.h, torch.zeros(8, 8), st.fast)
    for call in (lambda: net(torch.randn(4, 5, 3), st), lambda: net.step(torch.randn(4, 3), st)):
        try:
            call()
        except ValueError as err:
            print("refused:", err)
        else:
            print("ran")
""")


@pytest.mark.parametrize("cell,case", [("rnn", "fast"), ("lstm", "fast"), ("lstm", "c-short"), ("lstm", "c-batch")])
def test_kernel_memory_safety_in_a_subprocess(cell, case):
    """The cases that crashed the kernel engine (double free, segfault) or read out of bounds: refused."""
    proc = subprocess.run([sys.executable, "-c", _CRASH.format(cell=cell, case=case)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("refused", "ran"))]
    assert len(lines) == 2 and all(ln.startswith("refused: state ") for ln in lines), proc.stdout


def test_empty_episode_is_refused():
    net = PlasticRNN(3, 8, 2)
    with pytest.raises(ValueError, match="inputs must hold at least one step, got T = 0"):
        net(torch.randn(4, 0, 3))
    with pytest.raises(ValueError, match="inputs must hold at least one step"):
        PlasticRNN(3, 8, 2, batch_first=False)(torch.randn(0, 4, 3))


@pytest.mark.parametrize("kwargs,match", [
    ({"inner_lr": float("nan")}, r"inner_lr must be a finite number, got nan"),
    ({"inner_decay": float("inf")}, r"inner_decay must be >= 0, got inf"),
    ({"inner_decay": -0.1}, r"inner_decay must be >= 0, got -0.1"),
    ({"modulation": "no"}, r"modulation must be true or false, got 'no'"),
    ({"layernorm": 1}, r"layernorm must be true or false, got 1"),
    ({"init_scale": float("nan")}, r"init_scale must be > 0, got nan"),
    ({"cell_init_scale": 0.0}, r"cell_init_scale must be > 0 or null, got 0.0"),
    ({"engine": "gpu"}, r"unknown engine 'gpu'"),
])
def test_bad_model_options_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PlasticRNN(3, 8, 2, **kwargs)


def test_an_engine_object_and_a_new_engine():
    """``engine=`` takes a configured object; an engine written only against the interface runs the network."""
    torch.manual_seed(0)
    ref = PlasticRNN(3, 6, 2, rule="gradient", cell="lstm", engine="reference").double()
    ker = PlasticRNN(3, 6, 2, rule="gradient", cell="lstm", engine=KernelEngine(engine_threads=1)).double()
    ker.load_state_dict(ref.state_dict())
    assert ker.engine == "kernel" and is_engine(ker._engine) and not is_engine("kernel")
    seen = []

    class Logged(StepEngine):  # a new engine: the reference's step, recording what it receives
        name = "logged"

        def step(self, spec, u, h, c, fast, trace=False) -> EngineResult:
            assert isinstance(spec, NetSpec) and spec.rule == "gradient"
            seen.append(u.shape)
            return ReferenceEngine().step(spec, u, h, c, fast, trace)

    new = PlasticRNN(3, 6, 2, rule="gradient", cell="lstm", engine=Logged()).double()
    new.load_state_dict(ref.state_dict())
    x = torch.rand(2, 4, 3, dtype=torch.float64)
    outs = [net(x, return_trace=True) for net in (ref, ker, new)]
    for out, _, trace in outs[1:]:
        torch.testing.assert_close(out, outs[0][0], atol=1e-10, rtol=0)
        for k in trace:
            torch.testing.assert_close(trace[k], outs[0][2][k], atol=1e-10, rtol=0)
    assert new.engine == "logged" and seen == [(2, 3)] * 4
    assert set(ENGINES) == {"kernel", "fast", "reference", "triton"}


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_torch_compile_equals_eager_without_warnings(engine, capfd):
    """Compiled output and gradients equal eager; no warning and nothing on stderr (torch's own
    deprecation notices aside); the kernel engine's loops are one quiet graph break."""
    torch.manual_seed(0)
    net = PlasticRNN(3, 6, 2, rule="hebbian", cell="rnn", engine=engine)
    x = torch.rand(2, 4, 3)
    eager, _ = net(x)
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="eager")
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, _ = compiled(x)
    assert not [w for w in caught if not issubclass(w.category, DeprecationWarning)], [str(w.message) for w in caught]
    assert capfd.readouterr().err == ""
    torch.testing.assert_close(out, eager, atol=1e-6, rtol=1e-6)
    out.sum().backward()
    assert net.out_fc.weight.grad is not None


@pytest.mark.parametrize("make", [lambda: PlasticRNN(3, 6, 2), lambda: PlasticRNN(3, 6, 2).cell,
                                  lambda: PlasticRNN(3, 6, 2, cell="rnn").cell.h_fc])
def test_torchscript_is_refused_naming_torch_compile(make):
    with pytest.raises(RuntimeError, match=r"use torch.compile\(model\) instead"):
        torch.jit.script(make())


def test_torch_jit_trace_is_refused_naming_torch_compile():
    with pytest.raises(RuntimeError, match=r"use torch.compile\(model\) instead"):
        torch.jit.trace(PlasticRNN(3, 6, 2, engine="fast"), (torch.rand(2, 4, 3),))
    with pytest.raises(RuntimeError, match=r"use torch.compile\(model\) instead"):
        torch.jit.trace(PlasticRNN(3, 6, 2).cell, (torch.rand(2, 6),))


def test_numba_compilation_is_announced_once(tmp_path):
    """A fresh numba cache: one line per compiled kernel on stderr; a warm one: none."""
    code = textwrap.dedent("""
        import torch
        from plasticnet import PlasticRNN
        net = PlasticRNN(3, 4, 1, rule="hebbian", cell="rnn", engine="kernel")
        for _ in range(2):
            net(torch.rand(2, 3, 3))[0].sum().backward()
    """)
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    warm = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert warm.returncode == 0 and "compiling" not in warm.stderr, warm.stderr[-2000:]
    if not __import__("os").environ.get("PLASTICNET_SLOW_TESTS"):
        pytest.skip("a cold compile takes minutes: set PLASTICNET_SLOW_TESTS=1")
    cold = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, env=env)
    said = [ln for ln in cold.stderr.splitlines() if "compiling the kernel engine" in ln]
    assert cold.returncode == 0 and len(said) == 2, cold.stderr[-2000:]
