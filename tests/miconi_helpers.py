"""A tiny training loop for the Hebbian-trace tasks (tests only).

Independent of the package trainer so the learning tests check the networks
and tasks alone: Adam, gradient-norm clip, fixed seed, validation on fresh
held-out episodes.
"""

from __future__ import annotations

import torch

from plasticnet.tasks import make_task


def quick_train(task_name: str, rule: str, *, batches: int, batch_size: int = 32, lr: float = 1e-2,
                seed: int = 0, grad_clip: float = 10.0, val_batches: int = 4, task_options=None, cosine: bool = False,
                **model_options):
    """Train ``rule`` on ``task_name``; returns ``(task, model, final metrics)``."""
    torch.manual_seed(seed)
    task = make_task(task_name, **(task_options or {}))
    opts = dict(task.model_defaults)
    opts.update(model_options)
    model = task.build_model(rule, None, **opts)
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, batches, eta_min=lr / 100) if cosine else None
    gen = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        batch = task.sample(batch_size, gen)
        loss = task.loss(task.forward(model, batch), batch) + task.regularizer(model)
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optim.step()
        if sched is not None:
            sched.step()
    return task, model, evaluate(task, model, seed=10_000 + seed, batches=val_batches, batch_size=batch_size)


@torch.no_grad()
def evaluate(task, model, *, seed: int, batches: int, batch_size: int):
    """Mean of ``task.metrics`` over ``batches`` fresh batches."""
    gen = torch.Generator().manual_seed(seed)
    totals = {}
    for _ in range(batches):
        batch = task.sample(batch_size, gen)
        for k, v in task.metrics(task.forward(model, batch), batch).items():
            totals[k] = totals.get(k, 0.0) + v / batches
    return totals
