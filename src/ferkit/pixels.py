"""The pixel operations of the photo pipeline, in NumPy: gray, resize, pad, rotate and warp.

They give the same bytes as OpenCV 4's `cvtColor(RGB2GRAY)`, `resize` (INTER_AREA, INTER_LINEAR and
INTER_NEAREST), `copyMakeBorder`, `getRotationMatrix2D` and `warpAffine` (INTER_LINEAR,
BORDER_REPLICATE) on uint8 images, so the core install needs no OpenCV and every figure measured with
it still holds. Bit-exact means following OpenCV's own arithmetic: fixed-point weights where it uses
them (11-bit resize taps, 5-bit warp positions with 15-bit weights), float32 sums in its order where
it uses floats (area averaging), and its rounding (half to even). tests/test_pixels.py compares them
with OpenCV byte by byte.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

Resample = Literal["area", "linear", "nearest"]
Border = Literal["edge", "constant"]

_EPSILON = np.finfo(np.float64).eps
_GRAY_WEIGHTS = (9798, 19235, 3735)  # R, G, B in 1/32768: ITU-R 601 luma, as OpenCV rounds it
_AREA_BAND_PIXELS = 1 << 15  # output values per band of the area average (its float32 taps fit in cache)
_BATCH_IMAGES = 32  # images per batch of resize_many (their taps, as float32, stay a few MB)
_BATCH_MAX_PIXELS = 96 * 96  # larger images are resized one by one: per-call overhead no longer counts
_RESIZE_ONE = 2048  # resize taps in 1/2048 (OpenCV's INTER_RESIZE_COEF_SCALE)
_WARP_STEP_BITS = 5
_WARP_STEPS = 1 << _WARP_STEP_BITS  # warp positions in 1/32 pixel (INTER_TAB_SIZE)
_WARP_POSITION_BITS = 10  # warp coordinates in 1/1024 pixel before rounding to 1/32 (AB_BITS)
_WARP_BAND_PIXELS = 1 << 14  # output pixels per band of a warp (its int32 temporaries fit in cache)


def gray(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> gray uint8 (H, W) with the ITU-R 601 luma weights."""
    red, green, blue = _GRAY_WEIGHTS
    weighted = rgb[..., 0].astype(np.uint32)
    weighted *= red
    for channel, weight in ((1, green), (2, blue)):
        term = rgb[..., channel].astype(np.uint32)
        term *= weight
        weighted += term
    weighted += 1 << 14
    weighted >>= 15
    return weighted.astype(np.uint8)


def pad(image: np.ndarray, top: int, bottom: int, left: int, right: int, *, border: Border = "edge"
        ) -> np.ndarray:
    """`image` with rows and columns added: copies of its edge pixels ("edge") or black ("constant")."""
    widths = ((top, bottom), (left, right)) + ((0, 0),) * (image.ndim - 2)
    return np.pad(image, widths, mode="edge" if border == "edge" else "constant")


def resize(image: np.ndarray, size: tuple[int, int], *, resample: Resample) -> np.ndarray:
    """uint8 (H, W) or (H, W, C) `image` resized to `size` = (width, height).

    "area" averages the source pixels each output pixel covers (no aliasing when shrinking; bilinear
    when enlarging), "linear" interpolates bilinearly between pixel centres, "nearest" copies.
    """
    width, height = size
    src_height, src_width = image.shape[:2]
    if width < 1 or height < 1:
        raise ValueError(f"resize target must be at least 1x1 pixels, got {width}x{height}")
    if (width, height) == (src_width, src_height):
        return image.copy()
    scale_x, scale_y = _scale(src_width, width), _scale(src_height, height)
    if resample == "nearest":
        rows = np.minimum(np.floor(np.arange(height) * scale_y).astype(np.intp), src_height - 1)
        cols = np.minimum(np.floor(np.arange(width) * scale_x).astype(np.intp), src_width - 1)
        return image[rows[:, None], cols]
    whole_x, whole_y = round(scale_x), round(scale_y)
    integer_scale = _whole(scale_x, scale_y)
    if resample == "linear" and integer_scale and whole_x == whole_y == 2:
        resample = "area"  # halving: both are the 2x2 mean; OpenCV takes its exact integer path
    if resample == "area" and scale_x >= 1 and scale_y >= 1:
        if integer_scale:
            return _area_integer(image, whole_x, whole_y)
        return _area_fractional(image, width, height, scale_x, scale_y)
    return _bilinear(image, width, height, scale_x, scale_y, area=resample == "area")


