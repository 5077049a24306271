"""``plasticnet bench``: time and peak memory of one training step, per engine.

For each [D23] paper configuration (task shape × cell × rule, B = 64, hidden
size by :func:`plasticnet.matched_hidden_size`) it measures one training
step — forward, MSE loss on every step, backward, gradient-norm clip 5 and an
AdamW (amsgrad) step — for the ``kernel``, ``fast`` and ``reference``
engines and the non-plastic network of the same configuration
(``rule="none"``, its own matched size), as ratios in the same run.
Inputs and targets are random tensors of the task's shape: only the shapes
matter for the cost.

How it measures (honest rather than flattering):

- every (configuration, engine) runs in a fresh subprocess, one thread
  (``torch.set_num_threads(1)``), so runs cannot share caches or allocator pools;
  ``--threads 1,2`` also runs the kernel engine with 2 threads over the batch
  (``engine_threads``; torch's own operations stay on one thread), its scaling table;
- the kernel engine's compiled code is loaded (or compiled) in an untimed
  call before the warm-up steps;
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
  timed ones; and, once per benchmark, ``gemm_gflops``, this machine's
  single-thread GEMM rate at the shape of the fast engine's factored reads
  (:func:`gemm_rate`). ``gflop / rate`` is the time the step's GEMMs alone
  would take at that rate — a floor under ``ms_per_step`` for an engine that
  does those multiplies — and the flop ratio of two engines bounds their time
  ratio once both run their GEMMs at the machine's rate (the second table).
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
ENGINES = ("kernel", "fast", "reference", "none")


@dataclass
class Config:
    task: str
    cell: str
    rule: str  # "none" for the non-plastic network
    engine: str  # "kernel", "fast", "reference" or "none"
    batch_size: int = 64
    repeats: int = 3
    warmup: int = 1
    chunk_size: int = 0  # fast engine's chunk size; 0: its default
    threads: int = 1  # torch's (and so the kernel engine's) threads


def _memory_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def measure(cfg: Config) -> dict:
    """Run ``cfg`` in this process: ``{task, cell, rule, engine, hidden, ms_per_step, peak_mb}``."""
    import torch

    from .engine.fast import DEFAULT_CHUNK_SIZE
    from .network import PlasticRNN, matched_hidden_size

    engine = "fast" if cfg.engine == "none" else cfg.engine
    torch.set_num_threads(1 if engine == "kernel" else cfg.threads)  # the kernel's own threads, not torch's
    torch.manual_seed(0)
    n_in, n_out, T = TASKS[cfg.task]
    hidden = matched_hidden_size(cfg.rule, cfg.cell)
    net = PlasticRNN(n_in, hidden, n_out, cell=cfg.cell, rule=cfg.rule, engine=engine,
                     chunk_size=cfg.chunk_size or DEFAULT_CHUNK_SIZE, engine_threads=cfg.threads)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0, amsgrad=True)
    gen = torch.Generator().manual_seed(1)
    inputs = torch.rand(cfg.batch_size, T, n_in, generator=gen)
    targets = torch.rand(cfg.batch_size, T, n_out, generator=gen) * 2 - 1

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
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak RSS (VmHWM) to the current RSS
        f.write("5")
    base = _memory_kb("VmRSS")
    for _ in range(cfg.warmup):
        train_step()
    cpu, wall = [], []
    for _ in range(cfg.repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        train_step()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    peak = _memory_kb("VmHWM") - base
    return dict(task=cfg.task, cell=cfg.cell, rule=cfg.rule, engine=cfg.engine, hidden=hidden, threads=cfg.threads,
                ms_per_step=1e3 * sum(cpu) / len(cpu), wall_ms_per_step=1e3 * sum(wall) / len(wall),
                peak_mb=peak / 1024, gflop_per_step=step_gflop(train_step))


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
    from .network import matched_hidden_size

    n_in, n_out, T = TASKS[cfg.task]
    H = matched_hidden_size(cfg.rule, cfg.cell)
    G = 4 * H if cfg.cell == "lstm" else H
    entries = n_in * H + 2 * H * G + H * (n_out + 5)
    return 6 * 4 * T * cfg.batch_size * entries / 2**20


def _available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def run_child(cfg: Config, timeout: float, memory_fraction: float = 0.8) -> dict:
    """:func:`measure` in a fresh single-threaded subprocess.

    A reference-engine run whose estimated peak exceeds ``memory_fraction`` of
    the memory available now is skipped (reported as an error), so a benchmark
    cannot push a shared machine into swapping or the OOM killer.
    """
    if cfg.engine == "reference":
        need, avail = reference_memory_estimate_mb(cfg), _available_mb()
        if need > memory_fraction * avail:
            return dict(task=cfg.task, cell=cfg.cell, rule=cfg.rule, engine=cfg.engine,
                        error=f"skipped: needs ~{need:.0f} MB, {avail:.0f} MB available")
    src = str(Path(__file__).resolve().parents[1])  # the child imports this very copy of plasticnet
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    n = "1" if cfg.engine == "kernel" else str(cfg.threads)  # the kernel engine's threads are its own
    env = dict(os.environ, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, PYTHONPATH=path)
    cmd = [sys.executable, "-m", "plasticnet.bench", "--child", json.dumps(cfg.__dict__)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(task=cfg.task, cell=cfg.cell, rule=cfg.rule, engine=cfg.engine, error=f"timeout {timeout}s")
    if res.returncode != 0:
        err = (res.stderr.strip().splitlines() or [f"exit code {res.returncode}"])[-1]
        return dict(task=cfg.task, cell=cfg.cell, rule=cfg.rule, engine=cfg.engine, error=err)
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
    ``get(task, cell, rule, key)`` → that field for each of :data:`ENGINES` at ``threads``
    (``None`` where the run is missing, failed or lacks the field; ``none`` is the
    non-plastic run, always at one thread)."""
    by = {(r["task"], r["cell"], r["rule"], r["engine"], r.get("threads", 1)): r for r in results if "error" not in r}
    keys = sorted({(r["task"], r["cell"], r["rule"]) for r in results if r["rule"] != "none"},
                  key=lambda k: (list(TASKS).index(k[0]), k[1], k[2]))

    def get(task, cell, rule, key):
        runs = (by.get((task, cell, "none", e, 1) if e == "none" else (task, cell, rule, e, threads)) for e in ENGINES)
        return tuple(None if r is None else r.get(key) for r in runs)

    return keys, get


