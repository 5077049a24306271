"""Few-shot image data: datasets, the episode sampler and augmentation.

``load_dataset(name, split, ...)`` returns an :class:`ImageSet` for

- ``glyphs`` — rendered offline from matplotlib's fonts (:mod:`.glyphs`), the default;
- ``omniglot`` — the PNG tree of Lake et al. (:mod:`.omniglot`);
- ``cifar-fs``, ``mini-imagenet`` — MetaOptNet pickles (:mod:`.pickles`).

Splits are ``train`` (background classes), ``val`` and ``test`` (novel
classes, disjoint from ``train``). Real datasets are read from the folder
named by ``data_dir`` or ``$PLASTICNET_DATA``; nothing is ever downloaded.
"""

from __future__ import annotations

from ..checks import check_choice
from .episodes import Episodes, augment, sample_episodes
from .imageset import CACHE_ENV, DATA_ENV, ImageSet, cache_dir

DATASETS = ("glyphs", "omniglot", "cifar-fs", "mini-imagenet")
SPLITS = ("train", "val", "test")
NATIVE_SIZE = {"glyphs": 28, "omniglot": 28, "cifar-fs": 32, "mini-imagenet": 84}

_LOADED = {}


def load_dataset(name: str, split: str, data_dir=None, image_size=None, cache=None) -> ImageSet:
    """The ``split`` of dataset ``name`` as an :class:`ImageSet` (memoised per process).

    ``image_size``: glyphs are rendered and Omniglot resized to it (default
    28); the pickled datasets keep their native size (32 / 84) and refuse
    another one.
    """
    check_choice("dataset", name, DATASETS)
    check_choice("split", split, SPLITS)
    size = image_size or NATIVE_SIZE[name]
    key = (name, split, str(data_dir), size, str(cache_dir(cache)))
    if key not in _LOADED:
        if name == "glyphs":
            from .glyphs import load_glyphs

            data = load_glyphs(split, image_size=size, cache=cache)
        elif name == "omniglot":
            from .omniglot import load_omniglot_split

            data = load_omniglot_split(split, data_dir, image_size=size, cache=cache)
        else:
            from .pickles import load_pickle_split

            data = load_pickle_split(name, split, data_dir)
            if data.image_size != size:
                raise ValueError(f"{name} images are {data.image_size}×{data.image_size}; "
                                 f"image_size={size} is not supported for it (use {data.image_size})")
        _LOADED[key] = data
    return _LOADED[key]


__all__ = ["CACHE_ENV", "DATA_ENV", "DATASETS", "Episodes", "ImageSet", "SPLITS", "augment", "cache_dir",
           "load_dataset", "sample_episodes"]
