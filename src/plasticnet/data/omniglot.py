"""Omniglot from its PNG tree (Lake et al. 2015), read from a folder you name.

Layout: ``<data_dir>/images_background/<alphabet>/<character>/*.png`` (30
alphabets, the training classes) and ``<data_dir>/images_evaluation/...``
(20 alphabets, the novel classes); ``data_dir`` may also hold an ``omniglot``
sub-folder with that layout. Images (105×105, black strokes on white) are
inverted (strokes = 255) and area-resized to ``image_size``. PNGs are read
with Pillow (a dependency of matplotlib). The resized arrays are cached as
``.npz`` in the cache folder, keyed by what they were made from: the folder,
the size and every PNG's path, byte size and modification time, so a changed
PNG rebuilds the cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import check_choice
from ..runfolder import save_npz_atomic
from .imageset import ImageSet, cache_dir, data_root

MAX_PIXELS = 2048 * 2048  # larger is no Omniglot image (they are 105×105): refused before decoding
SPLIT_FOLDERS = {"train": "images_background", "val": "images_evaluation", "test": "images_evaluation"}


def find_split_folder(split: str, data_dir=None) -> Path:
    """``images_background`` (train) or ``images_evaluation`` (val, test) under ``data_dir``."""
    check_choice("split", split, SPLIT_FOLDERS)
    root = data_root(data_dir, "omniglot")
    name = SPLIT_FOLDERS[split]
    for c in (root / name, root / "omniglot" / name):
        if c.is_dir():
            return c
    raise FileNotFoundError(f"omniglot split {split!r}: expected the folder {name!r} in {str(root)!r} "
                            f"(layout {name}/<alphabet>/<character>/*.png)")


def read_png_gray(path: Path) -> np.ndarray:
    """A PNG as uint8 ``(H, W)`` grey levels (0 black, 255 white)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            size = im.size  # from the header, before decoding
            if size[0] * size[1] <= MAX_PIXELS:
                return np.asarray(im.convert("L"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"omniglot image {path} is damaged or not a PNG ({err}); "
                         f"replace it from the original dataset") from None
    raise ValueError(f"omniglot image {path} is {size[0]}×{size[1]} pixels, more than the {MAX_PIXELS:,} an "
                     f"Omniglot image may have (they are 105×105); remove it")


def source_key(folder: Path, image_size: int, files) -> str:
    """Hash of what a cached array is made from: folder, size, and each PNG's path, size and mtime."""
    h = hashlib.sha1(f"{folder.resolve()}|{image_size}".encode())
    for _, fs in files:
        for f in fs:
            st = f.stat()
            h.update(f"|{f.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_omniglot_split(split: str, data_dir=None, image_size: int = 28, cache=None) -> ImageSet:
    """Load the Omniglot ``split`` as an :class:`ImageSet` of ``image_size²`` images, strokes bright."""
    folder = find_split_folder(split, data_dir)
    chars = sorted(p for p in folder.glob("*/*") if p.is_dir())
    files = [(c, sorted(c.glob("*.png"))) for c in chars]
    files = [(c, f) for c, f in files if f]
    if not files:
        raise FileNotFoundError(f"no PNG files found under {str(folder)!r} "
                                f"(expected <alphabet>/<character>/*.png)")
    path = cache_dir(cache) / f"omniglot-{split}-{image_size}-{source_key(folder, image_size, files)}.npz"
    names = [f"{c.parent.name}/{c.name}" for c, _ in files]
    images = None
    if path.is_file():
        try:
            with np.load(path) as z:
                images, labels = z["images"], z["labels"]
        except (OSError, ValueError, KeyError, EOFError):  # a damaged cache is rebuilt
            images = None
    if images is None:
        imgs, labels = [], []
        for k, (_, fs) in enumerate(files):
            for f in fs:
                x = torch.from_numpy(255 - read_png_gray(f)).float()[None, None]  # (1, 1, h, w)
                imgs.append(F.interpolate(x, size=(image_size, image_size), mode="area")[0])
                labels.append(k)
        images = torch.stack(imgs).round().clamp(0, 255).to(torch.uint8).numpy()  # (N, 1, S, S)
        labels = np.asarray(labels, dtype=np.int64)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_npz_atomic(path, {"images": images, "labels": labels}, compressed=True)
    groups = [n.split("/")[0] for n in names]
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), names, groups)
