"""The sequence tasks of Duan et al. (ICLR 2023), SPEC §2.

Three families of fresh random episodes, each a regression read out by the
:class:`~plasticnet.PlasticRNN` at every step, the loss and error an MSE over
the steps SPEC names:

- ``cue-reward``: remember which reward goes with which noisy cue
  (input ``cue_dim + 2``, output 1, loss on all steps);
- ``seq-reproduction``: reproduce a sequence after a delay
  (input ``dim + 2``, output ``dim``, loss on the last ``seq_length`` steps);
- ``regression``: infer a random function from a few noisy examples
  (input ``n + 2``, output 1, loss on all steps).

Generators are batched tensor code fully determined by the
``torch.Generator`` passed in. The model is the [D23] network with the size
matching of SPEC §1 (``hidden_size=None``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import Tensor

from ..checks import check_choice, check_nonnegative, check_nonnegative_int, check_positive_int
from ..network import PlasticRNN, matched_hidden_size, plastic_rnn_defaults, plastic_rnn_types
from . import register_task
from .base import Batch, Task


def _uniform(shape, low: float, high: float, g: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=g) * (high - low) + low


class D23Task(Task):
    """Common part of the [D23] sequence tasks: model, masked MSE loss and error."""

    model_defaults = plastic_rnn_defaults()
    model_types = plastic_rnn_types()

    def build_model(self, rule: str, cell: str, hidden_size: Optional[int] = None, **model_options) -> PlasticRNN:
        """The [D23] network for this task; ``hidden_size=None``: size matching of SPEC §1."""
        if hidden_size is None:
            hidden_size = matched_hidden_size(rule, cell)
        return PlasticRNN(self.input_size, hidden_size, self.output_size, cell=cell, rule=rule, **model_options)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """MSE over the masked steps: ``mean_{b, t ∈ mask, o} (y − target)²``.

        ``outputs, targets: (B, T, O)``, ``mask: (B, T)``. As the reference,
        the mean of the per-step MSEs over the loss steps.
        """
        err = (outputs - batch.targets).square()  # (B, T, O)
        mask = batch.mask.unsqueeze(-1).to(err.dtype)
        return (err * mask).sum() / (mask.sum() * err.shape[-1])

    def metrics(self, outputs: Tensor, batch: Batch) -> Dict[str, float]:
        """``error``: the paper's validation MSE (the loss above)."""
        return {"error": self.loss(outputs, batch).item()}


