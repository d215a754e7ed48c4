"""PNG in zlib + numpy, for what Pillow cannot do: Pillow (checked with 13.0) opens RGB48 / RGBA64 /
16-bit gray+alpha PNGs as 8-bit "RGB" / "RGBA" / "LA" (it keeps only the high byte) and cannot write
them at all, and writing a large 8-bit PNG it first copies the image into a 4-bytes-per-pixel buffer.
So io.py reads 16-bit colour PNGs here (non-interlaced only) and writes every 16-bit and large PNG here.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

_EXIF_HEADER = b"Exif\x00\x00"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG16_CHANNELS = {2: 3, 4: 2, 6: 4}  # colour type -> samples/pixel, for the types Pillow truncates


class _Unsupported(Exception):
    """Internal: a readable file whose content we refuse (reason only; the path is prefixed later)."""


def _png16_colour(data: bytes) -> bool:
    """True for PNGs whose 16-bit samples Pillow would truncate to 8 bits (colour types 2, 4, 6)."""
    if len(data) < 29 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return False
    return data[24] == 16 and data[25] in _PNG16_CHANNELS


def _png_chunks(data: bytes):
    pos = 8
    while pos < len(data):
        if pos + 12 > len(data):
            raise EOFError("PNG file is truncated inside a chunk header")
        length, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body, crc = data[pos + 8:pos + 8 + length], data[pos + 8 + length:pos + 12 + length]
        if len(crc) != 4:
            raise EOFError(f"PNG file is truncated inside chunk {tag.decode('latin-1')}")
        if zlib.crc32(tag + body) != struct.unpack(">I", crc)[0]:
            raise ValueError(f"CRC mismatch in PNG chunk {tag.decode('latin-1')}")
        yield tag, body
        if tag == b"IEND":
            return
        pos += 12 + length


def _decode_png16(data: bytes):
    """-> (H x W x C uint16 array, tRNS key or None, icc bytes or None, raw EXIF or None)."""
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if interlace:
        raise _Unsupported("interlaced 16-bit colour PNG is not supported (Pillow would cut it to "
                           "8 bits); re-save it non-interlaced")
    if comp or filt:
        raise ValueError(f"unknown PNG compression/filter method {comp}/{filt}")
    channels = _PNG16_CHANNELS[ctype]
    idat, trns, icc, exif = [], None, None, None
    for tag, body in _png_chunks(data):
        if tag == b"IDAT":
            idat.append(body)
        elif tag == b"tRNS" and ctype == 2 and len(body) == 6:
            trns = struct.unpack(">3H", body)
        elif tag == b"iCCP":
            icc = zlib.decompress(body[body.index(b"\0") + 2:])  # name \0 method(1) zlib-data
        elif tag == b"eXIf":
            exif = body
    bpp = 2 * channels
    z = zlib.decompressobj()
    raw = z.decompress(b"".join(idat))
    if not z.eof or len(raw) < h * (w * bpp + 1):
        raise EOFError("PNG image data is truncated")
    rows = np.frombuffer(raw, np.uint8, count=h * (w * bpp + 1)).reshape(h, w * bpp + 1)
    pixels = _png_unfilter(rows[:, 0], rows[:, 1:].reshape(h, w, bpp))
    arr = pixels.reshape(h, w * bpp).view(">u2").reshape(h, w, channels).astype(np.uint16)
    return arr, trns, icc, exif


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _png_unfilter(ftype: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Undo PNG filters 0-4. f: H x W x bpp filtered bytes -> reconstructed bytes.

    Each pixel depends on its left, upper and upper-left neighbours, so all pixels on one
    anti-diagonal (x + y = d) are independent: we sweep d in W + H - 1 vectorised steps. In a
    skewed layout (column = x + y) those neighbours are whole columns d-1, d-1 and d-2.
    """
    h, w, bpp = f.shape
    if ftype.size and ftype.max() > 4:
        raise ValueError(f"invalid PNG filter type {int(ftype.max())}")
    ys = np.arange(h)[:, None]
    fs = np.zeros((h, w + h - 1, bpp), np.uint8)  # fs[y, x + y] = f[y, x]
    fs[ys, ys + np.arange(w)[None, :]] = f
    rs = np.zeros((h + 1, w + h + 1, bpp), np.uint8)  # rs[y + 1, x + y + 2] = recon[y, x]; zeros = outside
    t = ftype.astype(np.int64)[:, None]
    for d in range(w + h - 1):
        y0, y1 = max(0, d - w + 1), min(h, d + 1)
        left, up, upleft = rs[y0 + 1:y1 + 1, d + 1], rs[y0:y1, d + 1], rs[y0:y1, d]
        a, b, c = (v.astype(np.int16) for v in (left, up, upleft))
        tt = t[y0:y1]
        pred = np.where(tt == 1, a, np.where(tt == 2, b, np.where(tt == 3, (a + b) >> 1,
                                                                  np.where(tt == 4, _paeth(a, b, c), 0))))
        rs[y0 + 1:y1 + 1, d + 2] = (fs[y0:y1, d] + pred) & 255
    return rs[ys + 1, ys + np.arange(w)[None, :] + 2]


