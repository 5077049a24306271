"""Few-shot image data: safe pickles, real-dataset loaders on fake files, episodes, augmentation."""

import os
import pickle

import numpy as np
import pytest
import torch

from plasticnet.data import ImageSet, augment, load_dataset, sample_episodes
from plasticnet.data.imageset import from_numpy
from plasticnet.data.omniglot import load_omniglot_split
from plasticnet.data.pickles import PICKLE_FILES, UnsafePickleError, load_pickle_split, safe_load


# ---------------------------------------------------------------- restricted unpickler
class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


class Custom:
    pass


def write_pickle(path, obj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_safe_load_reads_numpy_and_builtins(tmp_path, protocol):
    obj = {"data": np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3), "labels": [3, 7],
           "names": ("a", "b"), "set": {1, 2}, "f": np.float32(1.5), "x": 2.5}
    write_pickle(tmp_path / "ok.pickle", obj, protocol)
    back = safe_load(tmp_path / "ok.pickle")
    assert np.array_equal(back["data"], obj["data"]) and back["labels"] == [3, 7]
    assert back["set"] == {1, 2} and back["f"] == np.float32(1.5)


@pytest.mark.parametrize("payload,refused", [(Evil(), "system"), (Custom(), "Custom"),
                                             ({"data": [Custom()]}, "Custom")])
def test_safe_load_refuses_other_globals(tmp_path, payload, refused):
    write_pickle(tmp_path / "bad.pickle", payload)
    with pytest.raises(UnsafePickleError, match=f"refused to load .*{refused}.*only numpy arrays"):
        safe_load(tmp_path / "bad.pickle")


# ---------------------------------------------------------------- MetaOptNet pickles on fake files
def fake_pickles(root, dataset, size, n_classes=6, per_class=4, sub=None):
    folder = root / sub if sub else root
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for i, name in enumerate(PICKLE_FILES[dataset].values()):
        labels = [100 * i + c for c in range(n_classes) for _ in range(per_class)]
        data = rng.randint(0, 256, (len(labels), size, size, 3)).astype(np.uint8)
        write_pickle(folder / name, {"data": data, "labels": labels})
    return folder


@pytest.mark.parametrize("dataset,size,sub", [("cifar-fs", 32, None), ("cifar-fs", 32, "CIFAR_FS"),
                                              ("mini-imagenet", 84, "miniImageNet")])
def test_pickle_loader_on_fake_files(tmp_path, dataset, size, sub):
    fake_pickles(tmp_path, dataset, size, sub=sub)
    data = load_pickle_split(dataset, "val", str(tmp_path))
    assert data.images.shape == (24, 3, size, size) and data.images.dtype == torch.uint8
    assert data.n_classes == 6 and sorted(set(data.labels.tolist())) == list(range(6))
    assert data.class_names == [str(100 + c) for c in range(6)]
    via = load_dataset(dataset, "test", data_dir=str(tmp_path), cache=str(tmp_path / "cache"))
    assert via.class_names[0] == "200"


