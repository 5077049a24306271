"""Image encoders of the one-shot classification model (SPEC §2), plain torch.

- :class:`Conv4` — the ProtoNet embedding (Snell et al. 2017, also Vinyals et
  al. 2016): 4 blocks of ``conv 3×3 (64 ch) → BatchNorm → ReLU → max-pool 2×2``;
  an ``H × W`` image gives ``64 · ⌊H/16⌋ · ⌊W/16⌋`` features (64 at 28×28,
  256 at 32×32, 1600 at 84×84).
- :class:`ResNet12` — the ResNet-12 of TADAM/MetaOptNet: 4 residual blocks of
  widths 64-160-320-640, each ``3 × (conv 3×3 → BN → LeakyReLU(0.1))`` with a
  1×1-conv shortcut, then max-pool 2×2; dropout after blocks 1–2 and
  :class:`DropBlock` after blocks 3–4 (Ghiasi et al. 2018).

Every encoder maps ``(B, C, H, W) → (B, D)`` (flattened features);
:func:`encoder_output_size` gives ``D`` for an input size. :func:`build_encoder`
is the one place an encoder is configured from the task's options (used by the
few-shot task and by pre-training), :func:`load_encoder` the one place a
pre-trained checkpoint is read.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_choice, check_nonnegative_int, check_positive_int, check_range

ENCODERS = ("conv4", "resnet12")


class Conv4(nn.Module):
    """ProtoNet conv net: ``4 × [conv3×3(64) → BN → ReLU → maxpool 2]``, flattened.

    Shapes: ``(B, C, H, W) → (B, channels · ⌊H/16⌋ · ⌊W/16⌋)``.
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, blocks: int = 4):
        super().__init__()
        layers = []
        for i in range(blocks):
            layers += [
                nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
        self.net = nn.Sequential(*layers)
        for m in self.modules():  # He init over the fan-out, as the ProtoNet code
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)


class DropBlock(nn.Module):
    """DropBlock (Ghiasi et al. 2018): drop contiguous ``block_size²`` squares.

    In training, block centres are drawn with rate
    ``γ = p / bs² · S² / (S − bs + 1)²`` (``p`` = ``drop_rate``, ``S`` the
    feature-map side) among the positions where a whole block fits, expanded
    to ``bs × bs`` squares by max-pooling, and the kept activations rescaled by
    ``numel / kept``. Identity in eval mode or with ``drop_rate = 0``.

    Schedule (Ghiasi et al.; MetaOptNet's ResNet-12): with ``warmup > 0`` the
    rate rises linearly, ``p_n = drop_rate · min(1, n / warmup)``, where ``n``
    counts the forward calls in training mode (one per training batch) in the
    buffer ``steps`` — saved with the weights, so a resumed run continues
    the schedule. ``warmup = 0``: the fixed rate ``drop_rate``.
    Shapes: ``(B, C, H, W) → (B, C, H, W)``.
    """

    def __init__(self, drop_rate: float = 0.1, block_size: int = 5, warmup: int = 0):
        super().__init__()
        check_range("drop_rate", drop_rate, 0, 1, high_open=True)
        check_nonnegative_int("DropBlock warmup", warmup)
        self.drop_rate, self.block_size, self.warmup = float(drop_rate), int(block_size), warmup
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @property
    def current_rate(self) -> float:
        """The rate of the next training call: ``drop_rate · min(1, steps / warmup)``."""
        if self.warmup == 0:
            return self.drop_rate
        return self.drop_rate * min(1.0, int(self.steps) / self.warmup)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        rate = self.current_rate
        self.steps += 1
        if rate == 0.0:
            return x
        B, C, H, W = x.shape
        bs = min(self.block_size, H, W)
        gamma = rate / bs**2 * (H * W) / ((H - bs + 1) * (W - bs + 1))
        seeds = (torch.rand(B, C, H - bs + 1, W - bs + 1, device=x.device) < gamma).to(x.dtype)
        pad = bs - 1
        seeds = F.pad(seeds, (pad, pad, pad, pad))  # centre area → full map after pooling
        block = F.max_pool2d(seeds, kernel_size=bs, stride=1)[..., :H, :W]  # (B, C, H, W)
        keep = 1.0 - block
        return x * keep * (keep.numel() / keep.sum().clamp_min(1.0))


