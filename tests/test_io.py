"""perceptual_core.io: loading/saving real images and the awkward cases (no mocks)."""
from __future__ import annotations

import csv
import os
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from perceptual_core.io import (
    DEFAULT_MAX_PIXELS, ImageReadError, LoadedImage, is_image_file, load_image, save_image, tensor_to_array,
)

DATA = Path(os.environ.get("PERCEPTUAL_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
CHICAGO = DATA / "styles" / "content_images" / "chicago.jpg"  # RGB 712x474
GRAY_JPEG = DATA / "coco128_train2017" / "images" / "000000000086.jpg"  # mode L
BRIDGE = DATA / "Set14" / "HR" / "bridge.png"  # mode L PNG
ICC_JPEG = DATA / "coco128_train2017" / "images" / "000000000025.jpg"  # has an RGB ICC profile

if not CHICAGO.exists():
    pytest.skip(f"real test images not found under {DATA} (set PERCEPTUAL_DATA_DIR)", allow_module_level=True)


def _mad(a, b) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def _photo16() -> np.ndarray:
    """A real photo widened to 16 bits with noise in the low byte (so the low byte matters)."""
    rgb = load_image(CHICAGO).pixels[:160, :200]
    low = np.random.default_rng(0).integers(0, 256, rgb.shape)
    return (rgb.astype(np.uint16) * 256 + low).astype(np.uint16)


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def _png_by_hand(w, h, depth, ctype, interlace=0, idat=b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(idat))
            + _png_chunk(b"IEND", b""))


# ------------------------------------------------------------------------------ real images

def test_rgb_jpeg_matches_pillow_and_to_tensor():
    img = load_image(CHICAGO)
    ref = np.asarray(Image.open(CHICAGO).convert("RGB"))
    assert img.pixels.shape == (474, 712, 3) and img.pixels.dtype == np.uint8
    assert np.array_equal(img.pixels, ref)
    assert (img.bit_depth, img.source_mode, img.alpha, img.is_gray) == (8, "RGB", None, False)
    t = img.to_tensor()
    assert t.shape == (3, 474, 712) and t.dtype == torch.float32
    assert torch.equal(t[:, 10, 20], torch.from_numpy(ref[10, 20].astype(np.float32) / 255))
    assert np.array_equal(tensor_to_array(t), ref)  # exact round trip


def test_grayscale_jpeg_replicated_or_kept():
    img = load_image(GRAY_JPEG)
    ref = np.asarray(Image.open(GRAY_JPEG))
    assert img.source_mode == "L" and img.pixels.shape == ref.shape + (3,)
    assert all(np.array_equal(img.pixels[..., c], ref) for c in range(3))
    kept = load_image(GRAY_JPEG, keep_gray=True)
    assert kept.is_gray and kept.pixels.shape == ref.shape + (1,)
    assert np.array_equal(kept.pixels[..., 0], ref)
    assert kept.to_tensor().shape == (1,) + ref.shape


def test_set14_bridge_keep_gray():
    img = load_image(BRIDGE, keep_gray=True)
    assert img.source_mode == "L" and img.pixels.shape == (512, 512, 1)
    assert np.array_equal(img.pixels[..., 0], np.asarray(Image.open(BRIDGE)))


def test_all_real_images_load_without_warnings():
    paths = sorted(p for p in DATA.rglob("*") if is_image_file(p))
    assert len(paths) > 300
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shapes = {p.relative_to(DATA).as_posix(): load_image(p).pixels.shape for p in paths}
    assert all(s[2] == 3 for s in shapes.values())
    # COCO sizes agree with the annotation metadata (none of these photos is EXIF-rotated)
    with open(DATA / "coco128_train2017" / "image_info.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 128
    for r in rows:
        assert shapes[f"coco128_train2017/images/{r['file_name']}"][:2] == (int(r["height"]), int(r["width"]))


def test_icc_profile_returned_and_carried_through_png(tmp_path):
    img = load_image(ICC_JPEG)
    icc = Image.open(ICC_JPEG).info["icc_profile"]
    assert img.icc_profile == icc and icc[16:20] == b"RGB "
    for arr in (img.pixels, img.pixels.astype(np.uint16) * 257):  # Pillow path and the 16-bit writer
        out = save_image(tmp_path / f"icc{arr.dtype}.png", arr, icc_profile=img.icc_profile)
        back = load_image(out)
        assert back.icc_profile == icc and np.array_equal(back.pixels, arr)
    assert Image.open(tmp_path / "iccuint16.png").info["icc_profile"] == icc  # Pillow reads our iCCP


# --------------------------------------------------------------------------- EXIF orientation

def test_exif_orientation_6_jpeg(tmp_path):
    src = Image.open(CHICAGO)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "perceptual-test"  # Make: must survive the orientation reset
    p = tmp_path / "rot6.jpg"
    src.save(p, quality=95, exif=exif.tobytes())
    img = load_image(p)
    assert img.pixels.shape == (712, 474, 3)  # rotated: W and H swapped
    rotated = np.rot90(np.asarray(src), -1)  # orientation 6 = display rotated 90 deg clockwise
    assert _mad(img.pixels, rotated) < 3.0
    assert _mad(img.pixels, np.asarray(src)[:474, :474].repeat(2, 0)[:712]) > 20  # not just any image
    out = Image.Exif()
    out.load(img.exif)
    assert out[0x0112] == 1 and out[0x010F] == "perceptual-test"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_orientations_match_exif_transpose(tmp_path, orientation):
    src = Image.open(CHICAGO).crop((0, 0, 60, 40))
    src.putalpha(Image.linear_gradient("L").resize((60, 40)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / "o.png"
    src.save(p, exif=exif.tobytes())  # lossless, so the comparison is exact
    ref = ImageOps.exif_transpose(Image.open(p))
    img = load_image(p)
    assert np.array_equal(img.pixels, np.asarray(ref)[..., :3])
    assert np.array_equal(img.alpha, np.asarray(ref)[..., 3])


# ------------------------------------------------------------------------------------- modes

def test_cmyk_jpeg_becomes_rgb(tmp_path):
    rgb = Image.open(CHICAGO)
    p = tmp_path / "cmyk.jpg"
    rgb.convert("CMYK").save(p, quality=95)  # Pillow writes an Adobe (inverted) CMYK JPEG
    img = load_image(p)
    assert img.source_mode == "CMYK" and img.pixels.shape == (474, 712, 3)
    assert _mad(img.pixels, np.asarray(rgb)) < 3.0


def test_palette_png_with_and_without_transparency(tmp_path):
    pal = Image.open(CHICAGO).quantize(64)
    idx = np.asarray(pal)
    rgb = np.asarray(pal.convert("RGB"))
    pal.save(tmp_path / "opaque.png")
    img = load_image(tmp_path / "opaque.png")
    assert img.source_mode == "P" and img.alpha is None and np.array_equal(img.pixels, rgb)
    pal.save(tmp_path / "trns.png", transparency=int(idx[0, 0]))
    img = load_image(tmp_path / "trns.png")
    assert img.alpha is not None and img.alpha.dtype == np.uint8
    assert np.array_equal(img.alpha == 0, idx == idx[0, 0]) and set(np.unique(img.alpha)) == {0, 255}
    assert np.array_equal(img.pixels, rgb)  # not composited


def test_colour_key_transparency_on_gray_png(tmp_path):
    g = np.asarray(Image.open(BRIDGE))
    Image.fromarray(g).save(tmp_path / "key.png", transparency=int(g[0, 0]))
    img = load_image(tmp_path / "key.png", keep_gray=True)
    assert np.array_equal(img.alpha == 0, g == g[0, 0])


def test_bilevel_and_la(tmp_path):
    g = np.asarray(Image.open(BRIDGE))
    Image.fromarray(g).convert("1").save(tmp_path / "bw.png")
    img = load_image(tmp_path / "bw.png", keep_gray=True)
    assert img.source_mode == "1" and set(np.unique(img.pixels)) == {0, 255}
    la = np.stack([g, 255 - g], axis=2)
    Image.fromarray(la).save(tmp_path / "la.png")
    img = load_image(tmp_path / "la.png")
    assert img.pixels.shape == g.shape + (3,) and np.array_equal(img.pixels[..., 1], g)
    assert np.array_equal(img.alpha, 255 - g)


def test_float_mode_is_a_clear_error_and_int_mode_fits_uint16(tmp_path):
    g = np.asarray(Image.open(BRIDGE)).astype(np.float32) / 255
    Image.fromarray(g).save(tmp_path / "f.tif")
    with pytest.raises(ImageReadError, match=r"f\.tif: .*mode F"):
        load_image(tmp_path / "f.tif")
    i32 = np.asarray(Image.open(BRIDGE)).astype(np.int32) * 200
    Image.fromarray(i32).save(tmp_path / "i.tif")
    img = load_image(tmp_path / "i.tif", keep_gray=True)
    assert img.bit_depth == 16 and np.array_equal(img.pixels[..., 0], i32)


# ------------------------------------------------------------------------------ round trips

@pytest.mark.parametrize("ext", [".png", ".tiff", ".webp"])
def test_rgba_round_trip_keeps_alpha(tmp_path, ext):
    rgb = load_image(CHICAGO).pixels
    alpha = np.random.default_rng(1).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    back = load_image(save_image(tmp_path / f"a{ext}", rgb, alpha=alpha))
    assert np.array_equal(back.alpha, alpha)
    if ext == ".webp":  # lossy colour, lossless alpha
        assert _mad(back.pixels, rgb) < 4.0
    else:
        assert np.array_equal(back.pixels, rgb)


def test_16bit_gray_png_round_trip(tmp_path):
    g16 = _photo16()[..., 0]
    back = load_image(save_image(tmp_path / "g16.png", g16), keep_gray=True)
    assert back.source_mode.startswith("I;16") and back.bit_depth == 16
    assert back.pixels.dtype == np.uint16 and np.array_equal(back.pixels[..., 0], g16)
    assert np.array_equal(load_image(tmp_path / "g16.png").pixels, np.repeat(g16[..., None], 3, 2))
    Image.fromarray(g16).save(tmp_path / "pil16.png")  # written by Pillow, not by us
    assert np.array_equal(load_image(tmp_path / "pil16.png", keep_gray=True).pixels[..., 0], g16)
    t = back.to_tensor()
    assert float(t.max()) <= 1.0 and np.array_equal(tensor_to_array(t, 16), back.pixels)


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_16bit_colour_png_round_trip(tmp_path, channels):
    rgb16 = _photo16()
    arr = {3: rgb16, 4: np.dstack([rgb16, rgb16[::-1, :, 0]]), 2: rgb16[..., :2]}[channels]
    alpha = None if channels == 3 else arr[..., -1]
    p = save_image(tmp_path / "c16.png", arr)
    back = load_image(p, keep_gray=True)
    color = arr[..., :-1] if alpha is not None else arr
    assert back.bit_depth == 16 and np.array_equal(back.pixels, color)
    assert (back.alpha is None) == (alpha is None) and (alpha is None or np.array_equal(back.alpha, alpha))
    # An independent decoder (Pillow's, which keeps the high byte) agrees with our encoder.
    pil = np.asarray(Image.open(p).convert("LA" if channels == 2 else None))  # Pillow shows 16-bit LA as RGBA
    assert np.array_equal(pil, (arr >> 8).astype(np.uint8))
    # the encoder used several PNG filter types, so the decoder was exercised on them
    data = p.read_bytes()
    assert data[24:26] == bytes([16, {3: 2, 4: 6, 2: 4}[channels]])
    idat = zlib.decompress(b"".join(data[i + 8:i + 8 + struct.unpack(">I", data[i:i + 4])[0]]
                                    for i in _chunk_offsets(data, b"IDAT")))
    filters = set(idat[:: 200 * 2 * channels + 1])
    assert len(filters) >= 3 and filters <= {0, 1, 2, 3, 4}


def _chunk_offsets(data: bytes, tag: bytes):
    pos = 8
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        if data[pos + 4:pos + 8] == tag:
            yield pos
        pos += 12 + n


def test_16bit_colour_png_with_exif_orientation_and_tensor_save(tmp_path):
    rgb16 = _photo16()
    exif = Image.Exif()
    exif[0x0112] = 8
    p = save_image(tmp_path / "o.png", rgb16, exif=exif.tobytes())
    img = load_image(p)
    assert np.array_equal(img.pixels, np.rot90(rgb16, 1))  # orientation 8 = rotate 90 deg counter-clockwise
    e = Image.Exif()
    e.load(img.exif)
    assert e[0x0112] == 1
    q = save_image(tmp_path / "t.png", img.to_tensor(), bit_depth=16)  # tensor -> 16-bit file, exact
    assert np.array_equal(load_image(q).pixels, img.pixels)


def test_interlaced_16bit_colour_png_is_a_clear_error(tmp_path):
    p = tmp_path / "interlaced.png"
    p.write_bytes(_png_by_hand(4, 4, 16, 2, interlace=1, idat=b"\0" * 200))
    with pytest.raises(ImageReadError, match=r"interlaced\.png: .*interlaced 16-bit"):
        load_image(p)


def test_16bit_to_jpeg_is_8bit(tmp_path):
    rgb16 = _photo16()
    back = load_image(save_image(tmp_path / "x.jpg", rgb16))
    assert back.bit_depth == 8 and _mad(back.pixels, np.rint(rgb16 / 257)) < 3.0


def test_tensor_to_array_clamps_and_rounds():
    t = torch.tensor([[[-0.5, 0.0, 0.5 / 255, 1.5 / 255, 1.0, 7.0]]])
    assert tensor_to_array(t).ravel().tolist() == [0, 0, 0, 2, 255, 255]  # half to even
    assert tensor_to_array(t, 16).dtype == np.uint16
    with pytest.raises(ValueError, match="NaN"):
        tensor_to_array(torch.full((3, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="C x H x W"):
        tensor_to_array(torch.zeros(1, 3, 4, 4))


# ------------------------------------------------------------------------------ bad input

def test_bomb_limit_names_file_size_and_parameter():
    with pytest.raises(ImageReadError) as e:
        load_image(CHICAGO, max_pixels=100_000)
    msg = str(e.value)
    assert msg.startswith(str(CHICAGO)) and "712x474" in msg and "max_pixels" in msg
    assert load_image(CHICAGO, max_pixels=712 * 474).pixels.shape == (474, 712, 3)  # limit is inclusive


def test_header_only_bomb_rejected_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_by_hand(20_000, 20_000, 8, 2))  # 400 MP claimed, a few bytes of data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageReadError, match=r"bomb\.png: image is 20000x20000 .*max_pixels=178,956,970"):
            load_image(p)
        # Above Pillow's warning threshold but under ours: no DecompressionBombWarning, then the
        # (missing) data is reported as truncated.
        q = tmp_path / "big.png"
        q.write_bytes(_png_by_hand(10_000, 9_000, 1, 0))
        assert 10_000 * 9_000 > Image.MAX_IMAGE_PIXELS and 10_000 * 9_000 < DEFAULT_MAX_PIXELS
        with pytest.raises(ImageReadError, match=r"big\.png: corrupt or truncated"):
            load_image(q)


def test_truncated_jpeg(tmp_path):
    p = tmp_path / "half.jpg"
    data = CHICAGO.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"half\.jpg: corrupt or truncated.*truncated"):
        load_image(p)


def test_truncated_16bit_png(tmp_path):
    p = save_image(tmp_path / "full.png", _photo16())
    cut = tmp_path / "cut.png"
    cut.write_bytes(p.read_bytes()[:-5000])
    with pytest.raises(ImageReadError, match=r"cut\.png: corrupt or truncated"):
        load_image(cut)


def test_zero_byte_text_missing_and_directory(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.png").write_text("this is not an image\n")
    cases = {"empty.jpg": "empty file", "notes.png": "not a recognised image", "missing.png": "file not found"}
    for name, reason in cases.items():
        with pytest.raises(ImageReadError) as e:
            load_image(tmp_path / name)
        assert str(e.value).startswith(str(tmp_path / name) + ": ") and reason in str(e.value)
        assert isinstance(e.value, ValueError)
    with pytest.raises(ImageReadError, match="is a directory"):
        load_image(tmp_path)


# ----------------------------------------------------------------------------------- saving

def test_save_creates_dirs_formats_and_permissions(tmp_path):
    rgb = load_image(CHICAGO).pixels
    exts = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
    for ext in exts:
        p = save_image(tmp_path / "a" / "b" / f"x{ext}", rgb)
        assert isinstance(p, Path) and load_image(p).pixels.shape == rgb.shape
    assert sorted(os.listdir(tmp_path / "a" / "b")) == sorted(f"x{e}" for e in exts)  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a" / "b" / "x.png").stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(ValueError, match=r"x\.gif: unsupported extension"):
        save_image(tmp_path / "x.gif", rgb)
    with pytest.raises(ValueError, match=r"y\.jpg: JPEG cannot store alpha"):
        save_image(tmp_path / "y.jpg", rgb, alpha=rgb[..., 0])
    assert not (tmp_path / "y.jpg").exists()


def test_jpeg_keeps_icc_and_exif(tmp_path):
    img = load_image(ICC_JPEG)
    exif = Image.Exif()
    exif[0x010F] = "perceptual-test"
    back = load_image(save_image(tmp_path / "m.jpg", img.pixels, icc_profile=img.icc_profile, exif=exif.tobytes()))
    e = Image.Exif()
    e.load(back.exif)
    assert back.icc_profile == img.icc_profile and e[0x010F] == "perceptual-test"


def test_failed_save_leaves_existing_file_intact(tmp_path):
    target = tmp_path / "keep.jpg"
    shutil.copyfile(CHICAGO, target)
    before = target.read_bytes()
    with pytest.raises(ValueError, match=r"keep\.jpg: array dtype float64"):
        save_image(target, np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="shape"):
        save_image(target, np.zeros((4, 4, 5), np.uint8))
    # A failure inside Pillow's encoder, after the temp file was opened: EXIF too big for JPEG.
    with pytest.raises(ValueError, match="EXIF"):
        save_image(target, np.zeros((8, 8, 3), np.uint8), exif=b"Exif\0\0" + b"\0" * 70_000)
    assert target.read_bytes() == before and load_image(target).pixels.shape == (474, 712, 3)
    assert os.listdir(tmp_path) == ["keep.jpg"]  # no temp file left behind


def test_tensor_and_alpha_tensor_save(tmp_path):
    img = load_image(CHICAGO)
    a = torch.linspace(0, 1, 712).expand(474, 712)
    back = load_image(save_image(tmp_path / "t.png", img.to_tensor(), alpha=a))
    assert np.array_equal(back.pixels, img.pixels)
    assert back.alpha[0, 0] == 0 and back.alpha[0, -1] == 255


def test_is_image_file():
    assert is_image_file("a/b.JPG") and is_image_file(Path("x.tiff")) and is_image_file("y.pgm")
    assert not is_image_file("z.txt") and not is_image_file(".x.png.1a2b.tmp") and not is_image_file("png")
    assert isinstance(load_image(CHICAGO), LoadedImage)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_large_8_bit_pngs_are_streamed_and_exact(channels, tmp_path, monkeypatch):
    """Above io.STREAM_PNG_PIXELS an 8-bit PNG is written 256 rows at a time without Pillow's copy of the
    image (the 2 GB memory bar of x8 upscales): the file decodes to exactly the array, across block edges."""
    from PIL import Image

    from perceptual_core import io as pio

    monkeypatch.setattr(pio, "STREAM_PNG_PIXELS", 0)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:600, :37]
    img = ((xx * 5 + yy * 3)[..., None] + rng.integers(0, 9, (600, 37, channels))).astype(np.uint8)
    f = pio.save_image(tmp_path / "big.png", img[..., 0] if channels == 1 else img, icc_profile=None)
    back = np.asarray(Image.open(f))
    assert np.array_equal(back.reshape(img.shape), img)
    assert Image.open(f).mode == {1: "L", 3: "RGB", 4: "RGBA"}[channels]
