"""The one image loader/saver used by every stage.

``load_image`` gives a uint8/uint16 H x W x C array (C=3, or C=1 with ``keep_gray``), with the
EXIF orientation applied, alpha returned separately (never composited) and the ICC/EXIF blobs.
``save_image`` writes an array or a float C x H x W tensor atomically, format from the extension.

16-bit colour PNGs, which Pillow truncates to 8 bits and cannot write, are decoded and encoded by
png_codec.py (non-interlaced only; an interlaced one is an ImageReadError), as are large 8-bit PNGs.
16-bit grayscale without alpha is read by Pillow ("I;16"), which is exact.

Policies (deliberate choices):
- CMYK (incl. Adobe-inverted / YCCK JPEGs, which Pillow hands over as plain "CMYK") is converted
  with Pillow's naive formula; the embedded CMYK ICC profile is dropped since it cannot describe
  the RGB result. Likewise an ICC profile is only returned if its colour space matches the
  returned channels (RGB profile for C=3, GRAY for C=1).
- Mode "F" (float) is an error (its range is undefined); mode "I" is accepted if it fits uint16.
- ``exif`` is the file's EXIF block (with the 6-byte "Exif" APP1 header) or None. TIFF has no
  separate block (its tags live in the image IFD, where save_image writes them), so exif=None.
- Saving alpha to JPEG/BMP is a ValueError (nothing is dropped silently); pass alpha=None yourself.
- uint16 data saved as JPEG/WebP/BMP (8-bit-only formats) is converted to 8 bits: rint(v / 257).
  16-bit colour TIFF is a ValueError (Pillow cannot write it; use .png).
"""
from __future__ import annotations

import contextlib
import io
import os
import secrets
import struct
import sys
import threading
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from .png_codec import _EXIF_HEADER, _Unsupported, _decode_png16, _png16_colour, _write_png

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "ImageReadError", "LoadedImage",
    "encode_image", "is_image_file", "load_image", "save_image", "tensor_to_array",
]

# Pillow's own DecompressionBombError threshold (2 * Image.MAX_IMAGE_PIXELS = 2 * 89_478_485),
# about 13400 x 13400. We enforce it ourselves from the header, with a message naming the file.
DEFAULT_MAX_PIXELS = 178_956_970

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
_SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF"}
_ORIENTATION = 0x0112
_PIL_LIMIT_LOCK = threading.Lock()


class ImageReadError(ValueError):
    """An image could not be loaded. The message starts with the file path, then the reason."""


@dataclass(eq=False)
class LoadedImage:
    pixels: np.ndarray  # H x W x C (C=3 RGB, or 1 with keep_gray), uint8 or uint16
    alpha: np.ndarray | None  # H x W, same dtype as pixels
    bit_depth: int  # 8 or 16
    path: str
    source_mode: str  # Pillow mode as opened (16-bit colour PNGs report Pillow's 8-bit mode)
    icc_profile: bytes | None
    exif: bytes | None  # "Exif\0\0"-prefixed, orientation reset to 1 (already applied)

    @property
    def is_gray(self) -> bool:
        return self.pixels.shape[2] == 1

    def to_tensor(self) -> torch.Tensor:
        """float32 C x H x W in [0, 1]."""
        import torch
        arr = np.ascontiguousarray(self.pixels.transpose(2, 0, 1), dtype=np.float32)
        arr /= 255.0 if self.bit_depth == 8 else 65535.0
        return torch.from_numpy(arr)

    def __repr__(self) -> str:  # arrays are too big for the default repr
        h, w, c = self.pixels.shape
        return (f"LoadedImage({self.path!r}, {w}x{h}x{c}, {self.bit_depth}-bit, "
                f"source_mode={self.source_mode!r}, alpha={self.alpha is not None})")


