"""Turn an uploaded file into a clean product image and its thumbnails, or refuse it.

The type comes from the bytes alone (Pillow's format detection), never from the filename or Content-Type.
The declared dimensions are checked before anything is decoded, so a small file that would expand to a
huge bitmap (an image bomb) costs nothing. Every accepted image is decoded and encoded again: what is
stored holds only pixels, so EXIF (GPS position, camera serial), XMP, comments and anything appended to the
file (a polyglot's second payload) are gone. Orientation from EXIF is applied to the pixels first.
This is CPU work: callers run it in a thread.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from accounts.errors import DomainError, Invalid

FORMATS = {"JPEG": ("image/jpeg", "jpg"), "PNG": ("image/png", "png"), "WEBP": ("image/webp", "webp")}
"""The accepted formats as Pillow names them, with their media type and file extension."""

JPEG_QUALITY = 85
WEBP_QUALITY = 85


class TooLarge(DomainError):
    """The upload is over a size limit (bytes or pixels)."""

    http_status = 413


class UnsupportedType(DomainError):
    """The upload is not a JPEG, PNG or WebP image."""

    http_status = 415


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    max_side: int
    thumbnail_sizes: tuple[int, ...]


@dataclass(frozen=True)
class Encoded:
    """One stored rendition: its bytes and pixel size."""

    data: bytes
    width: int
    height: int


@dataclass(frozen=True)
class ProcessedImage:
    format: str
    """JPEG, PNG or WEBP: the format uploaded, kept for the re-encoded copy."""
    full: Encoded
    thumbnails: dict[int, Encoded]
    """By the longest side asked for (a thumbnail never upscales, so it may be smaller)."""

    @property
    def content_type(self) -> str:
        return FORMATS[self.format][0]


def process(data: bytes, limits: ImageLimits, field: str = "image") -> ProcessedImage:
    """The re-encoded image and its thumbnails; TooLarge (413), UnsupportedType (415) or Invalid (422)."""
    if len(data) > limits.max_bytes:
        raise TooLarge("image_too_large", f"the image is over the {limits.max_bytes}-byte limit", field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except UnidentifiedImageError:
        raise UnsupportedType("unsupported_image_type", "the file is not a JPEG, PNG or WebP image", field) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge("image_too_many_pixels", "the image declares too many pixels", field) from None
    except (OSError, SyntaxError, ValueError):
        raise Invalid("corrupt_image", "the image is damaged and cannot be read", field) from None
    with opened:
        width, height = opened.size
        if width * height > limits.max_pixels or max(width, height) > limits.max_side:
            raise TooLarge("image_too_many_pixels", f"the image is {width}x{height}; at most {limits.max_pixels} "
                           f"pixels and {limits.max_side} per side", field)
        image_format = str(opened.format)
        try:
            opened.seek(0)  # the first frame of an animation
            pixels = ImageOps.exif_transpose(opened)
            pixels.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise TooLarge("image_too_many_pixels", "the image declares too many pixels", field) from None
        except (OSError, SyntaxError, ValueError, EOFError):
            raise Invalid("corrupt_image", "the image is damaged and cannot be read", field) from None
    pixels = _storable(pixels, image_format)
    thumbnails: dict[int, Encoded] = {}
    for size in limits.thumbnail_sizes:
        thumbnail = pixels.copy()
        thumbnail.thumbnail((size, size), Image.Resampling.LANCZOS)
        thumbnails[size] = _encode(thumbnail, image_format)
    return ProcessedImage(format=image_format, full=_encode(pixels, image_format), thumbnails=thumbnails)


def _storable(image: Image.Image, image_format: str) -> Image.Image:
    """Pixels in a mode the format stores (JPEG has no alpha or palette; CMYK and 16-bit become 8-bit)."""
    if image_format == "JPEG":
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    if image.mode in ("RGB", "RGBA", "L", "LA") or (image.mode == "P" and image_format == "PNG"):
        return image
    has_alpha = image.mode in ("PA", "RGBa", "La") or "transparency" in image.info
    return image.convert("RGBA" if has_alpha or image.mode == "P" else "RGB")


def _encode(image: Image.Image, image_format: str) -> Encoded:
    """Only the pixels (and PNG transparency): no EXIF, XMP, ICC profile or text chunks reach the encoder."""
    clean = image.copy()
    clean.info = {key: value for key, value in image.info.items() if key == "transparency"}
    buffer = io.BytesIO()
    if image_format == "JPEG":
        clean.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    elif image_format == "WEBP":
        clean.save(buffer, "WEBP", quality=WEBP_QUALITY, method=4)
    else:
        clean.save(buffer, "PNG", optimize=True)
    return Encoded(buffer.getvalue(), clean.width, clean.height)
