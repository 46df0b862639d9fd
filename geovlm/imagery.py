"""Image reading: any raster a record points at, as the 8-bit RGB picture the model sees.

8-bit pictures (PNG, JPEG, 8-bit TIFF, ...) come out exactly as PIL's `convert("RGB")` makes them.
Everything else (int16 / uint16 / int32 / float GeoTIFFs, any number of bands, 16-bit grey PNGs) is
mapped to RGB the way EO viewers (QGIS, GDAL's `-scale`) do it:

1. **band choice**: `bands`, 1-based band numbers as GDAL counts them, three for R, G, B
   (`(4, 3, 2)`: a Landsat 8 / Sentinel-2 true colour; `(5, 4, 3)`: false colour with NIR) or one
   for a grey picture. Default: bands 1, 2, 3 when the image has three or more, else band 1 as grey.
2. **nodata**: pixels equal to the nodata value in any chosen band, and NaN / ±inf, are masked. The
   value is `nodata` when given, else the GeoTIFF's GDAL_NODATA tag (TIFF tag 42113). Masked pixels
   take no part in the stretch and come out black.
3. **stretch**: per band, a linear stretch between the `stretch = (low, high)` percentiles of the
   unmasked values (default 2-98 %, QGIS's "cumulative count cut") to 0-255, clipped. `(0, 100)` is a
   min-max stretch. 8-bit data is not stretched unless `stretch` is given.

Where the options come from: keyword arguments of `load_image`; per record, `meta.bands`,
`meta.stretch`, `meta.nodata` (read by `options_from_meta`); per run, command-line flags
(`add_arguments` / `options_from_args`: `--bands 4,3,2 --stretch 2,98 --nodata -9999`). The
converter (`formats.py --bands ...`) writes them into every record's meta, so one data set keeps one
band choice.

GeoTIFFs are read with tifffile (pure Python, numpy only): uncompressed, Deflate and LZMA files need
nothing more; LZW-, PackBits-, JPEG- or ZSTD-compressed ones need `pip install imagecodecs` (a clear
error says so, unless PIL can decode the file itself, as it does for 1- and 3-band layouts). Files
are decoded fully when validated (`image_size`), so a truncated or corrupt file is caught when the
data is loaded, not in training.
"""

from __future__ import annotations

import argparse
import functools
import math
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_STRETCH = (2.0, 98.0)
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
EIGHT_BIT_MODES = {
    "1",
    "L",
    "LA",
    "La",
    "P",
    "PA",
    "RGB",
    "RGBA",
    "RGBa",
    "RGBX",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
}
GDAL_NODATA = 42113
_SAMPLE_CAP = 1 << 22  # percentiles are taken on at most ~4M values per band (a regular subsample)


class ImageError(ValueError):
    """An image that cannot be read or mapped to RGB (the message says why, without the path)."""


# ----------------------------------------------------------------------------- options


def check_options(bands=None, stretch=None, nodata=None) -> dict:
    """Validated options: bands a tuple of 1 or 3 band numbers >= 1, stretch (low, high) percentiles with
    0 <= low < high <= 100, nodata a number. Raises ImageError naming the option."""
    out: dict = {"bands": None, "stretch": None, "nodata": None}
    if bands is not None:
        if isinstance(bands, str):
            bands = [b for b in bands.replace(" ", "").split(",") if b]
        try:
            bands = tuple(int(b) for b in bands)
        except (TypeError, ValueError):
            raise ImageError(f"bands must be 1 or 3 band numbers (1-based), got {bands!r}") from None
        if len(bands) not in (1, 3) or min(bands) < 1:
            raise ImageError(f"bands must be 1 or 3 band numbers (1-based), got {list(bands)}")
        out["bands"] = bands
    if stretch is not None:
        if isinstance(stretch, str):
            stretch = stretch.replace(" ", "").split(",")
        try:
            lo, hi = (float(v) for v in stretch)
        except (TypeError, ValueError):
            raise ImageError(f"stretch must be two percentiles 'low,high', got {stretch!r}") from None
        if not 0 <= lo < hi <= 100:
            raise ImageError(f"stretch percentiles must satisfy 0 <= low < high <= 100, got {lo:g},{hi:g}")
        out["stretch"] = (lo, hi)
    if nodata is not None:
        try:
            nodata = float(nodata)
        except (TypeError, ValueError):
            raise ImageError(f"nodata must be a number, got {nodata!r}") from None
        out["nodata"] = nodata
    return out


def options_from_meta(meta: dict | None) -> dict:
    """`load_image` keyword arguments from a record's meta (`bands`, `stretch`, `nodata`); ImageError
    names the meta field when one is malformed."""
    meta = meta or {}
    out = {}
    for key in ("bands", "stretch", "nodata"):
        if meta.get(key) is not None:
            try:
                out[key] = check_options(**{key: meta[key]})[key]
            except ImageError as e:
                raise ImageError(f"field 'meta.{key}': {e}") from None
    return out