def is_image_file(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# --------------------------------------------------------------------------------------- loading

def load_image(path, *, keep_gray: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               data: bytes | None = None) -> LoadedImage:
    """Load an image fully (truncation is detected here, not later).

    max_pixels: width*height limit checked from the header before decoding (None = no limit).
    data: the file's bytes when the caller already has them (an object-store read, an archive
    member); ``path`` then only names the image in errors and LoadedImage.path.
    Raises ImageReadError for missing/empty/corrupt/truncated/unsupported/oversized files.
    """
    name = os.fspath(path)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if data is None:
        data = _read_file(name)
    elif not data:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    try:
        # We enforce max_pixels, so Pillow's header-time bomb warning is noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _pil_open(data) as im:
                w, h = im.size
                if max_pixels is not None and w * h > max_pixels:
                    raise ImageReadError(
                        f"{name}: image is {w}x{h} = {w * h:,} pixels, over the limit "
                        f"max_pixels={max_pixels:,} (pass a larger max_pixels if the file is trusted)")
                mode = im.mode
                if im.format == "PNG" and _png16_colour(data):
                    arr, trns, icc, exif_raw = _decode_png16(data)
                    orientation = _exif_orientation(exif_raw)
                else:
                    im.load()  # full decode now, so truncation surfaces here
                    arr, trns = _pil_to_array(im), im.info.get("transparency")
                    icc, exif_raw = im.info.get("icc_profile"), im.info.get("exif")
                    orientation = im.getexif().get(_ORIENTATION, 1)  # exif_transpose semantics (XMP too)
    except ImageReadError:
        raise
    except _Unsupported as e:
        raise ImageReadError(f"{name}: {e}") from None
    except UnidentifiedImageError as e:
        raise ImageReadError(f"{name}: not a recognised image file (unknown format or corrupt header)") from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error,
            Image.DecompressionBombError) as e:
        raise ImageReadError(f"{name}: corrupt or truncated image data ({type(e).__name__}: {e})") from e

    # Split alpha off; Pillow modes L/RGB/I;16 (and our 16-bit RGB) may carry a tRNS colour key.
    has_alpha = arr.shape[2] in (2, 4)
    color, alpha = (arr[..., :-1], arr[..., -1]) if has_alpha else (arr, None)
    if alpha is None and isinstance(trns, (int, tuple)) and (mode in ("L", "RGB") or mode.startswith("I;16")):
        key = np.asarray(trns).reshape(1, 1, -1)
        if key.shape[2] == color.shape[2]:
            alpha = np.where((color == key).all(axis=2), 0, np.iinfo(color.dtype).max).astype(color.dtype)
    color = _orient(color, orientation)
    alpha = None if alpha is None else _orient(alpha, orientation)
    if color.shape[2] == 1 and not keep_gray:
        color = np.repeat(color, 3, axis=2)
    return LoadedImage(
        pixels=color, alpha=alpha, bit_depth=8 if color.dtype == np.uint8 else 16, path=name,
        source_mode=mode, icc_profile=_matching_icc(icc, color.shape[2]),
        exif=_exif_reset_orientation(exif_raw))


def _read_file(name: str) -> bytes:
    try:
        data = Path(name).read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise ImageReadError(f"{name}: is a directory, not an image file") from None
    except OSError as e:
        raise ImageReadError(f"{name}: cannot read file ({e.strerror or e})") from e
    if not data:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    return data


