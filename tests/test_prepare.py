"""prepare_style / prepare_sr on real COCO photos and planted bad files, through a real Ray instance."""
from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from scipy.ndimage import gaussian_filter

from pipelines import prepare as prep
from pipelines.settings import DegradationSettings, PrepareSettings, build

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out (its `smoke` tests excepted)

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def prep_settings(kind: str, **changes):
    """(PrepareSettings, DegradationSettings) of the project params, with ``changes`` to prepare_KIND."""
    return (build(PrepareSettings, {**PARAMS[f"prepare_{kind}"], **changes}, f"params.yaml: prepare_{kind}"),
            build(DegradationSettings, PARAMS["degradation"], "params.yaml: degradation"))


def coco_dir(data_dir: Path) -> Path:
    return data_dir / "coco128_train2017" / "images"


def png_header_only(w: int, h: int) -> bytes:
    """A decompression bomb: a valid PNG header claiming w x h pixels over a tiny IDAT."""
    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def plant_bad_files(folder: Path, good: list[Path]) -> dict[str, str]:
    """Write good copies and every kind of bad file; returns {file: expected reject kind or 'ok'}."""
    folder.mkdir(parents=True)
    expect = {}
    for p in good:
        shutil.copy(p, folder / p.name)
        expect[p.name] = "ok"
    src = good[0].read_bytes()
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(src[: len(src) // 3])
    (folder / "garbage.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    Image.open(good[1]).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    (folder / "sub").mkdir()
    Image.open(good[2]).convert("L").save(folder / "sub" / "gray.jpg", quality=95)
    Image.open(good[3]).convert("RGB").resize((200, 150)).save(folder / "small.png")
    expect.update({"zero.jpg": "empty", "truncated.jpg": "corrupt", "garbage.jpg": "not_an_image",
                   "notes.txt": "not_an_image", "bomb.png": "too_large", "cmyk.jpg": "ok", "sub/gray.jpg": "ok",
                   "small.png": "ok"})  # ok for style (upscaled); SR skips it
    return expect


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -------------------------------------------------------------- independent recomputation of LR

def _cubic(x):
    ax = np.abs(x)
    return np.where(ax <= 1, 1.5 * ax**3 - 2.5 * ax**2 + 1,
                    np.where(ax <= 2, -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2, 0.0))


def matlab_shrink_matrix(n: int, s: int) -> np.ndarray:
    """MATLAB imresize(1/s, 'bicubic') along one axis, written from its definition: output
    pixel i sits at (i + 0.5) * s - 0.5 in input coordinates; the cubic kernel is stretched by s
    (antialiasing); taps outside the image mirror back in (symmetric padding); rows sum to 1."""
    m = np.zeros((n // s, n))
    for i in range(n // s):
        u = (i + 0.5) * s - 0.5
        for j in range(int(np.floor(u - 2 * s)) - 1, int(np.ceil(u + 2 * s)) + 2):
            w = _cubic((u - j) / s) / s
            jj = -j - 1 if j < 0 else (2 * n - j - 1 if j >= n else j)
            m[i, jj] += w
        m[i] /= m[i].sum()
    return m


def paper_lr(hr: np.ndarray, s: int, sigma: float) -> np.ndarray:
    x = hr.astype(np.float64) / 255.0
    x = gaussian_filter(x, sigma=(sigma, sigma, 0), mode="nearest", truncate=3.0)  # replicate borders
    m = matlab_shrink_matrix(hr.shape[0], s)
    y = np.einsum("ih,hwc->iwc", m, x)
    y = np.einsum("jw,iwc->ijc", m, y)
    return np.clip(np.round(np.clip(y, 0, 1) * 255), 0, 255).astype(np.uint8)


def decode(b: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))


# ------------------------------------------------------------------------------------------ tests

def test_sr_patches_match_independent_blur_and_bicubic(data_dir):
    spec = prep.PatchSpec.from_params("sr", PARAMS["prepare_sr"], PARAMS["degradation"])
    src = sorted(coco_dir(data_dir).glob("*.jpg"))[0]
    rows, facts = prep.image_patches(str(src), src.name, spec)
    assert len(rows) == PARAMS["prepare_sr"]["patches_per_image"]
    assert (facts["src_w"], facts["src_h"]) == Image.open(src).size
    full = np.asarray(Image.open(src).convert("RGB"))
    for r in rows:
        hr = decode(r["hr"])
        assert hr.shape == (288, 288, 3)
        x0, y0 = int(r["box_x0"]), int(r["box_y0"])  # SR crops at native resolution: the box is exact
        assert r["box_x1"] - r["box_x0"] == 288
        np.testing.assert_array_equal(hr, full[y0:y0 + 288, x0:x0 + 288])
        for s, side in ((4, 72), (8, 36)):
            lr = decode(r[f"lr_x{s}"])
            assert lr.shape == (side, side, 3)
            ref = paper_lr(hr, s, PARAMS["degradation"]["blur_sigma"])
            diff = np.abs(lr.astype(int) - ref.astype(int))
            assert diff.max() <= 1 and (diff == 0).mean() > 0.99, (s, diff.max(), (diff == 0).mean())
        # A plain bicubic LR without the blur is measurably different: the blur is really applied.
        no_blur = paper_lr(hr, 4, 1e-6)
        assert np.abs(decode(r["lr_x4"]).astype(int) - no_blur.astype(int)).mean() > 0.5


def test_style_patches_resize_shorter_side_then_crop(data_dir):
    spec = prep.PatchSpec.from_params("style", {**PARAMS["prepare_style"], "crop": "center", "patches_per_image": 1},
                                      PARAMS["degradation"])
    src = sorted(coco_dir(data_dir).glob("*.jpg"))[1]
    (row,), facts = prep.image_patches(str(src), src.name, spec)
    w, h = Image.open(src).size
    assert min(facts["resized_w"], facts["resized_h"]) == 256
    assert decode(row["image"]).shape == (256, 256, 3)
    # the centre crop's box in source pixels is centred and spans 256 / scale source pixels
    f = 256 / min(w, h)
    assert abs((row["box_x0"] + row["box_x1"]) / 2 - w / 2) < 1 / f + 0.01
    assert abs((row["box_x1"] - row["box_x0"]) - 256 * w / facts["resized_w"]) < 0.02
    assert abs((row["box_y1"] - row["box_y0"]) - 256 * h / facts["resized_h"]) < 0.02


def test_bad_params_name_the_parameter():
    with pytest.raises(ValueError, match=r"prepare_sr\.scales"):
        prep.PatchSpec.from_params("sr", {**PARAMS["prepare_sr"], "scales": [5]}, PARAMS["degradation"])
    with pytest.raises(ValueError, match=r"prepare_style\.crop"):
        prep.PatchSpec.from_params("style", {**PARAMS["prepare_style"], "crop": "middle"}, PARAMS["degradation"])


def test_stage_on_planted_bad_files(tmp_path, data_dir, ray_address):
    good = sorted(coco_dir(data_dir).glob("*.jpg"))[:6]
    folder = tmp_path / "in"
    expect = plant_bad_files(folder, good)
    expect["small.png"] = "too_small"
    out = tmp_path / "sr"
    summary = prep.prepare("sr", *prep_settings("sr", patches_per_image=2), input_dir=folder, out_dir=out,
                           metrics_path=tmp_path / "m.json")
    rejected = {r["file"]: r for r in read_csv(out / "rejected.csv")}
    assert {f: r["kind"] for f, r in rejected.items()} == {f: k for f, k in expect.items() if k != "ok"}
    assert "max_pixels" in rejected["bomb.png"]["reason"] and "10,000,000,000" in rejected["bomb.png"]["reason"]
    assert rejected["zero.jpg"]["bytes"] == "0"
    manifest = read_csv(out / "manifest.csv")
    ok = sorted(f for f, k in expect.items() if k == "ok")
    assert sorted({m["file"] for m in manifest}) == ok  # nothing good is lost
    modes = {m["file"]: m["source_mode"] for m in manifest}
    assert modes["cmyk.jpg"] == "CMYK" and modes["sub/gray.jpg"] == "L"
    assert len(manifest) == 2 * len(ok)
    assert summary["rejected"] == len(rejected) and summary["images_used"] == len(ok)
    from test_benchmark import headline  # the DVC metrics: three numbers (the per-file detail: the CSVs above)

    assert headline(tmp_path / "m.json") == {"images": len(ok), "rejected": len(rejected), "patches": len(manifest)}
    assert summary["rejected_by_kind"]["too_small"] == 1
    # the shards hold exactly the manifest's rows, in order, with matching content hashes
    import hashlib

    for m in manifest:
        t = pq.read_table(out / m["shard"]).slice(int(m["row"]), 1).to_pylist()[0]
        assert t["key"] == m["key"] and hashlib.sha256(t["hr"]).hexdigest() == m["sha256"]
    # style keeps the small image (upscaled) and the gray/CMYK ones become RGB patches
    sty = tmp_path / "style"
    prep.prepare("style", *prep_settings("style", patches_per_image=1), input_dir=folder, out_dir=sty)
    sm = {m["file"]: m for m in read_csv(sty / "manifest.csv")}
    assert sm["small.png"]["upscaled"] == "True" and "small.png" not in {r["file"] for r in read_csv(sty / "rejected.csv")}


def test_zero_usable_images_is_a_clear_error_and_keeps_old_output(tmp_path, data_dir, ray_address):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    (folder / "b.txt").write_text("x")
    out = tmp_path / "out"
    from pipelines import owned

    owned.claim(out, "prepare_style")  # a previous output of this stage
    (out / "keep.txt").write_text("previous good output")
    with pytest.raises(ValueError, match=r"no usable images among 2 files.*a\.jpg: empty file"):
        prep.prepare("style", *prep_settings("style"), input_dir=folder, out_dir=out)
    assert (out / "keep.txt").read_text() == "previous good output"
    assert not list(tmp_path.glob("out.tmp-*"))
    with pytest.raises(FileNotFoundError, match="input folder not found"):
        prep.prepare("style", *prep_settings("style"), input_dir=tmp_path / "nope", out_dir=out)


def test_one_and_two_workers_give_identical_bytes(tmp_path, data_dir, ray_address):
    """Determinism whatever the parallelism, also without Ray (`--no-ray`, the GPU box's path); plus
    both streaming readers see every patch."""
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted(coco_dir(data_dir).glob("*.jpg"))[:10]:
        shutil.copy(p, folder / p.name)
    outs = []
    for workers, use_ray in ((1, True), (2, True), (1, False)):
        out = tmp_path / f"w{workers}{'' if use_ray else '-no-ray'}"
        prep.prepare("sr", *prep_settings("sr", workers=workers, shard_rows=7), input_dir=folder, out_dir=out,
                     use_ray=use_ray)
        outs.append({p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    for other in outs[1:]:
        assert outs[0].keys() == other.keys() and all(outs[0][k] == other[k] for k in outs[0])
    out = tmp_path / "w2"
    assert len([k for k in outs[0] if k.startswith("shards/train-")]) >= 2  # rolled over at shard_rows

    from perceptual_core.shards import PatchShards, shard_files

    manifest = read_csv(out / "manifest.csv")
    train = [m["key"] for m in manifest if m["split"] == "train"]
    ds = PatchShards(shard_files(out, "train"), ["key", "hr", "lr_x4"])
    seen = [(r["key"], tuple(r["hr"].shape), tuple(r["lr_x4"].shape)) for r in ds]
    assert [k for k, _, _ in seen] == train
    assert {s for _, s, _ in seen} == {(3, 288, 288)} and {s for _, _, s in seen} == {(3, 72, 72)}
    # two DDP ranks split the rows between them, without overlap
    halves = [[r["key"] for r in PatchShards(shard_files(out, "train"), ["key"], rank=i, world_size=2)]
              for i in (0, 1)]
    assert sorted(halves[0] + halves[1]) == sorted(train) and not set(halves[0]) & set(halves[1])

    import ray.data

    rd = ray.data.read_parquet([str(p) for p in shard_files(out, "train")]).select_columns(["key"])
    assert sorted(r["key"] for r in rd.iter_rows()) == sorted(train)
