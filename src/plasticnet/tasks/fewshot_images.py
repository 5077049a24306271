"""One-shot image classification with a plastic RNN ([D23] §2, SPEC §2).

An episode of ``N``-way ``K``-shot classification is a sequence: the ``N·K``
support images, each with its one-hot episode label, in random order; then
``N·Q`` queries (``Q`` per class, random order) with a zero label. At every
step the model computes::

    e_t = relu(proj(encoder(image_t)))          (hidden − N)   CNN embedding
    u_t = [e_t, a · onehot_t]                   (hidden)       label (a = label_scale), zeros for queries
    y_t = PlasticRNN(u_t)                       (N)            logits, cell reads u_t directly

The loss is the cross-entropy of the query steps, averaged; the error is
``1 − accuracy`` over the queries (``val_error``; ``val_accuracy`` too, and
``val_first_query_accuracy``, the accuracy of each episode's first query).
Whatever the network knows about the episode's classes it has to hold in its
state and fast weights: the encoder and slow weights are shared by all episodes.

Paper setting: 5-way 1-shot, one query per class, ProtoNet conv-4 or
ResNet-12, plastic LSTM hidden 256 (size matching of SPEC §1 on base 256),
40k batches of 64 episodes, AdamW lr 1e-3, wd 5e-4, cosine decay to 1e-4;
the label's hot unit is 1 (``label_scale=1``) and the inner rates are
SPEC §1's (the reference's batch is 64 here too, so ``inner_loss_scale=1/64``
is its effective per-sample rate).

**Short runs and the label scale.** A query is answered only through what
the support steps wrote into the fast weights (and the cell state), which
carries the answer only as far as the supports' gate activations depend on
their label. With the paper's label scale and inner rates that path starts
weak, and a short CPU run can stay at chance; the CPU recipe of
``experiments/fewshot_glyphs.py`` raises ``label_scale`` and the inner rate.
The defaults stay the paper's (``label_scale=1``, SPEC §1 inner rates). The
measurements behind this (``experiments/fewshot_diagnose.py``) are in
``docs/results/fewshot_images.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import DATASETS, NATIVE_SIZE, augment, load_dataset, sample_episodes
from ..encoders import ENCODERS, build_encoder, encoder_output_size, load_encoder
from ..layers import check_choice, check_positive_int
from ..network import PlasticRNN, matched_hidden_size, plastic_rnn_defaults, plastic_rnn_types
from . import register_task
from .base import Batch, Task

CHANNELS = {"glyphs": 1, "omniglot": 1, "cifar-fs": 3, "mini-imagenet": 3}
AUGMENTS = ("auto", "none", "crop", "crop-flip")


class FewShotImageModel(nn.Module):
    """CNN encoder → Linear+relu to ``hidden − ways`` → ``[·, label]`` → PlasticRNN → ``ways`` logits.

    ``forward(images (B, T, C, H, W), labels (B, T, ways)) → logits (B, T, ways)``.
    With ``freeze_encoder`` (a pre-trained encoder) the encoder's weights get
    no gradient and it always runs in eval mode (BatchNorm statistics fixed).
    """

    def __init__(self, encoder: nn.Module, feature_size: int, ways: int, hidden_size: int, *, rule: str,
                 cell: str, freeze_encoder: bool = False, **rnn_options):
        super().__init__()
        if hidden_size <= ways:
            raise ValueError(f"hidden_size must exceed ways={ways}, got {hidden_size}")
        self.ways, self.freeze_encoder = ways, bool(freeze_encoder)
        self.encoder = encoder
        self.proj = nn.Linear(feature_size, hidden_size - ways)
        self.rnn = PlasticRNN(hidden_size, hidden_size, ways, cell=cell, rule=rule, input_layer=False,
                              **rnn_options)
        if self.freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()
        # a pre-trained encoder not found: its weights must come from a state dict
        self.missing_encoder: Optional[str] = None

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As ``nn.Module.load_state_dict``; a run's checkpoint holds the encoder's weights, so the
        pre-trained encoder file is no longer needed once one is loaded."""
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if any(k.startswith("encoder.") for k in state_dict):
            self.missing_encoder = None
        return result

    @property
    def hidden_size(self) -> int:
        """The plastic RNN's hidden size (recorded in a run's config.yaml)."""
        return self.rnn.hidden_size

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        if self.missing_encoder is not None:
            raise FileNotFoundError(f"pretrained encoder {self.missing_encoder!r} not found (write one with "
                                    f"`plasticnet pretrain`); a run's best.pt or last.pt holds its weights")
        B, T = images.shape[:2]
        feats = self.encoder(images.flatten(0, 1))  # (B·T, D)
        e = torch.relu(self.proj(feats)).view(B, T, -1)  # (B, T, hidden − ways)
        out, _ = self.rnn(torch.cat([e, labels.to(e.dtype)], dim=-1))  # (B, T, ways)
        return out


