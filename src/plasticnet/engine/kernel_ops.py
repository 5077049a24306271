"""Compiled per-sample loops of the kernel engine (numba): the whole episode of SPEC §1, forward and backward.

One sample at a time goes through all ``T`` steps with its fast weights
``F`` materialised, so a sample's ``F``, ``Λ`` and ``W`` stay in cache;
samples run in parallel (threads over disjoint ranges of the batch, the
compiled loops release the GIL), each writing only its own slots, so the
numbers do not depend on the thread count. Per layer and step the
forward makes one pass over ``F`` that applies step ``t − 1``'s update and
reads step ``t``::

    F ← keep·F + ce·Λ ⊙ (p ⊗ q)          (keep = 1 − p_wd·m, ce = p_lr·m·s; optional clamp)
    y = x (W + F)

plus, for the gradient rule's closed form, the transposed reads
``(W_out + F_out) δ_out`` and ``(W_i + F_i) δ_cell``. Every small (O(hidden))
quantity of a step is kept on a tape; ``F`` is not. The backward runs each
sample in reverse time with the adjoint ``dF`` of its fast weights
(``dF_t = keep·dF_{t+1} + pre ⊗ dpost``) and recovers ``F_t`` from
``F_{t+1}`` by undoing the update, ``F_t = (F_{t+1} − ce·Λ ⊙ p ⊗ q)/keep``,
except at checkpoint steps (every ``K``-th), where ``F_t`` was stored
during the forward. The backward of step ``t + 1``'s cell and input reads
(``dpre = (W + F_{t+1}) dpost``, ``dF_{t+1} += pre ⊗ dpost``) is left pending
and done inside step ``t``'s pass over ``F_{t+1}``, so each big layer is
passed over once per step in the backward too. ``K`` bounds how much
undoing can amplify rounding (:func:`plasticnet.engine.kernel.checkpoint_interval`); with ``weight_clip``
the clamp cannot be undone and ``K = 1``.

The same source compiles for float32 and float64 (numba dispatches on the
arrays' dtype). What the compiled code receives has names, the same for
every compiled loop: :class:`Config` (the network's configuration and the
call's flags), :class:`Inputs` (``U, h0, c0``), :class:`Params` (slow
weights, rates, ``ω``, LayerNorm), :class:`Fast` (fast weights in and out,
fast-bias tapes, checkpoints), :class:`Tape` (the forward's per-step
vectors), and for the backward :class:`Adjoints` and :class:`BackTape`.
Layers are indexed 0 in_fc, 1 h_fc, 2 i_fc, 3 out_fc; arrays of absent
parts are dummies of size 1 and never touched. out_fc's ``W``, ``Λ``, ``F``
(and their adjoints and checkpoints) are stored transposed, ``(out, in)``,
so that its inner loops run over the hidden size rather than over its few
outputs; its passes are the transposed ones (``_update_read_t``, ``_read_t``,
``_read_t_bwd``, and the update's with ``p`` and ``q`` swapped).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

_OPT = dict(cache=True, fastmath={"nsz", "arcp", "contract", "reassoc"}, error_model="numpy")


# ---------------------------------------------------------------- what the compiled loops receive
class Config(NamedTuple):
    """The network's configuration and the call's flags (plain bools, ints and floats)."""

    has_in: bool  # an input layer in_fc (layer 0)
    lstm: bool  # LSTM cell (else RNN)
    grad: bool  # gradient rule (else Hebbian)
    has_ln: bool  # LayerNorm on h_t
    modul: bool  # modulation m = 2σ(z[-1])
    n_out: int  # task outputs z[:n_out]
    K: int  # steps between checkpoints of F (kernel.checkpoint_interval)
    want_trace: bool  # write ‖F‖ per step into Tape.TR
    want_dl: bool  # backward: accumulate the adjoints of Λ
    zero0: int  # bit k set where layer k starts from F_0 = 0 (its t = 0 checkpoint is not stored)
    own_dF: bool  # backward: no dF_0 wanted, each sample's dF lives in a scratch
    lr: float  # p_lr
    wd: float  # p_wd
    clip: float  # the update-norm clip
    wclip: float  # weight_clip, 0: off
    kz: float  # 2·inner_loss_scale/D: ∂L/∂z = kz·z ⊙ ω²
    eps: float  # LayerNorm epsilon


class Inputs(NamedTuple):
    """``U (B, T, n_u)`` the episode's inputs; ``h0 (B, H)``, ``c0 (B, H)`` (LSTM, else a dummy) the start state."""

    U: np.ndarray
    h0: np.ndarray
    c0: np.ndarray


class Params(NamedTuple):
    """Slow parameters, one entry per layer (0 in_fc, 1 h_fc, 2 i_fc, 3 out_fc; out_fc's matrices transposed).

    Ws ``W``; bs ``b``; Ls ``Λ`` (ones where not trained); Lbs ``Λ_b``; omega ``ω``; gamma, beta the LayerNorm's.
    """

    Ws: tuple
    bs: tuple
    Ls: tuple
    Lbs: tuple
    omega: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray


class Fast(NamedTuple):
    """Fast weights: Fs ``F (B, in, out)`` per layer (``F_0`` in, ``F_T`` out of the forward); FBs the fast
    biases ``(B, T, out)`` per step (gradient rule); FBT their final values ``(B, out)``; CKs the checkpoints
    ``(B, ⌈T/K⌉, in, out)``."""

    Fs: tuple
    FBs: tuple
    FBT: tuple
    CKs: tuple


class Tape(NamedTuple):
    """The forward's per-step vectors ``(B, T, ·)``: outputs Y, input-layer output X, the cell's post, cell
    state C, h after LayerNorm HN, out_fc output Z, S = (m, s, ‖G‖), LNR = (μ, 1/σ), the gradient rule's
    δ's D3 (out_fc), DH, DHC, DC (cell), D0 (in_fc); TR ``(B, T)`` ‖F_{t+1}‖."""

    Y: np.ndarray
    X: np.ndarray
    POST: np.ndarray
    C: np.ndarray
    HN: np.ndarray
    Z: np.ndarray
    S: np.ndarray
    LNR: np.ndarray
    D3: np.ndarray
    DH: np.ndarray
    DHC: np.ndarray
    DC: np.ndarray
    D0: np.ndarray
    TR: np.ndarray


