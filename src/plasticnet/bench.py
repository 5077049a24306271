"""``plasticnet bench``: time and peak memory of one training step, per engine.

For each [D23] paper configuration (task shape × cell × rule, B = 64, hidden
size by :func:`plasticnet.matched_hidden_size`) it measures one training
step — forward, MSE loss on every step, backward, gradient-norm clip 5 and an
AdamW (amsgrad) step — for the ``kernel``, ``triton``, ``fast`` and
``reference`` engines and the non-plastic network of the same configuration
(``rule="none"``, its own matched size), as ratios in the same run.
Inputs and targets are random tensors of the task's shape: only the shapes
matter for the cost. ``--hidden-scale`` scales every hidden size (for quick
checks; 1 is the paper's).

How it measures (honest rather than flattering):

- every (configuration, engine) runs in a fresh subprocess, one thread
  (``torch.set_num_threads(1)``), so runs cannot share caches or allocator pools;
  ``--threads 1,2`` also runs the kernel engine with 2 threads over the batch
  (``engine_threads``; torch's own operations stay on one thread), its scaling table;
- the kernel engine's compiled code is loaded (or compiled) in an untimed
  call before the warm-up steps (on CUDA, the triton engine's programs in an
  untimed full-size step);
- time: ``--warmup`` untimed steps, then the mean time of ``--repeats``
  steps: ``ms_per_step`` is the CPU time of the (single-threaded) process,
  which the other loads of a shared machine disturb much less than the
  wall-clock time (also reported, as ``wall_ms_per_step``);
- memory: the process's peak resident set size (``VmHWM`` of
  ``/proc/self/status``) reset just before the first step
  (``/proc/self/clear_refs``), minus the resident size at that moment (model,
  data and the imported libraries): what the training step itself adds at
  its peak, as the operating system sees it (so it counts every allocation
  of PyTorch's CPU allocator, which ``tracemalloc`` cannot see).
- work: ``gflop_per_step``, the matrix-multiply flops (``mm``, ``bmm``,
  ``addmm``...) of one training step, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on one more step after the
  timed ones (torch operations only: not the kernel's or triton's own
  loops); and, once per benchmark, ``gemm_gflops``, this machine's
  single-thread GEMM rate at the shape of the fast engine's factored reads
  (:func:`gemm_rate`). ``gflop / rate`` is the time the step's GEMMs alone
  would take at that rate — a floor under ``ms_per_step`` for an engine that
  does those multiplies — and the flop ratio of two engines bounds their time
  ratio once both run their GEMMs at the machine's rate (the second table).

``--device cuda`` runs the model and data on the GPU instead: ``ms_per_step``
is then the wall time of a step between two ``torch.cuda.synchronize()``
calls (CPU time means nothing there), ``peak_mb`` is
``torch.cuda.max_memory_allocated()`` (peak statistics reset before the
first step) minus the memory allocated at that moment, a reference run is
skipped by the GPU's free memory (``torch.cuda.mem_get_info``), and there is
no GEMM-rate table. The kernel engine is CPU-only and refused there; the
triton engine needs CUDA and is refused on the CPU unless
``TRITON_INTERPRET=1`` runs its programs in Triton's interpreter (slow: for
tests, at tiny sizes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from .checks import check_choice, check_nonnegative_int, check_positive, check_positive_int, check_range

# name: (input size, output size, steps T) — SPEC §2
TASKS = {
    "cue-reward": (16, 1, 20),
    "seq-L20-d20": (3, 1, 60),
    "seq-L5-d60": (3, 1, 70),
    "regression-linear": (14, 1, 40),
    "regression-mlp": (8, 1, 40),
}
CELLS = ("rnn", "lstm")
RULES = ("hebbian", "gradient")
ENGINES = ("kernel", "triton", "fast", "reference", "none")
DEVICES = ("cpu", "cuda")
DEFAULT_ENGINES = {"cpu": ("kernel", "fast", "reference", "none"), "cuda": ("triton", "fast", "reference", "none")}


@dataclass
class Config:
    task: str
    cell: str
    rule: str  # "none" for the non-plastic network
    engine: str  # one of ENGINES; "none": the non-plastic network
    batch_size: int = 64
    repeats: int = 3
    warmup: int = 1
    chunk_size: int = 0  # fast engine's chunk size; 0: its default
    threads: int = 1  # torch's (and so the kernel engine's) threads
    device: str = "cpu"  # "cpu" or "cuda"
    hidden_scale: float = 1.0  # factor on every matched hidden size (1: the paper's)


def hidden_size(cfg: Config) -> int:
    """The run's hidden size: the matched size of its rule and cell (SPEC §1) times ``hidden_scale``, at least 1."""
    from .network import matched_hidden_size

    return max(1, round(matched_hidden_size(cfg.rule, cfg.cell) * cfg.hidden_scale))


