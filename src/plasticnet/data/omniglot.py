"""Omniglot from its PNG tree (Lake et al. 2015), read from a folder you name.

Layout: ``<data_dir>/images_background/<alphabet>/<character>/*.png`` (30
alphabets, the training classes) and ``<data_dir>/images_evaluation/...``
(20 alphabets, the novel classes); ``data_dir`` may also hold an ``omniglot``
sub-folder with that layout. Images (105×105, black strokes on white) are
inverted (strokes = 255) and area-resized to ``image_size``. PNGs are read
with Pillow (a dependency of matplotlib). The resized arrays are cached as
``.npz`` in the cache folder, keyed by the folder and size.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .imageset import ImageSet, cache_dir, data_root

SPLIT_FOLDERS = {"train": "images_background", "val": "images_evaluation", "test": "images_evaluation"}


def find_split_folder(split: str, data_dir=None) -> Path:
    """``images_background`` (train) or ``images_evaluation`` (val, test) under ``data_dir``."""
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(map(repr, SPLIT_FOLDERS))}")
    root = data_root(data_dir, "omniglot")
    name = SPLIT_FOLDERS[split]
    for c in (root / name, root / "omniglot" / name):
        if c.is_dir():
            return c
    raise FileNotFoundError(f"omniglot split {split!r}: expected the folder {name!r} in {str(root)!r} "
                            f"(layout {name}/<alphabet>/<character>/*.png)")


def read_png_gray(path: Path) -> np.ndarray:
    """A PNG as uint8 ``(H, W)`` grey levels (0 black, 255 white)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def load_omniglot_split(split: str, data_dir=None, image_size: int = 28, cache=None) -> ImageSet:
    """Load the Omniglot ``split`` as an :class:`ImageSet` of ``image_size²`` images, strokes bright."""
    folder = find_split_folder(split, data_dir)
    chars = sorted(p for p in folder.glob("*/*") if p.is_dir())
    files = [(c, sorted(c.glob("*.png"))) for c in chars]
    files = [(c, f) for c, f in files if f]
    if not files:
        raise FileNotFoundError(f"no PNG files found under {str(folder)!r} "
                                f"(expected <alphabet>/<character>/*.png)")
    key = hashlib.sha1(f"{folder.resolve()}|{image_size}|{sum(len(f) for _, f in files)}".encode()).hexdigest()[:12]
    path = cache_dir(cache) / f"omniglot-{split}-{image_size}-{key}.npz"
    names = [f"{c.parent.name}/{c.name}" for c, _ in files]
    if path.is_file():
        z = np.load(path)
        images, labels = z["images"], z["labels"]
    else:
        imgs, labels = [], []
        for k, (_, fs) in enumerate(files):
            for f in fs:
                x = torch.from_numpy(255 - read_png_gray(f)).float()[None, None]  # (1, 1, h, w)
                imgs.append(F.interpolate(x, size=(image_size, image_size), mode="area")[0])
                labels.append(k)
        images = torch.stack(imgs).round().clamp(0, 255).to(torch.uint8).numpy()  # (N, 1, S, S)
        labels = np.asarray(labels, dtype=np.int64)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, images=images, labels=labels)
        tmp.replace(path)
    groups = [n.split("/")[0] for n in names]
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), names, groups)
