"""Image files and bytes -> uint8 (C, H, W) arrays: the one image decoder of clfops.

Training's image-folder reader (data/folder.py), `clfops predict` and both served MLflow models (the torch pyfunc
and the torch-free ONNX one) decode through `decode`, so an image gives the same pixels everywhere: Pillow mode
handling (16-bit scaled, transparency composited on white, palette/CMYK/YCbCr to RGB), then grey or RGB for the
model's channels, then a bilinear resize to the model's size.

This file imports only numpy and Pillow, never clfops: the ONNX model logs it as its code (MLflow `code_paths`)
and imports it as the top-level module `image_bytes` where neither clfops nor torch is installed. Its own path,
`clfops.image_bytes`, is fixed too: every torch pyfunc model already logged carries a serving/pyfunc_model.py that
imports it by that name, and in a process that imported a newer clfops first that name resolves here.

Over REST an image travels as base64 text (`{"inputs": {"image": ["<base64>", ...]}}` or
`{"dataframe_split": {"columns": ["image"], "data": [["<base64>"], ...]}}`); `encoded_images` finds such a column
in whatever MLflow's parser made of the request and decodes it. Every user mistake is an `ImageError` (a
ValueError) with one line naming the image and what is wrong; the models turn it into HTTP 400.
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

# Pillow signals damaged files with any of these (SyntaxError for bad PNG chunks, struct.error for short headers).
PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"LA", "RGBA", "P", "PA"})  # P may carry a transparent palette index
IMAGE_COLUMN = "image"  # the column / input name of encoded images in a request


class ImageError(ValueError):
    """An image that cannot be decoded, or a batch of images of the wrong form: one line for the caller."""


def _on_white(img: Image.Image) -> Image.Image:
    """Composite onto white: transparent areas of icons/scans are background, and black would
    invert their meaning for a model trained on white-background images."""
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    """16-bit (I;16*) and 32-bit int (I, how some readers hand out 16-bit data) -> 8-bit L.

    Values are taken as 0..65535 (clipped) and scaled with rounding, v * 255 / 65535, so that
    65535 -> 255 exactly; a plain `>> 8` would be off by up to one level.
    """
    values = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))


def normalise_mode(img: Image.Image) -> Image.Image:
    """Any supported mode -> L (grayscale sources) or RGB (everything else)."""
    mode = img.mode
    if mode in ("1", "L"):
        return img.convert("L")
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_l(img)
    if mode == "LA":
        return _on_white(img).convert("L")
    if mode in _ALPHA_MODES:
        return _on_white(img)
    if mode == "RGB":
        return img
    if mode in ("CMYK", "YCbCr"):
        return img.convert("RGB")
    raise ImageError(f"unsupported image mode {mode}")


def decode(image: str | Path | BinaryIO, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image file (path or open binary file) as a (channels, height, width) uint8 array.

    Raises ImageError with Pillow's first line when the data is not a readable image."""
    try:
        with Image.open(image) as img:
            img.load()
            out = normalise_mode(img)
            if channels == 1 and out.mode != "L":
                out = out.convert("L")
            elif channels == 3 and out.mode != "RGB":
                out = out.convert("RGB")
            if (out.height, out.width) != tuple(size):
                out = out.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(out, dtype=np.uint8)
    except ImageError:
        raise
    except Image.UnidentifiedImageError:  # its message names the file object, meaningless for bytes
        raise ImageError("unreadable image (not a PNG, JPEG, WebP, BMP or other format Pillow reads)") from None
    except PIL_ERRORS as exc:
        raise ImageError(f"unreadable image ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def decode_one(data: str | bytes, channels: int, size: tuple[int, int]) -> np.ndarray:
    """Base64 text (what JSON carries) or raw file bytes (Python callers) -> (channels, H, W) uint8."""
    if isinstance(data, str):
        try:
            data = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ImageError("not base64 text (send each image file base64-encoded)") from None
    return decode(io.BytesIO(data), channels, size)


def _image_values(model_input: Any) -> list[Any] | None:
    """The one column of images in what MLflow parsed (dict, DataFrame, array, list), else None."""
    if isinstance(model_input, dict):
        if IMAGE_COLUMN in model_input:
            model_input = model_input[IMAGE_COLUMN]
        elif len(model_input) == 1:
            model_input = next(iter(model_input.values()))
        else:
            return None
    if hasattr(model_input, "columns") and hasattr(model_input, "iloc"):  # a pandas DataFrame (no pandas import)
        columns = list(model_input.columns)
        if IMAGE_COLUMN in columns:
            return list(model_input[IMAGE_COLUMN])
        return list(model_input.iloc[:, 0]) if len(columns) == 1 else None
    if isinstance(model_input, np.ndarray):
        return list(model_input.ravel()) if model_input.dtype.kind in "USO" else None
    if isinstance(model_input, (list, tuple)):
        return list(model_input)
    return None


def encoded_images(model_input: Any, channels: int, size: tuple[int, int]) -> np.ndarray | None:
    """Encoded images (base64 text or bytes, one per row) -> uint8 (N, channels, H, W); None when the input
    holds pixel arrays instead (the caller's array path takes it)."""
    values = _image_values(model_input)
    if not values or not isinstance(values[0], (str, bytes)):
        return None
    out = np.empty((len(values), channels, *size), dtype=np.uint8)
    for i, value in enumerate(values):
        if not isinstance(value, (str, bytes)):
            raise ImageError(f"image {i}: expected base64 text like the other images, got {type(value).__name__}")
        try:
            out[i] = decode_one(value, channels, size)
        except ImageError as err:
            raise ImageError(f"image {i}: {err}") from None
    return out


def pixel_array(model_input: Any) -> np.ndarray:
    """Pixel arrays as MLflow hands them over ({name: array}, a one-column DataFrame of per-row images, a list,
    an array) -> one ndarray, not yet checked (`check_batch`)."""
    if isinstance(model_input, dict) and len(model_input) == 1:
        model_input = next(iter(model_input.values()))
    if hasattr(model_input, "columns") and hasattr(model_input, "iloc"):
        if len(model_input.columns) != 1:
            raise ImageError(f"expected one column of images, got columns {list(model_input.columns)}")
        model_input = list(model_input.iloc[:, 0])
    try:
        if isinstance(model_input, (list, tuple)) and model_input:
            return np.stack([np.asarray(item) for item in model_input])
        return np.asarray(model_input)
    except ValueError:
        raise ImageError("images of different shapes in one batch: send them as base64 image files") from None


def check_batch(images: np.ndarray, channels: int, size: tuple[int, int]) -> np.ndarray:
    """A batch the model can take: at least one image, uint8 (N, channels, H, W) in 0..255, as given or from
    (N, H, W) / (N, H, W, C) layouts. Raises ImageError naming the expected shape."""
    x = np.asarray(images)
    want = (channels, *size)
    if x.ndim == 0 or len(x) == 0:
        raise ImageError("empty batch: send at least one image")
    if x.dtype.kind not in "fiu":
        raise ImageError(f"images must be numbers on the 0-255 scale or base64 image files, got dtype {x.dtype}")
    if x.ndim == 3 and channels == 1:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1:] != want and x.shape[3] == channels:
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1:] != want:
        raise ImageError(f"wrong image shape {tuple(x.shape)}: expected (N, {channels}, {size[0]}, {size[1]})")
    if x.dtype != np.uint8:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 255:
            raise ImageError(f"pixel values must be in 0..255, got {lo:g}..{hi:g}")
        x = np.rint(x).astype(np.uint8)
    return np.ascontiguousarray(x)