def _memory_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def measure(cfg: Config) -> dict:
    """Run ``cfg`` in this process: ``{task, cell, rule, engine, hidden, ms_per_step, peak_mb, ...}``."""
    import torch

    from .engine.fast import DEFAULT_CHUNK_SIZE
    from .network import PlasticRNN

    engine = "fast" if cfg.engine == "none" else cfg.engine
    cuda = cfg.device == "cuda"
    torch.set_num_threads(1 if engine == "kernel" else cfg.threads)  # the kernel's own threads, not torch's
    torch.manual_seed(0)
    n_in, n_out, T = TASKS[cfg.task]
    hidden = hidden_size(cfg)
    net = PlasticRNN(n_in, hidden, n_out, cell=cfg.cell, rule=cfg.rule, engine=engine,
                     chunk_size=cfg.chunk_size or DEFAULT_CHUNK_SIZE, engine_threads=cfg.threads).to(cfg.device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0, amsgrad=True)
    gen = torch.Generator().manual_seed(1)
    inputs = torch.rand(cfg.batch_size, T, n_in, generator=gen).to(cfg.device)
    targets = (torch.rand(cfg.batch_size, T, n_out, generator=gen) * 2 - 1).to(cfg.device)

    def train_step():
        opt.zero_grad(set_to_none=True)
        out, _ = net(inputs)
        loss = torch.nn.functional.mse_loss(out, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()

    if engine == "kernel":  # load (or compile) the compiled loops outside the measurement
        net(inputs[:1, :2])[0].sum().backward()
        opt.zero_grad(set_to_none=True)
    if engine == "triton" and cuda:  # compile the programs for the run's sizes outside the measurement
        net(inputs)[0].sum().backward()
        opt.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:  # reset the peak RSS (VmHWM) to the current RSS
            f.write("5")
        base = 1024 * _memory_kb("VmRSS")
    for _ in range(cfg.warmup):
        train_step()
    cpu, wall = [], []
    for _ in range(cfg.repeats):
        if cuda:
            torch.cuda.synchronize()
        c0, w0 = time.process_time(), time.perf_counter()
        train_step()
        if cuda:
            torch.cuda.synchronize()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    peak = (torch.cuda.max_memory_allocated() if cuda else 1024 * _memory_kb("VmHWM")) - base
    return dict(task=cfg.task, cell=cfg.cell, rule=cfg.rule, engine=cfg.engine, device=cfg.device, hidden=hidden,
                batch_size=cfg.batch_size, T=T, threads=cfg.threads,
                ms_per_step=1e3 * sum(wall if cuda else cpu) / len(cpu), wall_ms_per_step=1e3 * sum(wall) / len(wall),
                peak_mb=peak / 2**20, gflop_per_step=step_gflop(train_step),
                **({"gpu": torch.cuda.get_device_name()} if cuda else {}))


def step_gflop(train_step) -> Optional[float]:
    """Matrix-multiply GFLOP of one call of ``train_step`` (``FlopCounterMode``; 2 flops per multiply-add).

    ``None`` where the counter cannot follow the step: PyTorch 2.13's
    ``FlopCounterMode`` refuses a step that calls ``autograd.grad`` inside
    the forward pass (the reference engine's gradient rule).
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    try:
        with counter:
            train_step()
    except RuntimeError:
        return None
    return counter.get_total_flops() / 1e9


def gemm_rate(rows: int = 640, inner: int = 128, cols: int = 512, repeats: int = 50) -> float:
    """Single-thread float32 GEMM rate of this machine in GFLOP/s, ``(rows, inner) @ (inner, cols)``.

    The default shape is a factored read of the fast engine at cue–reward
    sizes (B = 64 samples × 10 history steps, LSTM ``h_fc`` 128 → 512).
    The best of three rounds of ``repeats`` multiplies (CPU time).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(rows, inner), torch.randn(inner, cols)
        a @ b
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            for _ in range(repeats):
                a @ b
            best = min(best, (time.process_time() - t0) / repeats)
    finally:
        torch.set_num_threads(threads)
    return 2 * rows * inner * cols / best / 1e9


def reference_memory_estimate_mb(cfg: Config) -> float:
    """Rough peak of the reference engine's step: ~6 floats per fast-weight entry per step (docs/engines.md)."""
    n_in, n_out, T = TASKS[cfg.task]
    H = hidden_size(cfg)
    G = 4 * H if cfg.cell == "lstm" else H
    entries = n_in * H + 2 * H * G + H * (n_out + 5)
    return 6 * 4 * T * cfg.batch_size * entries / 2**20


def _available_mb(device: str = "cpu") -> float:
    """Memory available now: the GPU's free memory on ``cuda``, the system's ``MemAvailable`` on the CPU."""
    if device == "cuda":
        import torch

        return torch.cuda.mem_get_info()[0] / 2**20
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def _failed(cfg: Config, error: str) -> dict:
    return dict(task=cfg.task, cell=cfg.cell, rule=cfg.rule, engine=cfg.engine, device=cfg.device, error=error)


def run_child(cfg: Config, timeout: float, memory_fraction: float = 0.8) -> dict:
    """:func:`measure` in a fresh single-threaded subprocess.

    A reference-engine run whose estimated peak exceeds ``memory_fraction`` of
    the memory available now (on ``cuda``: the GPU's free memory) is skipped
    (reported as an error), so a benchmark cannot push a shared machine into
    swapping or the OOM killer, nor a GPU out of memory.
    """
    if cfg.engine == "reference":
        need, avail = reference_memory_estimate_mb(cfg), _available_mb(cfg.device)
        if need > memory_fraction * avail:
            where = "free on the GPU" if cfg.device == "cuda" else "available"
            return _failed(cfg, f"skipped: needs ~{need:.0f} MB, {avail:.0f} MB {where}")
    src = str(Path(__file__).resolve().parents[1])  # the child imports this very copy of plasticnet
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    n = "1" if cfg.engine == "kernel" else str(cfg.threads)  # the kernel engine's threads are its own
    env = dict(os.environ, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, PYTHONPATH=path)
    cmd = [sys.executable, "-m", "plasticnet.bench", "--child", json.dumps(cfg.__dict__)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return _failed(cfg, f"timeout {timeout}s")
    if res.returncode != 0:
        return _failed(cfg, (res.stderr.strip().splitlines() or [f"exit code {res.returncode}"])[-1])
    return json.loads(res.stdout.strip().splitlines()[-1])


def configurations(tasks, cells, rules, engines, threads=(1,), **kw):
    """The runs: each (task, cell, rule) for the plastic engines, and the non-plastic net per (task, cell).

    Each thread count of ``threads`` above 1 adds a kernel-engine run (its scaling).
    """
    for task in tasks:
        for cell in cells:
            for rule in rules:
                for engine in engines:
                    if engine != "none":
                        yield Config(task, cell, rule, engine, **kw)
                    if engine == "kernel":
                        for n in threads:
                            if n > 1:
                                yield Config(task, cell, rule, engine, threads=n, **kw)
            if "none" in engines:
                yield Config(task, cell, "none", "none", **kw)


def _fmt(x, spec: str) -> str:
    """``x`` formatted by ``spec``, or ``-`` in the same width where it is missing."""
    return format(x, spec) if x is not None else "-".rjust(int(spec.split(".")[0]))


def _ratio(a, b):
    return a / b if a is not None and b is not None and b > 0 else None


def _per_engine(results, threads: int = 1):
    """``(keys, get)``: the (task, cell, rule) rows of ``results`` in table order, and
    ``get(task, cell, rule, key)`` → ``{engine: that field}`` for each of :data:`ENGINES` at ``threads``
    (``None`` where the run is missing, failed or lacks the field; ``none`` is the
    non-plastic run, always at one thread)."""
    by = {(r["task"], r["cell"], r["rule"], r["engine"], r.get("threads", 1)): r for r in results if "error" not in r}
    keys = sorted({(r["task"], r["cell"], r["rule"]) for r in results if r["rule"] != "none"},
                  key=lambda k: (list(TASKS).index(k[0]), k[1], k[2]))

    def get(task, cell, rule, key):
        runs = {e: by.get((task, cell, "none", e, 1) if e == "none" else (task, cell, rule, e, threads))
                for e in ENGINES}
        return {e: None if r is None else r.get(key) for e, r in runs.items()}

    return keys, get


SHORT = {"kernel": "k", "triton": "t", "fast": "f", "reference": "ref", "none": "none"}


def _column(engine: str) -> str:
    return "ref" if engine == "reference" else engine


def _ratio_columns(present) -> List[Tuple[str, str]]:
    """The (numerator, denominator) engines of the table's ratio columns, among the engines ``present``.

    Each plastic engine but the reference over the non-plastic network; the
    fast engine over triton; the reference engine over the kernel and over triton.
    """
    pairs = [(e, "none") for e in ("kernel", "triton", "fast") if e in present and "none" in present]
    pairs += [("fast", "triton")] if "fast" in present and "triton" in present else []
    pairs += [("reference", e) for e in ("kernel", "triton") if "reference" in present and e in present]
    return pairs


def table(results) -> str:
    """Rows (task, cell, rule): ms/step and peak MB per engine (one thread), and the ratios.

    A column for each engine with a run (failed ones included) in ``results``.
    ``k/none``, ``t/none``, ``f/none``: the kernel's, triton's and the fast
    engine's step over the non-plastic network's; ``f/t``: the fast engine's
    over triton's; ``ref/k``, ``ref/t``: the reference engine's time and
    memory over the kernel's and triton's.
    """
    keys, get = _per_engine(results)
    present = [e for e in ENGINES if any(r["engine"] == e for r in results)]
    plastic = [e for e in present if e != "none"]
    ratios = _ratio_columns(present)
    mem_ratios = [(a, b) for a, b in ratios if a == "reference"]
    cuda = any(r.get("device") == "cuda" for r in results)
    ms_spec = "7.1f" if cuda else "7.0f"

    def spec(a, b):
        return "6.1f" if a == "reference" or b == "triton" else "6.2f"

    head = (f"{'task':18s} {'cell':4s} {'rule':8s} |" + "".join(f" {_column(e):>7s}" for e in present) + " ms"
            + "".join(f" {SHORT[a] + '/' + SHORT[b]:>7s}" for a, b in ratios) + " |"
            + "".join(f" {_column(e):>7s}" for e in plastic) + " MB"
            + "".join(f" {SHORT[a] + '/' + SHORT[b]:>7s}" for a, b in mem_ratios))
    caption = ("ms: wall time per step on the GPU (synchronised); MB: peak CUDA memory the step allocates" if cuda else
               "ms: CPU time per step, one thread; MB: peak resident memory the step adds")
    lines = [caption, head, "-" * len(head)]
    for task, cell, rule in keys:
        ms, mb = get(task, cell, rule, "ms_per_step"), get(task, cell, rule, "peak_mb")
        lines.append(f"{task:18s} {cell:4s} {rule:8s} |" + "".join(f" {_fmt(ms[e], ms_spec)}" for e in present)
                     + "   " + "".join(f" {_fmt(_ratio(ms[a], ms[b]), spec(a, b))}x" for a, b in ratios) + " |"
                     + "".join(f" {_fmt(mb[e], '7.0f')}" for e in plastic)
                     + ("   " + "".join(f" {_fmt(_ratio(mb[a], mb[b]), spec(a, b))}x" for a, b in mem_ratios)
                        if mem_ratios else ""))
    for r in results:
        if "error" in r:
            lines.append(f"error: {r['task']} {r['cell']} {r['rule']} {r['engine']}: {r['error']}")
    return "\n".join(lines)


def scaling_table(results) -> str:
    """Rows (task, cell, rule, threads > 1): the kernel engine's ms/step at 1 and n threads and the speed-up."""
    rows = sorted({(r["task"], r["cell"], r["rule"], r["threads"]) for r in results
                   if r["engine"] == "kernel" and r.get("threads", 1) > 1 and "error" not in r},
                  key=lambda k: (list(TASKS).index(k[0]), k[1], k[2], k[3]))
    if not rows:
        return ""
    head = f"{'task':18s} {'cell':4s} {'rule':8s} | {'threads':>7s} {'1 thread':>9s} {'n threads':>9s} {'speed-up':>8s}"
    lines = ["Kernel engine, wall ms per step by thread count", head, "-" * len(head)]
    for task, cell, rule, n in rows:
        one = _per_engine(results, 1)[1](task, cell, rule, "wall_ms_per_step")["kernel"]
        many = _per_engine(results, n)[1](task, cell, rule, "wall_ms_per_step")["kernel"]
        lines.append(f"{task:18s} {cell:4s} {rule:8s} | {n:7d} {_fmt(one, '9.0f')} {_fmt(many, '9.0f')} "
                     f"{_fmt(_ratio(one, many), '7.2f')}x")
    return "\n".join(lines)


def work_table(results, rate: float) -> str:
    """Rows (task, cell, rule): GEMM GFLOP per step of each engine, the flop ratios and the fast engine's floor.

    ``floor ms`` = fast GFLOP / ``rate`` (GFLOP/s): what the fast engine's
    multiplies alone cost at this machine's GEMM rate; ``fast/floor`` is how
    far the measured step is above it (the rest: element-wise work, memory
    traffic, per-operation overhead).
    """
    keys, get = _per_engine(results)
    head = (f"{'task':18s} {'cell':4s} {'rule':8s} | {'fast GF':>8s} {'ref GF':>8s} {'none GF':>8s} "
            f"{'ref/fast':>8s} {'fast/none':>9s} | {'floor ms':>8s} {'fast/floor':>10s}")
    lines = [f"GEMM work per training step (GFLOP); GEMM rate of this machine, one thread: {rate:.0f} GFLOP/s",
             head, "-" * len(head)]
    for task, cell, rule in keys:
        gf = get(task, cell, rule, "gflop_per_step")
        f_gf, r_gf, n_gf = gf["fast"], gf["reference"], gf["none"]
        f_ms = get(task, cell, rule, "ms_per_step")["fast"]
        floor = None if f_gf is None else 1e3 * f_gf / rate
        lines.append(f"{task:18s} {cell:4s} {rule:8s} | {_fmt(f_gf, '8.2f')} {_fmt(r_gf, '8.2f')} {_fmt(n_gf, '8.2f')} "
                     f"{_fmt(_ratio(r_gf, f_gf), '7.1f')}x {_fmt(_ratio(f_gf, n_gf), '8.2f')}x | "
                     f"{_fmt(floor, '8.0f')} {_fmt(_ratio(f_ms, floor), '9.2f')}x")
    return "\n".join(lines)


def check_device(device: str, engines) -> None:
    """Refuse (``ValueError``), before any run, a device this machine lacks and an engine ``device`` cannot run."""
    import torch

    from .engine import triton_engine

    check_choice("device", device, DEVICES)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda': torch finds no CUDA device on this machine; allowed here: 'cpu'")
    if device == "cuda" and "kernel" in engines:
        raise ValueError("the kernel engine runs on the CPU only; engines on device 'cuda': "
                         "'triton', 'fast', 'reference', 'none'")
    if "triton" not in engines:
        return
    if device == "cpu" and not triton_engine.interpreting():
        raise ValueError("the triton engine runs on device 'cuda'; on the CPU only in Triton's interpreter "
                         "(TRITON_INTERPRET=1 in the environment; slow, for tests at tiny sizes); "
                         "engines on device 'cpu': 'kernel', 'fast', 'reference', 'none'")
    if device == "cuda" and triton_engine.interpreting():
        raise ValueError("TRITON_INTERPRET=1 would run the triton engine's programs in the interpreter, "
                         "not on the GPU: unset it for device 'cuda'")
    why = triton_engine.available()
    if why is not None:
        raise ValueError(f"the triton engine cannot run here: {why}")


def run_bench(tasks=tuple(TASKS), cells=CELLS, rules=RULES, engines=None, threads=(1,), repeats: int = 3,
              warmup: int = 1, batch_size: int = 64, chunk_size: int = 0, timeout: float = 900,
              memory_fraction: float = 0.8, device: str = "cpu", hidden_scale: float = 1.0,
              on_result: Optional[Callable[[Config, dict], None]] = None) -> Tuple[List[dict], Optional[float]]:
    """Measure every run of :func:`configurations`, each in its own child (:func:`run_child`).

    Names (of :data:`TASKS`, :data:`CELLS`, :data:`RULES`, :data:`ENGINES`,
    :data:`DEVICES`), every number and the engines' devices
    (:func:`check_device`) are checked first (``ValueError``), before any run.
    ``timeout``: seconds per run; ``memory_fraction``: as :func:`run_child`;
    ``engines``: ``None`` for the device's :data:`DEFAULT_ENGINES`;
    ``hidden_scale``: factor on every hidden size (1: the paper's);
    ``on_result(cfg, result)`` is called after each run. Returns the results
    and, on the CPU, this machine's GEMM rate (:func:`gemm_rate`, recorded
    in every result as ``gemm_gflops``; ``None`` on ``cuda``).
    """
    check_choice("device", device, DEVICES)
    engines = DEFAULT_ENGINES[device] if engines is None else engines
    for name, vals, allowed in (("task", tasks, TASKS), ("cell", cells, CELLS), ("rule", rules, RULES),
                                ("engine", engines, ENGINES)):
        for value in vals:
            check_choice(name, value, allowed)
    check_positive_int("repeats", repeats)
    for n in threads:
        check_positive_int("threads", n)
    check_positive_int("batch_size", batch_size)
    check_nonnegative_int("warmup", warmup)
    check_nonnegative_int("chunk_size (0: the fast engine's default)", chunk_size)
    check_positive("timeout", timeout)
    check_range("memory_fraction", memory_fraction, 0, 1, low_open=True)
    check_positive("hidden_scale", hidden_scale)
    check_device(device, engines)
    results, rate = [], (gemm_rate() if device == "cpu" else None)
    kw = dict(repeats=repeats, warmup=warmup, batch_size=batch_size, chunk_size=chunk_size, device=device,
              hidden_scale=hidden_scale)
    for cfg in configurations(tasks, cells, rules, engines, threads, **kw):
        res = run_child(cfg, timeout, memory_fraction)
        if rate is not None:
            res["gemm_gflops"] = rate
        results.append(res)
        if on_result is not None:
            on_result(cfg, res)
    return results, rate


def report(results, rate: Optional[float]) -> str:
    """The benchmark's tables: :func:`table`, :func:`scaling_table` (where it has rows) and, with a GEMM
    ``rate`` (CPU runs), :func:`work_table`."""
    scaling = scaling_table(results)
    work = [work_table(results, rate)] if rate is not None else []
    return "\n\n".join([table(results)] + ([scaling] if scaling else []) + work)


if __name__ == "__main__":  # the measuring child of run_child; users run `plasticnet bench`
    if len(sys.argv) != 3 or sys.argv[1] != "--child":
        sys.exit("usage: plasticnet bench [options]  (this module's own entry point is only run_child's --child)")
    print(json.dumps(measure(Config(**json.loads(sys.argv[2])))))
