"""N-way K-shot episodes and image augmentation, batched and seeded.

An episode draws ``N`` distinct classes of one split (so train and
evaluation episodes never share a class: the splits are class-disjoint),
gives them the episode labels ``0..N−1`` in random order, and ``K + Q``
distinct images of each: ``K`` support images shown first in random order,
then ``Q`` queries per class in random order. All randomness comes from the
``torch.Generator`` passed in.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .imageset import ImageSet


class Episodes(NamedTuple):
    """A batch of episodes, support steps first then query steps (``T = N·K + N·Q``).

    images: uint8 ``(B, T, C, H, W)``; labels: ``(B, T)`` episode labels in
    ``0..N−1``; classes: ``(B, N)`` the dataset class behind each episode label;
    n_support: ``N·K``, the number of support steps.
    """

    images: Tensor
    labels: Tensor
    classes: Tensor
    n_support: int


def _class_index(data: ImageSet):
    """``(order, offsets, counts)``: image indices sorted by class, each class's start and size."""
    if getattr(data, "_index", None) is None:
        counts = torch.bincount(data.labels, minlength=data.n_classes)
        offsets = torch.cumsum(counts, 0) - counts
        data._index = (torch.argsort(data.labels, stable=True), offsets, counts)
    return data._index


def sample_episodes(data: ImageSet, batch_size: int, ways: int, shots: int, queries: int,
                    generator: torch.Generator) -> Episodes:
    """``batch_size`` episodes of ``ways``-way ``shots``-shot classification with ``queries``
    queries per class, drawn from ``data`` with ``generator``."""
    order, offsets, counts = _class_index(data)
    C, B, N, per = data.n_classes, batch_size, ways, shots + queries
    if N > C:
        raise ValueError(f"ways={N} but the split has only {C} classes")
    if int(counts.min()) < per:
        raise ValueError(f"shots + queries = {per} but some class has only {int(counts.min())} images")
    classes = torch.rand(B, C, generator=generator).argsort(1)[:, :N]  # (B, N), episode label n ↔ class
    cnt = counts[classes]  # (B, N)
    r = torch.rand(B, N, int(counts.max()), generator=generator)
    r = r.masked_fill(torch.arange(r.shape[-1]) >= cnt[..., None], 2.0)  # only real images
    pick = r.argsort(-1)[..., :per]  # (B, N, K+Q) distinct images of each class
    idx = order[offsets[classes][..., None] + pick]  # (B, N, K+Q) image indices
    lab = torch.arange(N).view(1, N, 1).expand(B, N, per)

    def shuffled(ix, lb):  # (B, N, k) → (B, N·k) in random order per episode
        ix, lb = ix.reshape(B, -1), lb.reshape(B, -1)
        perm = torch.rand(ix.shape, generator=generator).argsort(1)
        return ix.gather(1, perm), lb.gather(1, perm)

    s_idx, s_lab = shuffled(idx[..., :shots], lab[..., :shots])
    q_idx, q_lab = shuffled(idx[..., shots:], lab[..., shots:])
    all_idx = torch.cat([s_idx, q_idx], 1)  # (B, T)
    images = data.images[all_idx.flatten()].view(B, all_idx.shape[1], *data.images.shape[1:])
    return Episodes(images, torch.cat([s_lab, q_lab], 1), classes, N * shots)


def augment(images: Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True) -> Tensor:
    """Random crop with zero padding and random horizontal flip, per image.

    ``images (M, C, H, W)`` (any dtype) → ``(M, C, H, W)``: each image is
    padded by ``padding`` on every side and an ``H × W`` window taken at a
    uniform offset in ``[0, 2·padding]²``, then mirrored left–right with
    probability 1/2 when ``flip``.
    """
    M, C, H, W = images.shape
    out = images
    if padding > 0:
        padded = torch.nn.functional.pad(images, (padding,) * 4)
        oy = torch.randint(0, 2 * padding + 1, (M,), generator=generator)
        ox = torch.randint(0, 2 * padding + 1, (M,), generator=generator)
        rows = (oy[:, None] + torch.arange(H))[:, None, :, None]  # (M, 1, H, 1)
        cols = (ox[:, None] + torch.arange(W))[:, None, None, :]  # (M, 1, 1, W)
        out = padded[torch.arange(M)[:, None, None, None], torch.arange(C)[None, :, None, None], rows, cols]
    if flip:
        mirror = torch.rand(M, generator=generator) < 0.5
        out = torch.where(mirror.view(M, 1, 1, 1), out.flip(-1), out)
    return out