@register_task
class FewShotImages(Task):
    """``fewshot-images``: N-way K-shot image classification by a plastic RNN (SPEC §2)."""

    name = "fewshot-images"

    @dataclass
    class Options:
        dataset: str = "glyphs"  # glyphs | omniglot | cifar-fs | mini-imagenet
        data_dir: str = ""  # folder of a real dataset ("" → $PLASTICNET_DATA)
        ways: int = 5  # classes per episode (N)
        shots: int = 1  # support images per class (K)
        queries: int = 1  # query images per class (Q)
        image_size: int = 0  # 0: the dataset's size (glyphs/omniglot 28, cifar-fs 32, mini-imagenet 84)
        augment: str = "auto"  # none | crop | crop-flip | auto (crop-flip for photos, none for glyphs)
        cache_dir: str = ""  # rendered/resized data cache ("" → $PLASTICNET_CACHE or ~/.cache/plasticnet)
        label_scale: float = 1.0  # value of the one-hot label's hot unit (the paper: 1)

    model_defaults = dict(
        encoder="conv4",  # conv4 | resnet12
        encoder_channels=64,  # conv4 width (64); ResNet-12 widths scaled by it/64 (64-160-320-640)
        hidden_base=256,  # hidden_size=None: matched_hidden_size(rule, cell, base=hidden_base) (SPEC §1, §2)
        pretrained="",  # encoder checkpoint from `plasticnet pretrain` ("" → trained from scratch)
        freeze_encoder=True,  # keep a pre-trained encoder fixed (as the reference does)
        drop_rate=0.1,  # ResNet-12 dropout / DropBlock rate
        dropblock_size=0,  # 0: 5 for images ≥ 64 px, else 2 (MetaOptNet)
        dropblock_warmup=1500,  # batches over which the DropBlock rate rises linearly to drop_rate (0: fixed)
        **plastic_rnn_defaults(),  # hidden_size (None: matched) and every PlasticRNN keyword option
    )
    model_types = plastic_rnn_types()
    # CPU-sized default (the paper: 40,000 batches of 64 episodes); see docs/fewshot_images.md
    train_defaults = dict(batches=3000, batch_size=32, optimizer="adamw", lr=1e-3, weight_decay=5e-4,
                          lr_schedule="cosine", lr_min=1e-4, grad_clip=5.0, val_every=250, val_batches=20)

    def __init__(self, options=None, **kwargs):
        super().__init__(options, **kwargs)
        o = self.options
        check_choice("dataset", o.dataset, DATASETS)
        check_choice("augment", o.augment, AUGMENTS)
        for name in ("ways", "shots", "queries"):
            check_positive_int(name, getattr(o, name))
        if not (isinstance(o.label_scale, (int, float)) and o.label_scale > 0):
            raise ValueError(f"label_scale must be > 0, got {o.label_scale!r}")
        if o.image_size and o.image_size < 16:
            raise ValueError(f"image_size must be 0 (native) or >= 16, got {o.image_size}")

    # ------------------------------------------------------------ data
    @property
    def image_size(self) -> int:
        return self.options.image_size or NATIVE_SIZE[self.options.dataset]

    @property
    def channels(self) -> int:
        return CHANNELS[self.options.dataset]

    @property
    def input_size(self) -> int:
        return self.channels * self.image_size**2

    @property
    def output_size(self) -> int:
        return self.options.ways

    def data(self, split: str):
        """The :class:`~plasticnet.data.ImageSet` of ``split`` (loaded once per process)."""
        o = self.options
        return load_dataset(o.dataset, split, data_dir=o.data_dir or None, image_size=self.image_size,
                            cache=o.cache_dir or None)

    def augmentation(self):
        """``(padding, flip)`` applied to training images, or ``None``."""
        mode = self.options.augment
        if mode == "auto":
            mode = "crop-flip" if self.channels == 3 else "none"
        if mode == "none":
            return None
        pad = 8 if self.image_size >= 64 else max(2, self.image_size // 8)
        return pad, mode == "crop-flip"

    def sample(self, batch_size: int, generator: torch.Generator, split: str = "train") -> Batch:
        """``batch_size`` episodes of ``split``: inputs ``(images (B, T, C, H, W), labels (B, T, N))``,
        targets ``(B, T)`` episode labels, mask ``(B, T)`` true on the query steps."""
        o = self.options
        data = self.data(split)
        ep = sample_episodes(data, batch_size, o.ways, o.shots, o.queries, generator)
        images = ep.images
        aug = self.augmentation() if split == "train" else None
        if aug is not None:
            images = augment(images.flatten(0, 1), generator, padding=aug[0], flip=aug[1]).view_as(images)
        x = data.normalise(images)  # (B, T, C, H, W) float
        onehot = F.one_hot(ep.labels, o.ways).float() * o.label_scale
        onehot[:, ep.n_support:] = 0.0  # queries carry no label
        mask = torch.zeros(ep.labels.shape, dtype=torch.bool)
        mask[:, ep.n_support:] = True
        return Batch((x, onehot), ep.labels, mask)

    # ------------------------------------------------------------ model
    def build_model(self, rule: str, cell: str, **model_options) -> nn.Module:
        opts = dict(self.model_defaults)
        unknown = sorted(set(model_options) - set(opts))
        if unknown:
            raise ValueError(f"unknown model option(s) {', '.join(map(repr, unknown))}; "
                             f"valid: {', '.join(opts)}")
        opts.update(model_options)
        check_choice("encoder", opts["encoder"], ENCODERS)
        hidden = opts["hidden_size"] or matched_hidden_size(rule, cell, base=opts["hidden_base"])
        check_positive_int("hidden_size", hidden)
        encoder = build_encoder(opts["encoder"], self.channels, self.image_size, channels=opts["encoder_channels"],
                                drop_rate=opts["drop_rate"], dropblock_size=opts["dropblock_size"],
                                dropblock_warmup=opts["dropblock_warmup"])
        freeze, missing = False, None
        if opts["pretrained"]:
            # A run folder loads from anywhere: its checkpoint holds the encoder's weights, so a
            # pre-trained file that is not here (another machine or working folder) is needed only
            # by a model that trains from the start; such a model refuses its first forward.
            if Path(opts["pretrained"]).is_file():
                load_encoder(encoder, opts["pretrained"], name=opts["encoder"], channels=self.channels)
            else:
                missing = str(opts["pretrained"])
            freeze = bool(opts["freeze_encoder"])
        feature_size = encoder_output_size(encoder, self.channels, self.image_size)
        rnn_options = {k: opts[k] for k in plastic_rnn_defaults() if k != "hidden_size"}
        model = FewShotImageModel(encoder, feature_size, self.options.ways, hidden, rule=rule, cell=cell,
                                  freeze_encoder=freeze, **rnn_options)
        model.missing_encoder = missing
        return model

    def forward(self, model: nn.Module, batch: Batch) -> Tensor:
        images, labels = batch.inputs
        return model(images, labels)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Cross-entropy over the query steps, averaged."""
        return F.cross_entropy(outputs[batch.mask], batch.targets[batch.mask])

    def metrics(self, outputs: Tensor, batch: Batch) -> Dict[str, float]:
        """``error = 1 − accuracy`` over the queries; ``accuracy``; ``first_query_accuracy``."""
        correct = outputs.argmax(-1) == batch.targets  # (B, T)
        acc = correct[batch.mask].float().mean().item()
        first = batch.mask.float().argmax(1)  # first query step of each episode
        first_acc = correct.gather(1, first[:, None]).float().mean().item()
        return {"error": 1.0 - acc, "accuracy": acc, "first_query_accuracy": first_acc}
