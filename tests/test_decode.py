import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import simplejpeg
from PIL import Image, JpegImagePlugin

from pipeline.ingestion import decode
from pipeline.ingestion.decode import RejectedImage, content_hash, decode_image

IMAGE_SIZE = 32
MAX_PIXELS = 10_000_000
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(image, format, **options):
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def png_header_only(width, height):
    """A PNG that declares width x height but carries almost no pixel data."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def noisy(size, mode="RGB"):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def halves(left, right, size=64, mode="RGB"):
    image = Image.new(mode, (size, size), left)
    image.paste(right, (size // 2, 0, size, size))
    return image


def palette_half_transparent():
    image = Image.new("P", (64, 64), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.paste(1, (32, 0, 64, 64))
    return image


def grey16_stripes():
    levels = np.repeat(np.array([[0] * 32 + [32768] * 32 + [65535] * 32], dtype=np.uint16), 96, axis=0)
    return Image.fromarray(levels)


def exif_rotated_jpeg():
    """Top half red, bottom half blue on disk; orientation 6 says rotate 90 degrees clockwise."""
    stored = Image.new("RGB", (64, 64), RED)
    stored.paste(BLUE, (0, 32, 64, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=95, exif=exif)


def animated(format):
    frames = [Image.new("RGB", (48, 48), colour) for colour in (RED, BLUE, GREEN)]
    return encode(frames[0], format, save_all=True, append_images=frames[1:], duration=100, loop=0)


def awkward_files():
    good_jpeg = encode(noisy((256, 256)), "JPEG", quality=90)
    good_png = encode(noisy((128, 128)), "PNG")
    return {
        "photo.jpg": encode(noisy((64, 48)), "JPEG"),
        "zero_bytes.jpg": b"",
        "truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "truncated.png": good_png[: len(good_png) // 2],
        "text_named.jpg": b"hello, this is not a picture\n",
        "page_named.png": b"<!DOCTYPE html><html><body>Quota exceeded</body></html>",
        "postscript.eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
        "bomb_header.png": png_header_only(5_000, 5_000),
        "cmyk.jpg": encode(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "JPEG", quality=95),
        "palette_transparent.png": encode(palette_half_transparent(), "PNG", transparency=0),
        "palette_transparent.gif": encode(palette_half_transparent(), "GIF", transparency=0),
        "la_transparent.png": encode(Image.new("LA", (64, 64), (0, 0)), "PNG"),
        "rgba_half.png": encode(Image.new("RGBA", (64, 64), (0, 0, 0, 128)), "PNG"),
        "grey16.png": encode(grey16_stripes(), "PNG"),
        "grey16.tif": encode(grey16_stripes(), "TIFF"),
        "float.tif": encode(Image.new("F", (64, 64), 0.5), "TIFF"),
        "exif_rotated.jpg": exif_rotated_jpeg(),
        "animated.gif": animated("GIF"),
        "animated.png": animated("PNG"),
        "tiny.png": encode(Image.new("RGB", (8, 8), GREEN), "PNG"),
        "bitmap.bmp": encode(noisy((40, 40)), "BMP"),
        "photo.webp": encode(noisy((40, 40)), "WEBP"),
    }


KEPT = {"photo.jpg", "cmyk.jpg", "palette_transparent.png", "palette_transparent.gif",
        "la_transparent.png", "rgba_half.png", "grey16.png", "grey16.tif", "exif_rotated.jpg",
        "animated.gif", "animated.png", "tiny.png", "bitmap.bmp", "photo.webp"}
REJECTION_REASONS = {
    "zero_bytes.jpg": "not an image",
    "truncated.jpg": "cannot decode",
    "truncated.png": "cannot decode",
    "text_named.jpg": "not an image",
    "page_named.png": "not an image",
    "postscript.eps": "not an image",
    "bomb_header.png": "too many pixels",
    "float.tif": "unsupported pixel format",
}


@pytest.fixture(scope="module")
def awkward_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("awkward")
    for name, data in awkward_files().items():
        (folder / name).write_bytes(data)
    return folder


def decode_file(folder, name, **options):
    return decode_image((folder / name).read_bytes(), IMAGE_SIZE, MAX_PIXELS, **options)


def test_every_awkward_file_has_an_expectation():
    assert KEPT | set(REJECTION_REASONS) == set(awkward_files())


@pytest.mark.parametrize("name", sorted(KEPT))
def test_awkward_files_kept(awkward_folder, name):
    pixels = decode_file(awkward_folder, name)
    assert pixels.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert pixels.dtype == np.uint8


@pytest.mark.parametrize("name", sorted(REJECTION_REASONS))
def test_awkward_files_rejected_with_reason(awkward_folder, name):
    with pytest.raises(RejectedImage) as rejected:
        decode_file(awkward_folder, name)
    assert str(rejected.value).startswith(REJECTION_REASONS[name])


def test_pixel_limit_checked_before_decoding(awkward_folder):
    # The header declares 25M pixels (under Pillow's own limit) of which none are
    # decodable: only a header check can produce this reason.
    with pytest.raises(RejectedImage, match="too many pixels: 5000x5000 > 10000000"):
        decode_file(awkward_folder, "bomb_header.png")


def test_pixel_limit_is_the_callers_not_pillows():
    data = encode(noisy((100, 100)), "PNG")
    assert decode_image(data, IMAGE_SIZE, max_pixels=10_000).shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    with pytest.raises(RejectedImage, match="too many pixels"):
        decode_image(data, IMAGE_SIZE, max_pixels=9_999)


@pytest.mark.parametrize("side", [10_000, 20_000])  # Pillow's warning, then its error
def test_pillow_bomb_checks_become_rejections(side):
    filters_before = list(warnings.filters)
    limit_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(RejectedImage, match="decompression bomb"):
        decode_image(png_header_only(side, side), IMAGE_SIZE, max_pixels=10**12)
    assert Image.MAX_IMAGE_PIXELS == limit_before
    assert warnings.filters == filters_before


def assert_colour(pixel, expected, tolerance=12):
    assert np.abs(pixel.astype(int) - np.array(expected)).max() <= tolerance, (pixel, expected)


def test_cmyk_becomes_matching_rgb(awkward_folder):
    assert_colour(decode_file(awkward_folder, "cmyk.jpg")[16, 16], RED)


@pytest.mark.parametrize("name", ["palette_transparent.png", "palette_transparent.gif"])
def test_palette_transparency_composited_on_white(awkward_folder, name):
    pixels = decode_file(awkward_folder, name)
    assert_colour(pixels[16, 2], WHITE, tolerance=0)
    assert_colour(pixels[16, 29], RED, tolerance=0)


def test_alpha_composited_on_white(awkward_folder):
    assert_colour(decode_file(awkward_folder, "la_transparent.png")[16, 16], WHITE, tolerance=0)
    assert_colour(decode_file(awkward_folder, "rgba_half.png")[16, 16], (127, 127, 127), tolerance=1)


@pytest.mark.parametrize("name", ["grey16.png", "grey16.tif"])
def test_sixteen_bit_grey_is_scaled_not_clipped(awkward_folder, name):
    pixels = decode_file(awkward_folder, name)
    assert_colour(pixels[16, 2], (0, 0, 0), tolerance=1)
    assert_colour(pixels[16, 16], (128, 128, 128), tolerance=1)
    assert_colour(pixels[16, 29], WHITE, tolerance=1)


def test_exif_orientation_applied(awkward_folder):
    pixels = decode_file(awkward_folder, "exif_rotated.jpg")
    assert_colour(pixels[16, 2], BLUE, tolerance=30)
    assert_colour(pixels[16, 29], RED, tolerance=30)


@pytest.mark.parametrize("name", ["animated.gif", "animated.png"])
def test_animated_gives_first_frame(awkward_folder, name):
    assert_colour(decode_file(awkward_folder, name)[16, 16], RED, tolerance=0)


SIMD_MISSING = "cykooz-resizer is not installed on this platform"
needs_simd_resizer = pytest.mark.skipif(decode._SIMD_RESIZER is None, reason=SIMD_MISSING)


@pytest.fixture(params=["simd", "pillow"])
def resizer(request, monkeypatch):
    """The test runs with the SIMD Lanczos resizer (where it is installed) and with Pillow's alone."""
    if request.param == "pillow":
        monkeypatch.setattr(decode, "_SIMD_RESIZER", None)
    elif decode._SIMD_RESIZER is None:
        pytest.skip(SIMD_MISSING)
    return request.param


