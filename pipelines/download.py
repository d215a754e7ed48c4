"""One file over HTTP(S), hash-verified and resumable: the download step that `acquire` (the COCO zip)
and `perceptual data fetch` (the benchmark data) share.

Why pooch plus a small downloader: pooch (the library made for this) checks the hash, moves the file
to its final name only after the check (a failed or bad download never sits under that name), skips a
file already there with the right hash and retries failed transfers (``retry_if_failed``). Its own
HTTPDownloader restarts from byte 0 every time, which a 13 GB zip cannot afford, so pooch gets
``_Resumable``: it streams into ``DEST.part`` with an HTTP ``Range`` header when a part is there, and
hands the complete file to pooch. A transfer cut short keeps ``DEST.part`` for the next call (or
pooch's next retry); a server that ignores Range restarts it from 0.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import requests

CHUNK = 1 << 20
Progress = Callable[[int, "int | None"], None]  # (bytes in DEST.part so far, expected size or None)


class DownloadError(requests.exceptions.ConnectionError):
    """Unreachable server, a connection cut short, a 5xx: pooch retries it. ``reason`` is the short cause."""

    def __init__(self, url: str, reason: str, hint: str = ""):
        super().__init__(f"download of {url} failed: {reason}{hint}")
        self.url, self.reason = url, reason


class HTTPStatusError(OSError):
    """A 4xx answer (the file is not there): no retry can help."""

    def __init__(self, url: str, status: int, text: str):
        super().__init__(f"download of {url} failed: HTTP {status} {text}")
        self.url, self.reason = url, f"HTTP {status} {text}"


class SizeMismatch(ValueError):
    def __init__(self, url: str, expected: int, actual: int):
        super().__init__(f"download of {url}: size expected {expected}, got {actual} (announced by the server)")
        self.url, self.expected, self.actual = url, expected, actual


class HashMismatch(ValueError):
    def __init__(self, url: str, expected: str, actual: str):
        super().__init__(f"download of {url}: hash expected {expected}, got {actual}; the download was deleted")
        self.url, self.expected, self.actual = url, expected, actual


def fetch(url: str, dest: Path, known_hash: str, *, size: int | None = None, retries: int = 0,
          timeout: float = 60, progress: Progress | None = None) -> bool:
    """Make ``dest`` hold the file at ``url`` whose hash is ``known_hash`` (``"sha256:HEX"`` or
    ``"md5:HEX"``). -> True if it was downloaded, False if ``dest`` already had the right bytes.

    Raises HashMismatch / SizeMismatch (ValueError; nothing left under ``dest``'s name),
    DownloadError / HTTPStatusError (OSError; a partial ``dest.part`` is kept for the next call)."""
    import pooch

    dest = Path(dest)
    dl = _Resumable(dest.with_name(dest.name + ".part"), size, timeout, progress)
    p = pooch.create(path=dest.parent, base_url="", registry={dest.name: known_hash}, urls={dest.name: url},
                     retry_if_failed=retries)
    log = pooch.get_logger()
    level = log.level
    log.setLevel("WARNING")  # not a line per file or retry: the callers show progress and one-line errors
    try:
        p.fetch(dest.name, downloader=dl)
    except ValueError as e:
        m = re.search(r"does not match the known hash: expected \S+ but got (\w+)", str(e))
        if m:  # pooch's hash check: pooch deleted the download
            raise HashMismatch(url, known_hash, m.group(1)) from None
        raise
    finally:
        log.setLevel(level)
    return dl.called


def _reason(e: BaseException) -> str:
    """The cause without urllib3's wrappers: '[Errno 111] Connection refused', 'Read timed out'."""
    text = str(e)
    m = re.search(r"\[Errno -?\d+\][^'\")\]]*", text)
    if m:
        return m.group(0).strip()
    return (text.split(": ")[-1] if text else type(e).__name__)[:200]


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    # "bytes START-END/TOTAL" (TOTAL may be "*")
    try:
        _, rng = value.split(" ", 1)
        span, total = rng.split("/")
        return int(span.split("-")[0]), (None if total == "*" else int(total))
    except (AttributeError, ValueError):
        return None, None


class _Resumable:
    """pooch downloader: URL -> ``part`` (resumed with Range) -> pooch's temporary file."""

    def __init__(self, part: Path, size: int | None, timeout: float, progress: Progress | None):
        self.part, self.size, self.timeout, self.progress = part, size, timeout, progress
        self.called = False

    def __call__(self, url: str, output_file, _pooch) -> None:
        self.called = True
        part, size = self.part, self.size
        offset = part.stat().st_size if part.is_file() else 0
        if size is not None and offset > size:
            part.unlink()
            offset = 0
        for attempt in range(2):  # the second attempt restarts from 0 after a refused resume
            if size is not None and offset == size:
                break  # a complete part from an earlier run: only the hash check is left
            try:
                resp = requests.get(url, stream=True, timeout=self.timeout, headers={
                    "Accept-Encoding": "identity", **({"Range": f"bytes={offset}-"} if offset else {})})
            except requests.exceptions.RequestException as e:
                kept = f" (partial file kept for resume: {part})" if offset else ""
                raise DownloadError(url, _reason(e), kept) from e
            with resp:
                if resp.status_code == 416 and offset and attempt == 0:  # our Range is past the server's file
                    part.unlink()
                    offset = 0
                    continue
                if resp.status_code in (408, 429) or resp.status_code >= 500:  # may pass: retried
                    raise DownloadError(url, f"HTTP {resp.status_code} {resp.reason}")
                if resp.status_code >= 400:
                    raise HTTPStatusError(url, resp.status_code, resp.reason)
                if resp.status_code == 206:
                    start, total = _content_range(resp.headers.get("Content-Range"))
                    if start != offset:
                        part.unlink()
                        if attempt == 1:
                            raise DownloadError(url, f"server resumed at byte {start}, asked {offset}")
                        offset = 0
                        continue
                else:  # 200: the server ignored the Range header, so the body starts at byte 0
                    offset = 0
                    length = resp.headers.get("Content-Length", "")
                    total = int(length) if length.isdigit() else None
                if size is not None and total is not None and total != size:  # before fetching the body
                    part.unlink(missing_ok=True)
                    raise SizeMismatch(url, size, total)
                self._stream(resp, url, offset)
            break
        os.replace(part, output_file)

    def _stream(self, resp, url: str, offset: int) -> None:
        got, size = offset, self.size
        # urllib3 would drop the bytes of a read cut short by the server (IncompleteRead); keep them in
        # the part and count the shortfall below instead.
        resp.raw.enforce_content_length = False
        with open(self.part, "ab" if offset else "wb") as f:
            try:
                for chunk in resp.iter_content(CHUNK):
                    f.write(chunk)
                    got += len(chunk)
                    if self.progress:
                        self.progress(got, size)
            except requests.exceptions.RequestException as e:  # server closed early, read timeout
                raise DownloadError(url, f"interrupted at {got} of {size} bytes ({type(e).__name__})",
                                    f"; rerun to resume from {self.part}") from e
        if size is not None and got < size:
            raise DownloadError(url, f"interrupted at {got} of {size} bytes (connection closed)",
                                f"; rerun to resume from {self.part}")
