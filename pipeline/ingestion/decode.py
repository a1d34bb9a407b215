"""Decoding one source image into a square RGB array of the target size."""
import hashlib
import io
import warnings
from contextlib import contextmanager

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps

try:  # Lanczos-3 in AVX2/NEON (the fast_image_resize crate); setup.py names the platforms with wheels
    from cykooz_resizer import CropBox, FilterType, ResizeAlg, ResizeOptions, Resizer
except ImportError:
    Resizer = None

# Formats an image collection plausibly holds. Naming them keeps Pillow from handing
# arbitrary files to plugins such as EPS, which runs Ghostscript on the input.
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM")

# Where the centred square is more than twice this multiple of the target (sources that
# no JPEG DCT scale has shrunk), Pillow first shrinks it by whole factors (box reduction)
# down to this multiple, then applies LANCZOS; its documentation calls 3 indistinguishable
# from a full-quality resize, and a full-width Lanczos kernel over a 100-megapixel image
# costs seconds even in SIMD. Smaller reductions take the SIMD resizer where installed:
# the same Lanczos-3 filter at a quarter of Pillow's time (docs/speed.md).
REDUCING_GAP = 3.0
_SIMD_RESIZER = Resizer() if Resizer else None

TRANSPARENCY_BACKGROUND = (255, 255, 255, 255)

# Modes holding more than 8 bits per grey level. Pillow's convert() clips these at 255
# instead of rescaling, turning most of a 16-bit scan white.
_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_WIDE_GREY_MAX = 65535


class RejectedImage(Exception):
    """A source file that cannot become a training image; the message is the reason."""


class TooManyPixels(RejectedImage):
    """Refused from its header: more pixels than the limit."""

    def __init__(self, width: int, height: int, max_pixels: int):
        super().__init__(f"too many pixels: {width}x{height} > {max_pixels}")
        self.width, self.height, self.max_pixels = width, height, max_pixels


def content_hash(data: bytes) -> str:
    """SHA-256 hex digest of the encoded bytes, for spotting byte-identical duplicates."""
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, image_size: int, max_pixels: int, *,
                 reject_smaller: bool = False) -> np.ndarray:
    """Decode encoded image bytes to an (image_size, image_size, 3) uint8 array.

    Centre-crops to a square and resizes with Lanczos-3 antialiasing. A JPEG is decoded at
    the smallest of libjpeg-turbo's DCT scales (M/8) that still leaves at least image_size
    pixels on the short side (see _decode_jpeg_scaled); bench/ingest.py measures how close
    the result stays to a full decode.
    Raises RejectedImage with a reason "<kind>: <detail>" for anything unusable; it never
    raises anything else for bad data.

    Choices for awkward inputs:
    - Only ACCEPTED_FORMATS are opened; anything else, whatever its extension, is "not an image".
    - Images over max_pixels are rejected from the header, before any pixel is decoded.
      Pillow's own decompression-bomb limit (the process-wide Image.MAX_IMAGE_PIXELS, not
      changed here) also rejects, so the effective limit is the lower of the two; the
      ingestion worker processes set Pillow's limit to max_pixels (pipeline.ingestion.pool).
    - Transparency (RGBA, LA, palette or colour-key transparency) is composited onto white.
    - 16-bit (and 32-bit integer "I") greyscale is scaled from 0..65535 to 0..255.
    - EXIF orientation is applied; animated files give their first frame.
    - Images smaller than image_size are upscaled, unless reject_smaller is set, in which
      case an image whose short side is below image_size is rejected.
    - Truncated files are rejected; Pillow's LOAD_TRUNCATED_IMAGES is not changed here.
    """
    with _rejecting(), Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
        _check_dimensions(image.size, image_size, max_pixels, reject_smaller)
        full_size = image.size
        scaled = _decode_jpeg_scaled(data, image, image_size)
        if scaled:
            rgb, reduction = scaled
        else:
            drafted = image.draft("RGB", (image_size, image_size))  # None unless a JPEG
            reduction = full_size[0] / drafted[1][2] if drafted else 1.0
            rgb = _to_rgb(image)
        square = _square_resize(rgb, full_size, reduction, image_size)
        return np.asarray(_upright(square, image.getexif()), dtype=np.uint8)


def decode_image_at_most(data: bytes, image_size: int, max_pixels: int) -> np.ndarray:
    """decode_image at image_size, or at the source's own short side where that is smaller: never upscaled."""
    with _rejecting(), Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
        short_side = min(image.size)
    return decode_image(data, min(image_size, short_side), max_pixels)


