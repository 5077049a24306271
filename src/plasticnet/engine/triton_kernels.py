"""Triton programs of the triton engine: the whole episode of SPEC §1 per sample, forward and reverse-time adjoint.

The same algorithm as the numba kernel (:mod:`.kernel_ops`), written for a
GPU: one program per sample walks all ``T`` steps; each layer's fast weights
``F (in, out)`` live in global memory (L2/HBM: they do not fit on chip) and
are passed over in masked ``(BI, BJ)`` tiles, the update of step ``t − 1``
fused with the read of step ``t``::

    F ← clamp(keep·F + ce·Λ ⊙ (p ⊗ q))     (keep = 1 − p_wd·m, ce = p_lr·m·s)
    y = x (W + F)

Small per-step vectors (``x``, the gates, ``h``, ``z``, the gradient rule's
``δ``) are loaded whole (power-of-two blocks, masked) and kept on tapes in
global memory, so the backward can run each sample in reverse time with the
adjoint ``dF_t = keep·dF_{t+1} + pre ⊗ dpost``, recovering ``F_t`` by undoing
the update, ``F_t = (F_{t+1} − ce·Λ ⊙ p ⊗ q)/keep``, except at checkpoint
steps (every ``K``-th), where ``F_t`` was stored. The backward's batch sums
(``Λ``, ``ω``, LayerNorm) go to one slot per fixed group of samples, each
group one program that takes its samples in order: no atomics, the same
numbers on every run. Slow-weight gradients are GEMMs over the tapes, taken
by the caller.

All layers are packed: ``F`` of a sample is one row ``(SF,)`` holding the
layers' ``(in, out)`` blocks at offsets ``off0 … off3`` (0 in_fc, 1 h_fc,
2 i_fc, 3 out_fc), fast biases one row ``(SB,)`` at ``bo0 … bo3``. A program
writes a vector to global memory and reads it back in another layout, so
``tl.debug_barrier()`` separates the phases (a no-op in the interpreter).
Tested on the CPU under ``TRITON_INTERPRET=1`` against the reference engine.
"""

from __future__ import annotations

import triton
import triton.language as tl


# ---------------------------------------------------------------- passes over one layer's F (in, out)
@triton.jit
def _update_read(F, W, L, n_in, n_out, p, q, ce, keep, wclip, x, y,
                 READ: tl.constexpr, CLAMP: tl.constexpr, BI: tl.constexpr, BJ: tl.constexpr):
    """``F ← clamp(keep·F + ce·Λ ⊙ (p ⊗ q))`` then (``READ``) ``y = x (W + F)``; returns ``Σ F²`` after the update."""
    sq = tl.zeros([BI, BJ], dtype=F.dtype.element_ty)
    for j0 in range(0, n_out, BJ):
        oj = j0 + tl.arange(0, BJ)
        mj = oj < n_out
        qj = tl.load(q + oj, mask=mj, other=0.0)
        acc = tl.zeros([BJ], dtype=F.dtype.element_ty)
        for i0 in range(0, n_in, BI):
            oi = i0 + tl.arange(0, BI)
            mi = oi < n_in
            m2 = mi[:, None] & mj[None, :]
            idx = oi[:, None] * n_out + oj[None, :]
            cp = ce * tl.load(p + oi, mask=mi, other=0.0)
            lam = tl.load(L + idx, mask=m2, other=0.0)
            f = keep * tl.load(F + idx, mask=m2, other=0.0) + cp[:, None] * lam * qj[None, :]
            if CLAMP:
                f = tl.minimum(tl.maximum(f, -wclip), wclip)
            tl.store(F + idx, f, mask=m2)
            sq += f * f
            if READ:
                xi = tl.load(x + oi, mask=mi, other=0.0)
                acc += tl.sum(xi[:, None] * (tl.load(W + idx, mask=m2, other=0.0) + f), axis=0)
        if READ:
            tl.store(y + oj, acc, mask=mj)
    return tl.sum(tl.sum(sq, axis=1), axis=0)


@triton.jit
def _read(F, W, n_in, n_out, x, y, BI: tl.constexpr, BJ: tl.constexpr):
    """``y = x (W + F)``: ``x (in,)`` → ``y (out,)``."""
    for j0 in range(0, n_out, BJ):
        oj = j0 + tl.arange(0, BJ)
        mj = oj < n_out
        acc = tl.zeros([BJ], dtype=F.dtype.element_ty)
        for i0 in range(0, n_in, BI):
            oi = i0 + tl.arange(0, BI)
            mi = oi < n_in
            m2 = mi[:, None] & mj[None, :]
            idx = oi[:, None] * n_out + oj[None, :]
            xi = tl.load(x + oi, mask=mi, other=0.0)
            acc += tl.sum(xi[:, None] * (tl.load(W + idx, mask=m2, other=0.0) + tl.load(F + idx, mask=m2, other=0.0)),
                          axis=0)
        tl.store(y + oj, acc, mask=mj)


@triton.jit
def _read_t(F, W, n_in, n_out, d, r, BI: tl.constexpr, BJ: tl.constexpr):
    """``r = (W + F) d``: ``d (out,)`` → ``r (in,)`` (a gradient sent back through the layer)."""
    for i0 in range(0, n_in, BI):
        oi = i0 + tl.arange(0, BI)
        mi = oi < n_in
        acc = tl.zeros([BI], dtype=F.dtype.element_ty)
        for j0 in range(0, n_out, BJ):
            oj = j0 + tl.arange(0, BJ)
            mj = oj < n_out
            m2 = mi[:, None] & mj[None, :]
            idx = oi[:, None] * n_out + oj[None, :]
            dj = tl.load(d + oj, mask=mj, other=0.0)
            acc += tl.sum((tl.load(W + idx, mask=m2, other=0.0) + tl.load(F + idx, mask=m2, other=0.0)) * dj[None, :],
                          axis=1)
        tl.store(r + oi, acc, mask=mi)


