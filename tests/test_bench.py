"""plasticnet bench: the measurement, the subprocess runner, the table and the CLI checks."""

import json

import pytest

from plasticnet import bench
from plasticnet.cli import main


@pytest.mark.parametrize("engine", ["fast", "kernel"])
def test_measure_one_tiny_step(engine):
    res = bench.measure(bench.Config("cue-reward", "rnn", "hebbian", engine, batch_size=2, repeats=1, warmup=0))
    assert {"task", "cell", "rule", "engine", "ms_per_step", "peak_mb", "threads"} <= set(res)
    assert res["hidden"] == 256 and res["ms_per_step"] > 0 and res["peak_mb"] >= 0


def test_run_child_prints_one_json_object():
    res = bench.run_child(bench.Config("regression-mlp", "lstm", "none", "none", batch_size=2, repeats=1), 300)
    assert "error" not in res, res
    assert res["rule"] == "none" and res["hidden"] == 192
    json.dumps(res)


def test_reference_run_skipped_when_memory_is_short():
    cfg = bench.Config("seq-L5-d60", "rnn", "gradient", "reference")
    res = bench.run_child(cfg, 10, memory_fraction=1e-9)
    assert res["error"].startswith("skipped: needs ~")


def test_configurations_and_table():
    cfgs = list(bench.configurations(["cue-reward"], ["rnn"], ["hebbian", "gradient"], ["fast", "reference", "none"]))
    assert [(c.rule, c.engine) for c in cfgs] == [("hebbian", "fast"), ("hebbian", "reference"),
                                                  ("gradient", "fast"), ("gradient", "reference"), ("none", "none")]
    cfgs = list(bench.configurations(["cue-reward"], ["lstm"], ["hebbian"], ["kernel", "none"], threads=(1, 2)))
    assert [(c.rule, c.engine, c.threads) for c in cfgs] == [("hebbian", "kernel", 1), ("hebbian", "kernel", 2),
                                                             ("none", "none", 1)]
    rows = [dict(task="cue-reward", cell="rnn", rule="hebbian", engine="kernel", ms_per_step=100.0, peak_mb=50.0,
                 wall_ms_per_step=100.0),
            dict(task="cue-reward", cell="rnn", rule="hebbian", engine="kernel", threads=2, ms_per_step=110.0,
                 peak_mb=50.0, wall_ms_per_step=62.5),
            dict(task="cue-reward", cell="rnn", rule="hebbian", engine="reference", ms_per_step=3000.0, peak_mb=3000.0),
            dict(task="cue-reward", cell="rnn", rule="none", engine="none", ms_per_step=40.0, peak_mb=30.0),
            dict(task="cue-reward", cell="rnn", rule="hebbian", engine="fast", error="timeout 10s")]
    text = bench.table(rows)
    assert "30.0x" in text and "2.50x" in text and "60.0x" in text  # ref/kernel time, kernel/none, ref/kernel memory
    assert text.startswith("ms: CPU time per step") and "triton" not in text  # a column per engine that was run
    row = text.splitlines()[3].split()
    assert row[5] == "-"  # the fast engine's run failed
    assert "error: cue-reward rnn hebbian fast: timeout 10s" in text
    assert "1.60x" in bench.scaling_table(rows)  # 100 ms on one thread, 62.5 ms on two
    assert bench.scaling_table(rows[:1]) == ""


def test_cuda_table_shows_triton_against_none_and_fast():
    rows = [dict(task="seq-L5-d60", cell="lstm", rule="gradient", engine=e, device="cuda", ms_per_step=ms, peak_mb=mb)
            for e, ms, mb in (("triton", 10.0, 20.0), ("fast", 250.0, 900.0), ("reference", 400.0, 4000.0))]
    rows.append(dict(task="seq-L5-d60", cell="lstm", rule="none", engine="none", device="cuda", ms_per_step=4.0,
                     peak_mb=5.0))
    text = bench.report(rows, None)  # no GEMM rate on cuda: no work table
    head, row = text.splitlines()[1].split(), text.splitlines()[3].split()
    assert head[3:8] == ["|", "triton", "fast", "ref", "none"] and "kernel" not in text
    assert text.startswith("ms: wall time per step on the GPU") and "GEMM" not in text
    assert row[4:8] == ["10.0", "250.0", "400.0", "4.0"]
    assert "t/none" in head and "f/t" in head and "ref/t" in head
    assert "2.50x" in row and "25.0x" in row and "40.0x" in row and "200.0x" in row  # t/none, f/t, ref/t time, memory