class ResBlock12(nn.Module):
    """One ResNet-12 block: ``3 × (conv3×3 → BN → LeakyReLU)`` + 1×1 shortcut, max-pool 2, drop."""

    def __init__(self, in_ch: int, out_ch: int, drop_rate: float = 0.0, block_size: int = 0, warmup: int = 0):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1, bias=False)
                                   for i in range(3))
        self.bns = nn.ModuleList(nn.BatchNorm2d(out_ch) for _ in range(3))
        self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.drop = DropBlock(drop_rate, block_size, warmup) if block_size else nn.Dropout(drop_rate)

    def forward(self, x: Tensor) -> Tensor:
        out = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            out = bn(conv(out))
            if i < 2:
                out = F.leaky_relu(out, 0.1)
        out = F.leaky_relu(out + self.shortcut(x), 0.1)
        return self.drop(F.max_pool2d(out, 2))


class ResNet12(nn.Module):
    """ResNet-12, widths 64-160-320-640, DropBlock in the last two blocks, flattened.

    Args: ``in_channels``; ``widths``; ``drop_rate`` (0.1); ``dropblock_size``
    (5 for 84×84 images, 2 for 32×32 as in MetaOptNet); ``dropblock_warmup``:
    training batches over which the DropBlock rate rises linearly from 0 to
    ``drop_rate`` (0: fixed rate; MetaOptNet: 40,000); the dropout of blocks
    1–2 keeps the fixed rate.
    Shapes: ``(B, C, H, W) → (B, 640 · ⌊H/16⌋ · ⌊W/16⌋)``.
    """

    def __init__(self, in_channels: int = 3, widths=(64, 160, 320, 640), drop_rate: float = 0.1,
                 dropblock_size: int = 5, dropblock_warmup: int = 0):
        super().__init__()
        chans = (in_channels,) + tuple(widths)
        self.blocks = nn.Sequential(*(
            ResBlock12(chans[i], chans[i + 1], drop_rate, dropblock_size if i >= 2 else 0, dropblock_warmup)
            for i in range(len(widths))))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x).flatten(1)


def make_encoder(name: str, in_channels: int = 3, **kwargs) -> nn.Module:
    """The encoder called ``name`` (one of :data:`ENCODERS`), keyword arguments passed on."""
    check_choice("encoder", name, ENCODERS)
    if name == "conv4":
        return Conv4(in_channels, **kwargs)
    return ResNet12(in_channels, **kwargs)


def build_encoder(name: str, in_channels: int, image_size: int, *, channels: int = 64, drop_rate: float = 0.1,
                  dropblock_size: int = 0, dropblock_warmup: int = 0) -> nn.Module:
    """The encoder of the few-shot model from its options (SPEC §2).

    ``conv4``: width ``channels``. ``resnet12``: widths 64-160-320-640 scaled
    by ``channels / 64``, dropout/DropBlock rate ``drop_rate``, DropBlock size
    ``dropblock_size`` (0: 5 for images of at least 64 px, else 2, as MetaOptNet),
    ``dropblock_warmup`` batches of linear rate warm-up.
    """
    check_positive_int("encoder_channels", channels)
    if name != "resnet12":
        return make_encoder(name, in_channels, channels=channels)
    return make_encoder(name, in_channels, widths=tuple(w * channels // 64 for w in (64, 160, 320, 640)),
                        drop_rate=drop_rate, dropblock_size=dropblock_size or (5 if image_size >= 64 else 2),
                        dropblock_warmup=dropblock_warmup)


def encoder_output_size(encoder: nn.Module, in_channels: int, image_size: int) -> int:
    """``D``, the flattened feature size of ``encoder`` for ``image_size²`` inputs."""
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16 (four 2×2 poolings), got {image_size}")
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        p = next(encoder.parameters())
        d = encoder(torch.zeros(1, in_channels, image_size, image_size, device=p.device, dtype=p.dtype)).shape[1]
    encoder.train(was_training)
    return int(d)


def load_encoder(encoder: nn.Module, path, name: str, channels: int) -> nn.Module:
    """Load a :func:`pretrain_encoder` checkpoint into ``encoder``, checking it matches."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained encoder {str(path)!r} not found (write one with `plasticnet pretrain`)")
    from .runfolder import load_checkpoint

    ckpt = load_checkpoint(path, hint="write it again with `plasticnet pretrain`")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not an encoder checkpoint of `plasticnet pretrain`")
    if ckpt.get("encoder") != name or ckpt.get("channels") != channels:
        raise ValueError(f"{path} holds a {ckpt.get('encoder')!r} encoder for {ckpt.get('channels')}-channel "
                         f"images; the model wants {name!r} for {channels}-channel images")
    state = dict(ckpt["state_dict"])
    for key, value in encoder.state_dict().items():  # checkpoints from before the DropBlock schedule
        if key.endswith(".steps") and key not in state:
            state[key] = torch.zeros_like(value)
    encoder.load_state_dict(state)
    return encoder
