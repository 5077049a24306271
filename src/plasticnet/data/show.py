"""``plasticnet data show DATASET``: a PNG grid of samples (one class per row)."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
import torch

from . import load_dataset
from .episodes import _class_index
from .imageset import ImageSet


def sample_grid(name: str, split: str = "train", rows: int = 10, cols: int = 10, seed: int = 0,
                data_dir=None, image_size=None) -> np.ndarray:
    """uint8 ``(rows·(S+2), cols·(S+2), C)`` grid: ``rows`` random classes, ``cols`` images each."""
    data = load_dataset(name, split, data_dir=data_dir, image_size=image_size)
    order, offsets, counts = _class_index(data)
    g = torch.Generator().manual_seed(seed)
    classes = torch.randperm(data.n_classes, generator=g)[:rows]
    S, C = data.image_size, data.channels
    grid = np.full((rows * (S + 2), cols * (S + 2), C), 128, dtype=np.uint8)
    for r, c in enumerate(classes.tolist()):
        for j in range(min(cols, int(counts[c]))):
            img = data.images[order[offsets[c] + j]].permute(1, 2, 0).numpy()
            grid[r * (S + 2) + 1:r * (S + 2) + 1 + S, j * (S + 2) + 1:j * (S + 2) + 1 + S] = img
    return grid


def write_sample_grid(dataset: str, split: str = "train", out=None, rows: int = 10, cols: int = 10, seed: int = 0,
                      data_dir=None, image_size=None) -> Tuple[Path, ImageSet]:
    """Write the :func:`sample_grid` of ``dataset``'s ``split`` as a PNG (what ``plasticnet data show`` does).

    ``out``: the PNG's path (default ``DATASET-SPLIT.png``; its folder is
    made). Returns the path written and the split's :class:`ImageSet` (its
    class and image counts, image shape).
    """
    from matplotlib import image as mpimg

    grid = sample_grid(dataset, split, rows, cols, seed, data_dir, image_size)
    out = Path(out or f"{dataset}-{split}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    mpimg.imsave(out, grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
    return out, load_dataset(dataset, split, data_dir=data_dir, image_size=image_size)
