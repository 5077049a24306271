"""A labelled set of images held in memory, and where data and caches live.

:class:`ImageSet` is what every loader returns: ``images`` uint8
``(N, C, H, W)``, ``labels`` int64 ``(N,)`` with classes numbered
``0 .. n_classes − 1`` in the order of ``class_names``. The episode sampler
reads nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from torch import Tensor

CACHE_ENV = "PLASTICNET_CACHE"  # cache folder (rendered glyphs, resized Omniglot)
DATA_ENV = "PLASTICNET_DATA"  # folder holding the real datasets


@dataclass
class ImageSet:
    """Images of one split: ``images`` uint8 ``(N, C, H, W)``, ``labels`` int64 ``(N,)``.

    ``class_names[k]`` names class ``k``; ``groups[k]`` is its alphabet/script
    (or ``""``); ``mean``/``std`` (per channel, in [0, 1] units) normalise the
    images for the encoder.
    """

    images: Tensor
    labels: Tensor
    class_names: List[str]
    groups: List[str] = field(default_factory=list)
    mean: Optional[Tensor] = None
    std: Optional[Tensor] = None

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")
        self.labels = self.labels.long()
        if self.mean is None:
            x = self.images.float() / 255.0
            self.mean = x.mean(dim=(0, 2, 3))
            self.std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 ``(..., C, H, W)`` → float ``(x/255 − mean)/std``, same shape."""
        x = images.float() / 255.0
        shape = (-1, 1, 1)
        return (x - self.mean.to(x.device).view(shape)) / self.std.to(x.device).view(shape)


def from_numpy(images: np.ndarray, labels, class_names=None, groups=None) -> ImageSet:
    """An :class:`ImageSet` from ``images`` uint8 ``(N, H, W)`` or ``(N, H, W, C)``
    and arbitrary hashable ``labels``, renumbered ``0..C−1`` in sorted order."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got shape {images.shape}")
    try:
        array = np.asarray(labels)
    except ValueError:  # ragged nesting
        array = np.asarray(labels, dtype=object)
    if array.ndim != 1 or array.dtype.kind not in "iuU":
        raise ValueError(f"labels must be one integer or string per image, got an array of {array.dtype} with "
                         f"shape {array.shape}")
    labels = list(array.tolist())
    if len(labels) != images.shape[0]:
        raise ValueError(f"{len(labels)} labels for {images.shape[0]} images")
    keys = sorted(set(labels))
    index = {k: i for i, k in enumerate(keys)}
    names = class_names or [str(k) for k in keys]
    return ImageSet(torch.from_numpy(np.ascontiguousarray(images)),
                    torch.tensor([index[k] for k in labels], dtype=torch.long), names, groups or [])


def cache_dir(path: Optional[str] = None) -> Path:
    """The cache folder: ``path``, else ``$PLASTICNET_CACHE``, else ``~/.cache/plasticnet``."""
    p = path or os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "plasticnet")
    return Path(p)


def data_root(path: Optional[str], dataset: str) -> Path:
    """The folder of a real dataset: ``path`` (the ``data_dir`` option), else ``$PLASTICNET_DATA``."""
    p = path or os.environ.get(DATA_ENV)
    if not p:
        raise FileNotFoundError(f"dataset {dataset!r} is read from a folder you name: pass --set data_dir=PATH "
                                f"or set ${DATA_ENV} (nothing is ever downloaded)")
    root = Path(p).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data_dir {str(root)!r} for dataset {dataset!r} is not a folder")
    return root
