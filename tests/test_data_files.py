"""Damaged dataset files are named, and the Omniglot cache follows the PNGs it was made from."""

import os
import pickle

import numpy as np
import pytest
import torch

from plasticnet.data.glyphs import glyphs_path, load_glyphs
from plasticnet.data.omniglot import load_omniglot_split
from plasticnet.data.pickles import load_pickle_split
from test_image_data import fake_omniglot, fake_pickles


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_damaged_pickle_named(tmp_path, damage):
    folder = fake_pickles(tmp_path, "cifar-fs", 32)
    path = folder / "CIFAR_FS_train.pickle"
    data = path.read_bytes()
    path.write_bytes({"garbage": b"this is not a pickle at all", "truncated": data[: len(data) // 3],
                      "empty": b""}[damage])
    with pytest.raises(ValueError, match=f"dataset file {path} is damaged or not a pickle") as err:
        load_pickle_split("cifar-fs", "train", str(tmp_path))
    assert not isinstance(err.value, pickle.UnpicklingError)


def test_truncated_omniglot_png_named(tmp_path):
    fake_omniglot(tmp_path)
    png = sorted((tmp_path / "images_background").rglob("*.png"))[5]
    png.write_bytes(png.read_bytes()[:40])
    with pytest.raises(ValueError, match=f"omniglot image {png} is damaged or not a PNG"):
        load_omniglot_split("train", str(tmp_path), image_size=28, cache=str(tmp_path / "c"))


def test_omniglot_cache_follows_changed_pngs(tmp_path):
    from PIL import Image

    fake_omniglot(tmp_path)
    cache = str(tmp_path / "c")
    first = load_omniglot_split("train", str(tmp_path), image_size=28, cache=cache)
    png = sorted((tmp_path / "images_background").rglob("*.png"))[0]
    Image.fromarray(np.zeros((105, 105), np.uint8)).convert("1").save(png)  # all strokes: same file count
    st = png.stat()
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = load_omniglot_split("train", str(tmp_path), image_size=28, cache=cache)
    assert second.images[0].float().mean() > 250 and not torch.equal(first.images[0], second.images[0])
    assert torch.equal(first.images[1:], second.images[1:])
    assert len(list((tmp_path / "c").glob("omniglot-train-28-*.npz"))) == 2  # one per source state


def test_damaged_caches_are_rebuilt(tmp_path):
    fake_omniglot(tmp_path)
    cache = tmp_path / "c"
    first = load_omniglot_split("train", str(tmp_path), image_size=28, cache=str(cache))
    (npz,) = cache.glob("omniglot-train-28-*.npz")
    npz.write_bytes(b"damaged")
    again = load_omniglot_split("train", str(tmp_path), image_size=28, cache=str(cache))
    assert torch.equal(first.images, again.images)
    assert np.load(npz)["images"].shape[0] == 24  # written again, whole

    path = glyphs_path(16, 2, 0, str(cache))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    data = load_glyphs("val", image_size=16, drawings=2, cache=str(cache))
    assert data.images.shape[1:] == (1, 16, 16) and path.stat().st_size > 0