def test_pickle_loader_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("PLASTICNET_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="data_dir=PATH.*PLASTICNET_DATA"):
        load_pickle_split("cifar-fs", "train", None)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_pickle_split("cifar-fs", "train", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="expected 'miniImageNet_category_split_val.pickle' in"):
        load_pickle_split("mini-imagenet", "val", str(tmp_path))
    write_pickle(tmp_path / "CIFAR_FS_train.pickle", {"images": np.zeros(3)})
    with pytest.raises(ValueError, match="expected keys 'data' and 'labels'"):
        load_pickle_split("cifar-fs", "train", str(tmp_path))
    monkeypatch.setenv("PLASTICNET_DATA", str(tmp_path))
    fake_pickles(tmp_path, "cifar-fs", 32)
    assert load_pickle_split("cifar-fs", "train", None).n_classes == 6
    with pytest.raises(ValueError, match="image_size=28 is not supported"):
        load_dataset("cifar-fs", "train", data_dir=str(tmp_path), image_size=28)


# ---------------------------------------------------------------- Omniglot PNG tree
def fake_omniglot(root, alphabets=2, chars=3, drawings=4):
    from PIL import Image

    rng = np.random.RandomState(0)
    for folder in ("images_background", "images_evaluation"):
        for a in range(alphabets):
            for c in range(chars):
                d = root / folder / f"{folder[7:]}_alpha{a}" / f"character{c + 1:02d}"
                d.mkdir(parents=True)
                for k in range(drawings):
                    img = np.full((105, 105), 255, np.uint8)
                    y, x = rng.randint(10, 90, 2)
                    img[y:y + 10, x:x + 10] = 0  # a black stroke on white
                    Image.fromarray(img).convert("1").save(d / f"{c:04d}_{k:02d}.png")


def test_omniglot_loader_on_fake_tree(tmp_path):
    fake_omniglot(tmp_path / "omniglot")
    data = load_omniglot_split("train", str(tmp_path / "omniglot"), image_size=28, cache=str(tmp_path / "c"))
    assert data.images.shape == (24, 1, 28, 28) and data.n_classes == 6
    assert data.class_names[0] == "background_alpha0/character01" and data.groups[0] == "background_alpha0"
    # strokes are bright, the background dark
    assert data.images.float().mean() < 30 and data.images.max() > 200
    ev = load_omniglot_split("test", str(tmp_path), image_size=20, cache=str(tmp_path / "c"))  # omniglot/ sub-folder
    assert ev.images.shape == (24, 1, 20, 20) and ev.class_names[0].startswith("evaluation_alpha0")
    # cached: a second load reads the .npz and gives the same arrays
    again = load_omniglot_split("train", str(tmp_path / "omniglot"), image_size=28, cache=str(tmp_path / "c"))
    assert torch.equal(again.images, data.images) and list((tmp_path / "c").glob("omniglot-train-28-*.npz"))


def test_omniglot_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected the folder 'images_background'"):
        load_omniglot_split("train", str(tmp_path))
    (tmp_path / "images_evaluation" / "a" / "b").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no PNG files"):
        load_omniglot_split("val", str(tmp_path), cache=str(tmp_path))
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_omniglot_split("dev", str(tmp_path))


# ---------------------------------------------------------------- episodes
def toy_set(n_classes=12, per_class=(5, 9), size=8, seed=0):
    rng = np.random.RandomState(seed)
    counts = rng.randint(per_class[0], per_class[1] + 1, n_classes)
    labels = np.repeat(np.arange(n_classes), counts)
    rng.shuffle(labels)
    # each image encodes its own index in pixel 0 and its class in pixel 1
    imgs = np.zeros((len(labels), size, size), np.uint8)
    imgs[:, 0, 0] = np.arange(len(labels)) % 256
    imgs[:, 0, 1] = labels
    return from_numpy(imgs, labels)


def test_episode_structure():
    data = toy_set()
    ways, shots, queries = 5, 2, 3
    ep = sample_episodes(data, 7, ways, shots, queries, torch.Generator().manual_seed(0))
    T = ways * (shots + queries)
    assert ep.images.shape == (7, T, 1, 8, 8) and ep.labels.shape == (7, T) and ep.n_support == ways * shots
    true_class = ep.images[:, :, 0, 0, 1].long()  # (B, T) the dataset class of each shown image
    for b in range(7):
        assert len(set(ep.classes[b].tolist())) == ways  # distinct classes
        # the episode label of every image points at its real class
        assert torch.equal(ep.classes[b][ep.labels[b]], true_class[b])
        # K support and Q queries per class, all images distinct
        assert torch.bincount(ep.labels[b, :ep.n_support], minlength=ways).tolist() == [shots] * ways
        assert torch.bincount(ep.labels[b, ep.n_support:], minlength=ways).tolist() == [queries] * ways
        assert len(set(ep.images[b, :, 0, 0, 0].tolist())) == T
    # support order is shuffled (not sorted by label) in some episode
    assert any(ep.labels[b, :ep.n_support].tolist() != sorted(ep.labels[b, :ep.n_support].tolist()) for b in range(7))


def test_episodes_are_seeded():
    data = toy_set()
    a = sample_episodes(data, 4, 5, 1, 2, torch.Generator().manual_seed(3))
    b = sample_episodes(data, 4, 5, 1, 2, torch.Generator().manual_seed(3))
    c = sample_episodes(data, 4, 5, 1, 2, torch.Generator().manual_seed(4))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_episodes_errors():
    data = toy_set(n_classes=4, per_class=(3, 3))
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="ways=5 but the split has only 4 classes"):
        sample_episodes(data, 2, 5, 1, 1, g)
    with pytest.raises(ValueError, match="shots \\+ queries = 4 but some class has only 3"):
        sample_episodes(data, 2, 3, 2, 2, g)


