"""`data=image_folder`: torchvision's ImageFolder layout (`<root>/<class>/<image>`), decoded once into a
uint8 cache, then trained from memory as MNIST is.

`<root>/train/`, `<root>/val/` and `<root>/test/` are used as given when present; what is missing is held
out of the training images by `data.test_size` / `data.val_size`, stratified by class with
`data.split_seed`. The cache (`<data.cache>/<folder>-<hash>.npz`) holds the decoded images of every file
and is rebuilt when the file list, a size or a modification time changes (or the image size or channels).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from trainlab.data.sources import Splits
from trainlab.data.split import held_out, hold_out, shuffled, val_share
from trainlab.errors import DataError, fail
from trainlab.rules import is_int

log = logging.getLogger(__name__)

SUBSETS = ("train", "val", "test")
_CACHE_FORMAT = 1  # bump when the cache's contents change meaning


@dataclass(frozen=True)
class Listing:
    """The folder's images: paths (relative to root), their class and subset, and the class names."""

    root: Path
    files: list[str]
    labels: list[int]
    subsets: list[str]  # "train", "val" or "test" where the folder says so, else "train"
    class_names: tuple[str, ...]
    layout: str  # "subfolders" (train/ [val/] [test/]) or "classes" (class folders at the root)


def _image_suffixes() -> frozenset[str]:
    """Every file extension PIL can read (`.png`, `.jpg`, `.webp`, `.tif`, `.bmp`, `.ppm`, …)."""
    from PIL import Image

    return frozenset(Image.registered_extensions())


def _folders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_images(root: str | None) -> Listing:
    """List the folder without reading an image: the class folders and their image files (hidden files
    and files PIL has no reader for are left out). Raises DataError for an empty folder or class."""
    if not isinstance(root, str) or not root:
        raise fail("data.root", root, "the folder that holds one folder of images per class")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise fail("data.root", root, "an existing folder of class folders (<root>/<class>/<image>)")
    subsets = [s for s in SUBSETS if (base / s).is_dir()]
    layout = "subfolders" if "train" in subsets else "classes"
    parts = [(base / s, s) for s in subsets] if layout == "subfolders" else [(base, "train")]
    class_names = tuple(p.name for p in _folders(parts[0][0]))
    if not class_names:
        raise DataError(f"data.root={root}: {parts[0][0]} holds no class folders (<class>/<image> files)")
    suffixes = _image_suffixes()
    files: list[str] = []
    labels: list[int] = []
    subset_of: list[str] = []
    for folder, subset in parts:
        for class_dir in _folders(folder):
            if class_dir.name not in class_names:
                raise DataError(
                    f"data.root={root}: {class_dir} is a class that {parts[0][0]} does not have; "
                    f"the classes are {', '.join(class_names)}"
                )
            images = sorted(
                p
                for p in class_dir.rglob("*")
                if p.suffix.lower() in suffixes and p.is_file() and not p.name.startswith(".")
            )
            if not images and subset == "train":
                raise DataError(f"data.root={root}: class folder {class_dir} holds no images PIL can read")
            files += [str(p.relative_to(base)) for p in images]
            labels += [class_names.index(class_dir.name)] * len(images)
            subset_of += [subset] * len(images)
    return Listing(base, files, labels, subset_of, class_names, layout)


def check_folder(cfg: DictConfig) -> None:
    """The folder's keys, and a folder of class folders with images in each (listed, not read)."""
    size = cfg.get("image_size")
    square = is_int(size) and size >= 1
    pair = OmegaConf.is_list(size) and len(size) == 2 and all(is_int(s) and s >= 1 for s in size)
    if not (size is None or square or pair):
        raise fail("data.image_size", size, "null (the files' size), an integer >= 1 or [height, width]")
    if cfg.channels not in (1, 3):
        raise fail("data.channels", cfg.channels, "1 (grayscale) or 3 (RGB)")
    if not cfg.get("cache"):
        raise fail("data.cache", cfg.get("cache"), "the folder the decoded images are kept in")
    check_held_out(cfg, list_images(cfg.root))


def check_held_out(cfg: DictConfig, listing: Listing) -> None:
    """What the folder lacks is held out of its training images as `load_image_folder` holds it out: the
    test images first (so `data.test_size` must say how many), then the validation images of the rest."""
    given = set(listing.subsets)
    images = listing.subsets.count("train")
    if "test" not in given:
        if cfg.get("test_size") is None:
            raise fail(
                "data.test_size",
                None,
                f"a fraction in (0, 1) or an integer count >= 1 ({cfg.root} has no test/ folder: the test "
                "images are held out of the others)",
            )
        images -= held_out("data.test_size", cfg.test_size, images)
    if "val" not in given:
        held_out("data.val_size", val_share(cfg.get("val_size")), images)


def image_size(cfg: DictConfig) -> tuple[int, int] | None:
    """`data.image_size` as (height, width): an integer is a square; null keeps the files' size."""
    size = cfg.get("image_size")
    if size is None:
        return None
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def describe_folder(cfg: DictConfig) -> tuple[tuple[int, int, int], tuple[str, ...]]:
    """The image shape and class names, from the listing and one image's header."""
    from PIL import Image

    listing = list_images(cfg.root)
    size = image_size(cfg)
    if size is None:
        first = listing.root / listing.files[0]
        try:
            with Image.open(first) as image:
                size = (image.height, image.width)
        except OSError as err:
            raise DataError(f"data.root={cfg.root}: {first} is not an image PIL can read ({err})") from None
    return (cfg.channels, *size), listing.class_names