def options_from_args(args: argparse.Namespace) -> dict:
    """`load_image` keyword arguments from the flags of `add_arguments` (None ones left out)."""
    opts = check_options(
        getattr(args, "bands", None), getattr(args, "stretch", None), getattr(args, "nodata", None)
    )
    return {k: v for k, v in opts.items() if v is not None}


# ----------------------------------------------------------------------------- reading


def _is_tiff(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in TIFF_MAGIC


def _tifffile():
    try:
        import tifffile
    except ImportError:  # pragma: no cover - tifffile is in requirements.txt
        return None
    return tifffile


def _tiff_nodata(page) -> float | None:
    tag = page.tags.get(GDAL_NODATA)
    if tag is None:
        return None
    try:
        value = float(str(tag.value).strip().strip("\x00"))
    except ValueError:
        return None
    return value if not math.isnan(value) else None  # NaN nodata: NaNs are masked anyway


def _to_hwc(arr: np.ndarray, axes: str) -> np.ndarray:
    """tifffile's array with its axes string (e.g. "YX", "YXS", "SYX", "IYX") -> [H, W, bands]."""
    if "Y" not in axes or "X" not in axes:
        raise ImageError(f"TIFF has no Y/X image axes (axes {axes!r})")
    arr = np.moveaxis(arr, [axes.index("Y"), axes.index("X")], [0, 1])
    return arr.reshape(arr.shape[0], arr.shape[1], -1)


def _missing_codec(e: Exception) -> bool:
    return "imagecodecs" in str(e) or isinstance(e, (ModuleNotFoundError, NotImplementedError))


class _Tiff:
    """A TIFF opened with tifffile: dtype and nodata from the header, the pixels on demand."""

    def __init__(self, path: str):
        tifffile = _tifffile()
        if tifffile is None:
            raise ImageError("reading this TIFF needs tifffile: pip install tifffile")
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                self.dtype, self.axes = np.dtype(series.dtype), series.axes
                self.nodata = _tiff_nodata(tif.pages[0])
        except ImageError:
            raise
        except Exception as e:  # tifffile raises many kinds on a corrupt header
            raise ImageError(f"unreadable TIFF: {e}") from None
        self.path = path

    def pixels(self) -> np.ndarray:
        tifffile = _tifffile()
        try:
            with tifffile.TiffFile(self.path) as tif:
                return _to_hwc(tif.series[0].asarray(), self.axes)
        except ImageError:
            raise
        except Exception as e:
            if _missing_codec(e):
                raise ImageError(
                    f"this TIFF's compression needs imagecodecs: pip install imagecodecs ({e})"
                ) from None
            raise ImageError(f"unreadable TIFF: {e}") from None


def _pil_array(im) -> np.ndarray:
    """A loaded PIL image's pixels as [H, W, bands] in their own dtype."""
    if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGBA" if im.mode == "PA" else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    arr = np.asarray(im)
    return arr.reshape(arr.shape[0], arr.shape[1], -1)


def _open_pil(path: str):
    im = None
    try:
        im = Image.open(path)
        im.load()  # decode fully: a truncated or corrupt file fails here
        return im
    except Image.DecompressionBombError as e:  # PIL refuses > 2 x MAX_IMAGE_PIXELS (DOTA-v2 scenes can be)
        raise ImageError(
            f"{e} Tile the scene, or raise PIL.Image.MAX_IMAGE_PIXELS in the calling script."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        if im is not None:  # opened but not decodable: release the file now, not at garbage collection
            im.close()
        if isinstance(e, FileNotFoundError):
            raise
        raise ImageError(str(e) or type(e).__name__) from None


def _tiff_or_pil(path: str):
    """(tiff, None) when tifffile reads the header; (None, PIL image) when only PIL reads the file."""
    try:
        return _Tiff(path), None
    except ImageError as e:
        try:
            return None, _open_pil(path)
        except ImageError:
            raise e from None


def _tiff_pixels(tiff: _Tiff) -> np.ndarray:
    """tifffile's pixels; PIL's when tifffile lacks the codec (PIL decodes LZW / JPEG TIFFs of the
    common 1- and 3-band layouts itself)."""
    try:
        return tiff.pixels()
    except ImageError as e:
        if "imagecodecs" not in str(e):
            raise
        try:
            return _pil_array(_open_pil(tiff.path))
        except ImageError:
            raise e from None


def read_bands(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """The raw pixels [H, W, bands] in the file's own dtype, and the file's nodata value (GeoTIFF
    GDAL_NODATA tag) or None. FileNotFoundError if missing, ImageError if unreadable."""
    path = os.fspath(path)
    if _is_tiff(path):
        tiff, im = _tiff_or_pil(path)
        if tiff is not None:
            return _tiff_pixels(tiff), tiff.nodata
        return _pil_array(im), None
    return _pil_array(_open_pil(path)), None


# ----------------------------------------------------------------------------- to RGB


def _valid_mask(sel: np.ndarray, nodata: float | None) -> np.ndarray:
    """[H, W] True where every chosen band holds a real value (finite, not nodata)."""
    valid = np.ones(sel.shape[:2], bool)
    for i in range(sel.shape[2]):
        band = sel[:, :, i]
        if band.dtype.kind == "f":
            valid &= np.isfinite(band)
        if nodata is not None:
            valid &= band != nodata
    return valid


def _stretch_band(band: np.ndarray, valid: np.ndarray, lo_p: float, hi_p: float) -> np.ndarray:
    values = band[valid]
    out = np.zeros(band.shape, np.uint8)
    if values.size == 0:
        return out
    if values.size > _SAMPLE_CAP:
        values = values[:: values.size // _SAMPLE_CAP + 1]
    values = values.astype(np.float64)
    lo, hi = np.percentile(values, [lo_p, hi_p])
    if hi <= lo:  # a nearly constant band: fall back to its full range
        lo, hi = values.min(), values.max()
    if hi <= lo:  # a constant band: mid grey where valid
        out[valid] = 128
        return out
    scaled = (band.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    out[...] = np.clip(np.rint(np.nan_to_num(scaled, nan=0.0)), 0, 255).astype(np.uint8)
    out[~valid] = 0
    return out


def to_rgb(pixels: np.ndarray, bands=None, stretch=None, nodata=None) -> np.ndarray:
    """[H, W] or [H, W, bands] pixels of any dtype -> [H, W, 3] uint8 (see the module docstring)."""
    opts = check_options(bands, stretch, nodata)
    arr = pixels if pixels.ndim == 3 else pixels[:, :, None]
    n = arr.shape[2]
    chosen = opts["bands"] or ((1, 2, 3) if n >= 3 else (1,))
    if max(chosen) > n:
        raise ImageError(f"band {max(chosen)} requested but the image has {n} band(s)")
    sel = arr[:, :, [b - 1 for b in chosen]]
    if sel.dtype == bool:
        sel = sel.astype(np.uint8) * 255
    valid = _valid_mask(sel, opts["nodata"])
    if sel.dtype == np.uint8 and opts["stretch"] is None:
        out = np.where(valid[:, :, None], sel, 0).astype(np.uint8)
    else:
        lo_p, hi_p = opts["stretch"] or DEFAULT_STRETCH
        out = np.stack([_stretch_band(sel[:, :, i], valid, lo_p, hi_p) for i in range(sel.shape[2])], axis=2)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def load_image(path: str | os.PathLike, bands=None, stretch=None, nodata=None):
    """The image as a PIL RGB image, fully decoded. 8-bit pictures with no option given are exactly
    PIL's `convert("RGB")`; anything else goes through `to_rgb`. FileNotFoundError if missing,
    ImageError if unreadable or the options do not fit the image."""

    path = os.fspath(path)
    opts = check_options(bands, stretch, nodata)
    default = all(v is None for v in opts.values())
    tiff, im = _tiff_or_pil(path) if _is_tiff(path) else (None, None)
    if tiff is not None:
        if tiff.dtype == np.uint8 and default:  # 8-bit TIFF: PIL's reading, as before
            try:
                im = _open_pil(path)
            except ImageError:
                im = None  # a layout PIL cannot read (e.g. 4+ bands): tifffile's pixels below
            if im is not None and im.mode in EIGHT_BIT_MODES:
                return im.convert("RGB")
        pixels, tag_nodata = _tiff_pixels(tiff), tiff.nodata
    else:
        im = im or _open_pil(path)
        if default and im.mode in EIGHT_BIT_MODES:
            return im.convert("RGB")
        pixels, tag_nodata = _pil_array(im), None
    nd = opts["nodata"] if opts["nodata"] is not None else tag_nodata
    return Image.fromarray(to_rgb(pixels, opts["bands"], opts["stretch"], nd), "RGB")


@functools.lru_cache(maxsize=65536)
def _decoded_shape(path: str, mtime_ns: int, size: int) -> tuple[int, int, int]:
    del mtime_ns, size  # part of the cache key only: a rewritten file is decoded again
    tiff, im = _tiff_or_pil(path) if _is_tiff(path) else (None, None)
    if tiff is not None:
        h, w, n = _tiff_pixels(tiff).shape
        return w, h, n
    im = im or _open_pil(path)
    return im.size[0], im.size[1], len(im.getbands())


def _shape(path) -> tuple[int, int, int]:
    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    return _decoded_shape(path, st.st_mtime_ns, st.st_size)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height), after decoding the whole file once (cached per path and modification time), so
    truncated and corrupt files fail here. FileNotFoundError if missing, ImageError if unreadable."""
    return _shape(path)[:2]


def band_count(path: str | os.PathLike) -> int:
    """How many bands the file holds (decoded and cached as `image_size`)."""
    return _shape(path)[2]