@triton.jit
def _adjoint(F, W, L, dF, dL, CKt, n_in, n_out, p, q, ce, keep, wclip, restore, dp, dq,
             ppre, pdpost, pa, pb, pmask, mv,
             UNDO: tl.constexpr, PEND: tl.constexpr, PEXTRA: tl.constexpr, CLAMP: tl.constexpr,
             WANT_DL: tl.constexpr, BI: tl.constexpr, BJ: tl.constexpr):
    """One pass of the backward over a layer: a read's backward, fused (``UNDO``) with the update's.

    On entry ``F = F_{t+1}``, ``dF = ∂/∂F_{t+1}``. The read ``y = ppre (W + F_{t+1})``
    (and with ``PEXTRA`` ``r = (W + F_{t+1}) pb`` with adjoint ``pa``), where
    ``pmask`` holds: ``mv += (W + F_{t+1}) pdpost``, ``dv = dF + ppre ⊗ pdpost (+ pa ⊗ pb)``.
    Without ``UNDO``, ``dF ← dv``. With ``UNDO``, the backward of ``F_{t+1} =
    clamp(keep·F_t + ce·Λ ⊙ (p ⊗ q))``: ``F ← F_t`` (undone, or the checkpoint
    ``CKt`` where ``restore``), ``dF ← keep·dv'`` (``dv'`` the adjoint before the
    clamp), ``dp += ce·(Λ ⊙ dv') q``, ``dq += ce·(Λ ⊙ dv')ᵀ p``, ``dL += ce·(p ⊗ q) ⊙ dv'``;
    returns ``(Σ F_t ⊙ dv', pᵀ (Λ ⊙ dv') q)``, the adjoints of ``keep`` and ``ce``.
    """
    dkeep = tl.zeros([BI], dtype=F.dtype.element_ty)
    dce = tl.zeros([BI], dtype=F.dtype.element_ty)
    inv = 1.0 / tl.where(restore, 1.0, keep)
    for i0 in range(0, n_in, BI):
        oi = i0 + tl.arange(0, BI)
        mi = oi < n_in
        acc = tl.zeros([BI], dtype=F.dtype.element_ty)
        macc = tl.zeros([BI], dtype=F.dtype.element_ty)
        pi = tl.zeros([BI], dtype=F.dtype.element_ty)
        ppi = tl.zeros([BI], dtype=F.dtype.element_ty)
        pai = tl.zeros([BI], dtype=F.dtype.element_ty)
        if UNDO:
            pi = tl.load(p + oi, mask=mi, other=0.0)
        if PEND:
            ppi = tl.load(ppre + oi, mask=_also(mi, pmask), other=0.0)
        if PEXTRA:
            pai = tl.load(pa + oi, mask=_also(mi, pmask), other=0.0)
        cp = ce * pi
        for j0 in range(0, n_out, BJ):
            oj = j0 + tl.arange(0, BJ)
            mj = oj < n_out
            m2 = mi[:, None] & mj[None, :]
            idx = oi[:, None] * n_out + oj[None, :]
            f1 = tl.load(F + idx, mask=m2, other=0.0)
            dv = tl.load(dF + idx, mask=m2, other=0.0)
            if PEND:
                dpj = tl.load(pdpost + oj, mask=_also(mj, pmask), other=0.0)
                macc += tl.sum((tl.load(W + idx, mask=m2, other=0.0) + f1) * dpj[None, :], axis=1)
                dv += ppi[:, None] * dpj[None, :]
            if PEXTRA:
                dv += pai[:, None] * tl.load(pb + oj, mask=_also(mj, pmask), other=0.0)[None, :]
            if UNDO:
                qj = tl.load(q + oj, mask=mj, other=0.0)
                lam = tl.load(L + idx, mask=m2, other=0.0)
                lq = lam * qj[None, :]
                ck = tl.load(CKt + idx, mask=_also(m2, restore), other=0.0)
                ft = tl.where(restore, ck, (f1 - cp[:, None] * lq) * inv)
                tl.store(F + idx, ft, mask=m2)
                if CLAMP:
                    v = keep * ft + cp[:, None] * lq
                    dv = tl.where((v > wclip) | (v < -wclip), 0.0, dv)
                acc += tl.sum(lq * dv, axis=1)
                w = cp[:, None] * dv  # one product shared by the adjoints of q and Λ
                dqj = tl.load(dq + oj, mask=mj, other=0.0) + tl.sum(lam * w, axis=0)
                tl.store(dq + oj, dqj, mask=mj)
                dkeep += tl.sum(ft * dv, axis=1)
                if WANT_DL:
                    tl.store(dL + idx, tl.load(dL + idx, mask=m2, other=0.0) + qj[None, :] * w, mask=m2)
                tl.store(dF + idx, keep * dv, mask=m2)
            else:
                tl.store(dF + idx, dv, mask=m2)
        if UNDO:
            tl.store(dp + oi, tl.load(dp + oi, mask=mi, other=0.0) + ce * acc, mask=mi)
            dce += pi * acc
        if PEND:
            tl.store(mv + oi, tl.load(mv + oi, mask=mi, other=0.0) + macc, mask=mi)
    return tl.sum(dkeep, axis=0), tl.sum(dce, axis=0)


# ---------------------------------------------------------------- small vector pieces
@triton.jit
def _also(m, flag):
    """The mask ``m`` where the scalar condition ``flag`` holds (a Python bool in the interpreter, i1 compiled)."""
    return m & ((m.to(tl.int32) * 0 + flag) != 0)


@triton.jit
def _sigmoid(v):
    return 1.0 / (1.0 + tl.exp(-v))


@triton.jit
def _tanh(v):
    return 1.0 - 2.0 / (tl.exp(2.0 * v) + 1.0)


@triton.jit
def _vsq(ptr, n, BN: tl.constexpr):
    """``Σ v²`` of the vector ``v (n,)`` at ``ptr``."""
    o = tl.arange(0, BN)
    v = tl.load(ptr + o, mask=o < n, other=0.0)
    return tl.sum(v * v, axis=0)


@triton.jit
def _bias_update(FBt, FBn, Lb, q, n, ce, keep, wclip, CLAMP: tl.constexpr, BN: tl.constexpr):
    """``fb_{t+1} = clamp(keep·fb_t + ce·Λ_b ⊙ q)`` into ``FBn``; returns ``Σ fb_{t+1}²``."""
    o = tl.arange(0, BN)
    m = o < n
    f = keep * tl.load(FBt + o, mask=m, other=0.0) + ce * tl.load(Lb + o, mask=m, other=0.0) * tl.load(
        q + o, mask=m, other=0.0)
    if CLAMP:
        f = tl.minimum(tl.maximum(f, -wclip), wclip)
    tl.store(FBn + o, f, mask=m)
    return tl.sum(f * f, axis=0)


