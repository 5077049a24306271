"""CIFAR-FS and miniImageNet in the MetaOptNet pickle format, read safely.

Each split is one pickle holding a dict with ``data`` (uint8 ``N × H × W × 3``)
and ``labels`` (N class ids); the file names are those of the MetaOptNet /
Gidaris–Komodakis loaders (also used by the [D23] code):

=============  ======================================================
CIFAR-FS       ``CIFAR_FS_{train,val,test}.pickle``
miniImageNet   ``miniImageNet_category_split_train_phase_train.pickle``,
               ``miniImageNet_category_split_{val,test}.pickle``
=============  ======================================================

``data_dir`` may be the folder holding the pickles or a parent of it (with a
``CIFAR_FS`` / ``miniImageNet`` sub-folder). Pickles are read by
:class:`RestrictedUnpickler`, which builds only numpy arrays and plain
built-in values: a pickle that asks for any other callable is refused.
"""

from __future__ import annotations

import builtins
import codecs
import importlib
import io
import pickle
from pathlib import Path

import numpy as np

from ..checks import check_choice
from .imageset import ImageSet, data_root, from_numpy

PICKLE_FILES = {
    "cifar-fs": {"train": "CIFAR_FS_train.pickle", "val": "CIFAR_FS_val.pickle", "test": "CIFAR_FS_test.pickle"},
    "mini-imagenet": {"train": "miniImageNet_category_split_train_phase_train.pickle",
                      "val": "miniImageNet_category_split_val.pickle",
                      "test": "miniImageNet_category_split_test.pickle"},
}
SUBFOLDERS = {"cifar-fs": ("CIFAR_FS", "CIFAR-FS", "cifar-fs", "cifar_fs"),
              "mini-imagenet": ("miniImageNet", "mini-imagenet", "mini_imagenet", "miniimagenet")}

# built-ins a dataset pickle may call; none of them can be asked for a size (bytes(n), bytearray(n) and
# range are left out: a 40-byte pickle could allocate gigabytes with them), so what they build is bounded
# by the pickle's own bytes
_SAFE_BUILTINS = {"list", "dict", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bool"}
_SAFE_NUMPY = {("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"),
               ("", "ndarray"), ("", "dtype")}


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for something other than numpy arrays and built-in values (a ``ValueError``: bad input)."""


class _ArrayType:
    """Stands for ``numpy.ndarray`` in a pickle: numpy names the class only as the first argument of
    ``_reconstruct``; called itself (``ndarray(shape)``) it would allocate any size, so it is not callable."""


def _bytes_of(kind):
    def build(*args):
        if args and not isinstance(args[0], (bytes, bytearray, str)):
            raise UnsafePickleError(f"refused {kind.__name__}({type(args[0]).__name__}): only {kind.__name__} "
                                    f"of given bytes may appear in a dataset pickle")
        return kind(*args)
    return build


def _reconstruct(subtype, shape, dtype):
    """numpy's ``_reconstruct`` for an empty array (what numpy pickles: the data come with ``__setstate__``)."""
    if subtype is not _ArrayType or not isinstance(shape, tuple) or any(not isinstance(n, int) for n in shape) \
            or np.prod(shape, dtype=np.float64) != 0:
        raise UnsafePickleError(f"refused numpy _reconstruct({subtype!r}, {shape!r}): numpy pickles arrays with an "
                                f"empty shape and their data")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and built-in values only.

    Allowed globals: the built-in containers and scalars (``list``, ``dict``,
    ``set``, ``int``, ``str``, ...), ``bytes``/``bytearray`` of given bytes
    (never of a size), ``_codecs.encode`` (bytes in protocol 2),
    ``numpy.dtype``, numpy's array reconstructors (``_reconstruct`` only of
    the empty array numpy pickles, ``ndarray`` only as its argument) and the
    ``numpy.dtypes`` classes: nothing a pickle can ask to allocate more than
    its own bytes. Anything else raises :class:`UnsafePickleError` naming
    the refused global. Python 2 pickles (the original MetaOptNet files) are
    read with ``latin1``.
    """

    def __init__(self, file, source: str = "pickle"):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return getattr(builtins, name)
        if module in ("builtins", "__builtin__") and name in ("bytes", "bytearray"):
            return _bytes_of(getattr(builtins, name))
        if module == "_codecs" and name == "encode":  # how protocol 2 stores bytes
            return codecs.encode
        if name == "ndarray" and module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray"):
            return _ArrayType
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _reconstruct
        if module == "numpy" and ("", name) in _SAFE_NUMPY:
            return getattr(np, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            return getattr(importlib.import_module("numpy.dtypes"), name)
        for prefix in ("numpy.core.", "numpy._core."):
            if module.startswith(prefix) and (module[len(prefix):], name) in _SAFE_NUMPY:
                sub = module[len(prefix):]
                for mod in ("numpy._core." + sub, "numpy.core." + sub):
                    try:
                        return getattr(importlib.import_module(mod), name)
                    except (ImportError, AttributeError):
                        continue
        raise UnsafePickleError(f"{self.source}: refused to load {module}.{name} — only numpy arrays and "
                                f"built-in values may appear in a dataset pickle")


def safe_load(path) -> object:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(io.BufferedReader(f), source=str(path)).load()
        except UnsafePickleError as err:
            if str(path) in str(err):
                raise
            raise UnsafePickleError(f"{path}: {err}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
                MemoryError, UnicodeDecodeError) as err:  # truncated or not a pickle
            size = path.stat().st_size
            raise ValueError(f"dataset file {path} is damaged or not a pickle ({size} bytes; "
                             f"{type(err).__name__}); replace it with the original file") from None


def find_pickle(dataset: str, split: str, data_dir=None) -> Path:
    """The pickle of ``split`` of ``dataset`` under ``data_dir`` (or ``$PLASTICNET_DATA``)."""
    files = PICKLE_FILES[dataset]
    check_choice("split", split, files)
    root = data_root(data_dir, dataset)
    name = files[split]
    candidates = [root / name] + [root / sub / name for sub in SUBFOLDERS[dataset]]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"{dataset} split {split!r}: expected {name!r} in {str(root)!r} "
                            f"(or in a sub-folder {' / '.join(SUBFOLDERS[dataset])}); "
                            f"the {dataset} folder holds {', '.join(files.values())}")


def load_pickle_split(dataset: str, split: str, data_dir=None) -> ImageSet:
    """Load ``split`` ∈ {train, val, test} of ``cifar-fs`` or ``mini-imagenet`` as an :class:`ImageSet`."""
    path = find_pickle(dataset, split, data_dir)
    obj = safe_load(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict with 'data' and 'labels', got {type(obj).__name__}")
    obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj or "labels" not in obj:
        raise ValueError(f"{path}: expected keys 'data' and 'labels', found {sorted(map(str, obj))}")
    data = np.asarray(obj["data"])
    if data.dtype != np.uint8 or data.ndim != 4 or data.shape[-1] != 3:
        raise ValueError(f"{path}: 'data' must be uint8 N×H×W×3, got {data.dtype} {data.shape}")
    try:
        return from_numpy(data, obj["labels"])
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
