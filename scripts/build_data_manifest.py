"""Regenerate pipelines/data_manifest.csv, the list `perceptual data fetch` downloads and verifies.

Why a script: the manifest must say, for every file of the benchmark data folder, where its exact
bytes come from. The facts are in the data folder itself: SOURCES.md (repository, commit and original
path per folder, and the renames) and MANIFEST.sha256 (a SHA-256 per file). SOURCES.md is prose, so
its facts are transcribed below as data; every repository, commit and original path written here is
checked to occur in SOURCES.md, and every file of MANIFEST.sha256 must get exactly one row, so a
transcription slip or a new file stops the script instead of giving a wrong manifest.

Rows: path (relative to the data folder), group (what `data fetch GROUP` takes), bytes, sha256,
url (GitHub raw URL at the recorded commit; empty when there is none), how (download | derive |
unavailable) and note (how a derived file is made, or why a file cannot be fetched).

    python scripts/build_data_manifest.py [--data ../shared/data] [--out pipelines/data_manifest.csv]
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]

DENOISING = ("majedelhelou/denoising_datasets", "d3636716c8e3fb806f4395bbb3f2e4c0fde50700")
SELFEXSR = ("jbhuang0604/SelfExSR", "8f6dd8c1d20cb7e8792a7177b4f6fd677633f598")
COCO128 = ("developer0hye/COCO128", "47a3de30aaf7ad1c02105bd80598fb03ac0d0789")
JCJOHNSON = ("jcjohnson/fast-neural-style", "813c83441953ead2adb3f65f4cc2d5599d735fa7")
PYTORCH_EXAMPLES = ("pytorch/examples", "77f55b912142e11fcfdf5b530231fb9c52f181e8")
SRCNN = ("AlainConnor/SRCNN", "f2dc57c346f846701e2e04b8a5a35b72b9537e1d")

# SelfExSR numbers Set5/Set14 images in this order (SOURCES.md, "renamed" / "Name mapping").
SET5 = ["baby", "bird", "butterfly", "head", "woman"]
SET14 = ["baboon", "barbara", "bridge", "coastguard", "comic", "face", "flowers", "foreman", "lenna", "man",
         "monarch", "pepper", "ppt3", "zebra"]
# styles/: local name -> (repo, path in the repo); SOURCES.md, styles/ tables.
STYLES = {
    **{f"style_images/{n}.jpg": (JCJOHNSON, f"images/styles/{n}.jpg") for n in (
        "la_muse", "starry_night", "starry_night_crop", "composition_vii", "wave", "wave_crop", "the_scream",
        "mosaic", "candy", "udnie", "feathers")},
    "style_images/rain_princess.jpg": (PYTORCH_EXAMPLES, "fast_neural_style/images/style-images/rain-princess.jpg"),
    "style_images/rain_princess_cropped.jpg": (PYTORCH_EXAMPLES,
                                               "fast_neural_style/images/style-images/rain-princess-cropped.jpg"),
    "style_images/udnie_pytorch_examples.jpg": (PYTORCH_EXAMPLES, "fast_neural_style/images/style-images/udnie.jpg"),
    "content_images/chicago.jpg": (JCJOHNSON, "images/content/chicago.jpg"),
    "content_images/hoovertowernight.jpg": (JCJOHNSON, "images/content/hoovertowernight.jpg"),
    "content_images/amber.jpg": (PYTORCH_EXAMPLES, "fast_neural_style/images/content-images/amber.jpg"),
}
# srcnn_weights/: local name -> path in AlainConnor/SRCNN (SOURCES.md, srcnn_weights/ table).
SRCNN_FILES = {
    "srcnn_9-5-5_imagenet_x2.mat": "model/9-5-5(ImageNet)/x2.mat",
    "srcnn_9-5-5_imagenet_x3.mat": "model/9-5-5(ImageNet)/x3.mat",
    "srcnn_9-5-5_imagenet_x4.mat": "model/9-5-5(ImageNet)/x4.mat",
    "srcnn_9-3-5_imagenet_x3.mat": "model/9-3-5(ImageNet)/x3.mat",
    "srcnn_9-1-5_imagenet_x3.mat": "model/9-1-5(ImageNet)/x3.mat",
    "srcnn_9-1-5_91images_x2.mat": "model/9-1-5(91 images)/x2.mat",
    "srcnn_9-1-5_91images_x3.mat": "model/9-1-5(91 images)/x3.mat",
    "srcnn_9-1-5_91images_x4.mat": "model/9-1-5(91 images)/x4.mat",
}
NAME_MAP_NOTE = ("derived after BSD100/HR: one row per HR file, img_NNN = position of its BSDS id in string "
                 "order, HR width/height from the file, 'yes' for the 68 ids SOURCES.md verified against CBSD68 "
                 "(all but img_023 and img_070..img_100); checked by hash")
IMAGE_INFO_NOTE = ("not fetchable: built locally from developer0hye/COCO128 annotations/instances_train2017.json "
                   "(COCO metadata and licenses per image); the photos themselves are fetched")


def raw_url(repo_commit: tuple[str, str], path: str) -> str:
    repo, commit = repo_commit
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{quote(path, safe='/()')}"


def _sources(data: Path) -> dict[str, tuple[str, str, str, str]]:
    """relative path -> (group, url, how, note) for every file SOURCES.md accounts for."""
    out: dict[str, tuple[str, str, str, str]] = {}
    for n in SET5:
        out[f"Set5/HR/{n}.png"] = ("set5", raw_url(DENOISING, f"CSet5/{n}.png"), "download", "")
    for i, n in enumerate(SET5, 1):
        out[f"Set5/LR_bicubic_x4/{n}.png"] = (
            "set5", raw_url(SELFEXSR, f"data/Set5/image_SRF_4/img_{i:03d}_SRF_4_LR.png"), "download", "")
    for n in SET14:
        out[f"Set14/HR/{n}.png"] = ("set14", raw_url(DENOISING, f"CSet14/{n}.png"), "download", "")
    for i, n in enumerate(SET14, 1):
        out[f"Set14/LR_bicubic_x4/{n}.png"] = (
            "set14", raw_url(SELFEXSR, f"data/Set14/image_SRF_4/img_{i:03d}_SRF_4_LR.png"), "download", "")
    # BSD100: SelfExSR's img_NNN is the NNN-th BSDS id in string order; name_map.csv records the same.
    ids = sorted(p.stem for p in (data / "BSD100" / "HR").glob("*.png"))
    with open(data / "BSD100" / "name_map.csv", newline="") as f:
        recorded = [(r["selfexsr_name"], r["bsds_id"]) for r in csv.DictReader(f)]
    if recorded != [(f"img_{i:03d}", b) for i, b in enumerate(ids, 1)]:
        sys.exit("BSD100/name_map.csv disagrees with the string order of BSD100/HR ids: update this script")
    for i, b in enumerate(ids, 1):
        for kind in ("HR", "LR"):
            out[f"BSD100/{'HR' if kind == 'HR' else 'LR_bicubic_x4'}/{b}.png"] = (
                "bsd100", raw_url(SELFEXSR, f"data/BSD100/image_SRF_4/img_{i:03d}_SRF_4_{kind}.png"), "download", "")
    out["BSD100/name_map.csv"] = ("bsd100", "", "derive", NAME_MAP_NOTE)
    for p in sorted((data / "coco128_train2017" / "images").glob("*.jpg")):
        out[f"coco128_train2017/images/{p.name}"] = ("coco128", raw_url(COCO128, f"train2017/{p.name}"), "download", "")
    out["coco128_train2017/image_info.csv"] = ("coco128", "", "unavailable", IMAGE_INFO_NOTE)
    for rel, (rc, path) in STYLES.items():
        out[f"styles/{rel}"] = ("styles", raw_url(rc, path), "download", "")
    for rel, path in SRCNN_FILES.items():
        out[f"srcnn_weights/{rel}"] = ("srcnn", raw_url(SRCNN, path), "download", "")
    return out


def _check_cited(sources_md: str) -> None:
    """Every repo, commit and original path transcribed above occurs in SOURCES.md."""
    cited = [s for rc in (DENOISING, SELFEXSR, COCO128, JCJOHNSON, PYTORCH_EXAMPLES, SRCNN) for s in rc]
    cited += ["CSet5/", "CSet14/<name>.png", "data/Set5/image_SRF_4/img_00N_SRF_4_LR.png",
              "data/Set14/image_SRF_4/img_0NN_SRF_4_LR.png", "data/BSD100/image_SRF_4/img_NNN_SRF_4_HR.png",
              "data/BSD100/image_SRF_4/img_NNN_SRF_4_LR.png", "train2017/<12-digit id>.jpg",
              "fast_neural_style/images/", "images/content/", "content-images/amber.jpg", ", ".join(SET14),
              "img_023 and img_070..img_100"]
    cited += [f"{i:03d} {n}" for i, n in enumerate(SET5, 1)]
    cited += [p for _, p in STYLES.values() if not p.startswith(("fast_neural_style/", "images/content/"))]
    cited += [p.split("fast_neural_style/images/")[1] for _, p in STYLES.values() if "style-images/" in p]
    cited += list(SRCNN_FILES.values()) + list(SRCNN_FILES)
    missing = [s for s in cited if s not in sources_md]
    if missing:
        sys.exit(f"not in SOURCES.md (transcription slip?): {missing}")


def build(data: Path) -> str:
    _check_cited((data / "SOURCES.md").read_text(encoding="utf-8"))
    hashes = {}
    for line in (data / "MANIFEST.sha256").read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        hashes[rel.removeprefix("./")] = digest
    sources = _sources(data)
    if set(sources) != set(hashes):
        sys.exit(f"MANIFEST.sha256 and SOURCES.md disagree: only in MANIFEST.sha256 "
                 f"{sorted(set(hashes) - set(sources))}, only in this script {sorted(set(sources) - set(hashes))}")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "group", "bytes", "sha256", "url", "how", "note"])
    for rel in sorted(hashes):
        group, url, how, note = sources[rel]
        w.writerow([rel, group, (data / rel).stat().st_size, hashes[rel], url, how, note])
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="the benchmark data folder")
    ap.add_argument("--out", type=Path, default=ROOT / "pipelines" / "data_manifest.csv")
    a = ap.parse_args()
    text = build(a.data)
    a.out.write_text(text)
    print(f"wrote {a.out}: {text.count(chr(10)) - 1} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
