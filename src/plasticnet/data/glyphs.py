"""Glyphs: an offline, Omniglot-like few-shot dataset rendered from matplotlib's fonts.

Classes are the base letters of 13 scripts (Arabic, Armenian, Canadian
syllabics, Cyrillic, Georgian, Greek, Hebrew, Lao, Latin, N'Ko, Ogham, Old
Italic, Tifinagh): code points of category L* with no Unicode decomposition
(so no accented copies) that at least ``MIN_FACES`` of the DejaVu and STIX
faces shipped inside matplotlib's wheel can draw; scripts with fewer than
``MIN_CLASSES`` such letters (or ``MIN_KEPT`` after de-duplication) are left
out. A class's "drawings" are its renderings in those faces, each with a
random stroke width (erode / keep / dilate) and a random affine jitter
(rotation ±15°, scale, shear, shift), like Omniglot's 20 drawers per
character.

Near-duplicate classes are removed: every class is rendered in its first
face, fitted to the frame, and a class whose images correlate above
``dedup_threshold`` with an earlier kept class is dropped (this removes e.g.
Cyrillic А next to Latin A and o next to O, so novel classes are really novel).

Split by script (seeded): whole scripts go to ``test`` (evaluation, ~20 % of
the classes) and ``val`` (~10 %), the rest to ``train`` (background), so no
evaluation class — nor its script — is ever seen in training.

The result is cached as ``glyphs-v1-<size>px-<n>x-seed<seed>.npz`` in the
cache folder (``$PLASTICNET_CACHE`` or ``~/.cache/plasticnet``).
"""

from __future__ import annotations

import functools
import unicodedata
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import check_choice
from ..runfolder import save_npz_atomic
from .imageset import ImageSet, cache_dir

FACES = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
         "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
         "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
         "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta")
MIN_FACES = 2  # a class needs at least this many faces that draw it
MIN_CLASSES = 20  # scripts with fewer letters are left out
MIN_KEPT = 10  # ... and those with fewer left after removing near-duplicates
CANVAS = 64  # rendering resolution before the final downsampling
SPLIT_FRACTIONS = {"test": 0.2, "val": 0.1}  # share of classes per held-out split (whole scripts)
VERSION = 1


def font_dir() -> Path:
    """The folder of the TrueType fonts inside the installed matplotlib."""
    import matplotlib

    return Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"


@functools.lru_cache(maxsize=None)
def _font(face: str):
    from matplotlib.ft2font import FT2Font

    path = font_dir() / f"{face}.ttf"
    if not path.is_file():
        raise FileNotFoundError(f"font {str(path)!r} not found: the glyph dataset needs matplotlib's fonts "
                                f"(pip install matplotlib)")
    return FT2Font(str(path))


def script_of(char: str) -> str:
    """The script of a letter from its Unicode name (``CYRILLIC``, ``OLD ITALIC``, ...)."""
    words = unicodedata.name(char, "").split()
    if not words:
        return ""
    if words[0] in ("OLD", "CANADIAN") and len(words) > 1:
        return " ".join(words[:2])
    return words[0]


def glyph_classes() -> List[Tuple[str, str, Tuple[str, ...]]]:
    """``(char, script, faces)`` of every candidate class, sorted by script then code point."""
    coverage = {f: set(_font(f).get_charmap()) for f in FACES}
    found: Dict[str, List] = {}
    for cp in sorted(set().union(*coverage.values())):
        ch = chr(cp)
        if unicodedata.category(ch) not in ("Lu", "Ll", "Lo") or unicodedata.decomposition(ch):
            continue
        faces = tuple(f for f in FACES if cp in coverage[f])
        script = script_of(ch)
        if len(faces) >= MIN_FACES and script:
            found.setdefault(script, []).append((ch, script, faces))
    out = []
    for script in sorted(found):
        if len(found[script]) >= MIN_CLASSES:
            out += found[script]
    return out