def _png_filter(img: np.ndarray, bpp: int) -> bytes:
    """Filter H x rowbytes uint8 rows, choosing per row the filter with the smallest sum of
    |signed bytes| (libpng's heuristic), so real images compress and all filter types occur."""
    out = []
    for y0 in range(0, img.shape[0], 256):  # blocks bound the memory of the 5 candidates
        x = img[y0:y0 + 256].astype(np.int16)
        b = np.zeros_like(x)
        b[0] = img[y0 - 1] if y0 else 0
        b[1:] = x[:-1]
        a, c = np.zeros_like(x), np.zeros_like(x)
        a[:, bpp:], c[:, bpp:] = x[:, :-bpp], b[:, :-bpp]
        cand = (np.stack([x, x - a, x - b, x - ((a + b) >> 1), x - _paeth(a, b, c)]) & 255).astype(np.uint8)
        best = np.abs(cand.view(np.int8).astype(np.int32)).sum(axis=2).argmin(axis=0)
        rows = cand[best, np.arange(len(x))]
        out.append(np.concatenate([best[:, None].astype(np.uint8), rows], axis=1).tobytes())
    return b"".join(out)


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def _write_png(f, arr: np.ndarray, icc: bytes | None, exif: bytes | None, level: int = 6) -> None:
    """Write ``arr`` (H x W x C uint8 or uint16) as a PNG to the binary file ``f``, ~2 MB of rows at a time:
    filtered (libpng's heuristic, _png_filter) and deflated as it goes, so memory stays a few row
    blocks beyond the image itself."""
    h, w, c = arr.shape
    depth = 16 if arr.dtype == np.uint16 else 8
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    bpp = c * depth // 8
    f.write(_PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)))
    if icc:
        f.write(_png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc)))
    if exif:
        f.write(_png_chunk(b"eXIf", exif.removeprefix(_EXIF_HEADER)))
    z = zlib.compressobj(level)
    step = max(1, min(256, (2 << 20) // (w * bpp)))  # ~2 MB of rows: filtering costs ~60 bytes per row byte
    for y0 in range(0, h, step):
        block = arr[max(0, y0 - 1):y0 + step]  # with the row above: the up/average/Paeth filters need it
        rows = (block.astype(">u2").view(np.uint8) if depth == 16 else block).reshape(len(block), w * bpp)
        filtered = _png_filter(np.ascontiguousarray(rows), bpp)
        data = z.compress(filtered[1 + w * bpp:] if y0 else filtered)
        if data:
            f.write(_png_chunk(b"IDAT", data))
    f.write(_png_chunk(b"IDAT", z.flush()) + _png_chunk(b"IEND", b""))