@pytest.mark.usefixtures("resizer")
def test_small_images_upscaled_unless_rejected(awkward_folder):
    assert_colour(decode_file(awkward_folder, "tiny.png")[16, 16], GREEN, tolerance=0)
    with pytest.raises(RejectedImage, match="too small: 8x8"):
        decode_file(awkward_folder, "tiny.png", reject_smaller=True)
    assert decode_file(awkward_folder, "cmyk.jpg", reject_smaller=True).shape == (32, 32, 3)


@pytest.mark.usefixtures("resizer")
def test_centre_crop_of_wide_image():
    wide = Image.new("RGB", (96, 32), RED)
    wide.paste(GREEN, (32, 0, 64, 32))
    wide.paste(BLUE, (64, 0, 96, 32))
    pixels = decode_image(encode(wide, "PNG"), 16, MAX_PIXELS)
    # LANCZOS reads a little past the crop box, so the edges show faint ringing.
    assert_colour(pixels[8, 0], GREEN, tolerance=20)
    assert_colour(pixels[8, 8], GREEN, tolerance=0)
    assert_colour(pixels[8, 15], GREEN, tolerance=20)


@pytest.mark.usefixtures("resizer")
@pytest.mark.parametrize("size", [32, 64])  # 8x goes through Pillow's box reduction first, 4x does not
def test_downscaling_is_antialiased(size):
    checkerboard = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)
    pixels = decode_image(encode(Image.fromarray(checkerboard), "PNG"), size, MAX_PIXELS)
    assert np.abs(pixels.astype(int) - 127).max() <= 3