def table(results) -> str:
    """Rows (task, cell, rule): ms/step and peak MB per engine (one thread), and the ratios.

    ``k/none``, ``f/none``: the kernel's and the fast engine's step over the
    non-plastic network's; ``ref/k``: the reference engine's time and memory
    over the kernel's.
    """
    keys, get = _per_engine(results)
    head = (f"{'task':18s} {'cell':4s} {'rule':8s} | {'kernel':>7s} {'fast':>7s} {'ref':>7s} {'none':>7s} ms "
            f"{'k/none':>7s} {'f/none':>7s} {'ref/k':>7s} | {'kernel':>7s} {'fast':>7s} {'ref':>7s} MB {'ref/k':>7s}")
    lines = [head, "-" * len(head)]
    for task, cell, rule in keys:
        k_ms, f_ms, r_ms, n_ms = get(task, cell, rule, "ms_per_step")
        k_mb, f_mb, r_mb, _ = get(task, cell, rule, "peak_mb")
        lines.append(f"{task:18s} {cell:4s} {rule:8s} | {_fmt(k_ms, '7.0f')} {_fmt(f_ms, '7.0f')} {_fmt(r_ms, '7.0f')} "
                     f"{_fmt(n_ms, '7.0f')}    {_fmt(_ratio(k_ms, n_ms), '6.2f')}x {_fmt(_ratio(f_ms, n_ms), '6.2f')}x "
                     f"{_fmt(_ratio(r_ms, k_ms), '6.1f')}x | {_fmt(k_mb, '7.0f')} {_fmt(f_mb, '7.0f')} "
                     f"{_fmt(r_mb, '7.0f')}    {_fmt(_ratio(r_mb, k_mb), '6.1f')}x")
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
        one = _per_engine(results, 1)[1](task, cell, rule, "wall_ms_per_step")[0]
        many = _per_engine(results, n)[1](task, cell, rule, "wall_ms_per_step")[0]
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
        _, f_gf, r_gf, n_gf = get(task, cell, rule, "gflop_per_step")
        f_ms = get(task, cell, rule, "ms_per_step")[1]
        floor = None if f_gf is None else 1e3 * f_gf / rate
        lines.append(f"{task:18s} {cell:4s} {rule:8s} | {_fmt(f_gf, '8.2f')} {_fmt(r_gf, '8.2f')} {_fmt(n_gf, '8.2f')} "
                     f"{_fmt(_ratio(r_gf, f_gf), '7.1f')}x {_fmt(_ratio(f_gf, n_gf), '8.2f')}x | "
                     f"{_fmt(floor, '8.0f')} {_fmt(_ratio(f_ms, floor), '9.2f')}x")
    return "\n".join(lines)


def run_bench(tasks=tuple(TASKS), cells=CELLS, rules=RULES, engines=ENGINES, threads=(1,), repeats: int = 3,
              warmup: int = 1, batch_size: int = 64, chunk_size: int = 0, timeout: float = 900,
              memory_fraction: float = 0.8,
              on_result: Optional[Callable[[Config, dict], None]] = None) -> Tuple[List[dict], float]:
    """Measure every run of :func:`configurations`, each in its own child (:func:`run_child`).

    Names (of :data:`TASKS`, :data:`CELLS`, :data:`RULES`, :data:`ENGINES`)
    and every number are checked first (``ValueError``), before any run.
    ``timeout``: seconds per run; ``memory_fraction``: as :func:`run_child`;
    ``on_result(cfg, result)`` is called after each run. Returns the results
    (each with ``gemm_gflops``, this machine's GEMM rate, :func:`gemm_rate`)
    and that rate.
    """
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
    results, rate = [], gemm_rate()  # the machine's GEMM rate, recorded in every result
    kw = dict(repeats=repeats, warmup=warmup, batch_size=batch_size, chunk_size=chunk_size)
    for cfg in configurations(tasks, cells, rules, engines, threads, **kw):
        res = {**run_child(cfg, timeout, memory_fraction), "gemm_gflops": rate}
        results.append(res)
        if on_result is not None:
            on_result(cfg, res)
    return results, rate


def report(results, rate: float) -> str:
    """The benchmark's tables: :func:`table`, :func:`scaling_table` (where it has rows) and :func:`work_table`."""
    scaling = scaling_table(results)
    return "\n\n".join([table(results)] + ([scaling] if scaling else []) + [work_table(results, rate)])


if __name__ == "__main__":  # the measuring child of run_child; users run `plasticnet bench`
    if len(sys.argv) != 3 or sys.argv[1] != "--child":
        sys.exit("usage: plasticnet bench [options]  (this module's own entry point is only run_child's --child)")
    print(json.dumps(measure(Config(**json.loads(sys.argv[2])))))
