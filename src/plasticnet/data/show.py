"""``plasticnet data show DATASET``: a PNG grid of samples (one class per row)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import DATASETS, SPLITS, load_dataset
from .episodes import _class_index


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


def _cmd(args) -> int:
    from matplotlib import image as mpimg

    grid = sample_grid(args.dataset, args.split, args.rows, args.cols, args.seed, args.data_dir, args.image_size)
    out = Path(args.out or f"{args.dataset}-{args.split}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    mpimg.imsave(out, grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
    data = load_dataset(args.dataset, args.split, data_dir=args.data_dir, image_size=args.image_size)
    print(f"{args.dataset} {args.split}: {data.n_classes} classes, {len(data.labels)} images of "
          f"{data.channels}×{data.image_size}×{data.image_size}; wrote {out}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="inspect the few-shot image datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    s = dsub.add_parser("show", help="write a PNG grid of samples (one class per row)")
    s.add_argument("dataset", choices=DATASETS)
    s.add_argument("--split", choices=SPLITS, default="train")
    s.add_argument("--out", help="PNG path (default: DATASET-SPLIT.png)")
    s.add_argument("--rows", type=int, default=10)
    s.add_argument("--cols", type=int, default=10)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--data-dir", dest="data_dir", help="folder of a real dataset (or $PLASTICNET_DATA)")
    s.add_argument("--image-size", dest="image_size", type=int)
    s.set_defaults(func=_cmd)
