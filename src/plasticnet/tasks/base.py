"""The task interface: what a task gives the trainer.

A task is a family of fresh random episodes plus what the trainer needs to
learn on them: a default model, a loss and the paper's error measure. Data
flows one way — task → batch → model → loss — and a task never reaches into
the trainer.

Contract (every registered task follows it):

- ``Task.Options``: a dataclass of the task's own options with the paper's
  defaults (sequence length, delay, number of train points, dataset, ...).
  ``--set key=value`` reaches these by name.
- ``model_defaults``: ``{key: default}`` of the model options ``--set``
  reaches (for the [D23] tasks the :class:`~plasticnet.PlasticRNN` keyword
  arguments plus ``hidden_size``); ``build_model(rule, cell, **model_options)``
  builds the task's model from them.
- ``train_defaults``: overrides of the trainer's defaults (``batches``,
  ``batch_size``, ``lr``, ...) where the paper trains the task differently.
- ``sample(batch_size, generator) → Batch``: a batch of fresh episodes,
  batched tensor code, fully determined by ``generator``.
- ``forward(model, batch) → outputs``; ``loss(outputs, batch) → scalar``;
  ``regularizer(model) → scalar`` (0 unless the paper adds a penalty, e.g.
  an L1 term on plasticity coefficients), added to the loss by the trainer;
  ``metrics(outputs, batch) → {"error": float, ...}``: ``error`` is the
  paper's error measure (``val_error`` in ``metrics.csv``), other keys are
  written as ``val_<key>``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional

import torch
from torch import Tensor, nn

from ..checks import check_known


@dataclass
class Batch:
    """A batch of episodes.

    inputs: what the model reads, ``(B, T, I)`` for sequence tasks (a task may
    use a tuple or dict for richer inputs, e.g. images and labels);
    targets: ``(B, T, O)`` regression targets or ``(B, T)`` class indices;
    mask: ``(B, T)`` bool, the steps the loss and error cover.
    """

    inputs: Any
    targets: Tensor
    mask: Tensor

    def to(self, device) -> "Batch":
        def move(x):
            if isinstance(x, Tensor):
                return x.to(device)
            if isinstance(x, (tuple, list)):
                return type(x)(move(v) for v in x)
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            return x

        return Batch(move(self.inputs), move(self.targets), move(self.mask))


class Task:
    """Base class of a task; see the module docstring for the contract."""

    name: ClassVar[str] = ""

    @dataclass
    class Options:
        pass

    model_defaults: ClassVar[Dict[str, Any]] = {}
    train_defaults: ClassVar[Dict[str, Any]] = {}

    def __init__(self, options: Optional["Task.Options"] = None, **kwargs):
        if options is None:
            options = make_options(self.Options, kwargs, what=f"task {self.name!r}")
        self.options = options

    @property
    def input_size(self) -> int:
        raise NotImplementedError

    @property
    def output_size(self) -> int:
        raise NotImplementedError

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def build_model(self, rule: str, cell: str, **model_options) -> nn.Module:
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: Batch) -> Tensor:
        out, _ = model(batch.inputs)
        return out

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        raise NotImplementedError

    def regularizer(self, model: nn.Module):
        return 0.0

    def metrics(self, outputs: Tensor, batch: Batch) -> Dict[str, float]:
        raise NotImplementedError


def make_options(cls, values: Dict[str, Any], what: str):
    """Build dataclass ``cls`` from ``values``, refusing unknown keys by name."""
    check_known("option(s)", values, [f.name for f in dataclasses.fields(cls)], f" for {what}")
    return cls(**values)