def _scale(src_size: int, dst_size: int) -> float:
    """Source pixels per output pixel, computed as OpenCV does (1 / (dst / src): the last bit matters)."""
    return 1 / (dst_size / src_size)


def _whole(scale_x: float, scale_y: float) -> bool:
    """Both factors integers: OpenCV's exact block-sum path."""
    return abs(scale_x - round(scale_x)) < _EPSILON and abs(scale_y - round(scale_y)) < _EPSILON


def resize_many(images: Sequence[np.ndarray], size: tuple[int, int], *, resample: Resample) -> np.ndarray:
    """Images of any sizes (all gray or all with the same channels), each resized to `size` = (width,
    height) exactly as `resize` does it, as one (N, height, width, ...) array. Area shrinks of images up
    to 96x96 by fractional factors, the common case, are computed a batch at a time (MTCNN resizes
    hundreds of small patches); the rest one by one."""
    width, height = size
    if not images:
        return np.empty((0, height, width), np.uint8)
    out = np.empty((len(images), height, width, *images[0].shape[2:]), np.uint8)
    batched = []
    for k, image in enumerate(images):
        src_height, src_width = image.shape[:2]
        scale_x, scale_y = _scale(src_width, width), _scale(src_height, height)
        shrinks = scale_x >= 1 and scale_y >= 1 and (src_width, src_height) != size
        small = src_width * src_height <= _BATCH_MAX_PIXELS  # a large one alone wastes no padding
        if resample == "area" and shrinks and small and not _whole(scale_x, scale_y):
            batched.append(k)
        else:
            out[k] = resize(image, size, resample=resample)
    batched.sort(key=lambda k: images[k].shape[:2])  # similar sizes together: less padding
    for start in range(0, len(batched), _BATCH_IMAGES):
        chunk = batched[start:start + _BATCH_IMAGES]
        out[chunk] = _area_fractional_many([images[k] for k in chunk], width, height)
    return out


def _area_fractional_many(images: list[np.ndarray], width: int, height: int) -> np.ndarray:
    # _area_fractional for several images at once: each padded into one canvas, each with its own tap
    # tables padded to the longest with weight 0 (adding +0.0 changes no sum)
    count, channels = len(images), math.prod(images[0].shape[2:])
    canvas = np.zeros((count, max(image.shape[0] for image in images),
                       max(image.shape[1] for image in images) * channels), np.uint8)
    x_tables, y_tables = [], []
    for k, image in enumerate(images):
        canvas[k, :image.shape[0], :image.shape[1] * channels] = image.reshape(image.shape[0], -1)
        x_tables.append(_area_table(image.shape[1], width, _scale(image.shape[1], width)))
        y_tables.append(_area_table(image.shape[0], height, _scale(image.shape[0], height)))
    x_columns, x_weight = _channel_columns(*_stack_tables(x_tables), channels)
    out = _area_sums(canvas, x_columns, x_weight, *_stack_tables(y_tables))
    return out.reshape(count, height, width, *images[0].shape[2:])