def render(char: str, face: str, canvas: int = CANVAS, fill: float = 0.75) -> torch.Tensor:
    """``char`` in ``face``, cropped, scaled so its longer side is ``fill · canvas`` and
    centred: float ``(canvas, canvas)`` in [0, 1] (ink = 1); zeros if nothing is drawn."""
    font = _font(face)
    font.clear()
    font.set_size(2 * canvas, 72)  # an em of 2·canvas pixels, downscaled below
    font.set_text(char, 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    img = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    out = torch.zeros(canvas, canvas)
    ys, xs = np.nonzero(img > 0.05)
    if len(ys) == 0:
        return out
    img = torch.from_numpy(img[ys.min():ys.max() + 1, xs.min():xs.max() + 1].copy())
    h, w = img.shape
    k = fill * canvas / max(h, w)
    nh, nw = max(1, round(h * k)), max(1, round(w * k))
    img = F.interpolate(img[None, None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0, 0]
    y0, x0 = (canvas - nh) // 2, (canvas - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = img.clamp(0, 1)
    return out


def jitter(images: torch.Tensor, generator: torch.Generator, rotation: float = 15.0, scale=(0.8, 1.05),
           shear: float = 0.15, shift: float = 0.08) -> torch.Tensor:
    """Random stroke width and affine jitter of ``images (N, S, S)`` in [0, 1] → ``(N, S, S)``.

    Stroke: erode, keep or dilate (3×3 min/max filter). Affine (sampling
    grid of ``F.affine_grid``): ``A = R(θ) · Shear(κ) · diag(s_x, s_y)``,
    ``θ ~ U(±rotation°)``, ``s ~ U(scale)`` per axis, ``κ ~ U(±shear)``,
    shift ``~ U(±shift)`` of the half-frame.
    """
    N = images.shape[0]
    x = images[:, None]
    u = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    stroke = torch.randint(0, 3, (N,), generator=generator)
    dil = F.max_pool2d(x, 3, 1, 1)
    ero = -F.max_pool2d(-x, 3, 1, 1)
    x = torch.where((stroke == 0).view(N, 1, 1, 1), ero, torch.where((stroke == 2).view(N, 1, 1, 1), dil, x))
    th = (u(N) * 2 - 1) * rotation * np.pi / 180
    s = scale[0] + u(N, 2) * (scale[1] - scale[0])
    k = (u(N) * 2 - 1) * shear
    rot = torch.stack([torch.stack([th.cos(), -th.sin()], -1), torch.stack([th.sin(), th.cos()], -1)], -2)
    sh = torch.eye(2).repeat(N, 1, 1)
    sh[:, 0, 1] = k
    A = rot @ sh @ torch.diag_embed(s)  # maps image coords → output coords
    inv = torch.linalg.inv(A)  # the grid samples the input at A⁻¹ (out − t)
    t = (u(N, 2) * 2 - 1) * shift
    theta = torch.cat([inv, -(inv @ t[:, :, None])], dim=2)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


def dedup(classes, threshold: float, size: int = 16) -> List[int]:
    """Indices of the classes kept: a class is dropped when its first-face rendering
    correlates above ``threshold`` with that of an earlier kept class."""
    imgs = torch.stack([render(ch, faces[0]) for ch, _, faces in classes])[:, None]
    v = F.interpolate(imgs, size=(size, size), mode="area").flatten(1)
    v = v - v.mean(1, keepdim=True)
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-8)
    sim = v @ v.T  # (C, C)
    kept: List[int] = []
    for i in range(len(classes)):
        if not kept or sim[i, kept].max() < threshold:
            kept.append(i)
    return kept


def split_scripts(counts: Dict[str, int], seed: int) -> Dict[str, str]:
    """Script → split: scripts in seeded random order fill ``test`` then ``val`` up to
    :data:`SPLIT_FRACTIONS` of the classes (a script overshooting by >30 % is skipped)."""
    total = sum(counts.values())
    order = sorted(counts)
    rng = np.random.RandomState(seed)
    order = [order[i] for i in rng.permutation(len(order))]
    out = {s: "train" for s in order}
    for split, frac in SPLIT_FRACTIONS.items():
        target, have = frac * total, 0
        for s in order:
            if out[s] == "train" and have < target and have + counts[s] <= 1.3 * target:
                out[s] = split
                have += counts[s]
    return out


def build_glyphs(image_size: int = 28, drawings: int = 20, seed: int = 0, dedup_threshold: float = 0.85):
    """Render the whole dataset: ``(images uint8 (N, S, S), labels (N,), chars, scripts, splits)``."""
    classes = glyph_classes()
    classes = [classes[i] for i in dedup(classes, dedup_threshold)]
    counts: Dict[str, int] = {}
    for _, script, _ in classes:
        counts[script] = counts.get(script, 0) + 1
    counts = {s: n for s, n in counts.items() if n >= MIN_KEPT}
    classes = [c for c in classes if c[1] in counts]
    split_of = split_scripts(counts, seed)
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for k, (ch, _, faces) in enumerate(classes):
        order = torch.randperm(len(faces), generator=g).tolist()
        renders = torch.stack([render(ch, faces[j]) for j in order[:drawings]])  # (≤ drawings, CANVAS, CANVAS)
        base = renders[torch.arange(drawings) % len(renders)]  # drawing i in face order[i mod #faces]
        x = F.interpolate(jitter(base, g)[:, None], size=(image_size, image_size), mode="area")[:, 0]
        images.append((x.clamp(0, 1) * 255).round().to(torch.uint8))
        labels += [k] * drawings
    chars = [c for c, _, _ in classes]
    scripts = [s for _, s, _ in classes]
    splits = [split_of[s] for s in scripts]
    return torch.cat(images).numpy(), np.asarray(labels, dtype=np.int64), chars, scripts, splits


def glyphs_path(image_size: int, drawings: int, seed: int, cache=None) -> Path:
    return cache_dir(cache) / f"glyphs-v{VERSION}-{image_size}px-{drawings}x-seed{seed}.npz"


def load_glyphs(split: str, image_size: int = 28, drawings: int = 20, seed: int = 0, cache=None) -> ImageSet:
    """The glyph dataset's ``split`` ∈ {train, val, test}, rendered once and cached as ``.npz``."""
    check_choice("split", split, ("train", "val", "test"))
    path = glyphs_path(image_size, drawings, seed, cache)
    cached = None
    if path.is_file():
        try:
            with np.load(path) as z:
                cached = {k: z[k] for k in ("images", "labels", "chars", "scripts", "splits")}
        except (OSError, ValueError, KeyError, EOFError):  # a damaged cache is rendered again
            cached = None
    if cached is None:
        images, labels, chars, scripts, splits = build_glyphs(image_size, drawings, seed)
        cached = {"images": images, "labels": labels, "chars": np.array(chars), "scripts": np.array(scripts),
                  "splits": np.array(splits)}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_npz_atomic(path, cached, compressed=True)
    images, labels = cached["images"], cached["labels"]
    chars, scripts, splits = (cached[k].tolist() for k in ("chars", "scripts", "splits"))
    keep_classes = [k for k, s in enumerate(splits) if s == split]
    new = {k: i for i, k in enumerate(keep_classes)}
    mask = np.isin(labels, keep_classes)
    lab = torch.tensor([new[k] for k in labels[mask].tolist()], dtype=torch.long)
    return ImageSet(torch.from_numpy(images[mask][:, None].copy()), lab, [chars[k] for k in keep_classes],
                    [scripts[k] for k in keep_classes])