class Adjoints(NamedTuple):
    """The backward's adjoints: dY in; dFs, dFBs, dh_out, dc_out the final state's in and the initial state's
    out; dU; per-group accumulators dLs, dLbs, domega, dgamma, dbeta."""

    dY: np.ndarray
    dFs: tuple
    dFBs: tuple
    dh_out: np.ndarray
    dc_out: np.ndarray
    dU: np.ndarray
    dLs: tuple
    dLbs: tuple
    domega: np.ndarray
    dgamma: np.ndarray
    dbeta: np.ndarray


class BackTape(NamedTuple):
    """Adjoints of the reads' outputs per step ``(B, T, ·)``, from which the caller forms ``W``'s gradients:
    DA0 (in_fc), DG (cell), DZ (out_fc), DR2 (i_fc's transposed read), DDH (out_fc's)."""

    DA0: np.ndarray
    DG: np.ndarray
    DZ: np.ndarray
    DR2: np.ndarray
    DDH: np.ndarray


@njit(**_OPT)
def _decay_add(f, keep, a, b, wclip):
    """One entry of ``F ← clamp(keep·F + ce·Λ ⊙ (p ⊗ q))``: ``keep·f + a·b`` (``a·b = ce·p_i·Λ_ij·q_j``)
    clamped to ``±wclip`` (``0``: off). Every update pass, of weights and biases, calls it."""
    v = keep * f + a * b
    if wclip > 0.0:
        v = min(max(v, -wclip), wclip)
    return v


# ---------------------------------------------------------------- passes over one layer's F (in, out)
@njit(**_OPT)
def _read(F, W, x, y):
    """``y = x (W + F)``: ``x (in,)`` → ``y (out,)``."""
    n_in, n_out = F.shape
    y[:] = 0.0
    for i in range(n_in):
        xi = x[i]
        for j in range(n_out):
            y[j] += xi * (W[i, j] + F[i, j])


@njit(**_OPT)
def _update_read(F, W, L, p, q, ce, keep, wclip, x, y):
    """``F ← clamp(keep·F + ce·Λ ⊙ (p ⊗ q))`` then ``y = x (W + F)``, in one pass."""
    n_in, n_out = F.shape
    ce, keep, wclip = F.dtype.type(ce), F.dtype.type(keep), F.dtype.type(wclip)
    y[:] = 0.0
    for i in range(n_in):
        xi = x[i]
        cp = ce * p[i]
        for j in range(n_out):
            f = _decay_add(F[i, j], keep, cp * L[i, j], q[j], wclip)
            F[i, j] = f
            y[j] += xi * (W[i, j] + f)


@njit(**_OPT)
def _update(F, L, p, q, ce, keep, wclip):
    """``F ← clamp(keep·F + ce·Λ ⊙ (p ⊗ q))`` (the last step's update, nothing to read)."""
    n_in, n_out = F.shape
    ce, keep, wclip = F.dtype.type(ce), F.dtype.type(keep), F.dtype.type(wclip)
    for i in range(n_in):
        cp = ce * p[i]
        for j in range(n_out):
            f = _decay_add(F[i, j], keep, cp * L[i, j], q[j], wclip)
            F[i, j] = f


@njit(**_OPT)
def _read_t(F, W, d, r):
    """``r = (W + F) d``: ``d (out,)`` → ``r (in,)`` (a gradient sent back through the layer)."""
    n_in, n_out = F.shape
    zero = F.dtype.type(0)
    for i in range(n_in):
        acc = zero
        for j in range(n_out):
            acc += (W[i, j] + F[i, j]) * d[j]
        r[i] = acc


@njit(**_OPT)
def _update_read_t(F, W, L, p, q, ce, keep, wclip, x, r):
    """``F ← clamp(keep·F + ce·Λ ⊙ (p ⊗ q))`` then ``r = (W + F) x``, in one pass (out_fc, stored transposed)."""
    n_in, n_out = F.shape
    zero = F.dtype.type(0)
    ce, keep, wclip = F.dtype.type(ce), F.dtype.type(keep), F.dtype.type(wclip)
    for i in range(n_in):
        cp = ce * p[i]
        acc = zero
        for j in range(n_out):
            f = _decay_add(F[i, j], keep, cp * L[i, j], q[j], wclip)
            F[i, j] = f
            acc += (W[i, j] + f) * x[j]
        r[i] = acc


@njit(**_OPT)
def _sq(a):
    s = a.dtype.type(0)
    for v in a.ravel():
        s += v * v
    return s


