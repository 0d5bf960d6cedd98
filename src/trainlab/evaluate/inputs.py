"""New images for a finished run, as its network takes them: uint8 (N, C, H, W) of the run's shape.

Image files (PNG, JPEG, ...) are converted with PIL to the run's channels (grey: mode L; colour: RGB)
and, with `resize=true`, resized to its height × width (bilinear), the way MNIST's digits were scaled
into their 28×28 boxes; the network then scales them x/255 as in training. Arrays (.npz, IDX) must
already have the run's shape: N×C×H×W, N×H×W×C, or N×H×W for one channel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainlab.errors import fail

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
WHAT = "an image, a folder of images, an .npz of images or an IDX file (MNIST's *-ubyte)"


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


def _input_path(source: str | None) -> Path:
    """`input` as a path: a file, or a folder holding image files."""
    if source is None:
        raise fail("input", None, WHAT)
    path = Path(str(source)).expanduser()
    if path.is_dir() and not _image_files(path):
        raise fail("input", source, f"{WHAT} (this folder holds no {', '.join(IMAGE_SUFFIXES)} file)")
    if not path.exists():
        raise fail("input", source, f"{WHAT} (no such file or folder)")
    return path


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_inputs(
    source: str | None, image_shape: tuple[int, int, int], resize: bool
) -> tuple[torch.Tensor, list[str]]:
    """(images as uint8 (N, C, H, W), one name per image: its file, or `file[i]` for an array's i-th)."""
    path = _input_path(source)
    if path.is_dir():
        files = _image_files(path)
        return torch.stack([_read_image(f, image_shape, resize) for f in files]), [str(f) for f in files]
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _read_image(path, image_shape, resize).unsqueeze(0), [str(path)]
    array = _read_npz(path) if path.suffix.lower() == ".npz" else _read_idx_file(path)
    images = _as_images(array, image_shape, str(source))
    return images, [f"{path}[{i}]" for i in range(len(images))]


def _read_image(path: Path, image_shape: tuple[int, int, int], resize: bool) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    channels, height, width = image_shape
    if channels not in (1, 3):  # neither grey nor RGB: PIL has no such mode to convert to
        raise fail("input", str(path), f"an array file: the run's images have {channels} channels")
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (width, height) and resize:
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    # What PIL raises for a file it cannot decode (folder.py's reader catches the same).
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise fail("input", str(path), f"{WHAT} (PIL cannot read it: {err})") from None
    if array.shape[:2] != (height, width):
        raise fail(
            "input",
            str(path),
            f"an image of the run's {width}×{height} pixels (it has {array.shape[1]}×{array.shape[0]}; "
            "resize=true scales it)",
        )
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy())


def _read_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            names = list(arrays.files)
            name = next(
                (n for n in ("images", "x", "x_test") if n in names), names[0] if len(names) == 1 else None
            )
            if name is None:
                raise fail(
                    "input",
                    str(path),
                    f"an .npz with one array, or one named images or x (it has {', '.join(names)})",
                )
            return arrays[name]
    except (OSError, ValueError) as err:
        raise fail("input", str(path), f"{WHAT} (numpy cannot read it: {err})") from None


def _read_idx_file(path: Path) -> np.ndarray:
    import struct

    from trainlab.data.sources import _read_idx  # the training data's own reader

    try:
        return _read_idx(path).numpy()
    except (OSError, EOFError, ValueError, struct.error) as err:
        raise fail("input", str(path), f"{WHAT} ({err})") from None


def _as_images(array: np.ndarray, image_shape: tuple[int, int, int], source: str) -> torch.Tensor:
    """`array` as uint8 (N, C, H, W): uint8 as is, floats in [0, 1] scaled by 255; refused unless one of
    its layouts has the run's shape."""
    channels, height, width = image_shape
    shape = tuple(array.shape)
    if shape[1:] == (height, width, channels) and shape[1:] != image_shape:
        array = array.transpose(0, 3, 1, 2)
    elif len(shape) == 3 and channels == 1:
        array = array[:, None]
    if tuple(array.shape[1:]) != image_shape or not len(array):
        layouts = f"N×{_shape(image_shape)} or N×{height}×{width}×{channels}" + (
            f" or N×{height}×{width}" if channels == 1 else ""
        )
        raise fail(
            "input",
            source,
            f"images of the run's shape, {layouts} (it holds {_shape(shape) or 'one number'})",
        )
    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(array))
    if np.issubdtype(array.dtype, np.floating) and array.size and array.min() >= 0 and array.max() <= 1:
        return torch.from_numpy(np.rint(array * 255).astype(np.uint8))
    raise fail("input", source, f"uint8 images or floats in [0, 1] (it holds {array.dtype})")
