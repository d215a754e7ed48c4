"""Keys name each image: its path relative to the input, or an archive member's name (under the archive's
stem when the input holds archives). Outputs mirror keys with the extension of ``fmt``; a key that would
leave the output prefix (absolute, "..") is refused and reported, never written."""
from __future__ import annotations

import re
from pathlib import PurePosixPath

SAVE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
_TAR_EXT = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def safe_key(name: str) -> str:
    """Normalise a relative name ("./a//b.jpg" -> "a/b.jpg"); ValueError if it would escape the
    output prefix (absolute, drive letter, ".." part) or is empty."""
    k = str(name).replace("\\", "/")
    parts = [p for p in k.split("/") if p not in ("", ".")]
    if k.startswith("/") or not parts or ".." in parts or re.match(r"^[A-Za-z]:$", parts[0]):
        raise ValueError(f"refused: the name {name!r} would escape the output prefix")
    return "/".join(parts)


def output_key(key: str, fmt: str) -> str:
    """Output name for an input key: same folders and stem, extension from fmt ("same" keeps it
    when it can be written, else png)."""
    p = PurePosixPath(key)
    ext = p.suffix.lower() if fmt == "same" else f".{fmt.lower().lstrip('.')}"
    if ext not in SAVE_EXT:
        ext = ".png"
    return str(p.with_suffix(ext)) if p.suffix else f"{key}{ext}"


def archive_kind(name: str) -> str | None:
    n = name.lower()
    return "tar" if n.endswith(_TAR_EXT) else "zip" if n.endswith(".zip") else None


def archive_stem(name: str) -> str:
    n = name.lower()
    for ext in _TAR_EXT + (".zip",):
        if n.endswith(ext):
            return name[: -len(ext)]
    return name


def skip_member(name: str) -> bool:
    """Hidden entries (.DS_Store, ._x) and macOS resource forks; ".." parts are not hidden but
    refused later, so an escaping name is reported rather than silently dropped."""
    parts = name.replace("\\", "/").split("/")
    return parts[0] == "__MACOSX" or any(p.startswith(".") and p not in (".", "..") for p in parts)
