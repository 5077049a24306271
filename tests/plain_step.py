"""A plain, per-sample implementation of one step of SPEC §1, for the tests.

Written independently of the library's engines: explicit loops over samples,
explicit ``W + F`` per sample, the gradient rule by autograd on a
single-sample function. Slow and obvious.
"""

from __future__ import annotations

import torch


def _lin(x, layer, fw, fb):
    w = layer.weight + (fw if fw is not None else 0)
    b = layer.bias + (fb if fb is not None else 0)
    return x @ w + b


def sample_forward(net, u, h, c, fast):
    """Forward of one sample (1-D tensors); ``fast`` maps layer → (w, b or None)."""
    f = {k: fast.get(k, (None, None)) for k in ("in_fc", "h_fc", "i_fc", "out_fc")}
    x = torch.relu(_lin(u, net.in_fc, *f["in_fc"])) if net.in_fc is not None else u
    pre = _lin(h, net.cell.h_fc, *f["h_fc"]) + _lin(x, net.cell.i_fc, *f["i_fc"])
    if net.cell_type == "rnn":
        h_raw = torch.relu(pre)
        post, c_new = h_raw, None
    else:
        i, fg, g, o = pre.chunk(4)
        i, fg, g, o = torch.sigmoid(i), torch.sigmoid(fg), torch.tanh(g), torch.sigmoid(o)
        c_new = fg * c + i * g
        h_raw = o * torch.tanh(c_new)
        post = torch.cat([i, fg, g, o])
    h_next = net.layernorm(h_raw) if net.layernorm is not None else h_raw
    z = _lin(h_next, net.out_fc, *f["out_fc"])
    pre_post = {"h_fc": (h, post), "i_fc": (x, post), "out_fc": (h_next, z)}
    if net.in_fc is not None:
        pre_post["in_fc"] = (u, x)
    return z, h_next, c_new, pre_post


def plain_step(net, u, state):
    """One step for every sample of the batch; returns (outputs, h, c, new fast, m, s, G)."""
    B = u.shape[0]
    layers = net.plastic_layers()
    outs, hs, cs, news, ms, ss, Gs = [], [], [], [], [], [], []
    for n in range(B):
        fast = {}
        if state.fast is not None:
            for k, fw in state.fast.items():
                w = fw.w[n].detach().clone().requires_grad_()
                b = fw.b[n].detach().clone().requires_grad_() if fw.b is not None else None
                fast[k] = (w, b)
        c = state.c[n] if state.c is not None else None
        z, h_next, c_new, pre_post = sample_forward(net, u[n], state.h[n], c, fast)
        outs.append(z[: net.output_size])
        hs.append(h_next)
        cs.append(c_new)
        if net.rule == "none":
            continue
        if net.rule == "hebbian":
            G = {k: (torch.outer(*pre_post[k]), None) for k in layers}
        else:
            loss = net.inner_loss_scale * ((z * net.omega) ** 2).mean()
            flat = [t for k in layers for t in fast[k]]
            grads = torch.autograd.grad(loss, flat)
            G = {k: (grads[2 * i], grads[2 * i + 1]) for i, k in enumerate(layers)}
        norm = torch.sqrt(sum((g ** 2).sum() for k in G for g in G[k] if g is not None))
        s = min(1.0, net.inner_clip / norm.item()) if norm > 0 else 1.0
        m = 2 * torch.sigmoid(z[-1]) if net.modulation else torch.tensor(1.0, dtype=z.dtype)
        new = {}
        for k, layer in layers.items():
            lw, lb = layer.rates()
            w = (1 - net.inner_decay * m) * fast[k][0] + net.inner_lr * m * s * lw * G[k][0]
            b = None
            if G[k][1] is not None:
                b = (1 - net.inner_decay * m) * fast[k][1] + net.inner_lr * m * s * lb * G[k][1]
            if net.weight_clip is not None:
                w = w.clamp(-net.weight_clip, net.weight_clip)
                b = b.clamp(-net.weight_clip, net.weight_clip) if b is not None else None
            new[k] = (w.detach(), None if b is None else b.detach())
        news.append(new)
        ms.append(float(m.detach()))
        ss.append(s)
        Gs.append({k: tuple(None if g is None else g.detach() for g in G[k]) for k in G})
    return (torch.stack(outs).detach(), torch.stack(hs).detach(),
            None if cs[0] is None else torch.stack(cs).detach(), news, ms, ss, Gs)


def random_state(net, B, scale=0.3, seed=0):
    """A state with random hidden values and random (nonzero) fast weights."""
    g = torch.Generator().manual_seed(seed)
    st = net.initial_state(B)

    def rnd(t):
        return None if t is None else torch.randn(t.shape, generator=g, dtype=t.dtype) * scale

    fast = None
    if st.fast is not None:
        fast = {k: type(v)(rnd(v.w), rnd(v.b)) for k, v in net.fast_weights(st).items()}
    h = rnd(st.h).abs() if net.cell_type == "rnn" else rnd(st.h)
    return type(st)(h, rnd(st.c), fast)