def test_imageset_validation_and_normalise():
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(torch.zeros(2, 1, 4, 4), torch.zeros(2), ["a"])
    data = toy_set()
    x = data.normalise(data.images)
    assert x.dtype == torch.float32 and abs(x.mean().item()) < 1e-4


# ---------------------------------------------------------------- augmentation
def test_augment_crop_is_a_shifted_window():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 6 * 6).view(2, 3, 6, 6).float() + 1
    assert torch.equal(augment(x, g, padding=0, flip=False), x)
    y = augment(x, g, padding=2, flip=False)
    assert y.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [(oy, ox) for oy in range(5) for ox in range(5)
                   if torch.equal(padded[i, :, oy:oy + 6, ox:ox + 6], y[i])]
        assert windows  # the crop is one window of the padded image, same for all channels


def test_augment_flip_and_seed():
    x = torch.arange(64 * 4 * 4, dtype=torch.uint8).view(64, 1, 4, 4)
    y = augment(x, torch.Generator().manual_seed(1), padding=0, flip=True)
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(y[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept)) and 15 < sum(flipped) < 49
    z = augment(x, torch.Generator().manual_seed(1), padding=0, flip=True)
    assert torch.equal(y, z) and y.dtype == torch.uint8


# ---------------------------------------------------------------- untrusted files: messages, bounded memory
def test_sized_constructors_refused_without_allocating(tmp_path):
    import struct

    for body in (b"c__builtin__\nbytearray\nJ" + struct.pack("<i", 10**7) + b"\x85R.",
                 b"c__builtin__\nbytes\nJ" + struct.pack("<i", 10**7) + b"\x85R.",
                 b"c__builtin__\nrange\nJ" + struct.pack("<i", 10**7) + b"\x85R.",
                 b"cnumpy\nndarray\nJ" + struct.pack("<i", 10**7) + b"\x85\x85R."):
        (tmp_path / "p.pickle").write_bytes(b"\x80\x02" + body)
        assert len(body) < 40
        with pytest.raises(ValueError, match=str(tmp_path / "p.pickle")):
            safe_load(tmp_path / "p.pickle")


def test_unsafe_pickle_and_bad_labels_are_messages(tmp_path, capsys):
    from plasticnet.cli import main

    folder = fake_pickles(tmp_path / "evil", "cifar-fs", 32)
    write_pickle(folder / PICKLE_FILES["cifar-fs"]["train"], Evil())
    run = tmp_path / "run"
    argv = ["train", "fewshot-images", "--set", "dataset=cifar-fs", "--run-dir", str(run), "--quiet"]
    assert main([*argv, "--set", f"data_dir={folder}"]) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and "system" in err and not run.exists()
    folder = fake_pickles(tmp_path / "labels", "cifar-fs", 32, n_classes=1, per_class=1)
    write_pickle(folder / PICKLE_FILES["cifar-fs"]["val"], {"data": np.zeros((1, 32, 32, 3), np.uint8),
                                                            "labels": [[1, 2]]})
    with pytest.raises(ValueError, match=r"CIFAR_FS_val.pickle: labels must be one integer or string per image"):
        load_pickle_split("cifar-fs", "val", str(folder))


def test_huge_png_is_a_message(tmp_path):
    import struct
    import zlib

    from PIL import Image

    fake_omniglot(tmp_path)
    png = next((tmp_path / "images_background").rglob("*.png"))
    Image.new("L", (1, 1)).save(png)
    raw = bytearray(png.read_bytes())  # IHDR: width, height at bytes 16..24, its CRC at 29..33
    raw[16:24] = struct.pack(">II", 14000, 14000)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    png.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"omniglot image {png}"):
        load_omniglot_split("train", str(tmp_path), cache=str(tmp_path / "c"))


@pytest.mark.parametrize("drawings", [1, 0])
def test_too_small_a_dataset_is_refused_before_the_run_folder(tmp_path, capsys, drawings):
    from plasticnet.cli import main

    fake_omniglot(tmp_path / "data", drawings=max(drawings, 1))
    if drawings == 0:
        for png in (tmp_path / "data").rglob("*.png"):
            png.unlink()
    run = tmp_path / "run"
    assert main(["train", "fewshot-images", "--set", "dataset=omniglot", "--set", f"data_dir={tmp_path / 'data'}",
                 "--set", f"cache_dir={tmp_path / 'c'}", "--run-dir", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert ("some class has only 1 images" if drawings else "no PNG files") in err and not run.exists()
