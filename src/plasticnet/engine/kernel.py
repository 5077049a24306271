"""Kernel engine: a compiled per-sample loop whose cost grows linearly with the episode length.

The fast engine reads factored fast weights, a ``(B·t, in) @ (in, out)``
GEMM at step ``t``, so an episode costs ~T²/2. The computation is really
memory-bound, so this engine keeps each sample's fast weights materialised
and in cache instead: one sample at a time through all ``T`` steps, the
update of step ``t`` fused with the read of step ``t + 1``, samples in
parallel across threads (:mod:`.kernel_ops`, compiled with numba). Its
backward is a reverse-time adjoint per sample (``dF_t = keep·dF_{t+1} + pre ⊗
dpost``) that recovers ``F_t`` by undoing the update, with a checkpoint of
``F`` every :func:`checkpoint_interval` steps, so its memory is
``O(B·in·out)`` per layer plus ``O(B·T·hidden)`` of small vectors.

Same equations as the other engines (SPEC §1, :mod:`plasticnet.rules`), the
gradient rule in the fast engine's closed form; tests hold outputs, final
fast weights and every outer gradient equal to the reference engine. The
state holds materialised fast weights, as under the reference engine.
CPU only; where numba is missing, ``engine="auto"`` falls back to ``fast``.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Optional

import numpy as np
import torch

from ..checks import check_positive_int
from ..layers import FastWeights
from .base import LAYERS, TRACE_KEYS, EngineResult, EpisodeEngine, NetSpec, check_state

try:  # numba is an optional dependency (the ``kernel`` extra)
    from . import kernel_ops
except ImportError as err:  # pragma: no cover - exercised only without numba
    kernel_ops = None
    IMPORT_ERROR: Optional[str] = str(err)
else:
    IMPORT_ERROR = None

# undoing ``k`` updates may amplify rounding by Π 1/|keep| ≤ this before a checkpoint is taken
MAX_AMPLIFICATION = {torch.float32: 2.0 ** 8, torch.float64: 2.0 ** 12}
GROUPS = 16  # the backward's batch sums run over this many fixed groups of samples, whatever the thread count
OUT = 3  # out_fc, whose (in, out) matrices the kernel stores transposed (see _kernel_layout)


def available() -> bool:
    """Whether the compiled kernel can run here (numba imports)."""
    return kernel_ops is not None


def checkpoint_interval(inner_decay: float, modulation: bool, weight_clip, steps: int, dtype) -> int:
    """Steps between stored copies of ``F`` in the forward, so that undoing the rest stays exact.

    Undoing ``F_{t+1} = keep·F_t + …`` divides by ``keep = 1 − p_wd·m``
    (``m ∈ (0, 2)`` with modulation, ``m = 1`` without), which amplifies
    rounding by ``1/|keep|`` per step. ``K`` is the largest interval with
    ``(1/min|keep|)^K ≤`` :data:`MAX_AMPLIFICATION` of the dtype; ``K = 1`` (a
    copy at every step, the reference engine's memory) where ``keep`` can
    reach 0 or where ``weight_clip`` clamps (a clamp cannot be undone).
    """
    if weight_clip is not None:
        return 1
    ends = (1.0 - inner_decay * 0.0, 1.0 - inner_decay * 2.0) if modulation else (1.0 - inner_decay,)
    lo, hi = min(ends), max(ends)
    kmin = 0.0 if lo <= 0.0 <= hi else min(abs(lo), abs(hi))
    if kmin >= 1.0:
        return max(1, steps)
    if kmin == 0.0:
        return 1
    k = int(math.log(MAX_AMPLIFICATION[dtype]) / -math.log(kmin))
    return max(1, min(k, steps))


def _kernel_layout(t: torch.Tensor, k: int) -> torch.Tensor:
    """``t`` (``(…, in, out)``, or back) in the kernel's layout of layer ``k``: out_fc's matrices transposed.

    out_fc has a few outputs and a hidden size of inputs; stored as ``(out,
    in)``, its compiled loops run over the hidden size and vectorise. A view:
    the transpose is its own inverse, so the same call maps back.
    """
    return t.transpose(-2, -1) if k == OUT else t


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _is_zero_view(t: torch.Tensor) -> bool:
    """``t`` is the engine's zero fast weights: one zero broadcast over every entry (no memory)."""
    return (t.dim() > 0 and all(s == 0 for s in t.stride()) and not t.requires_grad
            and float(t[(0,) * t.dim()]) == 0.0)


class _LayerArgs(NamedTuple):
    """One layer's tensors as :class:`_Episode` receives them (``None`` where absent): the initial fast
    weight ``F0 (B, in, out)`` and bias ``fb0 (B, out)``, ``W``, ``b``, ``Λ``, ``Λ_b``."""

    F0: Optional[torch.Tensor]
    fb0: Optional[torch.Tensor]
    W: Optional[torch.Tensor]
    b: Optional[torch.Tensor]
    L: Optional[torch.Tensor]
    Lb: Optional[torch.Tensor]


def _episode_args(spec: NetSpec, fast) -> list:
    """The tensors of :class:`_Episode`: ``_LayerArgs`` of each of :data:`LAYERS` in turn, then ``ω, γ, β``."""
    flat = []
    for k in LAYERS:
        p = spec.layers.get(k)
        flat += [None] * 6 if p is None else [fast[k].w, fast[k].b, p.weight, p.bias, p.lr_weight, p.lr_bias]
    return flat + [spec.omega, spec.ln_weight, spec.ln_bias]


def _layer_args(flat) -> list:
    """:class:`_LayerArgs` of each layer from :func:`_episode_args`'s list."""
    return [_LayerArgs(*flat[6 * k: 6 * k + 6]) for k in range(len(LAYERS))]


class _Episode(torch.autograd.Function):
    """The whole episode as one autograd node: forward and backward by :mod:`.kernel_ops`."""

    @staticmethod
    def forward(ctx, spec: NetSpec, want_trace: bool, threads, U, h0, c0, *flat):
        dt = U.dtype
        npdt = np.float64 if dt == torch.float64 else np.float32
        B, T, _ = U.shape
        la = _layer_args(flat)
        omega, gamma, beta = flat[6 * len(LAYERS):]
        has_in = spec.has_input_layer
        grad = spec.rule == "gradient"
        lstm = spec.cell == "lstm"
        H = spec.hidden_size
        G = spec.layers["h_fc"].out_features
        D = spec.layers["out_fc"].out_features
        XD = spec.layers["i_fc"].in_features
        K = checkpoint_interval(spec.inner_decay, spec.modulation, spec.weight_clip, T, dt)
        nck = -(-T // K)
        d1, d2, d3, d4 = (np.zeros((1,) * n, npdt) for n in (1, 2, 3, 4))

        Fs, FBs, FBT, CKs, Ws, bs, Ls, Lbs = [], [], [], [], [], [], [], []
        zero0 = 0
        for k, name in enumerate(LAYERS):
            a = la[k]
            if name not in spec.layers:
                Fs.append(d3), FBs.append(d3), FBT.append(d2), CKs.append(d4)
                Ws.append(d2), bs.append(d1), Ls.append(d2), Lbs.append(d1)
                continue
            n_out = a.W.shape[1]
            shape = tuple(_kernel_layout(a.W, k).shape)  # (in, out) in the kernel's layout
            if _is_zero_view(a.F0):
                Fs.append(np.zeros((B, *shape), npdt))
                zero0 |= 1 << k  # its t = 0 checkpoint is not stored (the backward restores zeros)
            else:
                Fs.append(_np(_kernel_layout(a.F0, k)).copy())
            Ws.append(_np(_kernel_layout(a.W, k)))
            bs.append(_np(a.b))
            Ls.append(_np(_kernel_layout(a.L, k)) if a.L is not None else np.ones(shape, npdt))
            CKs.append(np.empty((B, nck, *shape), npdt))
            if grad:
                tape = np.empty((B, T, n_out), npdt)
                tape[:, 0] = _np(a.fb0)
                FBs.append(tape)
                FBT.append(np.empty((B, n_out), npdt))
                Lbs.append(_np(a.Lb) if a.Lb is not None else np.ones(n_out, npdt))
            else:
                FBs.append(d3), FBT.append(d2), Lbs.append(d1)

        def tape(n, used=True):
            return np.zeros((B, T, n), npdt) if used else d3

        ln = spec.layernorm
        inp = kernel_ops.Inputs(_np(U), _np(h0), _np(c0) if lstm else d2)
        prm = kernel_ops.Params(tuple(Ws), tuple(bs), tuple(Ls), tuple(Lbs), _np(omega) if grad else d1,
                                _np(gamma) if ln else d1, _np(beta) if ln else d1)
        fst = kernel_ops.Fast(tuple(Fs), tuple(FBs), tuple(FBT), tuple(CKs))
        tp = kernel_ops.Tape(Y=np.empty((B, T, spec.output_size), npdt), X=tape(XD), POST=tape(G), C=tape(H, lstm),
                             HN=tape(H), Z=tape(D), S=tape(4), LNR=tape(2, ln), D3=tape(D, grad), DH=tape(H, grad),
                             DHC=tape(H, grad), DC=tape(G, grad), D0=tape(XD, grad and has_in),
                             TR=np.zeros((B, T), npdt) if want_trace else d2)
        cfg = kernel_ops.Config(
            has_in=has_in, lstm=lstm, grad=grad, has_ln=ln, modul=bool(spec.modulation), n_out=spec.output_size,
            K=K, want_trace=bool(want_trace), want_dl=False, zero0=zero0, own_dF=False,
            lr=float(spec.inner_lr), wd=float(spec.inner_decay), clip=float(spec.inner_clip),
            wclip=float(spec.weight_clip or 0.0), kz=2.0 * spec.inner_loss_scale / D,
            eps=float(spec.ln_eps) if ln else 1e-5)
        _check_arrays(B, T, spec, inp, prm, fst, tp)
        _compiled(kernel_ops.forward, "forward", npdt, B, threads, cfg, inp, prm, fst, tp)
        ctx.spec, ctx.threads = spec, threads
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no zeros to make and copy
        ctx.saved = dict(cfg=cfg, inp=inp, prm=prm, fst=fst, tp=tp, learned_rates=[a.L is not None for a in la])
        hT = torch.from_numpy(tp.HN[:, -1].copy())
        cT = torch.from_numpy(tp.C[:, -1].copy()) if lstm else None
        FT = [_kernel_layout(torch.from_numpy(f), k) if name in spec.layers else None
              for k, (f, name) in enumerate(zip(Fs, LAYERS))]
        fbT = [torch.from_numpy(f) if (name in spec.layers and grad) else None for f, name in zip(FBT, LAYERS)]
        trace = torch.from_numpy(np.concatenate([tp.S[:, :, :2], tp.TR[:, :, None]], 2)) if want_trace else None
        if trace is not None:
            ctx.mark_non_differentiable(trace)
        # the backward undoes F_T in a copy of its own (a graph may be differentiated twice); saved as
        # tensors, so that an in-place change of the returned fast weights is caught
        ctx.save_for_backward(*[f for f in FT if f is not None])
        return (torch.from_numpy(tp.Y), hT, cT, *FT, *fbT, trace)

    @staticmethod
    def backward(ctx, dY, dh, dc, *rest):
        spec, sv = ctx.spec, ctx.saved
        inp, prm, tp = sv["inp"], sv["prm"], sv["tp"]
        dFT, dfbT = rest[:4], rest[4:8]
        it = iter(ctx.saved_tensors)
        # F_T is only read: each sample's backward undoes it in a scratch copy of its own
        Fs = tuple(_np(_kernel_layout(next(it), k)) if name in spec.layers else f
                   for k, (f, name) in enumerate(zip(sv["fst"].Fs, LAYERS)))
        fst = sv["fst"]._replace(Fs=Fs)
        npdt = inp.U.dtype
        B, T, n_u = inp.U.shape
        H = spec.hidden_size
        G = spec.layers["h_fc"].out_features
        D = spec.layers["out_fc"].out_features
        XD = spec.layers["i_fc"].in_features
        grad = spec.rule == "gradient"
        lstm = spec.cell == "lstm"
        has_in = spec.has_input_layer
        ln = spec.layernorm
        d1, d2, d3 = (np.zeros((1,) * n, npdt) for n in (1, 2, 3))
        want_dl = any(sv["learned_rates"])
        need = ctx.needs_input_grad
        first = 6  # index of the first _LayerArgs tensor among forward's inputs
        # dF_0 is wanted only for an initial state that needs it or an adjoint of F_T given; otherwise each
        # sample's dF lives in a scratch of its own (no (B, in, out) arrays)
        want_dF0 = any(name in spec.layers and (dFT[k] is not None or need[first + 6 * k])
                       for k, name in enumerate(LAYERS))
        cfg = sv["cfg"]._replace(want_dl=want_dl, own_dF=not want_dF0)

        def adj(g, shape, k=None):
            return np.zeros(shape, npdt) if g is None else _np(g if k is None else _kernel_layout(g, k)).copy()

        ng = min(GROUPS, B)
        bounds = np.array([B * g // ng for g in range(ng + 1)], np.int64)
        dFs, dFBs, dLs, dLbs = [], [], [], []
        for k, name in enumerate(LAYERS):
            if name not in spec.layers:
                dFs.append(d3), dFBs.append(d2), dLs.append(d3), dLbs.append(d2)
                continue
            shape = prm.Ls[k].shape  # in the kernel's layout
            n_out = spec.layers[name].out_features
            dFs.append(adj(dFT[k], (B, *shape), k) if want_dF0 else d3)
            dFBs.append(adj(dfbT[k], (B, n_out)) if grad else d2)
            dLs.append(np.zeros((ng, *shape), npdt) if want_dl else d3)
            dLbs.append(np.zeros((ng, n_out), npdt) if grad else d2)
        ad = kernel_ops.Adjoints(
            dY=adj(dY, (B, T, spec.output_size)), dFs=tuple(dFs), dFBs=tuple(dFBs), dh_out=adj(dh, (B, H)),
            dc_out=adj(dc, (B, H)) if lstm else d2, dU=np.zeros((B, T, n_u), npdt), dLs=tuple(dLs),
            dLbs=tuple(dLbs), domega=np.zeros((ng, D), npdt) if grad else d2,
            dgamma=np.zeros((ng, H), npdt) if ln else d2, dbeta=np.zeros((ng, H), npdt) if ln else d2)
        bt = kernel_ops.BackTape(
            DA0=np.zeros((B, T, XD), npdt) if has_in else d3, DG=np.zeros((B, T, G), npdt),
            DZ=np.zeros((B, T, D), npdt), DR2=np.zeros((B, T, XD), npdt) if (grad and has_in) else d3,
            DDH=np.zeros((B, T, H), npdt) if grad else d3)
        _check_arrays(B, T, spec, inp, prm, fst, tp)
        _compiled(kernel_ops.backward, "backward", npdt, ng, ctx.threads, bounds, cfg, inp, prm, fst, tp, ad, bt)
        t = torch.from_numpy

        def outer(a, b):  # Σ_{n,t} a ⊗ b: (B, T, i), (B, T, j) → (i, j)
            return t(a.reshape(-1, a.shape[-1])).t() @ t(b.reshape(-1, b.shape[-1]))

        hprev = np.concatenate([inp.h0[:, None], tp.HN[:, :-1]], 1)
        pres = (inp.U, hprev, tp.X, tp.HN)
        dposts = (bt.DA0, bt.DG, bt.DG, bt.DZ)
        grads = []
        for k, name in enumerate(LAYERS):
            p = spec.layers.get(name)
            if p is None:
                grads.append(_LayerArgs(None, None, None, None, None, None))
                continue
            gW = outer(pres[k], dposts[k])
            if grad and k == 2 and has_in:
                gW = gW + outer(bt.DR2, tp.DC)
            if grad and k == 3:
                gW = gW + outer(bt.DDH, tp.D3)
            grads.append(_LayerArgs(
                F0=_kernel_layout(t(ad.dFs[k]), k) if want_dF0 else None,
                fb0=t(ad.dFBs[k]) if grad else None,
                W=gW,
                b=t(dposts[k].sum((0, 1))),
                L=_kernel_layout(t(ad.dLs[k].sum(0)), k) if sv["learned_rates"][k] else None,
                Lb=t(ad.dLbs[k].sum(0)) if (grad and p.lr_bias is not None) else None))
        flat = [g for ga in grads for g in ga]
        flat += [t(ad.domega.sum(0)) if grad else None,
                 t(ad.dgamma.sum(0)) if ln else None, t(ad.dbeta.sum(0)) if ln else None]
        flat = [g if need[first + i] else None for i, g in enumerate(flat)]
        return (None, None, None, t(ad.dU) if need[3] else None, t(ad.dh_out) if need[4] else None,
                t(ad.dc_out) if (lstm and need[5]) else None, *flat)


def _check_arrays(B: int, T: int, spec: NetSpec, inp, prm, fst, tp) -> None:
    """The last guard before raw pointers reach the compiled loops: every array C-contiguous, of one dtype,
    and the per-sample ones of batch ``B`` (and ``T`` steps). A failure here is a bug of this module (the
    network checks the state it is given first, :func:`~plasticnet.engine.base.check_state`)."""
    dt = inp.U.dtype

    def check(name, a, lead=None):
        if not isinstance(a, np.ndarray) or a.dtype != dt or not a.flags.c_contiguous or a.size == 0:
            raise ValueError(f"kernel engine: array {name} is not a C-contiguous {dt} array")
        if lead is not None and a.shape[:len(lead)] != lead and a.size > 1:
            raise ValueError(f"kernel engine: array {name} has shape {a.shape}, expected leading dims {lead}")

    check("U", inp.U, (B, T))
    check("h0", inp.h0, (B, spec.hidden_size))
    check("c0", inp.c0, (B, spec.hidden_size))
    for group, arrays in (("Ws", prm.Ws), ("bs", prm.bs), ("Ls", prm.Ls), ("Lbs", prm.Lbs)):
        for k, a in enumerate(arrays):
            check(f"{group}[{k}]", a)
    for k, name in enumerate(LAYERS):
        p = spec.layers.get(name)
        if p is None:
            continue
        shape = tuple(prm.Ls[k].shape)
        check(f"Fs[{k}]", fst.Fs[k], (B,) + shape)
        check(f"CKs[{k}]", fst.CKs[k], (B,))
        if prm.Ws[k].shape != shape or prm.bs[k].shape != (p.out_features,):
            raise ValueError(f"kernel engine: parameters of {name} do not fit its fast weights")
        check(f"FBs[{k}]", fst.FBs[k], (B, T))
        check(f"FBT[{k}]", fst.FBT[k], (B,))
    for name in tp._fields:
        check(name, getattr(tp, name), (B, T) if name != "TR" else (B,))



_announced: set = set()  # (kernel, dtype) pairs whose compilation was announced in this process
_log = logging.getLogger("plasticnet.kernel")


def _compiled(fn, what: str, npdt, items: int, threads: Optional[int], *args) -> None:
    """:func:`_in_threads` of the compiled ``fn``, saying once per process when numba compiles it.

    numba loads the loops from its disk cache when it can; only a real compilation (a cache miss, which
    takes a minute or two) fires numba's ``numba:compile`` event, and the first such event logs one line.
    """
    key = (what, np.dtype(npdt).name)
    if key in _announced:
        _in_threads(fn, items, threads, *args)
        return
    from numba.core import event

    class _Say(event.Listener):
        def on_start(self, ev):
            if key not in _announced:
                _announced.add(key)
                _log.warning("plasticnet: compiling the kernel engine's %s loops for %s (numba, once: "
                             "a minute or two; cached on disk afterwards)", what, key[1])

        def on_end(self, ev):
            pass

    with event.install_listener("numba:compile", _Say()):
        _in_threads(fn, items, threads, *args)
    _announced.add(key)


_POOL: list = []  # [ThreadPoolExecutor], made on first use with more than one thread


def _in_threads(fn, items: int, threads: Optional[int], *args) -> None:
    """``fn(i0, i1, *args)`` over ``items`` (samples, or groups of them) split into contiguous ranges, one per thread.

    ``threads=None``: torch's thread count. Each item is computed alone, so
    the split changes no number; the compiled loops release the GIL.
    """
    n = max(1, min(threads if threads is not None else torch.get_num_threads(), items))
    if n == 1:
        fn(0, items, *args)
        return
    if not _POOL or _POOL[0]._max_workers < n - 1:
        _POOL[:] = [ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="plasticnet-kernel")]
    bounds = [items * i // n for i in range(n + 1)]
    jobs = [_POOL[0].submit(fn, bounds[i], bounds[i + 1], *args) for i in range(1, n)]
    fn(bounds[0], bounds[1], *args)
    for job in jobs:
        job.result()


class KernelEngine(EpisodeEngine):
    """Materialised per-sample fast weights stepped by a compiled loop (see the module docstring).

    ``engine_threads``: worker threads over the batch (``None``: torch's thread
    count at call time). Results do not depend on it: every sample is
    computed alone and batch sums are taken afterwards in a fixed order.
    """

    name = "kernel"
    compilable = False  # torch.compile calls it as one graph break: its loops are numba's, not torch's
    devices = ("cpu",)

    def __init__(self, engine_threads: Optional[int] = None):
        check_positive_int("engine_threads", engine_threads, allow_none=True)
        if not available():
            raise RuntimeError(f"the kernel engine needs numba ({IMPORT_ERROR}); install plasticnet[kernel] "
                               "or use engine='fast'")
        self.threads = engine_threads

    def zero_fast(self, spec, batch_size, device, dtype):
        """Zero fast weights as broadcast views of one zero (no memory until the first update)."""
        zero = torch.zeros((), device=device, dtype=dtype)
        return {k: FastWeights(zero.expand(batch_size, p.in_features, p.out_features),
                               zero.expand(batch_size, p.out_features) if p.plastic_bias else None)
                for k, p in spec.layers.items()}

    def episode(self, spec, inputs, h, c, fast, trace=False) -> EngineResult:
        """Run ``inputs (B, T, I)`` from the state in one call of the compiled loop."""
        if inputs.device.type != "cpu":
            raise ValueError(f"the kernel engine runs on the CPU only, got inputs on {inputs.device}; "
                             "use engine='fast' or 'reference' (or 'auto') on other devices")
        if inputs.dtype not in MAX_AMPLIFICATION:
            raise ValueError(f"the kernel engine computes in float32 or float64, got {inputs.dtype}")
        if not isinstance(fast, dict):
            raise ValueError("the kernel engine needs materialised fast weights in the state "
                             "({layer: FastWeights}); got " + type(fast).__name__)
        check_state(spec, h, c, fast, inputs[:, 0])  # the compiled loops read raw memory: nothing unchecked
        res = _Episode.apply(spec, trace, self.threads, inputs, h, c, *_episode_args(spec, fast))
        Y, hT, cT = res[:3]
        FT, fbT, tr = res[3:7], res[7:11], res[11]
        new = {k: FastWeights(FT[i], fbT[i]) for i, k in enumerate(LAYERS) if k in spec.layers}
        tr = None if tr is None else {key: tr[:, :, j] for j, key in enumerate(TRACE_KEYS)}
        return EngineResult(Y, hT, cT, new, tr)