def decode_full_size(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode encoded image bytes to an (H, W, 3) uint8 array at the image's own size, upright.

    The same guards and conversions as decode_image (accepted formats, the pixel limit from
    the header, transparency on white, 16-bit grey, EXIF orientation, truncation refused),
    without the square crop and resize: for a user's picture that a model fills as it is.
    Raises RejectedImage (TooManyPixels over max_pixels) and nothing else for bad data.
    """
    with _rejecting(), Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
        _check_dimensions(image.size, 1, max_pixels, reject_smaller=False)
        return np.array(_to_rgb(ImageOps.exif_transpose(image)), dtype=np.uint8)  # writable, for torch


@contextmanager
def _rejecting():
    """Pillow's many failures on bad data as one RejectedImage with a reason "<kind>: <detail>"."""
    try:
        # Turns Pillow's bomb warning into an exception; the filters are restored on exit,
        # but they are process-wide, so other threads may see this one meanwhile.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except RejectedImage:
        raise
    except Image.UnidentifiedImageError:
        raise RejectedImage(f"not an image: not one of {', '.join(ACCEPTED_FORMATS)}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise RejectedImage(f"decompression bomb: {error}") from error
    except Exception as error:  # Pillow raises many types (OSError, SyntaxError, ValueError...) for bad files
        raise RejectedImage(f"cannot decode: {error}") from error


def _check_dimensions(size, image_size, max_pixels, reject_smaller):
    width, height = size
    if width * height > max_pixels:
        raise TooManyPixels(width, height, max_pixels)
    if reject_smaller and min(width, height) < image_size:
        raise RejectedImage(f"too small: {width}x{height}, short side below {image_size}")


def _decode_jpeg_scaled(data: bytes, image: Image.Image, image_size: int) -> tuple[Image.Image, float] | None:
    """An RGB or greyscale JPEG decoded by libjpeg-turbo at scale M/8, as (RGB image, reduction).

    Pillow's draft offers only 1/2, 1/4 and 1/8: a 500x375 photo for 128 px decodes at
    1/2 (250x188), where 3/8 (188x141) is enough, which leaves the decoder and the LANCZOS
    pass about 40% fewer pixels. None where Pillow decodes instead: other formats, CMYK
    JPEGs (Adobe's inverted CMYK needs Pillow's handling), and any file libjpeg-turbo
    warns about, so that Pillow alone decides between tolerating a flaw (extraneous
    bytes) and rejecting the file (truncation).
    """
    if image.format != "JPEG" or image.mode not in ("RGB", "L"):
        return None
    try:
        pixels = simplejpeg.decode_jpeg(data, "RGB", min_height=image_size, min_width=image_size)
    except ValueError:
        return None
    # libjpeg makes the width ceil(width * M / 8), so this recovers M exactly.
    eighths = 8 * pixels.shape[1] // image.size[0]
    return Image.fromarray(pixels), 8 / eighths


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _WIDE_GREY_MODES:
        levels = np.asarray(image).astype(np.float32) * (255 / _WIDE_GREY_MAX)
        grey = np.clip(np.rint(levels), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "F":
        raise RejectedImage("unsupported pixel format: floating point")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, TRANSPARENCY_BACKGROUND)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _square_resize(image: Image.Image, full_size: tuple[int, int], reduction: float,
                   image_size: int) -> Image.Image:
    """The centred square of the full-size RGB image, resized; image may be drafted down by reduction."""
    width, height = full_size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    # In full-size pixels, then scaled: a drafted image is ceil(size / reduction) pixels
    # wide, so a box taken from its own size would sit up to `reduction` pixels off.
    left, top, box_side = left / reduction, top / reduction, side / reduction
    if _SIMD_RESIZER is None or box_side > 2 * REDUCING_GAP * image_size:
        box = (left, top, left + box_side, top + box_side)
        return image.resize((image_size, image_size), Image.Resampling.LANCZOS, box=box,
                            reducing_gap=REDUCING_GAP)
    square = Image.new("RGB", (image_size, image_size))
    options = ResizeOptions(resize_alg=ResizeAlg.convolution(FilterType.lanczos3),
                            crop_box=CropBox(left, top, box_side, box_side))
    _SIMD_RESIZER.resize_pil(image, square, options)
    return square


def _upright(square: Image.Image, exif: Image.Exif) -> Image.Image:
    """square turned as the source's EXIF orientation says.

    The centred square and its resize commute with the flips and quarter turns, so they
    are applied to the small result rather than the full image.
    """
    orientation = exif.get(ExifTags.Base.Orientation, 1)
    square.getexif()[ExifTags.Base.Orientation] = orientation
    return ImageOps.exif_transpose(square)