def _channel_columns(source: np.ndarray, weight: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(..., outputs, taps) source pixels and weights -> (..., taps, outputs * channels): a column per
    channel of each output pixel, in a row flattened to (W * C)."""
    columns = np.swapaxes(source, -1, -2)[..., None] * channels + np.arange(channels)
    return (columns.reshape(*columns.shape[:-2], -1),
            np.repeat(np.swapaxes(weight, -1, -2), channels, axis=-1))


def _area_sums(strips: np.ndarray, x_columns: np.ndarray, x_weight: np.ndarray, y_source: np.ndarray,
               y_weight: np.ndarray) -> np.ndarray:
    """OpenCV's area average of (N, rows, W * C) uint8 strips: each row's float32 sum over its column taps
    (N, taps, outputs * C), then each output row's sum over its row taps (N, outputs, taps) into those
    strips, tap by tap in OpenCV's order so that every rounding matches; (N, outputs, outputs * C)."""
    terms = np.empty((*strips.shape[:2], *x_columns.shape[1:]), np.float32)
    for k in range(len(strips)):
        np.multiply(np.take(strips[k], x_columns[k], axis=1), x_weight[k], out=terms[k])
    rows = terms[:, :, 0].copy()
    for k in range(1, terms.shape[2]):
        rows += terms[:, :, k]
    which = np.arange(len(strips))[:, None]
    sums = rows[which, y_source[:, :, 0]] * y_weight[:, :, 0, None]
    for k in range(1, y_source.shape[2]):
        sums += rows[which, y_source[:, :, k]] * y_weight[:, :, k, None]
    return np.rint(sums).clip(0, 255).astype(np.uint8)


def _stack_tables(tables: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Tap tables of several images as (N, outputs, most taps) arrays, padded with weight 0."""
    most = max(source.shape[1] for source, _ in tables)
    sources = np.empty((len(tables), tables[0][0].shape[0], most), np.intp)
    weights = np.zeros(sources.shape, np.float32)
    for k, (source, weight) in enumerate(tables):
        taps = source.shape[1]
        sources[k, :, :taps], sources[k, :, taps:] = source, source[:, -1:]
        weights[k, :, :taps] = weight
    return sources, weights


def _area_integer(image: np.ndarray, step_x: int, step_y: int) -> np.ndarray:
    height, width = image.shape[0] // step_y, image.shape[1] // step_x
    wide = np.uint16 if step_x * step_y * 255 <= np.iinfo(np.uint16).max else np.int32  # uint16 is faster
    channels = image.shape[2:]
    blocks = image[:height * step_y, :width * step_x].reshape(height, step_y, width * step_x, *channels)
    rows = blocks[:, 0].astype(wide)  # rows first: whole rows are contiguous
    for dy in range(1, step_y):
        rows += blocks[:, dy]
    columns = rows.reshape(height, width, step_x, *channels)
    sums = columns[:, :, 0].astype(np.int32)
    for dx in range(1, step_x):
        sums += columns[:, :, dx]
    if step_x == step_y == 2 and math.prod(channels) in (1, 3, 4):  # OpenCV's shortcut (not for 2 channels)
        return ((sums + 2) >> 2).astype(np.uint8)
    mean = sums.astype(np.float32) * (np.float32(1) / np.float32(step_x * step_y))
    return np.rint(mean).clip(0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=256)  # MTCNN resizes many patches of the few same sizes
def _area_table(src_size: int, dst_size: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The source pixels each output pixel averages and their float32 weights, in OpenCV's order,
    as (dst_size, most taps) arrays; shorter lists are padded with weight 0 (adding +0.0 changes no sum)."""
    start = np.arange(dst_size, dtype=np.float64) * scale
    end = start + scale
    cell = np.minimum(scale, src_size - start)
    last = np.minimum(np.floor(end), src_size - 1).astype(np.intp)
    first = np.minimum(np.ceil(start).astype(np.intp), last)
    has_left = (first - start) > 1e-3  # a partly covered pixel before the whole ones
    has_right = (end - last) > 1e-3  # and after them
    count = has_left + (last - first) + has_right
    k = np.arange(int(count.max()))[None, :]
    whole = k - has_left[:, None]  # index among the whole pixels
    source = np.where(whole < 0, first[:, None] - 1, first[:, None] + whole)
    weight = np.broadcast_to(1.0 / cell[:, None], source.shape).copy()
    weight[has_left, 0] = ((first - start) / cell)[has_left]
    right = (has_left + (last - first))[:, None] == k
    weight = np.where(right, (np.minimum(np.minimum(end - last, 1.0), cell) / cell)[:, None], weight)
    source = np.where(right, last[:, None], source)
    beyond = k >= count[:, None]
    source = np.where(beyond, last[:, None], source)
    weight = np.where(beyond, 0.0, weight)
    source.setflags(write=False)
    weight = weight.astype(np.float32)
    weight.setflags(write=False)
    return source, weight


def _area_fractional(image: np.ndarray, width: int, height: int, scale_x: float, scale_y: float
                     ) -> np.ndarray:
    # a band of output rows at a time keeps the working set in cache (a 12-megapixel photo as float32
    # would be 144 MB)
    channels = math.prod(image.shape[2:])
    flat = image.reshape(image.shape[0], -1)  # (H, W * C): a column per channel of each pixel
    x_columns, x_weight = _channel_columns(*_area_table(image.shape[1], width, scale_x), channels)
    y_source, y_weight = _area_table(image.shape[0], height, scale_y)
    out = np.empty((height, width * channels), np.uint8)
    band = max(1, _AREA_BAND_PIXELS // (width * channels))
    for start in range(0, height, band):
        stop = min(height, start + band)
        first, last = int(y_source[start:stop].min()), int(y_source[start:stop].max()) + 1
        out[start:stop] = _area_sums(flat[None, first:last], x_columns[None], x_weight[None],
                                     y_source[None, start:stop] - first, y_weight[None, start:stop])[0]
    return out.reshape(height, width, *image.shape[2:])


def _linear_taps(src_size: int, dst_size: int, scale: float, inv: float, *, area: bool, clamp: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First source index and the two 11-bit weights of each output pixel (OpenCV's resize tables)."""
    dst = np.arange(dst_size, dtype=np.float64)
    if area:
        first = np.floor(dst * scale)
        frac = ((dst + 1) - (first + 1) * inv).astype(np.float32)
        frac = np.where(frac <= 0, np.float32(0), frac - np.floor(frac)).astype(np.float32)
        first = first.astype(np.intp)
    else:
        frac = ((dst + 0.5) * scale - 0.5).astype(np.float32)
        floor = np.floor(frac)
        first = floor.astype(np.intp)
        frac = (frac - floor).astype(np.float32)
    if clamp:  # columns only: OpenCV pins taps that fall outside the image to the edge pixel
        outside = (first < 0) | (first >= src_size - 1)
        frac = np.where(outside, np.float32(0), frac)
        first = np.clip(first, 0, src_size - 1)
    one = np.float32(_RESIZE_ONE)
    left = np.rint((np.float32(1) - frac) * one).astype(np.int32)
    right = np.rint(frac * one).astype(np.int32)
    return first, left, right


def _bilinear(image: np.ndarray, width: int, height: int, scale_x: float, scale_y: float, *, area: bool
              ) -> np.ndarray:
    inv_x, inv_y = width / image.shape[1], height / image.shape[0]
    src = image.astype(np.int32)
    src_height, src_width = image.shape[:2]
    extra = (1,) * (image.ndim - 2)
    cols, left, right = _linear_taps(src_width, width, scale_x, inv_x, area=area, clamp=True)
    last = cols + 1 >= src_width  # the right tap would fall outside: the pixel itself, weight one
    next_cols = np.minimum(cols + 1, src_width - 1)
    left = np.where(last, _RESIZE_ONE, left).reshape(1, -1, *extra)
    right = np.where(last, 0, right).reshape(1, -1, *extra)
    rows = src[:, cols] * left + src[:, next_cols] * right
    first, top, bottom = _linear_taps(src_height, height, scale_y, inv_y, area=area, clamp=False)
    upper = rows[np.clip(first, 0, src_height - 1)] >> 4
    lower = rows[np.clip(first + 1, 0, src_height - 1)] >> 4
    top, bottom = top.reshape(-1, 1, *extra), bottom.reshape(-1, 1, *extra)
    # OpenCV's 8-bit vertical pass: each term to 16 bits high-half first, then the sum rounded
    return ((((upper * top) >> 16) + ((lower * bottom) >> 16) + 2) >> 2).clip(0, 255).astype(np.uint8)


def rotation_matrix(center: tuple[float, float], angle: float, scale: float) -> np.ndarray:
    """2x3 affine map rotating by `angle` degrees counter-clockwise about `center` and scaling by
    `scale` (OpenCV's getRotationMatrix2D, whose centre is single precision)."""
    cx, cy = (float(np.float32(c)) for c in center)
    radians = angle * (math.pi / 180)
    alpha, beta = math.cos(radians) * scale, math.sin(radians) * scale
    return np.array([[alpha, beta, (1 - alpha) * cx - beta * cy],
                     [-beta, alpha, beta * cx + (1 - alpha) * cy]], dtype=np.float64)


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], *, to_gray: bool = False
                ) -> np.ndarray:
    """uint8 `image` mapped by the 2x3 `matrix` (source -> output pixels) into a `size` = (width,
    height) image, bilinear, pixels beyond the edge repeating it. `to_gray`: read an RGB image as
    gray, converting only the pixels the warp reads (a face crop from a large photo stays cheap)."""
    m = np.asarray(matrix, dtype=np.float64).reshape(6).copy()
    det = m[0] * m[4] - m[1] * m[3]
    det = 1.0 / det if det != 0 else 0.0
    a11, a22 = m[4] * det, m[0] * det
    m[0], m[1], m[3], m[4] = a11, m[1] * -det, m[3] * -det, a22
    m[2], m[5] = -m[0] * m[2] - m[1] * m[5], -m[3] * m[2] - m[4] * m[5]
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"warp target must be at least 1x1 pixels, got {width}x{height}")
    unit = float(1 << _WARP_POSITION_BITS)
    xs, ys = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
    half_step = 1 << (_WARP_POSITION_BITS - _WARP_STEP_BITS - 1)
    # int32 as in OpenCV: the terms saturate, their sums wrap (only a near-singular matrix gets there)
    row_x = _int32(np.rint((m[1] * ys + m[2]) * unit)) + np.int32(half_step)
    row_y = _int32(np.rint((m[4] * ys + m[5]) * unit)) + np.int32(half_step)
    col_x = _int32(np.rint(m[0] * xs * unit))
    col_y = _int32(np.rint(m[3] * xs * unit))
    shift = _WARP_POSITION_BITS - _WARP_STEP_BITS
    src_height, src_width = image.shape[:2]
    # the window the taps fall in: a position is a row term plus a column term, each monotonic, so
    # its extremes are sums of extremes (no pass over the whole output to find them)
    x_first = ((int(row_x.min()) + int(col_x.min())) >> shift) >> _WARP_STEP_BITS
    x_last = ((int(row_x.max()) + int(col_x.max())) >> shift) >> _WARP_STEP_BITS
    y_first = ((int(row_y.min()) + int(col_y.min())) >> shift) >> _WARP_STEP_BITS
    y_last = ((int(row_y.max()) + int(col_y.max())) >> shift) >> _WARP_STEP_BITS
    x_lo, x_hi = min(max(x_first, 0), src_width - 1), min(max(x_last + 1, 0), src_width - 1) + 1
    y_lo, y_hi = min(max(y_first, 0), src_height - 1), min(max(y_last + 1, 0), src_height - 1) + 1
    window = image[y_lo:y_hi, x_lo:x_hi]
    src = gray(window) if to_gray else window
    flat = src.reshape(src.shape[0] * src.shape[1], *src.shape[2:])  # a flat index per tap
    out = np.empty((height, width, *src.shape[2:]), np.uint8)
    band = max(1, _WARP_BAND_PIXELS // max(1, width))
    for start in range(0, height, band):  # a band of output rows at a time: the temporaries stay in cache
        rows = slice(start, min(height, start + band))
        pos_x = (row_x[rows, None] + col_x[None, :]) >> shift  # in 1/32 pixel
        pos_y = (row_y[rows, None] + col_y[None, :]) >> shift
        out[rows] = _bilinear_taps(flat, src.shape[1], pos_x, pos_y, x_lo, y_lo, src_width, src_height)
    return out


def _int32(values: np.ndarray) -> np.ndarray:
    """float64 -> int32, saturating like OpenCV's saturate_cast<int>."""
    limits = np.iinfo(np.int32)
    return np.clip(values, limits.min, limits.max).astype(np.int32)


def _bilinear_taps(flat: np.ndarray, stride: int, pos_x: np.ndarray, pos_y: np.ndarray, x_lo: int, y_lo: int,
                   src_width: int, src_height: int) -> np.ndarray:
    """OpenCV's bilinear remap at positions in 1/32 pixel, taps clamped to the image (`flat`: its
    window from (x_lo, y_lo), a row per pixel)."""
    x0, y0 = pos_x >> _WARP_STEP_BITS, pos_y >> _WARP_STEP_BITS
    fx, fy = pos_x & (_WARP_STEPS - 1), pos_y & (_WARP_STEPS - 1)
    left = np.clip(x0, 0, src_width - 1) - x_lo
    right = np.clip(x0 + 1, 0, src_width - 1) - x_lo
    top = (np.clip(y0, 0, src_height - 1) - y_lo) * stride
    bottom = (np.clip(y0 + 1, 0, src_height - 1) - y_lo) * stride
    if flat.ndim == 2:  # weights broadcast over the channels
        fx, fy = fx[:, :, None], fy[:, :, None]
    gx, gy = _WARP_STEPS - fx, _WARP_STEPS - fy

    def tap(index: np.ndarray) -> np.ndarray:
        return np.take(flat, index, axis=0).astype(np.int32)

    # OpenCV's weights are (32 - fx)(32 - fy) * 32 and so on, summed + 2^14 and >> 15: the same integer
    # as this sum in 1/1024, + 2^9 and >> 10, row by row
    upper = tap(top + left) * gx + tap(top + right) * fx
    lower = tap(bottom + left) * gx + tap(bottom + right) * fx
    total = (upper * gy + lower * fy + (1 << (2 * _WARP_STEP_BITS - 1))) >> (2 * _WARP_STEP_BITS)
    return total.clip(0, 255).astype(np.uint8)