@njit(**_OPT)
def _undo_update_bwd(F, W, L, dF, dL, p, q, ce, keep, restore, Fck, wclip, want_dl, dp, dq,
                     pend, ppre, pdpost, pa, pb, pextra, mv):
    """Backward of ``F_{t+1} = clamp(keep·F_t + ce·Λ ⊙ (p ⊗ q))`` for one layer, in one pass.

    On entry ``F = F_{t+1}`` and ``dF = ∂/∂F_{t+1}``; on exit ``F = F_t``
    (undone, or ``Fck`` where ``restore``) and ``dF = keep·dv`` (``dv`` the
    adjoint before the clamp). Adds ``ce·(Λ ⊙ dv) q`` to ``dp``, ``ce·(Λ ⊙
    dv)ᵀ p`` to ``dq`` and ``ce·(p ⊗ q) ⊙ dv`` to ``dL``; returns ``(Σ F_t ⊙
    dv, pᵀ(Λ ⊙ dv) q)``, the adjoints of ``keep`` and ``ce``.

    With ``pend``, fused with the read backward of step ``t + 1`` left pending:
    the read ``y = ppre (W + F_{t+1})`` (and, with ``pextra``, ``r = (W + F_{t+1}) pb``
    with adjoint ``pa``) needs ``F_{t+1}``, which this pass reads anyway, and its
    ``pre ⊗ dpost`` belongs to ``dF_{t+1}``, which this pass consumes. So:
    ``mv += (W + F_{t+1}) pdpost`` and ``dv = dF + ppre ⊗ pdpost (+ pa ⊗ pb)``
    before the update's backward. Without ``pend`` (out_fc, and the last
    step) ``W``, ``ppre``, ``pdpost``, ``pa``, ``pb`` and ``mv`` are not read.

    ``pend`` and ``pextra`` (``pextra`` only with ``pend``) are to be passed as
    the constants ``True``/``False`` at each call: numba then compiles one
    specialisation per combination, whose innermost loop does not test them.
    Passed as variables, they are tested inside the loop, which then compiles
    to less than half the machine code, without the vectorised versions, and
    the backward takes 5–15 % longer.
    """
    n_in, n_out = F.shape
    zero = F.dtype.type(0)
    ce, keep, wclip = F.dtype.type(ce), F.dtype.type(keep), F.dtype.type(wclip)
    inv = F.dtype.type(1.0 / keep) if not restore else zero
    dkeep = zero
    dce = zero
    for i in range(n_in):
        pi = p[i]
        cp = ce * pi
        acc = zero
        macc = zero
        ppi = ppre[i] if pend else zero
        pai = pa[i] if pextra else zero
        for j in range(n_out):
            f1 = F[i, j]
            if pend:
                macc += (W[i, j] + f1) * pdpost[j]
            lq = L[i, j] * q[j]
            if restore:
                ft = Fck[i, j]
            else:
                ft = (f1 - cp * lq) * inv
            F[i, j] = ft
            dv = dF[i, j]
            if pend:
                dv += ppi * pdpost[j]
            if pextra:
                dv += pai * pb[j]
            if wclip > 0.0:
                v = keep * ft + cp * lq
                if v > wclip or v < -wclip:
                    dv = zero
            acc += lq * dv
            w = cp * dv  # one product shared by the adjoints of q and Λ
            dq[j] += L[i, j] * w
            dkeep += ft * dv
            if want_dl:
                dL[i, j] += q[j] * w
            dF[i, j] = keep * dv
        dp[i] += ce * acc
        dce += pi * acc
        if pend:
            mv[i] += macc
    return dkeep, dce


@njit(**_OPT)
def _read_bwd(F, W, dF, pre, dpost, dpre, a, b, extra):
    """Backward of ``y = pre (W + F)`` (and, with ``extra``, of ``r = (W + F) b`` with adjoint ``a``).

    ``dpre += (W + F) dpost``; ``dF += pre ⊗ dpost (+ a ⊗ b)``.
    """
    n_in, n_out = F.shape
    zero = F.dtype.type(0)
    for i in range(n_in):
        acc = zero
        pi = pre[i]
        if extra:
            ai = a[i]
            for j in range(n_out):
                acc += (W[i, j] + F[i, j]) * dpost[j]
                dF[i, j] += pi * dpost[j] + ai * b[j]
        else:
            for j in range(n_out):
                acc += (W[i, j] + F[i, j]) * dpost[j]
                dF[i, j] += pi * dpost[j]
        dpre[i] += acc


@njit(**_OPT)
def _read_t_bwd(F, W, dF, pre, dpost, dpre, a, b, extra):
    """Backward of ``y = (W + F) pre`` (and, with ``extra``, of ``r = bᵀ (W + F)`` with adjoint ``a``).

    ``dpre += dpostᵀ (W + F)``; ``dF += dpost ⊗ pre (+ b ⊗ a)``: :func:`_read_bwd` for a layer stored transposed.
    """
    n_in, n_out = F.shape
    for i in range(n_in):
        di = dpost[i]
        if extra:
            bi = b[i]
            for j in range(n_out):
                dpre[j] += (W[i, j] + F[i, j]) * di
                dF[i, j] += di * pre[j] + bi * a[j]
        else:
            for j in range(n_out):
                dpre[j] += (W[i, j] + F[i, j]) * di
                dF[i, j] += di * pre[j]


# ---------------------------------------------------------------- small vector pieces
@njit(**_OPT)
def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


@njit(**_OPT)
def _bias_update(fb, Lb, q, ce, keep, wclip, out):
    """``out = clamp(keep·fb + ce·Λ_b ⊙ q)``."""
    for j in range(fb.shape[0]):
        out[j] = _decay_add(fb[j], keep, ce * Lb[j], q[j], wclip)


@njit(**_OPT)
def _bias_bwd(fb, Lb, q, ce, keep, wclip, dfb, dLb, dq, want_dl):
    """Backward of ``fb' = clamp(keep·fb + ce·Λ_b ⊙ q)``; ``dfb`` holds ``∂/∂fb'`` and becomes ``keep·dv``."""
    dkeep = 0.0
    dce = 0.0
    for j in range(fb.shape[0]):
        dv = dfb[j]
        if wclip > 0.0:
            v = keep * fb[j] + ce * Lb[j] * q[j]
            if v > wclip or v < -wclip:
                dv = 0.0
        dkeep += fb[j] * dv
        dce += Lb[j] * q[j] * dv
        if want_dl:
            dLb[j] += ce * q[j] * dv
        dq[j] += ce * Lb[j] * dv
        dfb[j] = keep * dv
    return dkeep, dce


@njit(**_OPT)
def _hprev(h0, HN, b, t):
    if t == 0:
        return h0[b]
    return HN[b, t - 1]


@njit(**_OPT)
def _cprev(c0, C, b, t):
    if t == 0:
        return c0[b]
    return C[b, t - 1]