def _pil_open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        # Pillow refuses > 2*MAX_IMAGE_PIXELS before we can see the size; reopen (header only)
        # without its limit so our own check reports the size and max_pixels.
        with _PIL_LIMIT_LOCK:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                return Image.open(io.BytesIO(data))
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """H x W x C array with C in 1..4 (2 and 4 have alpha last), uint8 or uint16."""
    mode = im.mode
    if mode == "F":
        raise _Unsupported("32-bit float image (mode F) is not supported: its value range is undefined; "
                           "convert it to 8- or 16-bit first")
    if mode == "I":  # 32-bit int: accept when it is really 16-bit data (old Pillow opened 16-bit PNGs so)
        a = np.array(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise _Unsupported("32-bit integer image (mode I) has values outside 0..65535")
        return a.astype(np.uint16)[..., None]
    if mode.startswith("I;16"):
        return np.array(im).astype(np.uint16)[..., None]  # native byte order
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode not in ("L", "LA", "RGB", "RGBA"):  # CMYK, YCbCr, RGBX, RGBa, La, LAB, ...
        im = im.convert({"La": "LA", "RGBa": "RGBA"}.get(mode, "RGB"))
    a = np.array(im)  # a writable copy
    return a[..., None] if a.ndim == 2 else a


def _orient(a: np.ndarray, orientation) -> np.ndarray:
    """Apply an EXIF orientation like PIL.ImageOps.exif_transpose (PIL ROTATE_270 = 90 deg clockwise)."""
    ops = {2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
           5: lambda x: x.swapaxes(0, 1), 6: lambda x: np.rot90(x, -1), 7: lambda x: x.swapaxes(0, 1)[::-1, ::-1],
           8: lambda x: np.rot90(x, 1)}
    op = ops.get(orientation)
    return a if op is None else np.ascontiguousarray(op(a))


def _exif_orientation(raw: bytes | None) -> int:
    if not raw:
        return 1
    exif = Image.Exif()
    exif.load(raw)
    return exif.get(_ORIENTATION, 1)


def _exif_reset_orientation(raw: bytes | None) -> bytes | None:
    if not raw:
        return None
    raw = raw if raw.startswith(_EXIF_HEADER) else _EXIF_HEADER + raw
    exif = Image.Exif()
    exif.load(raw)
    if exif.get(_ORIENTATION, 1) == 1:
        return raw  # untouched bytes: no re-serialisation needed
    exif[_ORIENTATION] = 1
    return exif.tobytes()


def _matching_icc(icc: bytes | None, channels: int) -> bytes | None:
    # ICC header bytes 16..20 hold the data colour space; a CMYK or GRAY profile must not be
    # attached to RGB pixels (or re-embedded by save_image).
    if not icc or len(icc) < 20:
        return None
    return icc if icc[16:20] == (b"RGB " if channels == 3 else b"GRAY") else None


# ---------------------------------------------------------------------------------------- saving

#: 8-bit PNGs with more pixels than this are written by png_codec._write_png, block by block: Pillow would
#: first copy the image into its own 4-bytes-per-pixel buffer (1 GB for a 16384² x8 upscale), which is what
#: kept `perceptual upscale` above 2 GB at that size (benchmarks/memory.py).
STREAM_PNG_PIXELS = 1 << 26


def tensor_to_array(t: torch.Tensor, bit_depth: int = 8) -> np.ndarray:
    """Float C x H x W (or H x W) tensor in [0, 1] -> H x W x C uint8/uint16: clamp, scale, round
    half to even (torch.round). NaN is an error rather than a silent black pixel."""
    import torch

    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if not torch.is_floating_point(t):
        raise TypeError(f"expected a floating point tensor in [0, 1], got {t.dtype}")
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3:
        raise ValueError(f"expected a C x H x W tensor, got shape {tuple(t.shape)}")
    t = t.detach().to("cpu", torch.float64 if t.dtype == torch.float64 else torch.float32)
    if torch.isnan(t).any():
        raise ValueError("tensor contains NaN")
    scaled = t.clamp(0, 1).mul(255 if bit_depth == 8 else 65535).round().to(torch.int32)
    return scaled.permute(1, 2, 0).numpy().astype(np.uint8 if bit_depth == 8 else np.uint16)


def save_image(path, image, *, alpha=None, bit_depth: int = 8, icc_profile: bytes | None = None,
               exif: bytes | None = None, quality: int = 95) -> Path:
    """Save atomically (temp file in the same directory, then os.replace); creates parent dirs.

    image: uint8/uint16 array H x W or H x W x C (C = 1, 3, or 2/4 with alpha last), or a float
    C x H x W tensor in [0, 1] (converted with tensor_to_array at ``bit_depth``; arrays keep their
    own dtype). alpha: H x W array / tensor, rescaled to the image's bit depth. icc_profile/exif are
    embedded for PNG/JPEG/WebP/TIFF (BMP cannot hold them). quality: JPEG/WebP only.
    """
    path = Path(path)
    write = _encoder(path, image, alpha=alpha, bit_depth=bit_depth, icc_profile=icc_profile, exif=exif,
                     quality=quality)
    atomic_write(path, write)  # encoded straight into the file: no copy of the encoded bytes in memory
    return path


def encode_image(path, image, *, alpha=None, bit_depth: int = 8, icc_profile: bytes | None = None,
                 exif: bytes | None = None, quality: int = 95) -> bytes:
    """The file bytes save_image would write to ``path`` (format from its extension), for writers
    that are not a local file (object stores, tar shards). Same arguments and errors."""
    buf = io.BytesIO()
    _encoder(Path(path), image, alpha=alpha, bit_depth=bit_depth, icc_profile=icc_profile, exif=exif,
             quality=quality)(buf)
    return buf.getvalue()


def _encoder(path: Path, image, *, alpha, bit_depth: int, icc_profile: bytes | None, exif: bytes | None,
             quality: int):
    """Check and convert the image now (errors before any file is opened); return write(f)."""
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported extension {path.suffix!r}; use one of {sorted(_SAVE_FORMATS)}")
    pixels = _as_hwc(path, image, bit_depth)
    if alpha is not None:
        if pixels.shape[2] in (2, 4):
            raise ValueError(f"{path}: image already has an alpha channel and alpha= was also given")
        a = _as_hwc(path, alpha, bit_depth)
        if a.shape != pixels.shape[:2] + (1,):
            raise ValueError(f"{path}: alpha shape {a.shape[:2]} does not match image {pixels.shape[:2]}")
        pixels = np.concatenate([pixels, _to_dtype(a, pixels.dtype)], axis=2)
    if pixels.shape[2] in (2, 4) and fmt in ("JPEG", "BMP"):
        raise ValueError(f"{path}: {fmt} cannot store alpha; save as .png/.webp/.tiff or pass alpha=None")
    if pixels.dtype == np.uint16 and fmt in ("JPEG", "WEBP", "BMP"):
        pixels = _to_dtype(pixels, np.uint8)  # 8-bit-only formats
    if pixels.dtype == np.uint16 and fmt == "TIFF" and pixels.shape[2] != 1:
        raise ValueError(f"{path}: Pillow cannot write 16-bit colour/alpha TIFF; use .png")
    if fmt == "PNG" and (pixels.dtype == np.uint16 or pixels.shape[0] * pixels.shape[1] > STREAM_PNG_PIXELS):
        return lambda f: _write_png(f, pixels, icc_profile, exif)  # Pillow writes no 16-bit colour PNG
    meta = {k: v for k, v in (("icc_profile", icc_profile), ("exif", exif)) if v and fmt != "BMP"}
    extra = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}

    def write(f):
        Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(f, format=fmt, **meta, **extra)

    return write