def _cache_key(listing: Listing, cfg: DictConfig) -> str:
    """A hash of what the decoded images depend on: every file's path, size and modification time, the
    image size and the channels."""
    digest = hashlib.sha256(f"{_CACHE_FORMAT} {image_size(cfg)} {cfg.channels}".encode())
    for name, subset in zip(listing.files, listing.subsets, strict=True):
        stat = (listing.root / name).stat()
        digest.update(f"\0{subset}\0{name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _cache_path(listing: Listing, cfg: DictConfig) -> Path:
    """One cache file per folder, image size and channels (a changed file overwrites it, not adds one)."""
    where = hashlib.sha256(f"{listing.root.resolve()} {image_size(cfg)} {cfg.channels}".encode())
    return Path(cfg.cache).expanduser() / f"{listing.root.resolve().name}-{where.hexdigest()[:12]}.npz"


def _decode(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 (H, W, C): converted to `mode` (L or RGB), resized (bilinear) if `size` is set."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if size is not None and (image.height, image.width) != size:
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"data.root: {path} is not an image PIL can read ({err}); remove it") from None
    return array[:, :, None] if array.ndim == 2 else array


def _decode_all(listing: Listing, cfg: DictConfig) -> np.ndarray:
    """Every image as uint8 (N, C, H, W), decoded on a few threads (PIL releases the GIL while it decodes),
    with a progress bar. Without `data.image_size` all images must have one size."""
    from tqdm import tqdm

    mode, size = ("L" if cfg.channels == 1 else "RGB"), image_size(cfg)
    paths = [listing.root / name for name in listing.files]
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        decoded = pool.map(lambda p: _decode(p, mode, size), paths, chunksize=64)
        bar = tqdm(decoded, total=len(paths), desc=f"Decoding {listing.root.name}", unit="img", disable=None)
        arrays = list(bar)
    sizes = [a.shape[:2] for a in arrays]
    other = next((i for i, hw in enumerate(sizes) if hw != sizes[0]), None)
    if other is not None:
        (h0, w0), (h1, w1) = sizes[0], sizes[other]
        raise fail(
            "data.image_size",
            None,
            f"an integer or [height, width]: the images differ in size ({paths[0]} is {w0}×{h0}, "
            f"{paths[other]} is {w1}×{h1})",
        )
    return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))


def cached_images(listing: Listing, cfg: DictConfig) -> np.ndarray:
    """The decoded images (N, C, H, W) uint8, from the cache when its key matches the folder, else decoded
    and written to it."""
    key, path = _cache_key(listing, cfg), _cache_path(listing, cfg)
    if path.is_file():
        try:
            with np.load(path) as cache:
                if str(cache["key"]) == key:
                    log.info("image_folder: %d images from the cache %s", len(listing.files), path)
                    return cache["images"]
        except (OSError, ValueError, KeyError, EOFError):
            log.warning("image_folder: the cache %s is unreadable; decoding again", path)
    images = _decode_all(listing, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside it under a name of its own, then renamed over it: runs that decode at once (DDP ranks,
    # a sweep's parallel jobs) each leave a whole file, and a killed run leaves the previous one.
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".partial", delete=False) as f:
        np.savez(f, key=np.array(key), images=images, files=np.array(json.dumps(listing.files)))
    os.replace(f.name, path)
    log.info("image_folder: decoded %d images of %s into %s", len(images), listing.root, path)
    return images


def load_image_folder(cfg: DictConfig) -> Splits:
    """The folder's train, validation and test splits (see the module docstring)."""
    listing = list_images(cfg.root)
    images = torch.from_numpy(cached_images(listing, cfg))
    labels = torch.tensor(listing.labels, dtype=torch.long)
    subsets = np.array(listing.subsets)
    index = {s: torch.from_numpy(np.flatnonzero(subsets == s)) for s in SUBSETS}
    given = [s for s in SUBSETS if len(index[s])]
    split = f"folders {', '.join(given)}" if listing.layout == "subfolders" else "class folders at the root"
    held_out = []
    train = index["train"]
    for subset, key in (("test", "test_size"), ("val", "val_size")):  # test first: val_size is of the rest
        if subset not in given:
            size = val_share(cfg[key]) if key == "val_size" else cfg[key]
            mask = hold_out(f"data.{key}", size, labels[train], cfg.split_seed)
            index[subset], train = train[mask], train[~mask]
            held_out.append(f"{key}={size}")
    train = shuffled(train, cfg.split_seed)
    if held_out:
        split += f"; held out (stratified, split_seed={cfg.split_seed}): {', '.join(held_out)}"
    log.info(
        "image_folder: %d training, %d validation, %d test images in %d classes (%s)",
        len(train),
        len(index["val"]),
        len(index["test"]),
        len(listing.class_names),
        split,
    )
    return Splits(
        images[train],
        labels[train],
        images[index["test"]],
        labels[index["test"]],
        str(listing.root),
        len(listing.class_names),
        images[index["val"]],
        labels[index["val"]],
        split,
    )