@triton.jit
def _bias_adjoint(FBt, Lb, q, n, ce, keep, wclip, dfb, dLb, dq, CLAMP: tl.constexpr, WANT_DL: tl.constexpr,
                  BN: tl.constexpr):
    """Backward of ``fb' = clamp(keep·fb + ce·Λ_b ⊙ q)``: ``dfb`` (∂/∂fb') becomes ``keep·dv``; returns
    the adjoints of ``keep`` and ``ce``."""
    o = tl.arange(0, BN)
    m = o < n
    fb = tl.load(FBt + o, mask=m, other=0.0)
    lb = tl.load(Lb + o, mask=m, other=0.0)
    qv = tl.load(q + o, mask=m, other=0.0)
    dv = tl.load(dfb + o, mask=m, other=0.0)
    if CLAMP:
        v = keep * fb + ce * lb * qv
        dv = tl.where((v > wclip) | (v < -wclip), 0.0, dv)
    if WANT_DL:
        tl.store(dLb + o, tl.load(dLb + o, mask=m, other=0.0) + ce * qv * dv, mask=m)
    tl.store(dq + o, tl.load(dq + o, mask=m, other=0.0) + ce * lb * dv, mask=m)
    tl.store(dfb + o, keep * dv, mask=m)
    return tl.sum(fb * dv, axis=0), tl.sum(lb * qv * dv, axis=0)


@triton.jit
def _norm_adjoint(p, q, n_p, n_q, dp, dq, dnsq, GRAD: tl.constexpr, BP: tl.constexpr, BQ: tl.constexpr):
    """Adjoint of one layer's ``‖G‖²`` term, ``‖p‖²‖q‖²`` (+ ``‖q‖²`` for the gradient rule's bias)."""
    op = tl.arange(0, BP)
    oq = tl.arange(0, BQ)
    pv = tl.load(p + op, mask=op < n_p, other=0.0)
    qv = tl.load(q + oq, mask=oq < n_q, other=0.0)
    pp = tl.sum(pv * pv, axis=0)
    qq = tl.sum(qv * qv, axis=0)
    if GRAD:
        pp = pp + 1.0
    tl.store(dp + op, tl.load(dp + op, mask=op < n_p, other=0.0) + 2.0 * dnsq * qq * pv, mask=op < n_p)
    tl.store(dq + oq, tl.load(dq + oq, mask=oq < n_q, other=0.0) + 2.0 * dnsq * pp * qv, mask=oq < n_q)


@triton.jit
def _add_to(ptr, v, o, m):
    tl.store(ptr + o, tl.load(ptr + o, mask=m, other=0.0) + v, mask=m)