def _is_tensor(x) -> bool:
    # torch is imported only when a tensor can be involved: decoding/encoding workers (batch jobs,
    # prepare stages) then start without paying torch's import (seconds per process).
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _as_hwc(path: Path, image, bit_depth: int) -> np.ndarray:
    if _is_tensor(image):
        arr = tensor_to_array(image, bit_depth)
    elif isinstance(image, np.ndarray):
        if image.dtype.type not in (np.uint8, np.uint16):
            raise ValueError(f"{path}: array dtype {image.dtype} is not supported (need uint8 or uint16; "
                             f"float data: pass a C x H x W torch tensor in [0, 1])")
        arr = np.asarray(image, dtype=image.dtype.type)  # native byte order
        arr = arr[..., None] if arr.ndim == 2 else arr
    else:
        raise TypeError(f"{path}: expected a numpy array or torch tensor, got {type(image).__name__}")
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or 0 in arr.shape:
        raise ValueError(f"{path}: expected H x W x C (C = 1..4) image data, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _to_dtype(a: np.ndarray, dtype) -> np.ndarray:
    if a.dtype == dtype:
        return a
    if dtype == np.uint8:
        return np.rint(a / 257.0).astype(np.uint8)
    return a.astype(np.uint16) * 257  # 255 -> 65535


def atomic_write(path: Path, write) -> None:
    """Write via a temp file in the target directory, then os.replace: readers never see a partial
    file and a failed write leaves any existing file untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open with mode 0o666 lets the umask apply (mkstemp would leave the file 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