@register_task
class CueReward(D23Task):
    """Cue–reward association (SPEC §2).

    Per episode: ``n_cues`` cue vectors ``U(0,1)^cue_dim`` with rewards
    ``U(−1,1)``; each step shows a uniformly drawn cue plus ``N(0, noise²)``.
    The first half of the steps reads ``[cue, reward, 0]``, the second half
    ``[cue, 0, 1]``; the target at every step is the shown cue's reward and
    the loss covers all steps. Shapes: inputs ``(B, steps, cue_dim + 2)``,
    targets ``(B, steps, 1)``.
    """

    name = "cue-reward"
    train_defaults = {"batches": 20000}

    def metrics(self, outputs: Tensor, batch: Batch) -> Dict[str, float]:
        """``error``: MSE on all steps (the paper's); ``recall_error``: MSE on the second half,
        where the reward is not shown and must be recalled."""
        T = outputs.shape[1]
        recall = (outputs[:, T // 2:] - batch.targets[:, T // 2:]).square().mean()
        return {"error": self.loss(outputs, batch).item(), "recall_error": recall.item()}

    @dataclass
    class Options:
        n_cues: int = 5  # cues per episode
        steps: int = 20  # episode length; rewards shown in the first half
        cue_dim: int = 14  # dims of a cue (input = cue_dim + 2)
        noise: float = 0.1  # std of the Gaussian noise added to the cue

    def __init__(self, options=None, **kwargs):
        super().__init__(options, **kwargs)
        o = self.options
        for name in ("n_cues", "cue_dim"):
            check_positive_int(name, getattr(o, name))
        check_positive_int("steps", o.steps)
        if o.steps < 2:
            raise ValueError(f"steps must be >= 2 (rewards are shown in the first half), got {o.steps!r}")
        check_nonnegative("noise", o.noise)

    @property
    def input_size(self) -> int:
        return self.options.cue_dim + 2

    @property
    def output_size(self) -> int:
        return 1

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        o, B, T = self.options, batch_size, self.options.steps
        cues = torch.rand(B, o.n_cues, o.cue_dim, generator=generator)  # (B, K, D)
        rewards = _uniform((B, o.n_cues), -1.0, 1.0, generator)  # (B, K)
        which = torch.randint(0, o.n_cues, (B, T), generator=generator)  # (B, T)
        shown = torch.gather(cues, 1, which.unsqueeze(-1).expand(B, T, o.cue_dim))  # (B, T, D)
        shown = shown + o.noise * torch.randn(B, T, o.cue_dim, generator=generator)
        reward = torch.gather(rewards, 1, which)  # (B, T)
        test = (torch.arange(T) >= T // 2).to(shown.dtype).expand(B, T)  # (B, T) 1 in the second half
        inputs = torch.cat([shown, (reward * (1 - test)).unsqueeze(-1), test.unsqueeze(-1)], dim=-1)
        return Batch(inputs, reward.unsqueeze(-1), torch.ones(B, T, dtype=torch.bool))


@register_task
class SeqReproduction(D23Task):
    """Sequence reproduction (SPEC §2).

    ``seq_length`` vectors ``U(−1,1)^dim`` with flag ``[1, 0]``, ``delay``
    blank steps, then ``seq_length`` steps with flag ``[0, 1]`` during which
    the output must reproduce the sequence in order. Loss on the last
    ``seq_length`` steps. Shapes: ``T = 2·seq_length + delay``; inputs
    ``(B, T, dim + 2)``, targets ``(B, T, dim)`` (zero before the recall).
    """

    name = "seq-reproduction"
    train_defaults = {"batches": 10000}

    @dataclass
    class Options:
        seq_length: int = 20  # L, vectors to remember
        delay: int = 20  # blank steps between sequence and recall
        dim: int = 1  # d, dims of a vector (input = d + 2)

    def __init__(self, options=None, **kwargs):
        super().__init__(options, **kwargs)
        o = self.options
        check_positive_int("seq_length", o.seq_length)
        check_nonnegative_int("delay", o.delay)
        check_positive_int("dim", o.dim)

    @property
    def input_size(self) -> int:
        return self.options.dim + 2

    @property
    def output_size(self) -> int:
        return self.options.dim

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        L, delay, d = self.options.seq_length, self.options.delay, self.options.dim
        B, T = batch_size, 2 * L + delay
        seq = _uniform((B, L, d), -1.0, 1.0, generator)  # (B, L, d)
        inputs = torch.zeros(B, T, d + 2)
        inputs[:, :L, :d] = seq
        inputs[:, :L, d] = 1.0
        inputs[:, L + delay:, d + 1] = 1.0
        targets = torch.zeros(B, T, d)
        targets[:, L + delay:] = seq
        mask = (torch.arange(T) >= L + delay).expand(B, T)
        return Batch(inputs, targets, mask.clone())


@register_task
class Regression(D23Task):
    """Few-shot regression (SPEC §2).

    A random function per episode — ``linear``: ``Linear(n, 1)``; ``mlp``:
    ``Linear(n, 2) → tanh → Linear(2, 1)``, with PyTorch's default init
    (weights and biases ``U(−1/√fan_in, 1/√fan_in)``) — evaluated at
    ``train_points + test_points`` points ``x ~ U(−1,1)^n``; the values are
    standardised per episode (mean 0, unbiased std 1). Train steps show
    ``[x, f(x) + N(0, noise²), 1]``, test steps ``[x, 0, 0]``; the target at
    every step is the standardised ``f(x)`` and the loss covers all steps.
    Shapes: inputs ``(B, T, n + 2)``, targets ``(B, T, 1)``.
    """

    name = "regression"
    train_defaults = {"batches": 10000}
    PAPER_N = {"linear": 12, "mlp": 6}  # the paper's regression experiment

    @dataclass
    class Options:
        function: str = "linear"  # 'linear' or 'mlp'
        n: Optional[int] = None  # input variables; None: the paper's (12 linear, 6 mlp)
        train_points: int = 20  # points shown with their value
        test_points: int = 20  # points shown without
        noise: float = 0.1  # std of the noise on the shown values

    def __init__(self, options=None, **kwargs):
        super().__init__(options, **kwargs)
        o = self.options
        check_choice("function", o.function, self.PAPER_N)
        check_positive_int("n", o.n, allow_none=True)
        check_positive_int("train_points", o.train_points)  # the values are standardised over >= 2 points
        check_positive_int("test_points", o.test_points)
        check_nonnegative("noise", o.noise)
        if o.n is None:
            o.n = self.PAPER_N[o.function]

    @property
    def input_size(self) -> int:
        return self.options.n + 2

    @property
    def output_size(self) -> int:
        return 1

    def metrics(self, outputs: Tensor, batch: Batch) -> Dict[str, float]:
        """``error``: MSE on all steps (the paper's); ``query_error``: MSE on the test points,
        whose value is not shown and must be inferred."""
        P = self.options.train_points
        query = (outputs[:, P:] - batch.targets[:, P:]).square().mean()
        return {"error": self.loss(outputs, batch).item(), "query_error": query.item()}

    def _functions(self, B: int, x: Tensor, g: torch.Generator) -> Tensor:
        """``f(x)`` for a fresh function per episode: ``x (B, T, n) → (B, T)``."""
        n = self.options.n
        k = 1 / math.sqrt(n)
        if self.options.function == "linear":
            w, b = _uniform((B, n, 1), -k, k, g), _uniform((B, 1, 1), -k, k, g)
            return (x @ w + b).squeeze(-1)
        w1, b1 = _uniform((B, n, 2), -k, k, g), _uniform((B, 1, 2), -k, k, g)
        k2 = 1 / math.sqrt(2)
        w2, b2 = _uniform((B, 2, 1), -k2, k2, g), _uniform((B, 1, 1), -k2, k2, g)
        return (torch.tanh(x @ w1 + b1) @ w2 + b2).squeeze(-1)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        o, B = self.options, batch_size
        T, n = o.train_points + o.test_points, o.n
        x = _uniform((B, T, n), -1.0, 1.0, generator)  # (B, T, n)
        y = self._functions(B, x, generator)  # (B, T)
        y = (y - y.mean(dim=1, keepdim=True)) / y.std(dim=1, keepdim=True)
        train = (torch.arange(T) < o.train_points).to(x.dtype).expand(B, T)  # (B, T)
        shown = (y + o.noise * torch.randn(B, T, generator=generator)) * train
        inputs = torch.cat([x, shown.unsqueeze(-1), train.unsqueeze(-1)], dim=-1)
        return Batch(inputs, y.unsqueeze(-1), torch.ones(B, T, dtype=torch.bool))