# ---------------------------------------------------------------- forward: one program per sample
@triton.jit
def episode_forward(
        U, H0, C0, W, L, BIAS, LB, OMEGA, GAMMA, BETA, CFG,
        F, FB, CK, X, POST, CS, HC, HS, Z, S, LNR, D3, DH, DHC, DC, D0, TR, V,
        T, K, NCK, UN, XD, H, G, D, SF, SB, off0, off1, off2, off3, bo0, bo1, bo2, bo3, MV,
        HAS_IN: tl.constexpr, LSTM: tl.constexpr, GRAD: tl.constexpr, HAS_LN: tl.constexpr,
        MODUL: tl.constexpr, CLAMP: tl.constexpr,
        BU: tl.constexpr, BX: tl.constexpr, BH: tl.constexpr, BG: tl.constexpr, BD: tl.constexpr,
        BI: tl.constexpr, BJ: tl.constexpr):
    """The episode of sample ``program_id``: ``F`` holds ``F_0`` in and ``F_T`` out, ``FB[:, 0]`` the initial
    fast biases; ``CFG = [p_lr, p_wd, clip, weight_clip, kz = 2·scale/D, eps, ∞]``. Without in_fc, ``X`` holds ``U``."""
    b = tl.program_id(0).to(tl.int64)
    lr, wd, clip = tl.load(CFG), tl.load(CFG + 1), tl.load(CFG + 2)
    wclip, kz, eps, big = tl.load(CFG + 3), tl.load(CFG + 4), tl.load(CFG + 5), tl.load(CFG + 6)
    Fb = F + b * SF
    FBb = FB + b * (T + 1) * SB
    CKb = CK + b * NCK * SF
    Ub, Xb, Pb = U + b * T * UN, X + b * T * XD, POST + b * T * G
    CSb, HCb, HSb = CS + b * (T + 1) * H, HC + b * T * H, HS + b * (T + 1) * H
    Zb, Sb, LNRb = Z + b * T * D, S + b * T * 4, LNR + b * T * 2
    D3b, DHb, DHCb, DCb, D0b = D3 + b * T * D, DH + b * T * H, DHC + b * T * H, DC + b * T * G, D0 + b * T * XD
    TRb = TR + b * T
    a0, g1, g2 = V + b * 3 * MV, V + b * 3 * MV + MV, V + b * 3 * MV + 2 * MV
    if GRAD:  # the second factor q of each layer's update Λ ⊙ (pre ⊗ q)
        QA, QC, QZ = D0b, DCb, D3b
    else:
        QA, QC, QZ = Xb, Pb, Zb
    ox, oh, od = tl.arange(0, BX), tl.arange(0, BH), tl.arange(0, BD)
    mx, mh, md = ox < XD, oh < H, od < D
    ce = lr * 0.0
    keep = ce + 1.0
    for t in range(T):
        # step t − 1's update is fused with step t's reads; at t = 0 it is the identity (ce = 0, keep = 1)
        tm1 = tl.maximum(t - 1, 0)
        wc = tl.where(t > 0, wclip, big)
        FBt = FBb + t * SB
        sq = lr * 0.0
        # ---- input layer: x = relu(u (W + F) + b + fb)
        ut, xt = Ub + t * UN, Xb + t * XD
        if HAS_IN:
            sq += _update_read(Fb + off0, W + off0, L + off0, UN, XD, Ub + tm1 * UN, QA + tm1 * XD, ce, keep, wc,
                               ut, a0, True, CLAMP, BI, BJ)
            if GRAD:
                sq += _bias_update(FBb + tm1 * SB + bo0, FBt + bo0, LB + bo0, QA + tm1 * XD, XD, ce, keep, wc,
                                   CLAMP, BX)
            tl.debug_barrier()
            a = tl.load(a0 + ox, mask=mx, other=0.0) + tl.load(BIAS + bo0 + ox, mask=mx, other=0.0)
            if GRAD:
                a += tl.load(FBt + bo0 + ox, mask=mx, other=0.0)
            tl.store(xt + ox, tl.maximum(a, 0.0), mask=mx)
            tl.debug_barrier()
        # ---- cell: gates = h (W_h + F_h) + x (W_i + F_i) + biases
        hp = HSb + t * H
        sq += _update_read(Fb + off1, W + off1, L + off1, H, G, HSb + tm1 * H, QC + tm1 * G, ce, keep, wc,
                           hp, g1, True, CLAMP, BI, BJ)
        sq += _update_read(Fb + off2, W + off2, L + off2, XD, G, Xb + tm1 * XD, QC + tm1 * G, ce, keep, wc,
                           xt, g2, True, CLAMP, BI, BJ)
        if GRAD:
            sq += _bias_update(FBb + tm1 * SB + bo1, FBt + bo1, LB + bo1, QC + tm1 * G, G, ce, keep, wc, CLAMP, BG)
            sq += _bias_update(FBb + tm1 * SB + bo2, FBt + bo2, LB + bo2, QC + tm1 * G, G, ce, keep, wc, CLAMP, BG)
        tl.debug_barrier()
        pt = Pb + t * G
        if LSTM:
            pi = _preact(g1, g2, BIAS, FBt, bo1, bo2, 0, oh, mh, GRAD)
            pf = _preact(g1, g2, BIAS, FBt, bo1, bo2, H, oh, mh, GRAD)
            pg = _preact(g1, g2, BIAS, FBt, bo1, bo2, 2 * H, oh, mh, GRAD)
            po = _preact(g1, g2, BIAS, FBt, bo1, bo2, 3 * H, oh, mh, GRAD)
            ig, fg, gg, og = _sigmoid(pi), _sigmoid(pf), _tanh(pg), _sigmoid(po)
            tl.store(pt + oh, ig, mask=mh)
            tl.store(pt + H + oh, fg, mask=mh)
            tl.store(pt + 2 * H + oh, gg, mask=mh)
            tl.store(pt + 3 * H + oh, og, mask=mh)
            c = fg * tl.load(CSb + t * H + oh, mask=mh, other=0.0) + ig * gg
            tl.store(CSb + (t + 1) * H + oh, c, mask=mh)
            hc = tl.where(mh, og * _tanh(c), 0.0)
            pp = tl.sum(tl.where(mh, ig * ig + fg * fg + gg * gg + og * og, 0.0), axis=0)
        else:
            hc = tl.maximum(_preact(g1, g2, BIAS, FBt, bo1, bo2, 0, oh, mh, GRAD), 0.0)
            tl.store(pt + oh, hc, mask=mh)
            pp = tl.sum(hc * hc, axis=0)
        tl.store(HCb + t * H + oh, hc, mask=mh)
        mu = lr * 0.0
        r = mu + 1.0
        if HAS_LN:
            mu = tl.sum(hc, axis=0) / H
            xc = tl.where(mh, hc - mu, 0.0)
            r = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=0) / H + eps)
            tl.store(LNRb + t * 2, mu)
            tl.store(LNRb + t * 2 + 1, r)
            hn = xc * r * tl.load(GAMMA + oh, mask=mh, other=0.0) + tl.load(BETA + oh, mask=mh, other=0.0)
        else:
            hn = hc
        tl.store(HSb + (t + 1) * H + oh, hn, mask=mh)
        tl.debug_barrier()
        # ---- output layer: z = hn (W + F) + b + fb
        zt = Zb + t * D
        sq += _update_read(Fb + off3, W + off3, L + off3, H, D, HSb + (tm1 + 1) * H, QZ + tm1 * D, ce, keep, wc,
                           HSb + (t + 1) * H, zt, True, CLAMP, BI, BJ)
        if GRAD:
            sq += _bias_update(FBb + tm1 * SB + bo3, FBt + bo3, LB + bo3, QZ + tm1 * D, D, ce, keep, wc, CLAMP, BD)
        tl.debug_barrier()
        z = tl.load(zt + od, mask=md, other=0.0) + tl.load(BIAS + bo3 + od, mask=md, other=0.0)
        if GRAD:
            z += tl.load(FBt + bo3 + od, mask=md, other=0.0)
        tl.store(zt + od, z, mask=md)
        if MODUL:
            m = 2.0 * _sigmoid(tl.sum(tl.where(od == D - 1, z, 0.0), axis=0))
        else:
            m = lr * 0.0 + 1.0
        # ---- checkpoint of F_t; ‖F_t‖ (after step t − 1's update) for the trace
        if t % K == 0:
            for s0 in range(0, SF, BI * BJ):
                o = s0 + tl.arange(0, BI * BJ)
                tl.store(CKb + (t // K) * SF + o, tl.load(Fb + o, mask=o < SF), mask=o < SF)
        tl.store(TRb + tm1, tl.sqrt(sq), mask=t > 0)
        # ---- the rule's factors and the update norm ‖G‖ over all plastic tensors
        xv = tl.load(xt + ox, mask=mx, other=0.0)
        xx = tl.sum(xv * xv, axis=0)
        hpp = _vsq(hp, H, BH)
        hnn = tl.sum(hn * hn, axis=0)
        uu = _vsq(ut, UN, BU)
        if GRAD:
            om = tl.load(OMEGA + od, mask=md, other=0.0)
            d3 = kz * z * om * om
            tl.store(D3b + t * D + od, d3, mask=md)
            tl.debug_barrier()
            _read_t(Fb + off3, W + off3, H, D, D3b + t * D, DHb + t * H, BI, BJ)
            tl.debug_barrier()
            dh = tl.load(DHb + t * H + oh, mask=mh, other=0.0)
            if HAS_LN:
                dn = dh * tl.load(GAMMA + oh, mask=mh, other=0.0)
                nj = tl.where(mh, (hc - mu) * r, 0.0)
                a1 = tl.sum(dn, axis=0) / H
                a2 = tl.sum(dn * nj, axis=0) / H
                dhc = tl.where(mh, r * (dn - a1 - nj * a2), 0.0)
            else:
                dhc = dh
            tl.store(DHCb + t * H + oh, dhc, mask=mh)
            dct = DCb + t * G
            if LSTM:
                cpv = tl.load(CSb + t * H + oh, mask=mh, other=0.0)
                tc = _tanh(c)
                dcc = dhc * og * (1.0 - tc * tc)
                e0 = dcc * gg * ig * (1.0 - ig)
                e1 = dcc * cpv * fg * (1.0 - fg)
                e2 = dcc * ig * (1.0 - gg * gg)
                e3 = dhc * tc * og * (1.0 - og)
                tl.store(dct + oh, e0, mask=mh)
                tl.store(dct + H + oh, e1, mask=mh)
                tl.store(dct + 2 * H + oh, e2, mask=mh)
                tl.store(dct + 3 * H + oh, e3, mask=mh)
                cc = tl.sum(e0 * e0 + e1 * e1 + e2 * e2 + e3 * e3, axis=0)
            else:
                e0 = tl.where(hc > 0.0, dhc, 0.0)
                tl.store(dct + oh, e0, mask=mh)
                cc = tl.sum(e0 * e0, axis=0)
            nsq = (hpp + 1.0) * cc + (xx + 1.0) * cc + (hnn + 1.0) * tl.sum(d3 * d3, axis=0)
            if HAS_IN:
                tl.debug_barrier()
                _read_t(Fb + off2, W + off2, XD, G, dct, D0b + t * XD, BI, BJ)
                tl.debug_barrier()
                d0 = tl.where(xv > 0.0, tl.load(D0b + t * XD + ox, mask=mx, other=0.0), 0.0)
                tl.store(D0b + t * XD + ox, d0, mask=mx)
                nsq += (uu + 1.0) * tl.sum(d0 * d0, axis=0)
        else:
            nsq = hpp * pp + xx * pp + hnn * tl.sum(z * z, axis=0)
            if HAS_IN:
                nsq += uu * xx
        nrm = tl.sqrt(nsq)
        s = clip / tl.maximum(nrm, clip)
        tl.store(Sb + t * 4, m)
        tl.store(Sb + t * 4 + 1, s)
        tl.store(Sb + t * 4 + 2, nrm)
        ce = lr * m * s
        keep = 1.0 - wd * m
        tl.debug_barrier()
    # ---- the last step's update (nothing to read)
    sq = lr * 0.0
    tlast = T - 1
    FBt = FBb + T * SB
    if HAS_IN:
        sq += _update_read(Fb + off0, W + off0, L + off0, UN, XD, Ub + tlast * UN, QA + tlast * XD, ce, keep, wclip,
                           Ub, a0, False, CLAMP, BI, BJ)
    sq += _update_read(Fb + off1, W + off1, L + off1, H, G, HSb + tlast * H, QC + tlast * G, ce, keep, wclip,
                       Ub, a0, False, CLAMP, BI, BJ)
    sq += _update_read(Fb + off2, W + off2, L + off2, XD, G, Xb + tlast * XD, QC + tlast * G, ce, keep, wclip,
                       Ub, a0, False, CLAMP, BI, BJ)
    sq += _update_read(Fb + off3, W + off3, L + off3, H, D, HSb + T * H, QZ + tlast * D, ce, keep, wclip,
                       Ub, a0, False, CLAMP, BI, BJ)
    if GRAD:
        if HAS_IN:
            sq += _bias_update(FBb + tlast * SB + bo0, FBt + bo0, LB + bo0, QA + tlast * XD, XD, ce, keep, wclip,
                               CLAMP, BX)
        sq += _bias_update(FBb + tlast * SB + bo1, FBt + bo1, LB + bo1, QC + tlast * G, G, ce, keep, wclip, CLAMP, BG)
        sq += _bias_update(FBb + tlast * SB + bo2, FBt + bo2, LB + bo2, QC + tlast * G, G, ce, keep, wclip, CLAMP, BG)
        sq += _bias_update(FBb + tlast * SB + bo3, FBt + bo3, LB + bo3, QZ + tlast * D, D, ce, keep, wclip, CLAMP, BD)
    tl.store(TRb + tlast, tl.sqrt(sq))


@triton.jit
def _preact(g1, g2, BIAS, FBt, bo1, bo2, off, oh, mh, GRAD: tl.constexpr):
    """One gate's slice ``[off, off + H)`` of ``h (W_h + F_h) + x (W_i + F_i) + b_h + b_i (+ fb_h + fb_i)``."""
    v = (tl.load(g1 + off + oh, mask=mh, other=0.0) + tl.load(g2 + off + oh, mask=mh, other=0.0)
         + tl.load(BIAS + bo1 + off + oh, mask=mh, other=0.0) + tl.load(BIAS + bo2 + off + oh, mask=mh, other=0.0))
    if GRAD:
        v += tl.load(FBt + bo1 + off + oh, mask=mh, other=0.0) + tl.load(FBt + bo2 + off + oh, mask=mh, other=0.0)
    return v



# ---------------------------------------------------------------- backward: one program per fixed group of samples
@triton.jit
def episode_backward(
        U, W, L, LB, OMEGA, GAMMA, CFG, BOUNDS,
        F, dF, FB, CK, X, POST, CS, HC, HS, Z, S, LNR, D3, DH, DHC, DC, D0,
        dY, dFB, dHo, dCo, dU, dL, dLb, dOM, dGA, dBE, DA0, DG, DZ, DR2, DDH, V,
        T, K, NCK, UN, XD, H, G, D, NOUT, SF, SB, off0, off1, off2, off3, bo0, bo1, bo2, bo3, MV,
        HAS_IN: tl.constexpr, LSTM: tl.constexpr, GRAD: tl.constexpr, HAS_LN: tl.constexpr,
        MODUL: tl.constexpr, CLAMP: tl.constexpr, WANT_DL: tl.constexpr,
        BU: tl.constexpr, BX: tl.constexpr, BH: tl.constexpr, BG: tl.constexpr, BD: tl.constexpr,
        BI: tl.constexpr, BJ: tl.constexpr):
    """Reverse-time adjoint of :func:`episode_forward` for the samples ``BOUNDS[g] … BOUNDS[g + 1] − 1``, in order.

    ``F`` holds each sample's ``F_T`` (a scratch copy, undone in place), ``dF``,
    ``dFB``, ``dHo``, ``dCo`` the adjoints of the final state in and of the
    initial state out; ``dL, dLb, dOM, dGA, dBE`` have one slot per group; the
    tapes ``DA0, DG, DZ, DR2, DDH`` of the reads' output adjoints are filled
    for the caller's GEMMs. ``V`` holds 14 zeroed scratch vectors of ``MV`` per sample.
    """
    g = tl.program_id(0)
    lr, wd, clip = tl.load(CFG), tl.load(CFG + 1), tl.load(CFG + 2)
    wclip, kz = tl.load(CFG + 3), tl.load(CFG + 4)
    one = lr * 0.0 + 1.0
    ox, oh, o4, od = tl.arange(0, BX), tl.arange(0, BH), tl.arange(0, BG), tl.arange(0, BD)
    mx, mh, m4, md = ox < XD, oh < H, o4 < G, od < D
    dLg, dLbg = dL + g * SF, dLb + g * SB
    gam = tl.load(GAMMA + oh, mask=mh, other=0.0)
    om = tl.load(OMEGA + od, mask=md, other=0.0)
    dga = tl.zeros([BH], dtype=F.dtype.element_ty)
    dbe = tl.zeros([BH], dtype=F.dtype.element_ty)
    dom = tl.zeros([BD], dtype=F.dtype.element_ty)
    for bb in range(tl.load(BOUNDS + g), tl.load(BOUNDS + g + 1)):
        b = tl.cast(bb, tl.int64)
        Fb, dFb, dFBb = F + b * SF, dF + b * SF, dFB + b * SB
        FBb = FB + b * (T + 1) * SB
        CKb = CK + b * NCK * SF
        Ub, Xb, Pb = U + b * T * UN, X + b * T * XD, POST + b * T * G
        CSb, HCb, HSb = CS + b * (T + 1) * H, HC + b * T * H, HS + b * (T + 1) * H
        Zb, Sb, LNRb = Z + b * T * D, S + b * T * 4, LNR + b * T * 2
        D3b, DHb, DHCb, DCb, D0b = D3 + b * T * D, DH + b * T * H, DHC + b * T * H, DC + b * T * G, D0 + b * T * XD
        dYb, dUb = dY + b * T * NOUT, dU + b * T * UN
        DA0b, DGb, DZb, DR2b, DDHb = DA0 + b * T * XD, DG + b * T * G, DZ + b * T * D, DR2 + b * T * XD, DDH + b * T * H
        Vb = V + b * 14 * MV
        DP0, DP1, DP2, DP3 = Vb, Vb + MV, Vb + 2 * MV, Vb + 3 * MV
        DQ0, DQ1, DQ2, DQ3 = Vb + 4 * MV, Vb + 5 * MV, Vb + 6 * MV, Vb + 7 * MV
        DHN, DXN, DHCS = Vb + 8 * MV, Vb + 9 * MV, Vb + 10 * MV  # adjoints of h_t, x_t (pending), hc
        TMPG, TMPD, DD = Vb + 11 * MV, Vb + 12 * MV, Vb + 13 * MV
        if GRAD:  # the second factor q of each layer's update Λ ⊙ (pre ⊗ q)
            QA, QC, QZ = D0b, DCb, D3b
        else:
            QA, QC, QZ = Xb, Pb, Zb
        tl.store(DHN + oh, tl.load(dHo + b * H + oh, mask=mh, other=0.0), mask=mh)
        dcn = tl.load(dCo + b * H + oh, mask=mh, other=0.0)
        tl.debug_barrier()
        for tt in range(T):
            t = T - 1 - tt
            pend = t + 1 < T  # step t + 1's cell and input reads are still to be differentiated
            tp1 = tl.minimum(t + 1, T - 1)
            m, s, nrm = tl.load(Sb + t * 4), tl.load(Sb + t * 4 + 1), tl.load(Sb + t * 4 + 2)
            ce = lr * m * s
            keep = 1.0 - wd * m
            restore = (t % K) == 0
            CKt = CKb + (t // K) * SF
            FBt = FBb + t * SB
            for v0 in range(0, 8 * MV, BI * BJ):
                o = v0 + tl.arange(0, BI * BJ)
                tl.store(Vb + o, tl.zeros([BI * BJ], dtype=F.dtype.element_ty), mask=o < 8 * MV)
            tl.debug_barrier()
            # ---- 1. backward of the step's update, F_{t+1} → F_t, fused with step t + 1's pending reads
            dkeep, dce = _adjoint(Fb + off3, W + off3, L + off3, dFb + off3, dLg + off3, CKt + off3, H, D,
                                  HSb + (t + 1) * H, QZ + t * D, ce, keep, wclip, restore, DP3, DQ3,
                                  DP3, DP3, DP3, DP3, pend, DP3, True, False, False, CLAMP, WANT_DL, BI, BJ)
            if GRAD:
                k1, k2 = _bias_adjoint(FBt + bo3, LB + bo3, QZ + t * D, D, ce, keep, wclip, dFBb + bo3, dLbg + bo3,
                                       DQ3, CLAMP, WANT_DL, BD)
                dkeep += k1
                dce += k2
            k1, k2 = _adjoint(Fb + off1, W + off1, L + off1, dFb + off1, dLg + off1, CKt + off1, H, G,
                              HSb + t * H, QC + t * G, ce, keep, wclip, restore, DP1, DQ1,
                              HSb + (t + 1) * H, DGb + tp1 * G, DP1, DP1, pend, DHN,
                              True, True, False, CLAMP, WANT_DL, BI, BJ)
            dkeep += k1
            dce += k2
            k1, k2 = _adjoint(Fb + off2, W + off2, L + off2, dFb + off2, dLg + off2, CKt + off2, XD, G,
                              Xb + t * XD, QC + t * G, ce, keep, wclip, restore, DP2, DQ2,
                              Xb + tp1 * XD, DGb + tp1 * G, DR2b + tp1 * XD, DCb + tp1 * G, pend, DXN,
                              True, True, GRAD and HAS_IN, CLAMP, WANT_DL, BI, BJ)
            dkeep += k1
            dce += k2
            if GRAD:
                k1, k2 = _bias_adjoint(FBt + bo1, LB + bo1, QC + t * G, G, ce, keep, wclip, dFBb + bo1, dLbg + bo1,
                                       DQ1, CLAMP, WANT_DL, BG)
                dkeep += k1
                dce += k2
                k1, k2 = _bias_adjoint(FBt + bo2, LB + bo2, QC + t * G, G, ce, keep, wclip, dFBb + bo2, dLbg + bo2,
                                       DQ2, CLAMP, WANT_DL, BG)
                dkeep += k1
                dce += k2
            tl.debug_barrier()
            _input_adjoint(Xb + tp1 * XD, DXN, DA0b + tp1 * XD, dUb + tp1 * UN, dFBb + bo0, XD, pend,
                           HAS_IN, GRAD, BX)
            tl.debug_barrier()
            if HAS_IN:
                k1, k2 = _adjoint(Fb + off0, W + off0, L + off0, dFb + off0, dLg + off0, CKt + off0, UN, XD,
                                  Ub + t * UN, QA + t * XD, ce, keep, wclip, restore, DP0, DQ0,
                                  Ub + tp1 * UN, DA0b + tp1 * XD, DP0, DP0, pend, dUb + tp1 * UN,
                                  True, True, False, CLAMP, WANT_DL, BI, BJ)
                dkeep += k1
                dce += k2
                if GRAD:
                    k1, k2 = _bias_adjoint(FBt + bo0, LB + bo0, QA + t * XD, XD, ce, keep, wclip, dFBb + bo0,
                                           dLbg + bo0, DQ0, CLAMP, WANT_DL, BX)
                    dkeep += k1
                    dce += k2
            tl.debug_barrier()
            # ---- 2. keep = 1 − p_wd·m, ce = p_lr·m·s, s = clip / max(‖G‖, clip)
            dm = lr * s * dce - wd * dkeep
            ds = lr * m * dce
            dnsq = tl.where(nrm > clip, -ds * s / nrm / (2.0 * nrm), 0.0)
            if HAS_IN:
                _norm_adjoint(Ub + t * UN, QA + t * XD, UN, XD, DP0, DQ0, dnsq, GRAD, BU, BX)
            _norm_adjoint(HSb + t * H, QC + t * G, H, G, DP1, DQ1, dnsq, GRAD, BH, BG)
            _norm_adjoint(Xb + t * XD, QC + t * G, XD, G, DP2, DQ2, dnsq, GRAD, BX, BG)
            _norm_adjoint(HSb + (t + 1) * H, QZ + t * D, H, D, DP3, DQ3, dnsq, GRAD, BH, BD)
            tl.debug_barrier()
            # ---- 3. adjoints of the step's vectors
            xv = tl.load(Xb + t * XD + ox, mask=mx, other=0.0)
            dhp = tl.load(DP1 + oh, mask=mh, other=0.0)
            dnacc = tl.load(DP3 + oh, mask=mh, other=0.0) + tl.load(DHN + oh, mask=mh, other=0.0)
            dx = tl.load(DP2 + ox, mask=mx, other=0.0)
            if GRAD:
                dz = tl.zeros([BD], dtype=F.dtype.element_ty)
            else:
                dz = tl.load(DQ3 + od, mask=md, other=0.0)
                if HAS_IN:
                    dx += tl.load(DQ0 + ox, mask=mx, other=0.0)
            dz += tl.load(dYb + t * NOUT + od, mask=od < NOUT, other=0.0)
            if MODUL:
                dz += tl.where(od == D - 1, dm * m * (1.0 - 0.5 * m), 0.0)
            pt = Pb + t * G
            c = tl.load(CSb + (t + 1) * H + oh, mask=mh, other=0.0)
            cp = tl.load(CSb + t * H + oh, mask=mh, other=0.0)
            ig = tl.load(pt + oh, mask=mh, other=0.0)
            fg = tl.load(pt + H + oh, mask=mh & LSTM, other=0.0)
            gg = tl.load(pt + 2 * H + oh, mask=mh & LSTM, other=0.0)
            og = tl.load(pt + 3 * H + oh, mask=mh & LSTM, other=0.0)
            tc = _tanh(c)
            mu = tl.load(LNRb + t * 2)
            r = tl.load(LNRb + t * 2 + 1)
            xc = tl.where(mh, tl.load(HCb + t * H + oh, mask=mh, other=0.0) - mu, 0.0)
            nj = xc * r
            # ---- 4. the gradient rule's δ chain (second order)
            zero_h = tl.zeros([BH], dtype=F.dtype.element_ty)
            da_i, da_f, da_g, da_o, dcp_x, dtc_x, lnn_extra = zero_h, zero_h, zero_h, zero_h, zero_h, zero_h, zero_h
            dr_acc = lr * 0.0
            if GRAD:
                dd = tl.load(DQ1 + o4, mask=m4, other=0.0) + tl.load(DQ2 + o4, mask=m4, other=0.0)
                if HAS_IN:
                    dr2 = tl.where(xv > 0.0, tl.load(DQ0 + ox, mask=mx, other=0.0), 0.0)
                    tl.store(DR2b + t * XD + ox, dr2, mask=mx)
                    tl.debug_barrier()
                    _read(Fb + off2, W + off2, XD, G, DR2b + t * XD, TMPG, BI, BJ)
                    tl.debug_barrier()
                    dd += tl.load(TMPG + o4, mask=m4, other=0.0)
                tl.store(DD + o4, dd, mask=m4)
                tl.debug_barrier()
                dh = tl.load(DHb + t * H + oh, mask=mh, other=0.0)
                if LSTM:
                    bc = 1.0 - tc * tc
                    ai, af, ao, bg = ig * (1.0 - ig), fg * (1.0 - fg), og * (1.0 - og), 1.0 - gg * gg
                    dhcj = tl.load(DHCb + t * H + oh, mask=mh, other=0.0)
                    dcc = dhcj * og * bc
                    vi = tl.load(DD + oh, mask=mh, other=0.0)
                    vf = tl.load(DD + H + oh, mask=mh, other=0.0)
                    vg = tl.load(DD + 2 * H + oh, mask=mh, other=0.0)
                    vo = tl.load(DD + 3 * H + oh, mask=mh, other=0.0)
                    ddcc = vi * gg * ai + vf * cp * af + vg * ig * bg
                    da_g = vi * dcc * ai - 2.0 * gg * vg * dcc * ig
                    da_i = vi * dcc * gg * (1.0 - 2.0 * ig) + vg * dcc * bg
                    da_f = vf * dcc * cp * (1.0 - 2.0 * fg)
                    dcp_x = vf * dcc * af
                    da_o = vo * dhcj * tc * (1.0 - 2.0 * og) + ddcc * dhcj * bc
                    dtc_x = vo * dhcj * ao - 2.0 * tc * ddcc * dhcj * og
                    vdhc = vo * tc * ao + ddcc * og * bc
                else:
                    vdhc = tl.where(ig > 0.0, tl.load(DD + oh, mask=mh, other=0.0), 0.0)
                if HAS_LN:
                    dn = dh * gam
                    a1 = tl.sum(dn, axis=0) / H
                    a2 = tl.sum(dn * nj, axis=0) / H
                    da1 = -r * tl.sum(vdhc, axis=0)
                    da2 = -r * tl.sum(vdhc * nj, axis=0)
                    dr_acc = tl.sum(vdhc * (dn - a1 - nj * a2), axis=0)
                    ddn = tl.where(mh, r * vdhc + da1 / H + da2 * nj / H, 0.0)
                    lnn_extra = -r * vdhc * a2 + da2 * dn / H
                    ddh = ddn * gam
                    dga += ddn * dh
                else:
                    ddh = vdhc
                tl.store(DDHb + t * H + oh, ddh, mask=mh)
                tl.debug_barrier()
                _read(Fb + off3, W + off3, H, D, DDHb + t * H, TMPD, BI, BJ)
                tl.debug_barrier()
                dd3 = tl.load(DQ3 + od, mask=md, other=0.0) + tl.load(TMPD + od, mask=md, other=0.0)
                zv = tl.load(Zb + t * D + od, mask=md, other=0.0)
                dz += kz * om * om * dd3
                dom += 2.0 * kz * zv * om * dd3
            # ---- 5. output layer read: z = hn (W + F) + b + fb
            tl.store(DZb + t * D + od, dz, mask=md)
            tl.store(DHCS + oh, zero_h, mask=mh)
            tl.debug_barrier()
            _adjoint(Fb + off3, W + off3, L + off3, dFb + off3, dLg + off3, CKt + off3, H, D,
                     DHCS, DHCS, ce, keep, wclip, restore, DHCS, DHCS,
                     HSb + (t + 1) * H, DZb + t * D, DDHb + t * H, D3b + t * D, t >= 0, DHCS,
                     False, True, GRAD, CLAMP, False, BI, BJ)
            tl.debug_barrier()
            dhc = tl.load(DHCS + oh, mask=mh, other=0.0) + dnacc
            if GRAD:
                _add_to(dFBb + bo3, dz, od, md)
            # ---- 6. LayerNorm: hn = n γ + β, n = (hc − μ) r
            if HAS_LN:
                dga += dhc * nj
                dbe += dhc
                dn2 = dhc * gam + lnn_extra
                dr_acc += tl.sum(dn2 * xc, axis=0)
                dvar = -0.5 * r * r * r * dr_acc
                v = tl.where(mh, dn2 * r + 2.0 * xc * dvar / H, 0.0)
                dhc = tl.where(mh, v - tl.sum(v, axis=0) / H, 0.0)
            # ---- 7. cell
            dgt = DGb + t * G
            if LSTM:
                if GRAD:
                    di, df, dgg, do = da_i, da_f, da_g, da_o
                else:
                    di = da_i + tl.load(DQ1 + oh, mask=mh, other=0.0) + tl.load(DQ2 + oh, mask=mh, other=0.0)
                    df = da_f + tl.load(DQ1 + H + oh, mask=mh, other=0.0) + tl.load(DQ2 + H + oh, mask=mh, other=0.0)
                    dgg = da_g + tl.load(DQ1 + 2 * H + oh, mask=mh, other=0.0) + tl.load(DQ2 + 2 * H + oh, mask=mh,
                                                                                       other=0.0)
                    do = da_o + tl.load(DQ1 + 3 * H + oh, mask=mh, other=0.0) + tl.load(DQ2 + 3 * H + oh, mask=mh,
                                                                                      other=0.0)
                do += dhc * tc
                dtc = dhc * og + dtc_x
                dct = dcn + dtc * (1.0 - tc * tc)
                di += dct * gg
                dgg += dct * ig
                df += dct * cp
                dcn = dct * fg + dcp_x
                tl.store(dgt + oh, di * ig * (1.0 - ig), mask=mh)
                tl.store(dgt + H + oh, df * fg * (1.0 - fg), mask=mh)
                tl.store(dgt + 2 * H + oh, dgg * (1.0 - gg * gg), mask=mh)
                tl.store(dgt + 3 * H + oh, do * og * (1.0 - og), mask=mh)
            else:
                dpost = zero_h
                if not GRAD:
                    dpost = tl.load(DQ1 + oh, mask=mh, other=0.0) + tl.load(DQ2 + oh, mask=mh, other=0.0)
                tl.store(dgt + oh, tl.where(ig > 0.0, dhc + dpost, 0.0), mask=mh)
            if GRAD:
                tl.debug_barrier()
                dgv = tl.load(dgt + o4, mask=m4, other=0.0)
                _add_to(dFBb + bo1, dgv, o4, m4)
                _add_to(dFBb + bo2, dgv, o4, m4)
            # ---- 8. the cell and input reads' backward is left pending for the next (earlier) step's passes
            tl.store(DHN + oh, dhp, mask=mh)
            tl.store(DXN + ox, dx, mask=mx)
            if HAS_IN:
                tl.store(dUb + t * UN + tl.arange(0, BU), tl.load(DP0 + tl.arange(0, BU), mask=tl.arange(0, BU) < UN),
                         mask=tl.arange(0, BU) < UN)
            tl.debug_barrier()
        # ---- 9. the pending reads of step 0, with F_0
        _adjoint(Fb + off1, W + off1, L + off1, dFb + off1, dLg + off1, CKb + off1, H, G,
                 DHCS, DHCS, one, one, wclip, T < 0, DHCS, DHCS,
                 HSb, DGb, DHCS, DHCS, T > 0, DHN, False, True, False, CLAMP, False, BI, BJ)
        _adjoint(Fb + off2, W + off2, L + off2, dFb + off2, dLg + off2, CKb + off2, XD, G,
                 DHCS, DHCS, one, one, wclip, T < 0, DHCS, DHCS,
                 Xb, DGb, DR2b, DCb, T > 0, DXN, False, True, GRAD and HAS_IN, CLAMP, False, BI, BJ)
        tl.debug_barrier()
        _input_adjoint(Xb, DXN, DA0b, dUb, dFBb + bo0, XD, T > 0, HAS_IN, GRAD, BX)
        tl.debug_barrier()
        if HAS_IN:
            _adjoint(Fb + off0, W + off0, L + off0, dFb + off0, dLg + off0, CKb + off0, UN, XD,
                     DHCS, DHCS, one, one, wclip, T < 0, DHCS, DHCS,
                     Ub, DA0b, DHCS, DHCS, T > 0, dUb, False, True, False, CLAMP, False, BI, BJ)
        tl.debug_barrier()
        tl.store(dHo + b * H + oh, tl.load(DHN + oh, mask=mh, other=0.0), mask=mh)
        tl.store(dCo + b * H + oh, dcn, mask=mh)
    tl.store(dOM + g * D + od, dom, mask=md)
    tl.store(dGA + g * H + oh, dga, mask=mh)
    tl.store(dBE + g * H + oh, dbe, mask=mh)


@triton.jit
def _input_adjoint(xt, dx, da0, du, dfb0, n, on, HAS_IN: tl.constexpr, GRAD: tl.constexpr, BX: tl.constexpr):
    """A step's input layer, once ``dx`` (the adjoint of ``x_t``) is complete (where ``on``):
    ``da0 = dx ⊙ [x > 0]`` (and the fast bias's adjoint), or, without in_fc, ``du = dx``."""
    o = tl.arange(0, BX)
    m = o < n
    dxv = tl.load(dx + o, mask=m, other=0.0)
    if HAS_IN:
        a = tl.where(tl.load(xt + o, mask=m, other=0.0) > 0.0, dxv, 0.0)
        tl.store(da0 + o, a, mask=_also(m, on))
        if GRAD:
            _add_to(dfb0, a, o, _also(m, on))
    else:
        tl.store(du + o, dxv, mask=_also(m, on))
