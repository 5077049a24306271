"""What every engine shares: the step loop over a sequence and zero fast weights."""

from __future__ import annotations

import torch


class Engine:
    """Base of the engines: subclasses implement ``step(net, u, state, trace)``."""

    name = ""

    def step(self, net, u, state, trace=None):
        raise NotImplementedError

    def forward(self, net, inputs, state, trace=None):
        """Loop :meth:`step` over ``inputs (B, T, I)``; returns ``(B, T, O)`` and the state."""
        outs = []
        for t in range(inputs.shape[1]):
            out, state = self.step(net, inputs[:, t], state, trace)
            outs.append(out)
        return torch.stack(outs, dim=1), state

    def zero_fast(self, net, batch_size, device, dtype):
        """Fast weights at the start of an episode: materialised zeros of every plastic layer."""
        return {k: m.zero_fast(batch_size, device, dtype) for k, m in net.plastic_layers().items()}
