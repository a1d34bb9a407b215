"""Decoding one source image into a square RGB array of the target size."""
import hashlib
import io

import numpy as np
from PIL import Image, ImageOps


class RejectedImage(Exception):
    """A source file that cannot become a training image; the message is the reason."""


def decode_image(data: bytes, image_size: int, max_pixels: int) -> np.ndarray:
    """Decode encoded image bytes to an (image_size, image_size, 3) uint8 array.

    Centre-crops to a square and resizes with an antialiasing filter.
    Raises RejectedImage with a short reason for anything unusable.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > max_pixels:
                raise RejectedImage(f"too many pixels: {image.width}x{image.height} > {max_pixels}")
            image = ImageOps.exif_transpose(image).convert("RGB")
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.resize((image_size, image_size), Image.Resampling.LANCZOS,
                                 box=(left, top, left + side, top + side))
            return np.asarray(image, dtype=np.uint8)
    except RejectedImage:
        raise
    except Exception as error:  # Pillow raises many types for bad files
        raise RejectedImage(f"cannot decode: {error}") from error


def content_hash(data: bytes) -> str:
    """sha256 of a file's bytes, to keep byte-identical duplicates once."""
    return hashlib.sha256(data).hexdigest()