def smooth_photo(width, height):
    """Broad colour gradients, like most of a photograph's area."""
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    channels = [128 + 100 * np.sin(3 * x + 2 * y), 128 + 100 * np.cos(4 * y - x), 255 * x * y]
    return Image.fromarray(np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8))


def full_decode_reference(data, size):
    """What a full-size decode, centre crop and LANCZOS resize give."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    return np.asarray(rgb.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side)))


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return 10 * np.log10(255 ** 2 / mse) if mse else np.inf


@pytest.mark.usefixtures("resizer")
@pytest.mark.parametrize("width, height, size, decoded", [
    (500, 375, 128, (141, 188)),  # 3/8: the smallest eighth that keeps 128 px on the short side
    (2048, 2048, 64, (256, 256)),  # 1/8
    (100, 60, 64, (60, 100)),  # smaller than the target: full size, then upscaled
])
def test_jpeg_decoded_at_the_smallest_sufficient_dct_scale(monkeypatch, width, height, size, decoded):
    decoded_shapes = []
    original = simplejpeg.decode_jpeg

    def recording_decode(*args, **kwargs):
        pixels = original(*args, **kwargs)
        decoded_shapes.append(pixels.shape[:2])
        return pixels

    monkeypatch.setattr(simplejpeg, "decode_jpeg", recording_decode)
    data = encode(smooth_photo(width, height), "JPEG", quality=95)
    pixels = decode_image(data, size, MAX_PIXELS)
    assert decoded_shapes == [decoded]
    assert pixels.shape == (size, size, 3)
    assert psnr(pixels, full_decode_reference(data, size)) > 45


@pytest.mark.usefixtures("resizer")
def test_jpeg_that_libjpeg_turbo_refuses_goes_to_pillow(monkeypatch):
    def refusing_decode(*args, **kwargs):
        raise ValueError("Corrupt JPEG data: 2 extraneous bytes before marker 0xd9")

    monkeypatch.setattr(simplejpeg, "decode_jpeg", refusing_decode)
    data = encode(smooth_photo(300, 200), "JPEG", quality=95)
    assert psnr(decode_image(data, 64, MAX_PIXELS), full_decode_reference(data, 64)) > 45
    with pytest.raises(RejectedImage, match="cannot decode"):  # Pillow rejects the truncation
        decode_image(data[: len(data) * 2 // 3], 64, MAX_PIXELS)


@needs_simd_resizer
def test_the_simd_resizer_takes_all_but_reductions_beyond_the_reducing_gap(monkeypatch):
    pillow_resizes = []
    original_resize = Image.Image.resize

    def recording_resize(self, size, *args, **kwargs):
        pillow_resizes.append((self.size, size))
        return original_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording_resize)
    photo = smooth_photo(500, 375)
    decode_image(encode(photo, "JPEG", quality=95), 128, MAX_PIXELS)  # decoded at 3/8, then 1.1x
    decode_image(encode(photo, "PNG"), 128, MAX_PIXELS)  # 2.9x
    assert pillow_resizes == []
    decode_image(encode(smooth_photo(2000, 1500), "PNG"), 64, MAX_PIXELS)  # 23x: box reduction first
    assert pillow_resizes == [((2000, 1500), (64, 64))]


@needs_simd_resizer
@pytest.mark.parametrize("format", ["JPEG", "PNG"])
def test_the_simd_resizer_gives_what_pillow_gives(monkeypatch, format):
    rng = np.random.default_rng(0)
    textured = np.asarray(smooth_photo(500, 375)) + rng.normal(0, 12, (375, 500, 3))
    data = encode(Image.fromarray(np.clip(textured, 0, 255).astype(np.uint8)), format)
    simd = decode_image(data, 128, MAX_PIXELS)
    monkeypatch.setattr(decode, "_SIMD_RESIZER", None)
    assert psnr(simd, decode_image(data, 128, MAX_PIXELS)) > 50


def test_cmyk_jpeg_is_drafted_by_pillow(monkeypatch):
    drafted_sizes = []
    original_draft = JpegImagePlugin.JpegImageFile.draft

    def recording_draft(self, mode, size):
        result = original_draft(self, mode, size)
        drafted_sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recording_draft)
    monkeypatch.setattr(simplejpeg, "decode_jpeg", None)  # must not be called
    image = halves(RED, BLUE, size=2048).convert("CMYK")
    pixels = decode_image(encode(image, "JPEG", quality=90), 64, MAX_PIXELS)
    assert drafted_sizes == [(256, 256)]
    assert_colour(pixels[32, 4], RED, tolerance=20)
    assert_colour(pixels[32, 60], BLUE, tolerance=20)


def test_content_hash_identifies_identical_bytes():
    data = encode(noisy((16, 16)), "PNG")
    assert content_hash(data) == content_hash(bytes(data))
    assert content_hash(data) != content_hash(data + b"\0")
    assert content_hash(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
