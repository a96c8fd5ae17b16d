"""Image files to pixels: the one reader of train.py, test.py and detect.py.

`read_image` decodes a file to a uint8 3xHxW RGB tensor whatever its mode (gray, CMYK, alpha,
palette, 16-bit), with torchvision's decoders, and Pillow for the formats they do not read.

EXIF orientation is not applied, in every script: COCO's boxes and keypoints refer to the stored
pixels, so a photo a phone marked "rotate 90" is evaluated, trained on and drawn as stored, and
detect.py's JSON coordinates are those of test.py and of COCO's tools (`EXIF_ORIENTATION` is
recorded in detect.py's JSON). Rotate such a file first (e.g. `mogrify -auto-orient`) to have it
upright. An image whose header claims more than `max_pixels` pixels is refused before decoding.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from utils import DEFAULT_MAX_IMAGE_PIXELS, DatasetError, check_image_pixels, pillow_pixel_limit

try:
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # a torchvision without image decoders: PIL does it all
    decode_image = ImageReadMode = None

EXIF_ORIENTATION = "not applied (stored pixels, as COCO's labels)"

# Where a JPEG's end-of-image marker is looked for: some cameras append a little data after it.
JPEG_TAIL_BYTES = 4096


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
               allow_truncated: bool = False) -> torch.Tensor:
    """Read an image file as uint8 3xHxW RGB, whatever its mode (gray, CMYK, alpha, palette, 16-bit).

    EXIF orientation is not applied (module docstring). An image whose header claims more than
    `max_pixels` pixels is refused before decoding; a file that is not one image (damaged, an
    animation, not an image) raises DatasetError naming it. `allow_truncated`: a JPEG cut off
    before its end is decoded as far as it goes (detect.py draws on it, with a warning) instead of
    refused (a training image must be whole).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DatasetError(f"cannot read image {path}: {e.strerror or e}") from None
    check_image_pixels(io.BytesIO(data), path, max_pixels)
    try:
        image = _decode_with_torchvision(data)
    except (RuntimeError, ValueError):
        # Formats torchvision does not decode (BMP, TIFF, ...), cut or corrupt files: let PIL decide.
        truncated = allow_truncated and jpeg_truncated(data)
        image = _decode_with_pil(data, path, max_pixels, truncated)
        if truncated:
            print(f"warning: {path} is a truncated JPEG (cut off before its end); using the part that is there",
                  file=sys.stderr)
    if image.ndim != 3:
        raise DatasetError(f"cannot decode image {path}: an animation of {len(image)} frames, not one image")
    if image.dtype == torch.uint16:  # 16-bit PNG: keep the high byte, as an 8-bit export would
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


@contextlib.contextmanager
def _pillow_truncated_ok(allowed: bool) -> Iterator[None]:
    """Pillow's switch for decoding cut files, on for one decode only, then put back."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = allowed
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _decode_with_torchvision(data: bytes) -> torch.Tensor:
    if decode_image is None:
        raise RuntimeError("this torchvision has no image decoders")
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders for torchcodec; they are still the fastest
        # way to a CHW tensor, and PIL takes over once they are gone.
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def _decode_with_pil(data: bytes, path: str | os.PathLike, max_pixels: int, truncated_ok: bool = False) -> torch.Tensor:
    try:
        with pillow_pixel_limit(max_pixels), _pillow_truncated_ok(truncated_ok), Image.open(io.BytesIO(data)) as im:
            if getattr(im, "n_frames", 1) > 1:
                raise DatasetError(f"cannot decode image {path}: an animation of {im.n_frames} frames, not one image")
            im.load()
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                # PIL's convert("RGB") clips 16-bit gray to 255 instead of scaling it.
                gray = (np.asarray(im, dtype=np.int64) >> 8).clip(0, 255).astype(np.uint8)
                rgb = np.repeat(gray[:, :, None], 3, axis=2)
            else:
                rgb = np.asarray(im.convert("RGB"))
    except DatasetError:
        raise
    except UnidentifiedImageError:
        raise DatasetError(f"cannot decode image {path}: unknown format or not an image") from None
    except Exception as e:  # PIL raises many types for bad data; all mean "not an image"
        raise DatasetError(f"cannot decode image {path}: {' '.join(str(e).split())}") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)  # HWC memory, like torchvision's decoder


def jpeg_truncated(data: bytes) -> bool:
    """A JPEG without its end-of-image marker (FF D9) near its end: a cut download or copy."""
    return data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-JPEG_TAIL_BYTES:]
