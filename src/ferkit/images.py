"""The one image loader: any image a user hands us -> an RGB uint8 array (H, W, 3).

Every image file is opened by `open_image` (the checks below, errors named) and every array goes
through `rgb_array`; `load_image` is the door for photos and faces (a path, bytes, an open file, a
numpy array or a PIL image), and the FERPlus reader opens its PNGs with `open_image` too. So the
Predictor, the dataset, Grad-CAM and the detectors see one pixel format whatever came in. Bad files
raise `ImageError` naming the file and what is wrong, never a decoder traceback:

- empty (0 bytes), not an image / unsupported format, corrupt or truncated data;
- larger than `MAX_PIXELS` (checked from the header, BEFORE any pixel is decoded, so a
  decompression bomb -- a tiny file claiming 100,000 x 100,000 pixels -- costs nothing).

Images that are valid but not 8-bit RGB are converted, not refused: 16-bit and 32-bit
grayscale are scaled to 8 bits, CMYK / YCbCr / LAB / 1-bit / palette images go through PIL's
conversion, and transparency (RGBA, LA, palette with alpha) is composited onto white (what a
viewer shows). The EXIF orientation tag is honoured, so boxes come out in the coordinates of
the image as people see it.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ferkit import pixels, settings
from ferkit.errors import ArgumentError, ImageError, ImageTooLarge
from ferkit.settings import FACE_SIDE

# 64 megapixels: above every common camera's default output (12-50 MP), 192 MB as RGB.
# PIL's own bomb check (warning at 89 MP, error at 179 MP) is a second line behind this one.
MAX_PIXELS = settings.MAX_PIXELS

# The only decoders ferkit lets Pillow choose (by the file's magic bytes, whatever its name): the
# photo formats people have. EPS would hand the bytes to Ghostscript; DDS, ICO, PCX, SGI, TGA, QOI, JP2,
# IM and the rest are attack surface no photo needs. (JPEG's opener also takes cameras' MPO files.)
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "AVIF", "PPM")
FORMAT_NAMES = "JPEG, PNG, BMP, GIF, TIFF, WebP, AVIF, PNM"

# What `find_images` picks up inside folders (explicitly named files are always tried).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff",
                              ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".avif"})

Color = Literal["rgb", "bgr"]
ImageSource = str | Path | bytes | bytearray | memoryview | np.ndarray | Image.Image | IO[bytes]

FLOAT_UNIT_MAX = 2.0  # float pixels all below this are read as 0..1
_WIDE_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def describe(source: object) -> str:
    """How errors name a source: the path, or what kind of in-memory object it was."""
    if isinstance(source, str | Path):
        return str(source)
    if isinstance(source, bytes | bytearray | memoryview):
        return "<image bytes>"
    if isinstance(source, np.ndarray):
        return "<array>"
    if isinstance(source, Image.Image):
        return "<PIL image>"
    return str(getattr(source, "name", "<image stream>"))


def load_image(source: ImageSource, color: Color = "rgb", max_pixels: int | None = None,
               name: str | None = None) -> np.ndarray:
    """Any image source -> RGB uint8 (H, W, 3), C-contiguous.

    `source` may be a path, encoded bytes, a binary file object, a PIL image or a numpy array.
    Arrays are (H, W) grayscale, (H, W, 3) colour or (H, W, 4) colour + alpha (alpha dropped);
    colour arrays are RGB unless `color="bgr"` (OpenCV's order, e.g. from cv2.imread). Arrays
    should be uint8; uint16 is scaled to 8 bits and floats all below 2 are read as 0..1 (a resize
    may overshoot 1).
    `max_pixels` defaults to the module's MAX_PIXELS, read at call time (an app may change it).
    `name` overrides how errors name the source (e.g. an uploaded file's name)."""
    label = name or describe(source)
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if color not in ("rgb", "bgr"):
        raise ArgumentError(f"color must be 'rgb' or 'bgr', got {color!r}")
    if isinstance(source, np.ndarray):
        return rgb_array(source, color, label)
    if color != "rgb":
        raise ArgumentError("color='bgr' applies to numpy arrays only "
                            "(files and PIL images know their order)")
    if isinstance(source, Image.Image):
        _check_size(source.size, max_pixels, label)
        return rgb_from_pil(_upright(source), label)
    with open_image(source, max_pixels, label) as img:
        return rgb_from_pil(img, label)


@contextmanager
def open_image(source: str | Path | bytes | bytearray | memoryview | IO[bytes], max_pixels: int | None = None,
               name: str | None = None) -> Iterator[Image.Image]:
    """An encoded image -> its decoded PIL image, upright (EXIF orientation applied), in its own mode.

    Every check of the module happens here, in this order: there are bytes, the header is an image,
    the size is within `max_pixels` (before decoding), the pixels decode."""
    label = name or describe(source)
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    # ferkit refuses large images itself, with a sentence (_check_size): PIL's warning about them,
    # printed before that refusal, would only be noise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = _decode(_open_bytes(source, label), max_pixels, label)
    with img:
        yield _upright(img)


def _open_bytes(source: str | Path | bytes | bytearray | memoryview | IO[bytes], label: str) -> IO[bytes]:
    """A seekable binary stream over the encoded image; ImageError if there are no bytes."""
    if isinstance(source, str | Path):
        path = Path(source).expanduser()
        if not path.exists():
            raise ImageError(f"{label}: image file not found")
        if path.is_dir():
            raise ImageError(f"{label}: is a folder, not an image file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{label}: cannot read file ({exc.strerror or exc})") from None
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, bytes):
            raise ImageError(f"{label}: file object must be opened in binary mode")
    else:
        raise ImageError(f"{label}: unsupported input type {type(source).__name__} (expected a path, "
                         "bytes, a binary file, a numpy array or a PIL image)")
    if not data:
        raise ImageError(f"{label}: file is empty (0 bytes)")
    return io.BytesIO(data)


def _check_size(size: tuple[int, int], max_pixels: int, label: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{label}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(f"{label}: image is {width}x{height} = {width * height / 1e6:.1f} megapixels, "
                         f"above the limit of {max_pixels / 1e6:.0f} megapixels; refused before "
                         "decoding (resize it first)")


def image_size(source: str | Path | bytes | bytearray | memoryview | IO[bytes], name: str | None = None
               ) -> tuple[int, int]:
    """(width, height) from the header alone, with the format checks of `open_image`: what a server
    adds up before it decodes several images of one request."""
    label = name or describe(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with _open_header(_open_bytes(source, label), label) as img:
            return img.size


def _open_header(stream: IO[bytes], label: str) -> Image.Image:
    Image.init()  # registers every plugin once (AVIF is not preloaded); FORMATS picks among them
    try:
        # lazy: reads the header only, and only the allowed decoders look at the magic bytes
        return Image.open(stream, formats=FORMATS)
    except Image.DecompressionBombError:
        # Pillow's own limit (179 MP) speaks first for the largest claims: the same refusal as ours
        raise ImageTooLarge(f"{label}: image is above Pillow's limit of "
                            f"{2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} megapixels, a possible "
                            "decompression bomb; refused before decoding (resize it first)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image, or a format ferkit does not read "
                         f"(supported: {FORMAT_NAMES})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label}: corrupt image header ({exc})") from None


def _decode(stream: IO[bytes], max_pixels: int, label: str) -> Image.Image:
    img = _open_header(stream, label)
    try:
        _check_size(img.size, max_pixels, label)
        img.load()
    except Image.DecompressionBombError as exc:
        img.close()
        raise ImageTooLarge(f"{label}: refused, possible decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        img.close()
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        kind = img.format or "image"
        raise ImageError(f"{label}: {reason} {kind} file ({exc})") from None
    except ImageError:
        img.close()
        raise
    return img


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a broken EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError):
        return img


def rgb_from_pil(img: Image.Image, label: str = "<PIL image>") -> np.ndarray:
    """A PIL image in any mode -> RGB uint8 (H, W, 3); transparency is composited onto white."""
    mode = img.mode
    try:
        if mode == "RGB":
            rgb = np.asarray(img, dtype=np.uint8)
        elif mode in _WIDE_GRAY or mode == "F":
            rgb = _gray_to_rgb(_scale_to_uint8(np.asarray(img)))
        elif mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgb = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
        else:  # L, 1, P, CMYK, YCbCr, LAB, HSV, I;16 variants PIL converts itself
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise ImageError(f"{label}: cannot convert {mode} image to RGB ({exc})") from None
    return np.ascontiguousarray(rgb)


def luma(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> gray uint8 (H, W) with the ITU-R 601 weights (PIL's "L", which made
    FERPlus, and OpenCV's RGB2GRAY, whose rounding this keeps): the one colour-to-gray rule of ferkit."""
    return pixels.gray(rgb)


def to_face(crop: np.ndarray, color: Color = "rgb") -> np.ndarray:
    """One crop of any size, gray or colour (RGB unless color="bgr"), -> uint8 (48, 48) gray.

    Colour goes to gray with the ITU-R 601 luma weights (as PIL's "L" and OpenCV do); shrinking
    uses area averaging (no aliasing), enlarging bilinear interpolation."""
    if crop.size == 0:
        raise ImageError(f"the crop has no pixels (shape {crop.shape})")
    gray = luma(load_image(crop, color=color)) if crop.ndim == 3 or crop.dtype != np.uint8 else crop
    if gray.shape == (FACE_SIDE, FACE_SIDE):
        return np.ascontiguousarray(gray)
    shrink = gray.shape[0] >= FACE_SIDE and gray.shape[1] >= FACE_SIDE
    return pixels.resize(gray, (FACE_SIDE, FACE_SIDE), resample="area" if shrink else "linear")


def _scale_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """16/32-bit or float pixels -> 8 bits. Integers above 255 are read as 16-bit (0..65535);
    floats as 0..1 when all are below FLOAT_UNIT_MAX, else as 0..255 (clipped either way)."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype.kind == "f":
        # 0..1 with room for a resize's overshoot (bicubic rings past 1); a 0..255 image whose
        # brightest pixel is under 2 is black either way
        scaled = pixels * 255.0 if np.nanmax(pixels, initial=0) < FLOAT_UNIT_MAX else pixels
        return np.nan_to_num(scaled).clip(0, 255).round().astype(np.uint8)
    wide = pixels.astype(np.int64)
    if wide.max(initial=0) > 255:
        return (wide.clip(0, 65535) * 255 // 65535).astype(np.uint8)
    return wide.clip(0, 255).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def rgb_array(array: np.ndarray, color: Color = "rgb", label: str = "<array>") -> np.ndarray:
    """A pixel array -> RGB uint8 (H, W, 3), C-contiguous. (H, W) gray is repeated, (H, W, 4) loses
    its alpha (an array has no background to composite on), colour is RGB unless `color="bgr"`;
    uint16 is scaled to 8 bits and floats are read as 0..1 (clipped) when all are below 2."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"{label}: expected an (H, W) gray, (H, W, 3) colour or (H, W, 4) colour+alpha "
                         f"array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{label}: image is empty, no pixels (shape {array.shape})")
    if array.dtype == bool or array.dtype.kind not in "uif":
        raise ImageError(f"{label}: expected uint8 pixels, got dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ImageError(f"{label}: pixels contain NaN or infinite values")
    pixels = _scale_to_uint8(array)
    if pixels.ndim == 2:
        return np.ascontiguousarray(_gray_to_rgb(pixels))
    pixels = pixels[:, :, :3]
    if color == "bgr":
        pixels = pixels[:, :, ::-1]
    return np.ascontiguousarray(pixels)


def find_images(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Expand files and folders (recursively, by image extension) into image paths, sorted
    within each folder. Named files are kept whatever their extension, so a wrongly named file
    fails loudly instead of being skipped. Returns (images, problems) where problems are
    paths that do not exist or folders with no image in them."""
    found: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            candidates = [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS]
            problems += [f"{p}: broken link (its target does not exist)" for p in sorted(candidates)
                         if p.is_symlink() and not p.exists()]
            inside = sorted(p for p in candidates if p.is_file())
            if not inside:
                problems.append(f"{path}: folder holds no image files "
                                f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
            found += inside
        elif path.exists():
            found.append(path)
        else:
            problems.append(f"{path}: file not found")
    return found, problems
