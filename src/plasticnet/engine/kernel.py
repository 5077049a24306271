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

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
import torch

from ..checks import check_positive_int
from ..layers import FastWeights
from .base import Engine

try:  # numba is an optional dependency (the ``kernel`` extra)
    from . import kernel_ops
except ImportError as err:  # pragma: no cover - exercised only without numba
    kernel_ops = None
    IMPORT_ERROR: Optional[str] = str(err)
else:
    IMPORT_ERROR = None

# undoing ``k`` updates may amplify rounding by Π 1/|keep| ≤ this before a checkpoint is taken
MAX_AMPLIFICATION = {torch.float32: 2.0 ** 8, torch.float64: 2.0 ** 12}
LAYERS = ("in_fc", "h_fc", "i_fc", "out_fc")
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


class _Episode(torch.autograd.Function):
    """The whole episode as one autograd node: forward and backward by :mod:`.kernel_ops`."""

    @staticmethod
    def forward(ctx, spec, U, h0, c0, *flat):
        net = spec["net"]
        dt = U.dtype
        npdt = np.float64 if dt == torch.float64 else np.float32
        B, T, _ = U.shape
        layers = spec["layers"]  # 4 entries, None for an absent in_fc
        has_in = layers[0] is not None
        grad = net.rule == "gradient"
        lstm = net.cell_type == "lstm"
        H = net.hidden_size
        G = layers[1].out_features
        D = layers[3].out_features
        XD = layers[2].in_features
        K = checkpoint_interval(net.inner_decay, net.modulation, net.weight_clip, T, dt)
        nck = -(-T // K)
        want_trace = bool(spec["trace"])
        d1, d2, d3, d4 = (np.zeros((1,) * n, npdt) for n in (1, 2, 3, 4))

        F0, fb0, W, bias, L, Lb = (flat[i::6][:4] for i in range(6))
        omega, gamma, beta = flat[24:27]
        Fs, FBs, FBT, CKs, Ws, bs, Ls, Lbs = [], [], [], [], [], [], [], []
        zero0 = 0
        for k, layer in enumerate(layers):
            if layer is None:
                Fs.append(d3), FBs.append(d3), FBT.append(d2), CKs.append(d4)
                Ws.append(d2), bs.append(d1), Ls.append(d2), Lbs.append(d1)
                continue
            n_out = layer.out_features
            shape = tuple(_kernel_layout(W[k], k).shape)  # (in, out) in the kernel's layout
            if _is_zero_view(F0[k]):
                Fs.append(np.zeros((B, *shape), npdt))
                zero0 |= 1 << k  # its t = 0 checkpoint is not stored (the backward restores zeros)
            else:
                Fs.append(_np(_kernel_layout(F0[k], k)).copy())
            Ws.append(_np(_kernel_layout(W[k], k)))
            bs.append(_np(bias[k]))
            Ls.append(_np(_kernel_layout(L[k], k)) if L[k] is not None else np.ones(shape, npdt))
            CKs.append(np.empty((B, nck, *shape), npdt))
            if grad:
                tape = np.empty((B, T, n_out), npdt)
                tape[:, 0] = _np(fb0[k])
                FBs.append(tape)
                FBT.append(np.empty((B, n_out), npdt))
                Lbs.append(_np(Lb[k]) if Lb[k] is not None else np.ones(n_out, npdt))
            else:
                FBs.append(d3), FBT.append(d2), Lbs.append(d1)

        def tape(n, used=True):
            return np.zeros((B, T, n), npdt) if used else d3

        Un = _np(U)
        X, POST, HN, Z, S = tape(XD), tape(G), tape(H), tape(D), tape(4)
        C = tape(H, lstm)
        LNR = tape(2, net.layernorm is not None)
        D3, DH, DHC, DC = tape(D, grad), tape(H, grad), tape(H, grad), tape(G, grad)
        D0 = tape(XD, grad and has_in)
        TR = np.zeros((B, T), npdt) if want_trace else d2
        Y = np.empty((B, T, net.output_size), npdt)
        h0n = _np(h0)
        c0n = _np(c0) if lstm else d2
        om = _np(omega) if grad else d1
        ln = net.layernorm
        ga, be = (_np(gamma), _np(beta)) if ln is not None else (d1, d1)
        cfgi = np.array([has_in, lstm, grad, ln is not None, net.modulation, net.output_size, K, want_trace,
                         0, zero0, 0], np.int64)
        cfgf = np.array([net.inner_lr, net.inner_decay, net.inner_clip, net.weight_clip or 0.0,
                         2.0 * net.inner_loss_scale / D, ln.eps if ln is not None else 1e-5], np.float64)
        _in_threads(kernel_ops.forward, B, spec["threads"], cfgi, cfgf, Un, h0n, c0n, tuple(Ws), tuple(bs),
                    tuple(Ls), tuple(Lbs), om, ga, be, tuple(Fs), tuple(FBs), tuple(FBT), tuple(CKs), Y, X, POST, C,
                    HN, Z, S, LNR, D3, DH, DHC, DC, D0, TR)
        ctx.spec = spec
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no zeros to make and copy
        ctx.saved = dict(cfgi=cfgi, cfgf=cfgf, U=Un, h0=h0n, c0=c0n, Ws=Ws, Ls=Ls, Lbs=Lbs, om=om, ga=ga,
                         Fs=Fs, FBs=FBs, CKs=CKs, X=X, POST=POST, C=C, HN=HN, Z=Z, S=S, LNR=LNR, D3=D3, DH=DH,
                         DHC=DHC, DC=DC, D0=D0, learned_rates=[x is not None for x in L])
        hT = torch.from_numpy(HN[:, -1].copy())
        cT = torch.from_numpy(C[:, -1].copy()) if lstm else None
        FT = [_kernel_layout(torch.from_numpy(f), k) if layer is not None else None
              for k, (f, layer) in enumerate(zip(Fs, layers))]
        fbT = [torch.from_numpy(f) if (layer is not None and grad) else None for f, layer in zip(FBT, layers)]
        trace = torch.from_numpy(np.concatenate([S[:, :, :2], TR[:, :, None]], 2)) if want_trace else None
        if trace is not None:
            ctx.mark_non_differentiable(trace)
        # the backward undoes F_T in a copy of its own (a graph may be differentiated twice); saved as
        # tensors, so that an in-place change of the returned fast weights is caught
        ctx.save_for_backward(*[f for f in FT if f is not None])
        return (torch.from_numpy(Y), hT, cT, *FT, *fbT, trace)

    @staticmethod
    def backward(ctx, dY, dh, dc, *rest):
        spec, sv = ctx.spec, ctx.saved
        net, layers = spec["net"], spec["layers"]
        dFT, dfbT = rest[:4], rest[4:8]
        it = iter(ctx.saved_tensors)
        # F_T is only read: each sample's backward undoes it in a scratch copy of its own
        Fs = [_np(_kernel_layout(next(it), k)) if layer is not None else f
              for k, (f, layer) in enumerate(zip(sv["Fs"], layers))]
        npdt = sv["U"].dtype
        B, T, n_u = sv["U"].shape
        H = net.hidden_size
        G = layers[1].out_features
        D = layers[3].out_features
        XD = layers[2].in_features
        grad = net.rule == "gradient"
        lstm = net.cell_type == "lstm"
        has_in = layers[0] is not None
        d1, d2, d3 = (np.zeros((1,) * n, npdt) for n in (1, 2, 3))
        want_dl = any(sv["learned_rates"])
        cfgi = sv["cfgi"].copy()
        cfgi[8] = want_dl
        need = ctx.needs_input_grad
        # dF_0 is wanted only for an initial state that needs it or an adjoint of F_T given; otherwise each
        # sample's dF lives in a scratch of its own (no (B, in, out) arrays)
        want_dF0 = any(layer is not None and (dFT[k] is not None or need[4 + 6 * k]) for k, layer in enumerate(layers))
        cfgi[10] = not want_dF0

        def adj(g, shape, k=None):
            return np.zeros(shape, npdt) if g is None else _np(g if k is None else _kernel_layout(g, k)).copy()

        ng = min(GROUPS, B)
        bounds = np.array([B * g // ng for g in range(ng + 1)], np.int64)
        dFs, dFBs, dLs, dLbs = [], [], [], []
        for k, layer in enumerate(layers):
            if layer is None:
                dFs.append(d3), dFBs.append(d2), dLs.append(d3), dLbs.append(d2)
                continue
            shape = sv["Ls"][k].shape  # in the kernel's layout
            n_out = layer.out_features
            dFs.append(adj(dFT[k], (B, *shape), k) if want_dF0 else d3)
            dFBs.append(adj(dfbT[k], (B, n_out)) if grad else d2)
            dLs.append(np.zeros((ng, *shape), npdt) if want_dl else d3)
            dLbs.append(np.zeros((ng, n_out), npdt) if grad else d2)
        dh_out = adj(dh, (B, H))
        dc_out = adj(dc, (B, H)) if lstm else d2
        dYn = adj(dY, (B, T, net.output_size))
        dU = np.zeros((B, T, n_u), npdt)
        domega = np.zeros((ng, D), npdt) if grad else d2
        ln = net.layernorm is not None
        dgamma, dbeta = (np.zeros((ng, H), npdt), np.zeros((ng, H), npdt)) if ln else (d2, d2)
        DA0 = np.zeros((B, T, XD), npdt) if has_in else d3
        DG, DZ = np.zeros((B, T, G), npdt), np.zeros((B, T, D), npdt)
        DR2 = np.zeros((B, T, XD), npdt) if (grad and has_in) else d3
        DDH = np.zeros((B, T, H), npdt) if grad else d3
        _in_threads(kernel_ops.backward, ng, spec["threads"], bounds, cfgi, sv["cfgf"], sv["U"], sv["h0"], sv["c0"],
                    tuple(sv["Ws"]), tuple(sv["Ls"]), tuple(sv["Lbs"]), sv["om"], sv["ga"], tuple(Fs), tuple(sv["FBs"]),
                    tuple(sv["CKs"]), sv["X"], sv["POST"], sv["C"], sv["HN"], sv["Z"], sv["S"], sv["LNR"], sv["D3"],
                    sv["DH"], sv["DHC"], sv["DC"], sv["D0"], dYn, tuple(dFs), tuple(dFBs), dh_out, dc_out, dU,
                    tuple(dLs), tuple(dLbs), domega, dgamma, dbeta, DA0, DG, DZ, DR2, DDH)
        t = torch.from_numpy

        def outer(a, b):  # Σ_{n,t} a ⊗ b: (B, T, i), (B, T, j) → (i, j)
            return t(a.reshape(-1, a.shape[-1])).t() @ t(b.reshape(-1, b.shape[-1]))

        hprev = np.concatenate([sv["h0"][:, None], sv["HN"][:, :-1]], 1)
        pres = (sv["U"], hprev, sv["X"], sv["HN"])
        dposts = (DA0, DG, DG, DZ)
        gF, gfb, gW, gb, gL, gLb = [None] * 4, [None] * 4, [None] * 4, [None] * 4, [None] * 4, [None] * 4
        for k, layer in enumerate(layers):
            if layer is None:
                continue
            gF[k] = _kernel_layout(t(dFs[k]), k) if want_dF0 else None
            gW[k] = outer(pres[k], dposts[k])
            if grad and k == 2 and has_in:
                gW[k] = gW[k] + outer(DR2, sv["DC"])
            if grad and k == 3:
                gW[k] = gW[k] + outer(DDH, sv["D3"])
            gb[k] = t(dposts[k].sum((0, 1)))
            if sv["learned_rates"][k]:
                gL[k] = _kernel_layout(t(dLs[k].sum(0)), k)
            if grad:
                gfb[k] = t(dFBs[k])
                if layer.lr_bias is not None:
                    gLb[k] = t(dLbs[k].sum(0))
        flat = []
        for k in range(4):
            flat += [gF[k], gfb[k], gW[k], gb[k], gL[k], gLb[k]]
        flat += [t(domega.sum(0)) if grad else None,
                 t(dgamma.sum(0)) if ln else None, t(dbeta.sum(0)) if ln else None]
        flat = [g if need[4 + i] else None for i, g in enumerate(flat)]
        return (None, t(dU) if need[1] else None, t(dh_out) if need[2] else None,
                t(dc_out) if (lstm and need[3]) else None, *flat)


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


class KernelEngine(Engine):
    """Materialised per-sample fast weights stepped by a compiled loop (see the module docstring).

    ``threads``: worker threads over the batch (``None``: torch's thread
    count at call time). Results do not depend on it: every sample is
    computed alone and batch sums are taken afterwards in a fixed order.
    """

    name = "kernel"

    def __init__(self, threads: Optional[int] = None):
        check_positive_int("threads", threads, allow_none=True)
        if not available():
            raise RuntimeError(f"the kernel engine needs numba ({IMPORT_ERROR}); install plasticnet[kernel] "
                               "or use engine='fast'")
        self.threads = threads

    def fast_weights(self, net, state):
        """The materialised fast weights of ``state`` (already materialised here)."""
        return state.fast

    def zero_fast(self, net, batch_size, device, dtype):
        """Zero fast weights as broadcast views of one zero (no memory until the first update)."""
        zero = torch.zeros((), device=device, dtype=dtype)
        return {k: FastWeights(zero.expand(batch_size, m.in_features, m.out_features),
                               zero.expand(batch_size, m.out_features) if m.plastic_bias else None)
                for k, m in net.plastic_layers().items()}

    def step(self, net, u, state, trace=None):
        """One step: the episode of length 1 from ``state`` (rule ``none``: the plain network)."""
        if net.rule == "none":
            v = net.dynamics(u, state.h, state.c, None)
            return v.z[:, : net.output_size], net.make_state(v.h_next, v.c, None)
        out, state = self.forward(net, u.unsqueeze(1), state, trace)
        return out[:, 0], state

    def forward(self, net, inputs, state, trace=None):
        """Run ``inputs (B, T, I)`` from ``state`` in one call of the compiled loop."""
        if net.rule == "none":
            return super().forward(net, inputs, state, trace)
        if inputs.device.type != "cpu":
            raise ValueError(f"the kernel engine runs on the CPU only, got inputs on {inputs.device}; "
                             "use engine='fast' or 'reference' (or 'auto') on other devices")
        if inputs.dtype not in MAX_AMPLIFICATION:
            raise ValueError(f"the kernel engine computes in float32 or float64, got {inputs.dtype}")
        if not isinstance(state.fast, dict):
            raise ValueError("the kernel engine needs materialised fast weights in the state "
                             "({layer: FastWeights}); got " + type(state.fast).__name__)
        mods = net.plastic_layers()
        layers = [mods.get(k) for k in LAYERS]
        flat = []
        for k, layer in zip(LAYERS, layers):
            if layer is None:
                flat += [None] * 6
                continue
            fw = state.fast[k]
            flat += [fw.w, fw.b, layer.weight, layer.bias, layer.lr_weight, layer.lr_bias]
        ln = net.layernorm
        flat += [net.omega, ln.weight if ln is not None else None, ln.bias if ln is not None else None]
        spec = dict(net=net, layers=layers, trace=trace is not None, threads=self.threads)
        res = _Episode.apply(spec, inputs, state.h, state.c, *flat)
        Y, hT, cT = res[:3]
        FT, fbT, tr = res[3:7], res[7:11], res[11]
        fast = {k: FastWeights(FT[i], fbT[i]) for i, k in enumerate(LAYERS) if layers[i] is not None}
        if trace is not None:
            for j, key in enumerate(("modulation", "clip_scale", "fast_norm")):
                trace.setdefault(key, []).extend(tr[:, t, j] for t in range(tr.shape[1]))
        return Y, net.make_state(hT, cT, fast)
