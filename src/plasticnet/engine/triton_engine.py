"""Triton engine: the kernel engine's per-sample episode as Triton programs, for CUDA.

Same algorithm as :mod:`.kernel` (SPEC §1, the gradient rule in closed
form): one program per sample through all ``T`` steps with its fast weights
materialised in global memory and passed over in tiles, the update of step
``t`` fused with the read of step ``t + 1``; the backward a reverse-time
adjoint per sample that undoes the update, with a checkpoint of ``F`` every
:func:`~plasticnet.engine.kernel.checkpoint_interval` steps; batch sums in
fixed groups of samples (no atomics: the same numbers on every run), the
slow weights' gradients as GEMMs over the taped vectors. The programs are
in :mod:`.triton_kernels`.

Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (set
before the kernels are imported), which is how the tests hold it equal to
the reference engine on a machine without a GPU. Needs triton
(``plasticnet[triton]``); the package imports and trains without it.
``engine="auto"`` does not pick it.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from ..layers import FastWeights
from .base import LAYERS, TRACE_KEYS, EngineResult, EpisodeEngine, NetSpec, check_state, zero_fast_weights
from .kernel import MAX_AMPLIFICATION, checkpoint_interval

GROUPS = 64  # the backward's batch sums run over at most this many fixed groups of samples (one program each)
TILE = (32, 64)  # (BI, BJ): tile of a layer's (in, out) fast weights on a GPU
INTERPRET_TILE = (4, 8)  # under the interpreter: tiny tiles, so that the tests' odd sizes span several masked tiles


def _kernels():
    """The Triton programs (imports triton: raises ImportError without it)."""
    from . import triton_kernels
    return triton_kernels


def available() -> Optional[str]:
    """``None`` where the triton engine can run here, else why not."""
    try:
        import triton  # noqa: F401
    except ImportError as err:
        return f"triton is not installed ({err}); pip install 'plasticnet[triton]'"
    if not torch.cuda.is_available() and not interpreting():
        return "no CUDA device (or run under TRITON_INTERPRET=1 on the CPU)"
    return None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _p2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class _Layout:
    """Sizes and offsets of the packed layers (``F`` rows of ``SF``, fast-bias rows of ``SB``)."""

    def __init__(self, spec: NetSpec, layers):
        self.has_in = layers[0] is not None
        self.UN = (layers[0] if self.has_in else layers[2]).in_features
        self.H = spec.hidden_size
        self.XD = self.H if self.has_in else self.UN
        self.G = layers[1].out_features
        self.D = layers[3].out_features
        self.shapes = [(self.UN, self.XD) if self.has_in else (0, 0), (self.H, self.G), (self.XD, self.G),
                       (self.H, self.D)]
        sizes = [i * o for i, o in self.shapes]
        outs = [s[1] for s in self.shapes]
        self.offs = [sum(sizes[:k]) for k in range(4)]
        self.bos = [sum(outs[:k]) for k in range(4)]
        self.SF, self.SB = sum(sizes), sum(outs)
        self.blocks = dict(BU=_p2(self.UN), BX=_p2(self.XD), BH=_p2(self.H), BG=_p2(self.G), BD=_p2(self.D))


def _pack(tensors, rows=None):
    """Flatten per-layer tensors (``None``: absent layer) into one row (or one row per sample)."""
    parts = [t.reshape(-1) if rows is None else t.reshape(rows, -1) for t in tensors if t is not None]
    return torch.cat(parts, dim=-1)


def _unpack(flat, layout, bias, rows=None):
    """Split a packed row back into per-layer tensors (``(…, in, out)`` weights or ``(…, out)`` biases)."""
    out = []
    for k in range(4):
        i, o = layout.shapes[k]
        if k == 0 and not layout.has_in:
            out.append(None)
            continue
        if bias:
            part = flat[..., layout.bos[k]:layout.bos[k] + o]
        else:
            part = flat[..., layout.offs[k]:layout.offs[k] + i * o].reshape(*flat.shape[:-1], i, o)
        out.append(part)
    return out


class _Episode(torch.autograd.Function):
    """The whole episode as one autograd node: forward and backward by :mod:`.triton_kernels`."""

    @staticmethod
    def forward(ctx, spec, U, h0, c0, F0, fb0, Wf, bf, Lf, Lbf, omega, gamma, beta):
        net, lay = spec["spec"], spec["layout"]
        kern = _kernels()
        B, T, _ = U.shape
        dev, dt = U.device, U.dtype
        grad = net.rule == "gradient"
        lstm = net.cell == "lstm"
        ln = net.layernorm
        K = checkpoint_interval(net.inner_decay, net.modulation, net.weight_clip, T, dt)
        nck = -(-T // K)
        H, G, D, XD, UN, SF, SB = lay.H, lay.G, lay.D, lay.XD, lay.UN, lay.SF, lay.SB

        def z(*shape):
            return torch.zeros(*shape, device=dev, dtype=dt)

        one = z(1)
        F = F0.detach().clone().contiguous()
        FB = z(B, T + 1, max(SB, 1))
        if grad:
            FB[:, 0] = fb0.detach()
        CK = z(B, nck, SF)
        X = z(B, T, XD) if lay.has_in else U.detach().clone().contiguous()
        POST, HC, Z, S, LNR = z(B, T, G), z(B, T, H), z(B, T, D), z(B, T, 4), z(B, T, 2)
        CS, HS = z(B, T + 1, H), z(B, T + 1, H)
        HS[:, 0] = h0.detach()
        if lstm:
            CS[:, 0] = c0.detach()
        D3, DH, DHC, DC, D0 = z(B, T, D), z(B, T, H), z(B, T, H), z(B, T, G), z(B, T, XD)
        TR = z(B, T)
        MV = max(XD, G, D, H)
        V = z(B, 3 * MV)
        cfg = torch.tensor([net.inner_lr, net.inner_decay, net.inner_clip, net.weight_clip or 0.0,
                            2.0 * net.inner_loss_scale / D, net.ln_eps if ln else 1e-5, float("inf")],
                           device=dev, dtype=dt)
        Wd, bd, Ld = Wf.detach().contiguous(), bf.detach().contiguous(), Lf.detach().contiguous()
        Lbd = Lbf.detach().contiguous() if grad else one
        om = omega.detach().contiguous() if grad else one
        ga, be = (gamma.detach().contiguous(), beta.detach().contiguous()) if ln else (one, one)
        BI, BJ = spec["tile"]
        kern.episode_forward[(B,)](
            U.detach().contiguous(), h0, c0, Wd, Ld, bd, Lbd, om, ga, be, cfg,
            F, FB, CK, X, POST, CS, HC, HS, Z, S, LNR, D3, DH, DHC, DC, D0, TR, V,
            T, K, nck, UN, XD, H, G, D, SF, max(SB, 1), *lay.offs, *lay.bos, MV,
            HAS_IN=lay.has_in, LSTM=lstm, GRAD=grad, HAS_LN=ln, MODUL=net.modulation,
            CLAMP=net.weight_clip is not None, BI=BI, BJ=BJ, **lay.blocks)
        ctx.spec = spec
        ctx.set_materialize_grads(False)
        ctx.tapes = dict(K=K, U=U.detach(), FB=FB, CK=CK, X=X, POST=POST, CS=CS, HC=HC, HS=HS, Z=Z, S=S, LNR=LNR,
                         D3=D3, DH=DH, DHC=DHC, DC=DC, D0=D0, W=Wd, L=Ld, Lb=Lbd, om=om, ga=ga, cfg=cfg,
                         want=[t is not None and t.requires_grad for t in (Lf, Lbf)])
        ctx.save_for_backward(F)
        Y = Z[..., : net.output_size].clone()
        hT = HS[:, T].clone()
        cT = CS[:, T].clone() if lstm else None
        fbT = FB[:, T, :SB].clone() if grad else None
        trace = torch.stack([S[..., 0], S[..., 1], TR], dim=-1)
        ctx.mark_non_differentiable(trace)
        return Y, hT, cT, F, fbT, trace

    @staticmethod
    def backward(ctx, dY, dh, dc, dFT, dfbT, _dtrace):
        spec, tp = ctx.spec, ctx.tapes
        net, lay = spec["spec"], spec["layout"]
        kern = _kernels()
        (FT,) = ctx.saved_tensors
        U = tp["U"]
        B, T, _ = U.shape
        dev, dt = U.device, U.dtype
        grad = net.rule == "gradient"
        lstm = net.cell == "lstm"
        ln = net.layernorm
        H, G, D, XD, UN, SF, SB = lay.H, lay.G, lay.D, lay.XD, lay.UN, lay.SF, lay.SB
        want_dl = any(tp["want"])
        ng = min(GROUPS, B)
        bounds = torch.tensor([B * g // ng for g in range(ng + 1)], device=dev, dtype=torch.int32)

        def z(*shape):
            return torch.zeros(*shape, device=dev, dtype=dt)

        def adj(g, shape):
            return z(*shape) if g is None else g.detach().to(dt).clone().contiguous()

        F = FT.detach().clone()  # undone in place: the graph may be differentiated twice
        dF = adj(dFT, (B, SF))
        dFB = adj(dfbT, (B, SB)) if grad else z(B, 1)
        dHo = adj(dh, (B, H))
        dCo = adj(dc, (B, H)) if lstm else z(B, H)
        dYc = adj(dY, (B, T, net.output_size))
        dU = z(B, T, UN)
        dL, dLb = z(ng, SF if want_dl else 1), z(ng, max(SB, 1))
        dOM, dGA, dBE = z(ng, D), z(ng, H), z(ng, H)
        DA0, DG, DZ, DR2, DDH = z(B, T, XD), z(B, T, G), z(B, T, D), z(B, T, XD), z(B, T, H)
        MV = max(XD, G, D, H, UN)
        V = z(B, 14 * MV)
        one = z(1)
        BI, BJ = spec["tile"]
        kern.episode_backward[(ng,)](
            U.contiguous(), tp["W"], tp["L"], tp["Lb"], tp["om"], tp["ga"], tp["cfg"], bounds,
            F, dF, tp["FB"], tp["CK"], tp["X"], tp["POST"], tp["CS"], tp["HC"], tp["HS"], tp["Z"], tp["S"],
            tp["LNR"], tp["D3"], tp["DH"], tp["DHC"], tp["DC"], tp["D0"],
            dYc, dFB, dHo, dCo, dU, dL if want_dl else one, dLb, dOM, dGA, dBE, DA0, DG, DZ, DR2, DDH, V,
            T, tp["K"], tp["CK"].shape[1], UN, XD, H, G, D, net.output_size, SF, max(SB, 1), *lay.offs, *lay.bos, MV,
            HAS_IN=lay.has_in, LSTM=lstm, GRAD=grad, HAS_LN=ln, MODUL=net.modulation,
            CLAMP=net.weight_clip is not None, WANT_DL=want_dl, BI=BI, BJ=BJ, **lay.blocks)

        def outer(a, b):  # Σ_{n,t} a ⊗ b: (B, T, i), (B, T, j) → (i, j)
            return a.reshape(-1, a.shape[-1]).t() @ b.reshape(-1, b.shape[-1])

        HS = tp["HS"]
        pres = (U, HS[:, :T], tp["X"], HS[:, 1:])
        dposts = (DA0, DG, DG, DZ)
        gW, gb = [], []
        for k in range(4):
            if k == 0 and not lay.has_in:
                continue
            w = outer(pres[k], dposts[k])
            if grad and k == 2 and lay.has_in:
                w = w + outer(DR2, tp["DC"])
            if grad and k == 3:
                w = w + outer(DDH, tp["D3"])
            gW.append(w.reshape(-1))
            gb.append(dposts[k].sum((0, 1)))
        need = ctx.needs_input_grad
        out = [dU, dHo, dCo if lstm else None, dF, dFB[:, :SB] if grad else None, torch.cat(gW), torch.cat(gb),
               dL.sum(0) if want_dl else None, dLb.sum(0)[:SB] if (grad and want_dl) else None,
               dOM.sum(0) if grad else None, dGA.sum(0) if ln else None, dBE.sum(0) if ln else None]
        return (None, *[g if n else None for g, n in zip(out, need[1:])])


class TritonEngine(EpisodeEngine):
    """Materialised per-sample fast weights stepped by Triton programs (see the module docstring).

    ``tile``: ``(BI, BJ)``, the tile of a layer's fast weights each pass loads
    (powers of two; ``None``: :data:`TILE` on a GPU, :data:`INTERPRET_TILE` under the interpreter).
    """

    name = "triton"
    compilable = False  # torch.compile calls it as one graph break: its programs are launched by hand

    def __init__(self, tile=None):
        why = available()
        if why is not None:
            raise RuntimeError(f"the triton engine cannot run here: {why}; use engine='kernel', 'fast' or 'auto'")
        if tile is not None and (len(tile) != 2 or any(int(x) < 1 or int(x) & (int(x) - 1) for x in tile)):
            raise ValueError(f"tile must be two powers of two (BI, BJ), got {tile!r}")
        self.tile = tuple(tile) if tile is not None else None

    @property
    def devices(self):
        """CUDA, and the CPU while the interpreter runs the programs."""
        return ("cuda", "cpu") if interpreting() else ("cuda",)

    def zero_fast(self, spec, batch_size, device, dtype):
        return zero_fast_weights(spec, batch_size, device, dtype)

    def episode(self, spec, inputs, h, c, fast, trace=False) -> EngineResult:
        """Run ``inputs (B, T, I)`` from the state in one launch of the forward program."""
        if inputs.device.type not in self.devices:
            raise ValueError(f"the triton engine runs on CUDA (or on the CPU under TRITON_INTERPRET=1), got inputs "
                             f"on {inputs.device}; use engine='kernel', 'fast' or 'auto'")
        if inputs.dtype not in MAX_AMPLIFICATION:
            raise ValueError(f"the triton engine computes in float32 or float64, got {inputs.dtype}")
        if not isinstance(fast, dict):
            raise ValueError("the triton engine needs materialised fast weights in the state "
                             "({layer: FastWeights}); got " + type(fast).__name__)
        check_state(spec, h, c, fast, inputs[:, 0])  # the programs read raw memory: nothing unchecked
        layers = [spec.layers.get(k) for k in LAYERS]
        lay = _Layout(spec, layers)
        live = [p for p in layers if p is not None]
        names = [k for k in LAYERS if k in spec.layers]
        B = inputs.shape[0]
        grad = spec.rule == "gradient"
        F0 = _pack([fast[k].w for k in names], rows=B)
        fb0 = _pack([fast[k].b for k in names], rows=B) if grad else None
        Wf = _pack([p.weight for p in live])
        bf = _pack([p.bias for p in live])
        Lf = _pack([p.lr_weight if p.lr_weight is not None else torch.ones_like(p.weight) for p in live])
        Lbf = _pack([p.lr_bias if p.lr_bias is not None else torch.ones_like(p.bias) for p in live]) if grad else None
        tile = self.tile or (INTERPRET_TILE if inputs.device.type == "cpu" else TILE)
        ctx = dict(spec=spec, layout=lay, tile=tile)
        c0 = c if c is not None else h
        Y, hT, cT, FT, fbT, tr = _Episode.apply(ctx, inputs, h, c0, F0, fb0, Wf, bf, Lf, Lbf, spec.omega,
                                                spec.ln_weight, spec.ln_bias)
        ws = _unpack(FT, lay, bias=False, rows=B)
        bs = _unpack(fbT, lay, bias=True, rows=B) if grad else [None] * 4
        new = {k: FastWeights(ws[i], bs[i]) for i, k in enumerate(LAYERS) if layers[i] is not None}
        tr = None if not trace else {key: tr[:, :, j] for j, key in enumerate(TRACE_KEYS)}
        return EngineResult(Y, hT, cT, new, tr)