def test_hidden_scale():
    assert bench.hidden_size(bench.Config("cue-reward", "rnn", "hebbian", "fast")) == 256
    assert bench.hidden_size(bench.Config("cue-reward", "lstm", "none", "none", hidden_scale=1 / 32)) == 6


@pytest.mark.parametrize("argv,message", [
    (["--tasks", "pong"], "unknown task 'pong'"),
    (["--engines", "turbo"], "unknown engine 'turbo'"),
    (["--repeats", "0"], "--repeats must be a positive integer, got 0"),
    (["--threads", "1,x"], "--threads must be comma-separated positive integers, got '1,x'"),
])
def test_bench_cli_rejects_bad_options(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_flop_count_of_the_non_plastic_step_is_its_matrix_multiplies():
    """rule none, RNN: per step in_fc, h_fc, i_fc, out_fc forward GEMMs, and their backward ones.

    Forward 2·B·Σ in·out per step; backward twice that (input and weight
    gradients) except where the input needs no gradient: in_fc's input, and
    h_fc's at the first step (h_0 = 0 is a constant).
    """
    B, T, H = 2, 20, 384  # cue-reward: input 16, output 1 (rule none has no extra or modulation units)
    res = bench.measure(bench.Config("cue-reward", "rnn", "none", "none", batch_size=B, repeats=1, warmup=0))
    in_fc, h_fc, i_fc, out_fc = 16 * H, H * H, H * H, H * 1
    per_step = 2 * in_fc + 3 * (h_fc + i_fc + out_fc)
    expected = 2 * B * (T * per_step - h_fc) / 1e9
    assert res["gflop_per_step"] == pytest.approx(expected, rel=1e-9)


def test_fast_engine_gemm_work_grows_with_the_history():
    """The factored reads cost ~T²: doubling T (same sizes) more than triples the fast engine's flops."""
    import torch

    from plasticnet.network import PlasticRNN

    def gflop(T):
        net = PlasticRNN(3, 16, 1, cell="rnn", rule="hebbian", engine="fast")
        x = torch.rand(2, T, 3)
        return bench.step_gflop(lambda: net(x)[0].sum().backward())

    assert gflop(16) > 3 * gflop(8)


def test_kernel_engine_work_grows_linearly():
    """The kernel engine's only GEMMs are the slow weights' gradients, Σ_t pre ⊗ dpost: linear in T."""
    import torch

    from plasticnet.network import PlasticRNN

    def gflop(T):
        net = PlasticRNN(3, 16, 1, cell="rnn", rule="hebbian", engine="kernel")
        x = torch.rand(2, T, 3)
        return bench.step_gflop(lambda: net(x)[0].sum().backward())

    assert gflop(16) == pytest.approx(2 * gflop(8), rel=1e-9)


def test_gemm_rate_and_work_table():
    assert bench.gemm_rate(rows=64, inner=32, cols=32, repeats=2) > 0
    rows = [dict(task="cue-reward", cell="rnn", rule="hebbian", engine="fast", ms_per_step=300.0, gflop_per_step=10.0),
            dict(task="cue-reward", cell="rnn", rule="hebbian", engine="reference", ms_per_step=3e3,
                 gflop_per_step=30.0),
            dict(task="cue-reward", cell="rnn", rule="none", engine="none", ms_per_step=40.0, gflop_per_step=2.0)]
    text = bench.work_table(rows, rate=100.0)
    assert "100 GFLOP/s" in text and "3.0x" in text and "5.00x" in text  # ref/fast and fast/none flops
    assert " 100 " in text and "3.00x" in text  # floor 10 GFLOP / 100 GFLOP/s = 100 ms; 300 ms is 3× above it


def test_flop_count_follows_autograd_grad_in_the_forward_pass():
    """The reference engine's gradient rule calls autograd.grad in the forward pass; its step is plain tensor
    functions (no submodule calls inside the grad), so the counter follows it and counts its multiplies."""
    res = bench.measure(bench.Config("cue-reward", "rnn", "gradient", "reference", batch_size=2, repeats=1, warmup=0))
    assert res["ms_per_step"] > 0 and res["gflop_per_step"] > 0


# ------------------------------------------------------------------ devices: cuda and the triton engine
@pytest.fixture
def no_runs(monkeypatch):
    """Fail the test if the benchmark starts any work (a run or the GEMM-rate measurement)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the benchmark started work before refusing its arguments")

    monkeypatch.setattr(bench, "run_child", refuse)
    monkeypatch.setattr(bench, "gemm_rate", refuse)


@pytest.mark.parametrize("cuda,env,argv,message", [
    (False, None, ["--device", "cuda", "--engines", "fast,none"],
     "device 'cuda': torch finds no CUDA device on this machine; allowed here: 'cpu'"),
    (False, None, ["--device", "tpu"], "unknown device 'tpu'; allowed: 'cpu', 'cuda'"),
    (True, None, ["--device", "cuda", "--engines", "kernel,none"],
     "the kernel engine runs on the CPU only; engines on device 'cuda': 'triton', 'fast', 'reference', 'none'"),
    (True, None, ["--engines", "triton,none"],
     "the triton engine runs on device 'cuda'; on the CPU only in Triton's interpreter (TRITON_INTERPRET=1"),
    (True, "1", ["--device", "cuda"], "TRITON_INTERPRET=1 would run the triton engine's programs in the interpreter"),
    (False, "1", ["--hidden-scale", "0"], "hidden_scale must be"),
])
def test_bench_refuses_devices_and_engines_before_any_work(cuda, env, argv, message, monkeypatch, capsys, no_runs):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if env is None:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", env)
    assert main(["bench", "--tasks", "cue-reward", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cuda_runs_are_configured_for_the_gpu(monkeypatch, capsys):
    """With a CUDA device (pretended here), every run is configured for it, triton among the default engines,
    and no CPU GEMM rate is measured; the runs themselves are not made here (no GPU)."""
    import torch

    pytest.importorskip("triton")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(bench, "gemm_rate", lambda: pytest.fail("gemm_rate on cuda"))
    runs = []
    monkeypatch.setattr(bench, "run_child", lambda cfg, timeout, fraction: runs.append(cfg) or
                        bench._failed(cfg, "not run in this test"))
    assert main(["bench", "--device", "cuda", "--tasks", "cue-reward", "--cells", "lstm", "--rules", "gradient",
                 "--timeout", "60", "--json"]) == 0
    assert [(c.engine, c.device) for c in runs] == [(e, "cuda") for e in ("triton", "fast", "reference", "none")]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["error"] for r in lines] == ["not run in this test"] * 4 and lines[0]["device"] == "cuda"


def test_reference_skip_on_cuda_reads_the_gpu_free_memory(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (100 * 2**20, 80 * 2**30))
    res = bench.run_child(bench.Config("cue-reward", "lstm", "gradient", "reference", device="cuda"), 10)
    assert res["error"].startswith("skipped: needs ~") and res["error"].endswith("100 MB free on the GPU")


def test_triton_engine_bench_under_the_interpreter(monkeypatch, capsys):
    """A real run of the triton engine's programs, in Triton's interpreter on the CPU: tiny (hidden 8, B = 1)."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # read by the measuring child when it imports triton
    assert main(["bench", "--tasks", "cue-reward", "--cells", "rnn", "--rules", "hebbian", "--engines", "triton,none",
                 "--batch-size", "1", "--hidden-scale", "0.03125", "--repeats", "1", "--warmup", "0", "--json"]) == 0
    out, err = capsys.readouterr()
    tri, none = [json.loads(line) for line in out.splitlines()]
    assert "error" not in tri and "error" not in none, (tri, none)
    assert (tri["engine"], tri["device"], tri["hidden"], tri["batch_size"]) == ("triton", "cpu", 8, 1)
    assert none["hidden"] == 12  # 384 / 32
    assert tri["ms_per_step"] > 0 and tri["peak_mb"] >= 0
    assert "t/none" in err.splitlines()[1]