@njit(**_OPT)
def _factors(layer, b, t, grad, inp, tp):
    """``(pre, q)`` of ``layer`` at step ``t``: the update is ``Λ ⊙ (pre ⊗ q)`` (:class:`Inputs`, :class:`Tape`)."""
    U, h0 = inp.U, inp.h0
    X, POST, Z, HN, D0, DC, D3 = tp.X, tp.POST, tp.Z, tp.HN, tp.D0, tp.DC, tp.D3
    if layer == 0:
        return U[b, t], (D0[b, t] if grad else X[b, t])
    if layer == 1:
        return _hprev(h0, HN, b, t), (DC[b, t] if grad else POST[b, t])
    if layer == 2:
        return X[b, t], (DC[b, t] if grad else POST[b, t])
    return HN[b, t], (D3[b, t] if grad else Z[b, t])


# ---------------------------------------------------------------- forward of one sample
@njit(**_OPT)
def _forward_sample(b, cfg, inp, prm, fst, tp):
    has_in, lstm, grad, has_ln, modul, n_out, K, want_trace = (
        cfg.has_in, cfg.lstm, cfg.grad, cfg.has_ln, cfg.modul, cfg.n_out, cfg.K, cfg.want_trace)
    zero0 = cfg.zero0
    lr, wd, clip, wclip, kz, eps = cfg.lr, cfg.wd, cfg.clip, cfg.wclip, cfg.kz, cfg.eps
    U, h0, c0 = inp
    Ws, bs, Ls, Lbs, omega, gamma, beta = prm
    Fs, FBs, FBT, CKs = fst
    Y, X, POST, C, HN, Z, S, LNR, D3, DH, DHC, DC, D0, TR = tp
    T = U.shape[1]
    H = HN.shape[2]
    G = POST.shape[2]
    D = Z.shape[2]
    g = np.empty(G, U.dtype)
    g2 = np.empty(G, U.dtype)
    hc = np.empty(H, U.dtype)
    a0 = np.empty(X.shape[2], U.dtype)
    ce = 0.0
    keep = 1.0
    for t in range(T):
        upd = t > 0
        # ---- input layer (update of step t − 1 fused with the read of step t)
        u = U[b, t]
        x = X[b, t]
        if has_in:
            if upd:
                p, q = _factors(0, b, t - 1, grad, inp, tp)
                _update_read(Fs[0][b], Ws[0], Ls[0], p, q, ce, keep, wclip, u, a0)
            else:
                _read(Fs[0][b], Ws[0], u, a0)
            if grad and upd:
                _bias_update(FBs[0][b, t - 1], Lbs[0], D0[b, t - 1], ce, keep, wclip, FBs[0][b, t])
            for j in range(a0.shape[0]):
                v = a0[j] + bs[0][j]
                if grad:
                    v += FBs[0][b, t, j]
                x[j] = v if v > 0.0 else 0.0
        else:
            x[:] = u
        # ---- cell: g = h (W_h + F_h) + x (W_i + F_i) + biases
        hp = _hprev(h0, HN, b, t)
        if upd:
            p, q = _factors(1, b, t - 1, grad, inp, tp)
            _update_read(Fs[1][b], Ws[1], Ls[1], p, q, ce, keep, wclip, hp, g)
            p, q = _factors(2, b, t - 1, grad, inp, tp)
            _update_read(Fs[2][b], Ws[2], Ls[2], p, q, ce, keep, wclip, x, g2)
            if grad:
                _bias_update(FBs[1][b, t - 1], Lbs[1], q, ce, keep, wclip, FBs[1][b, t])
                _bias_update(FBs[2][b, t - 1], Lbs[2], q, ce, keep, wclip, FBs[2][b, t])
        else:
            _read(Fs[1][b], Ws[1], hp, g)
            _read(Fs[2][b], Ws[2], x, g2)
        for j in range(G):
            v = g[j] + g2[j] + bs[1][j] + bs[2][j]
            if grad:
                v += FBs[1][b, t, j] + FBs[2][b, t, j]
            g[j] = v
        post = POST[b, t]
        if lstm:
            cp = _cprev(c0, C, b, t)
            c = C[b, t]
            for j in range(H):
                ig = _sigmoid(g[j])
                fg = _sigmoid(g[H + j])
                gg = math.tanh(g[2 * H + j])
                og = _sigmoid(g[3 * H + j])
                post[j], post[H + j], post[2 * H + j], post[3 * H + j] = ig, fg, gg, og
                c[j] = fg * cp[j] + ig * gg
                hc[j] = og * math.tanh(c[j])
        else:
            for j in range(H):
                hc[j] = g[j] if g[j] > 0.0 else 0.0
                post[j] = hc[j]
        hn = HN[b, t]
        if has_ln:
            mu = 0.0
            for j in range(H):
                mu += hc[j]
            mu /= H
            var = 0.0
            for j in range(H):
                var += (hc[j] - mu) ** 2
            var /= H
            r = 1.0 / math.sqrt(var + eps)
            LNR[b, t, 0], LNR[b, t, 1] = mu, r
            for j in range(H):
                hn[j] = (hc[j] - mu) * r * gamma[j] + beta[j]
        else:
            hn[:] = hc
        # ---- output layer
        z = Z[b, t]
        if upd:
            p, q = _factors(3, b, t - 1, grad, inp, tp)
            _update_read_t(Fs[3][b], Ws[3], Ls[3], q, p, ce, keep, wclip, hn, z)
            if grad:
                _bias_update(FBs[3][b, t - 1], Lbs[3], q, ce, keep, wclip, FBs[3][b, t])
        else:
            _read_t(Fs[3][b], Ws[3], hn, z)
        for j in range(D):
            z[j] += bs[3][j] + (FBs[3][b, t, j] if grad else 0.0)
        for j in range(n_out):
            Y[b, t, j] = z[j]
        m = 2.0 * _sigmoid(z[D - 1]) if modul else 1.0
        # ---- checkpoint of F_t, trace of ‖F_t‖ (the state after step t − 1's update)
        if t % K == 0:
            for layer in range(4):
                if (layer > 0 or has_in) and (t > 0 or not (zero0 >> layer) & 1):
                    CKs[layer][b, t // K] = Fs[layer][b]
        if want_trace and upd:
            TR[b, t - 1] = _fast_norm(b, t, has_in, grad, Fs, FBs)
        # ---- the rule's factors and the update norm
        xx = _sq(x)
        if grad:
            d3 = D3[b, t]
            for j in range(D):
                d3[j] = kz * z[j] * omega[j] * omega[j]
            dh = DH[b, t]
            _read(Fs[3][b], Ws[3], d3, dh)
            dhc = DHC[b, t]
            if has_ln:
                mu, r = LNR[b, t, 0], LNR[b, t, 1]
                a1 = 0.0
                a2 = 0.0
                for j in range(H):
                    dn = dh[j] * gamma[j]
                    a1 += dn
                    a2 += dn * (hc[j] - mu) * r
                a1 /= H
                a2 /= H
                for j in range(H):
                    dhc[j] = r * (dh[j] * gamma[j] - a1 - (hc[j] - mu) * r * a2)
            else:
                dhc[:] = dh
            dc = DC[b, t]
            if lstm:
                cp = _cprev(c0, C, b, t)
                c = C[b, t]
                for j in range(H):
                    ig, fg, gg, og = post[j], post[H + j], post[2 * H + j], post[3 * H + j]
                    tc = math.tanh(c[j])
                    dcc = dhc[j] * og * (1.0 - tc * tc)
                    dc[j] = dcc * gg * ig * (1.0 - ig)
                    dc[H + j] = dcc * cp[j] * fg * (1.0 - fg)
                    dc[2 * H + j] = dcc * ig * (1.0 - gg * gg)
                    dc[3 * H + j] = dhc[j] * tc * og * (1.0 - og)
            else:
                for j in range(H):
                    dc[j] = dhc[j] if hc[j] > 0.0 else 0.0
            cc = _sq(dc)
            nsq = (_sq(hp) + 1.0) * cc + (xx + 1.0) * cc + (_sq(hn) + 1.0) * _sq(d3)
            if has_in:
                d0 = D0[b, t]
                _read_t(Fs[2][b], Ws[2], dc, d0)
                for j in range(d0.shape[0]):
                    if not x[j] > 0.0:
                        d0[j] = 0.0
                nsq += (_sq(u) + 1.0) * _sq(d0)
        else:
            pp = _sq(post)
            nsq = _sq(hp) * pp + xx * pp + _sq(hn) * _sq(z)
            if has_in:
                nsq += _sq(u) * xx
        nrm = math.sqrt(nsq)
        s = clip / max(nrm, clip)
        S[b, t, 0], S[b, t, 1], S[b, t, 2] = m, s, nrm
        ce = lr * m * s
        keep = 1.0 - wd * m
    # ---- the last step's update
    for layer in range(4):
        if layer > 0 or has_in:
            p, q = _factors(layer, b, T - 1, grad, inp, tp)
            if layer == 3:  # stored transposed
                _update(Fs[3][b], Ls[3], q, p, ce, keep, wclip)
            else:
                _update(Fs[layer][b], Ls[layer], p, q, ce, keep, wclip)
            if grad:
                _bias_update(FBs[layer][b, T - 1], Lbs[layer], q, ce, keep, wclip, FBT[layer][b])
    if want_trace:
        TR[b, T - 1] = _fast_norm_final(b, has_in, grad, Fs, FBT)


@njit(**_OPT)
def _fast_norm(b, t, has_in, grad, Fs, FBs):
    sq = 0.0
    for layer in range(4):
        if layer > 0 or has_in:
            sq += _sq(Fs[layer][b])
            if grad:
                sq += _sq(FBs[layer][b, t])
    return math.sqrt(sq)


@njit(**_OPT)
def _fast_norm_final(b, has_in, grad, Fs, FBT):
    sq = 0.0
    for layer in range(4):
        if layer > 0 or has_in:
            sq += _sq(Fs[layer][b])
            if grad:
                sq += _sq(FBT[layer][b])
    return math.sqrt(sq)


@njit(nogil=True, **_OPT)
def forward(b0, b1, cfg, inp, prm, fst, tp):
    """The whole episode of samples ``b0 … b1 − 1`` (see the module docstring); ``fst.Fs`` hold ``F_0`` in,
    ``F_T`` out; ``tp`` is filled.

    Releases the GIL: the caller runs disjoint ranges of samples in threads.
    """
    for b in range(b0, b1):
        _forward_sample(b, cfg, inp, prm, fst, tp)


# ---------------------------------------------------------------- backward of one sample
@njit(**_OPT)
def _backward_sample(b, g, bd, cfg, inp, prm, fst, tp, adj, bt, Fs, Zs, dFs):
    """Sample ``b`` of :func:`backward`: ``Fs[k][0]`` holds its ``F_T`` (a scratch copy), ``dFs[k][bd]`` its
    ``dF`` (these two replace ``fst.Fs`` and ``adj.dFs``); ``Zs`` are zeros of each layer's shape."""
    has_in, lstm, grad, has_ln, modul, n_out, K = (
        cfg.has_in, cfg.lstm, cfg.grad, cfg.has_ln, cfg.modul, cfg.n_out, cfg.K)
    want_dl = cfg.want_dl
    zero0 = cfg.zero0
    lr, wd, clip, wclip, kz = cfg.lr, cfg.wd, cfg.clip, cfg.wclip, cfg.kz
    U, h0, c0 = inp
    Ws, Ls, Lbs, omega, gamma = prm.Ws, prm.Ls, prm.Lbs, prm.omega, prm.gamma
    FBs, CKs = fst.FBs, fst.CKs
    X, POST, C, HN, Z, S, LNR, D3, DH, DHC, DC = (
        tp.X, tp.POST, tp.C, tp.HN, tp.Z, tp.S, tp.LNR, tp.D3, tp.DH, tp.DHC, tp.DC)
    dY, dFBs, dh_out, dc_out, dU = adj.dY, adj.dFBs, adj.dh_out, adj.dc_out, adj.dU
    dLs, dLbs, domega, dgamma, dbeta = adj.dLs, adj.dLbs, adj.domega, adj.dgamma, adj.dbeta
    DA0, DG, DZ, DR2, DDH = bt
    dt = U.dtype
    T = U.shape[1]
    H = HN.shape[2]
    G = POST.shape[2]
    D = Z.shape[2]
    XD = X.shape[2]
    dh_next = dh_out[b].copy()
    dc_next = dc_out[b].copy() if lstm else np.zeros(1, dt)
    dps = (np.empty(U.shape[2], dt), np.empty(H, dt), np.empty(XD, dt), np.empty(H, dt))
    dqs = (np.empty(XD, dt), np.empty(G, dt), np.empty(G, dt), np.empty(D, dt))
    dpost = np.empty(G, dt)
    dz = np.empty(D, dt)
    tmpg = np.empty(G, dt)
    tmpd = np.empty(D, dt)
    dhc = np.empty(H, dt)
    vdhc = np.empty(H, dt)
    dn_acc = np.empty(H, dt)
    dact = np.empty(G, dt)  # adjoints of the activated gates from the δ chain (LSTM)
    dtc_x = np.empty(H, dt)
    dcp_x = np.empty(H, dt)
    dhp = np.empty(H, dt)
    dx = np.empty(XD, dt)
    dx_next = np.zeros(XD, dt)  # adjoint of x_{t+1}, completed by the pending i_fc read
    dg_dummy = np.zeros(max(G, XD, U.shape[2]), dt)
    for t in range(T - 1, -1, -1):
        m, s, nrm = S[b, t, 0], S[b, t, 1], S[b, t, 2]
        ce = lr * m * s
        keep = 1.0 - wd * m
        restore = t % K == 0
        # ---- 1. backward of the step's update, F_{t+1} → F_t
        dkeep = 0.0
        dce = 0.0
        pend = t + 1 < T  # step t + 1's cell and input reads are still to be differentiated
        for layer in (3, 1, 2, 0):
            if layer == 0 and not has_in:
                continue
            dp, dq = dps[layer], dqs[layer]
            dp[:] = 0.0
            dq[:] = 0.0
            p, q = _factors(layer, b, t, grad, inp, tp)
            if restore and t == 0 and (zero0 >> layer) & 1:
                ck = Zs[layer]  # F_0 = 0: never stored
            else:
                ck = CKs[layer][b, t // K] if restore else CKs[layer][b, 0]
            # the pending reads of step t + 1 on this layer (out_fc's read is differentiated in step 5)
            ppre, pdpost, pa, pb, mv = dg_dummy, dg_dummy, dg_dummy, dg_dummy, dg_dummy
            if pend and layer == 1:  # h_{t} (W_h + F_h): its adjoint is dh_next
                ppre, pdpost, mv = HN[b, t], DG[b, t + 1], dh_next
            elif pend and layer == 2:  # x_{t+1} (W_i + F_i) (and its δ read)
                ppre, pdpost, mv = X[b, t + 1], DG[b, t + 1], dx_next
                if grad and has_in:
                    pa, pb = DR2[b, t + 1], DC[b, t + 1]
            elif pend and layer == 0:  # u_{t+1} (W_in + F_in)
                ppre, pdpost, mv = U[b, t + 1], DA0[b, t + 1], dU[b, t + 1]
            F1, W1, L1, dF1, dL1 = Fs[layer][0], Ws[layer], Ls[layer], dFs[layer][bd], dLs[layer][g]
            # pend and pextra as constants at each call: each combination compiles to its own loop (_undo_update_bwd)
            if layer == 3:  # stored transposed
                k1, k2 = _undo_update_bwd(F1, W1, L1, dF1, dL1, q, p, ce, keep, restore, ck, wclip, want_dl, dq, dp,
                                          False, ppre, pdpost, pa, pb, False, mv)
            elif not pend:
                k1, k2 = _undo_update_bwd(F1, W1, L1, dF1, dL1, p, q, ce, keep, restore, ck, wclip, want_dl, dp, dq,
                                          False, ppre, pdpost, pa, pb, False, mv)
            elif layer == 2 and grad and has_in:
                k1, k2 = _undo_update_bwd(F1, W1, L1, dF1, dL1, p, q, ce, keep, restore, ck, wclip, want_dl, dp, dq,
                                          True, ppre, pdpost, pa, pb, True, mv)
            else:
                k1, k2 = _undo_update_bwd(F1, W1, L1, dF1, dL1, p, q, ce, keep, restore, ck, wclip, want_dl, dp, dq,
                                          True, ppre, pdpost, pa, pb, False, mv)
            if pend and layer == 2:
                _input_layer_adjoint(b, t + 1, has_in, grad, X, dx_next, DA0, dU, dFBs)
            dkeep += k1
            dce += k2
            if grad:
                k1, k2 = _bias_bwd(FBs[layer][b, t], Lbs[layer], q, ce, keep, wclip, dFBs[layer][b],
                                   dLbs[layer][g], dq, want_dl)
                dkeep += k1
                dce += k2
        # ---- 2. keep = 1 − p_wd·m, ce = p_lr·m·s, s = clip / max(‖G‖, clip)
        dm = lr * s * dce - wd * dkeep
        ds = lr * m * dce
        dnsq = 0.0
        if nrm > clip:
            dnsq = -ds * s / nrm / (2.0 * nrm)
        for layer in range(4):
            if layer == 0 and not has_in:
                continue
            p, q = _factors(layer, b, t, grad, inp, tp)
            pp, qq = _sq(p), _sq(q)
            dp, dq = dps[layer], dqs[layer]
            fq = 2.0 * dnsq * ((pp + 1.0) if grad else pp)
            fp = 2.0 * dnsq * qq
            for i in range(p.shape[0]):
                dp[i] += fp * p[i]
            for j in range(q.shape[0]):
                dq[j] += fq * q[j]
        # ---- 3. adjoints of the step's vectors
        x = X[b, t]
        post = POST[b, t]
        hn = HN[b, t]
        z = Z[b, t]
        for j in range(H):
            dhp[j] = dps[1][j]
            dhn = dps[3][j] + dh_next[j]
            dn_acc[j] = dhn  # holds dhn until the LayerNorm backward
        dx[:] = dps[2]
        dz[:] = 0.0
        if grad:
            dpost[:] = 0.0
        else:
            for j in range(G):
                dpost[j] = dqs[1][j] + dqs[2][j]
            dz[:] = dqs[3]
            if has_in:
                for j in range(XD):
                    dx[j] += dqs[0][j]
        for j in range(n_out):
            dz[j] += dY[b, t, j]
        if modul:
            dz[D - 1] += dm * m * (1.0 - 0.5 * m)
        # ---- 4. the gradient rule's δ chain (second order)
        dact[:] = 0.0
        dtc_x[:] = 0.0
        dcp_x[:] = 0.0
        dr_acc = 0.0
        lnn_extra = np.zeros(H, dt)
        if grad:
            dd = dqs[1]
            for j in range(G):
                dd[j] += dqs[2][j]  # dδ_cell
            if has_in:
                dr2 = DR2[b, t]
                for j in range(XD):
                    dr2[j] = dqs[0][j] if x[j] > 0.0 else 0.0
                _read(Fs[2][0], Ws[2], dr2, tmpg)
                for j in range(G):
                    dd[j] += tmpg[j]
            dh = DH[b, t]
            if lstm:
                cp = _cprev(c0, C, b, t)
                c = C[b, t]
                dhc_v = DHC[b, t]
                for j in range(H):
                    ig, fg, gg, og = post[j], post[H + j], post[2 * H + j], post[3 * H + j]
                    tc = math.tanh(c[j])
                    bc = 1.0 - tc * tc
                    ai, af, ao, bg = ig * (1.0 - ig), fg * (1.0 - fg), og * (1.0 - og), 1.0 - gg * gg
                    dhcj = dhc_v[j]
                    dcc = dhcj * og * bc
                    vi, vf, vg, vo = dd[j], dd[H + j], dd[2 * H + j], dd[3 * H + j]
                    ddcc = vi * gg * ai + vf * cp[j] * af + vg * ig * bg
                    dact[2 * H + j] += vi * dcc * ai - 2.0 * gg * vg * dcc * ig
                    dact[j] += vi * dcc * gg * (1.0 - 2.0 * ig) + vg * dcc * bg
                    dact[H + j] += vf * dcc * cp[j] * (1.0 - 2.0 * fg)
                    dcp_x[j] += vf * dcc * af
                    dact[3 * H + j] += vo * dhcj * tc * (1.0 - 2.0 * og) + ddcc * dhcj * bc
                    dtc_x[j] += vo * dhcj * ao - 2.0 * tc * ddcc * dhcj * og
                    vdhc[j] = vo * tc * ao + ddcc * og * bc
            else:
                for j in range(H):
                    vdhc[j] = dd[j] if post[j] > 0.0 else 0.0
            ddh = DDH[b, t]
            if has_ln:
                mu, r = LNR[b, t, 0], LNR[b, t, 1]
                a1 = 0.0
                a2 = 0.0
                sv = 0.0
                svn = 0.0
                for j in range(H):
                    nj = (_hc_of(b, t, j, lstm, POST, C, H) - mu) * r
                    dn = dh[j] * gamma[j]
                    a1 += dn
                    a2 += dn * nj
                    sv += vdhc[j]
                    svn += vdhc[j] * nj
                a1 /= H
                a2 /= H
                da1 = -r * sv
                da2 = -r * svn
                for j in range(H):
                    nj = (_hc_of(b, t, j, lstm, POST, C, H) - mu) * r
                    dn = dh[j] * gamma[j]
                    dr_acc += vdhc[j] * (dn - a1 - nj * a2)
                    ddn = r * vdhc[j] + da1 / H + da2 * nj / H
                    lnn_extra[j] = -r * vdhc[j] * a2 + da2 * dn / H
                    ddh[j] = ddn * gamma[j]
                    dgamma[g, j] += ddn * dh[j]
            else:
                ddh[:] = vdhc
            _read_t(Fs[3][0], Ws[3], ddh, tmpd)
            for j in range(D):
                dd3 = dqs[3][j] + tmpd[j]
                dz[j] += kz * omega[j] * omega[j] * dd3
                domega[g, j] += 2.0 * kz * z[j] * omega[j] * dd3
        # ---- 5. output layer read: z = hn (W + F) + b + fb
        DZ[b, t] = dz
        for j in range(H):
            dhc[j] = 0.0
        if grad:
            _read_t_bwd(Fs[3][0], Ws[3], dFs[3][bd], hn, dz, dhc, DDH[b, t], D3[b, t], True)
        else:
            _read_t_bwd(Fs[3][0], Ws[3], dFs[3][bd], hn, dz, dhc, dz, dz, False)
        # dhc now holds (W + F) dz; add the other adjoints of hn
        for j in range(H):
            dhc[j] += dn_acc[j]
        if grad:
            for j in range(D):
                dFBs[3][b, j] += dz[j]
        # ---- 6. LayerNorm forward: hn = n γ + β, n = (hc − μ) r
        if has_ln:
            mu, r = LNR[b, t, 0], LNR[b, t, 1]
            for j in range(H):
                nj = (_hc_of(b, t, j, lstm, POST, C, H) - mu) * r
                dgamma[g, j] += dhc[j] * nj
                dbeta[g, j] += dhc[j]
                dn_acc[j] = dhc[j] * gamma[j] + lnn_extra[j]
                dr_acc += dn_acc[j] * (nj / r)
            dvar = -0.5 * r * r * r * dr_acc
            mean_dxc = 0.0
            for j in range(H):
                xc = _hc_of(b, t, j, lstm, POST, C, H) - mu
                v = dn_acc[j] * r + 2.0 * xc * dvar / H
                dhc[j] = v
                mean_dxc += v
            mean_dxc /= H
            for j in range(H):
                dhc[j] -= mean_dxc
        # ---- 7. cell
        dg = DG[b, t]
        if lstm:
            cp = _cprev(c0, C, b, t)
            c = C[b, t]
            for j in range(H):
                ig, fg, gg, og = post[j], post[H + j], post[2 * H + j], post[3 * H + j]
                tc = math.tanh(c[j])
                di = dact[j] + dpost[j]
                df = dact[H + j] + dpost[H + j]
                dgg = dact[2 * H + j] + dpost[2 * H + j]
                do = dact[3 * H + j] + dpost[3 * H + j] + dhc[j] * tc
                dtc = dhc[j] * og + dtc_x[j]
                dct = dc_next[j] + dtc * (1.0 - tc * tc)
                di += dct * gg
                dgg += dct * ig
                df += dct * cp[j]
                dc_next[j] = dct * fg + dcp_x[j]
                dg[j] = di * ig * (1.0 - ig)
                dg[H + j] = df * fg * (1.0 - fg)
                dg[2 * H + j] = dgg * (1.0 - gg * gg)
                dg[3 * H + j] = do * og * (1.0 - og)
        else:
            for j in range(H):
                dg[j] = (dhc[j] + dpost[j]) if post[j] > 0.0 else 0.0
        if grad:
            for j in range(G):
                dFBs[1][b, j] += dg[j]
                dFBs[2][b, j] += dg[j]
        # ---- 8. the cell and input reads' backward is left pending: the next (earlier) step's passes
        # over F_{t} finish it; here the adjoints they add to are started
        dh_next[:] = dhp
        dx_next[:] = dx
        if has_in:
            dU[b, t] = dps[0]
    # ---- 9. the pending reads of step 0, with F_0
    _read_bwd(Fs[1][0], Ws[1], dFs[1][bd], h0[b], DG[b, 0], dh_next, dg_dummy, dg_dummy, False)
    if grad and has_in:
        _read_bwd(Fs[2][0], Ws[2], dFs[2][bd], X[b, 0], DG[b, 0], dx_next, DR2[b, 0], DC[b, 0], True)
    else:
        _read_bwd(Fs[2][0], Ws[2], dFs[2][bd], X[b, 0], DG[b, 0], dx_next, dg_dummy, dg_dummy, False)
    _input_layer_adjoint(b, 0, has_in, grad, X, dx_next, DA0, dU, dFBs)
    if has_in:
        _read_bwd(Fs[0][0], Ws[0], dFs[0][bd], U[b, 0], DA0[b, 0], dU[b, 0], dg_dummy, dg_dummy, False)
    dh_out[b] = dh_next
    if lstm:
        dc_out[b] = dc_next


@njit(**_OPT)
def _input_layer_adjoint(b, t, has_in, grad, X, dx, DA0, dU, dFBs):
    """Step ``t``'s input layer, once ``dx`` (the adjoint of ``x_t``) is complete: ``da0 = dx ⊙ [x > 0]``
    into ``DA0`` (and the fast bias's adjoint), or, without in_fc, ``du = dx``."""
    if has_in:
        x = X[b, t]
        da0 = DA0[b, t]
        for j in range(dx.shape[0]):
            da0[j] = dx[j] if x[j] > 0.0 else 0.0
        if grad:
            for j in range(dx.shape[0]):
                dFBs[0][b, j] += da0[j]
    else:
        dU[b, t] = dx


@njit(**_OPT)
def _hc_of(b, t, j, lstm, POST, C, H):
    """The cell output before LayerNorm, ``h_c = σ(o)·tanh(c)`` (LSTM) or ``relu(g)`` (RNN)."""
    if lstm:
        return POST[b, t, 3 * H + j] * math.tanh(C[b, t, j])
    return POST[b, t, j]


@njit(nogil=True, **_OPT)
def backward(g0, g1, bounds, cfg, inp, prm, fst, tp, adj, bt):
    """Reverse-time adjoint of :func:`forward` for the sample groups ``g0 … g1 − 1``.

    Group ``g`` is the samples ``bounds[g] … bounds[g + 1] − 1``, taken in order.
    ``fst.Fs`` hold ``F_T`` (only read: each sample is undone in a scratch copy);
    ``adj.dFs, dFBs, dh_out, dc_out`` hold the adjoints of the final state in and of
    the initial state out (``dFs`` only without ``cfg.own_dF``; otherwise each
    sample's ``dF`` starts at zero in a scratch and ``dF_0`` is dropped); the
    accumulators ``dLs, dLbs, domega, dgamma, dbeta`` have one slot per group,
    and the tapes ``DA0, DG, DZ, DR2, DDH`` of the reads' output adjoints are
    filled (the sums over groups, and ``W``'s gradients as GEMMs, are taken by
    the caller). Groups, not threads, fix the order of every sum: the numbers
    do not depend on how many threads share the groups.
    """
    dt = inp.U.dtype
    Fs, dFs = fst.Fs, adj.dFs
    n0, n1, n2, n3 = Fs[0].shape[1:], Fs[1].shape[1:], Fs[2].shape[1:], Fs[3].shape[1:]
    sFs = (np.empty((1, n0[0], n0[1]), dt), np.empty((1, n1[0], n1[1]), dt),
           np.empty((1, n2[0], n2[1]), dt), np.empty((1, n3[0], n3[1]), dt))
    Zs = (np.zeros(n0, dt), np.zeros(n1, dt), np.zeros(n2, dt), np.zeros(n3, dt))
    own_dF = cfg.own_dF
    if own_dF:
        dFu = (np.empty((1, n0[0], n0[1]), dt), np.empty((1, n1[0], n1[1]), dt),
               np.empty((1, n2[0], n2[1]), dt), np.empty((1, n3[0], n3[1]), dt))
    else:
        dFu = dFs
    for g in range(g0, g1):
        for b in range(bounds[g], bounds[g + 1]):
            for k in range(4):
                if k > 0 or cfg.has_in:  # an absent in_fc has a dummy of one slot
                    sFs[k][0] = Fs[k][b]
                    if own_dF:
                        dFu[k][0] = 0.0
            bd = 0 if own_dF else b
            _backward_sample(b, g, bd, cfg, inp, prm, fst, tp, adj, bt, sFs, Zs, dFu)
