"""URI / remote-filesystem helpers on pyarrow.fs (s3://, gs://, hdfs://, file://, ...).

S3 endpoints: an explicit ``endpoint`` wins, then $AWS_ENDPOINT_URL_S3, then $AWS_ENDPOINT_URL (the
AWS SDK's order). pyarrow 25's ``FileSystem.from_uri`` reads those variables itself, but the
``S3FileSystem`` constructor does not, so we pass the endpoint explicitly rather than rely on it.
Credentials are never read here: the AWS SDK's default chain (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, then ~/.aws, then instance metadata) applies.
"""
from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

__all__ = ["is_hidden", "is_uri", "list_files", "open_input", "open_uri", "read_bytes", "s3_endpoint"]

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")  # 2+ scheme chars: "C://x" stays a path


def is_uri(s) -> bool:
    """True for "scheme://..." strings (s3://, gs://, file://, ...); False for plain paths."""
    return isinstance(s, str) and bool(_URI.match(s))


def s3_endpoint(endpoint: str | None = None) -> str | None:
    return endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def open_uri(uri: str, endpoint: str | None = None):
    """-> (pyarrow FileSystem, path inside it) for ``uri``.

    ``endpoint`` (e.g. "http://127.0.0.1:9000") only applies to s3:// URIs. Raises ValueError
    naming the URI when pyarrow does not recognise it.
    """
    import pyarrow.fs as pafs

    if not is_uri(uri):
        raise ValueError(f"not a URI (expected scheme://...): {uri!r}")
    parts = urlsplit(uri)
    ep = s3_endpoint(endpoint) if parts.scheme.lower() == "s3" else None
    try:
        if ep:
            if parts.query:
                raise ValueError("query options cannot be combined with an S3 endpoint; drop the ?... part")
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            # endpoint_override accepts "http://host:port"; the scheme in it picks http vs https.
            fs = pafs.S3FileSystem(endpoint_override=ep, region=region, retry_strategy=_retries())
            return fs, f"{parts.netloc}{parts.path}".rstrip("/")
        fs, path = pafs.FileSystem.from_uri(uri)
        if isinstance(fs, pafs.S3FileSystem) and not parts.query:  # the same bucket, with retries
            fs = pafs.S3FileSystem(region=fs.region, retry_strategy=_retries())
    except ValueError as e:  # pyarrow.lib.ArrowInvalid is a ValueError
        raise ValueError(f"{uri}: cannot open this URI ({e})") from e
    return fs, path.rstrip("/") or path


S3_ATTEMPTS = 6  # per request: AWS's standard retry strategy (exponential backoff with jitter, throttling aware)


def _retries():
    import pyarrow.fs as pafs

    return pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS)


_S3_ERRORS = (("NO_SUCH_BUCKET", "the bucket does not exist"),
              ("ACCESS_DENIED", "access denied (check the credentials and the bucket's policy)"),
              ("AccessDenied", "access denied (check the credentials and the bucket's policy)"),
              ("INVALID_ACCESS_KEY_ID", "the access key is not known to this endpoint"),
              ("SIGNATURE_DOES_NOT_MATCH", "the secret key does not match the access key"),
              ("NETWORK_CONNECTION", "cannot reach the endpoint"), ("Couldn't connect", "cannot reach the endpoint"))


def describe_error(e: BaseException) -> str:
    """One line for a storage error: what it means for the common S3 cases, else its first line
    (pyarrow's S3 messages carry request ids and multi-line detail)."""
    msg = str(e)
    for code, meaning in _S3_ERRORS:
        if code in msg:
            return meaning
    return msg.strip().splitlines()[0] if msg.strip() else type(e).__name__


def is_hidden(rel: str) -> bool:
    """True if any "/"-separated part of ``rel`` starts with "." (.git/, .DS_Store, ...)."""
    return any(part.startswith(".") for part in rel.split("/"))


def list_files(fs, path: str, *, include_hidden: bool = False) -> list[str]:
    """Regular files under ``path`` (recursive) as sorted "/"-separated names relative to it.

    Files or folders whose name starts with "." are skipped unless ``include_hidden``.
    FileNotFoundError if ``path`` does not exist, NotADirectoryError if it is a file.
    """
    import pyarrow.fs as pafs

    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{path}: not found on {fs.type_name} filesystem")
    if info.type != pafs.FileType.Directory:
        raise NotADirectoryError(f"{path}: is not a folder (expected a folder of files)")
    base = path.rstrip("/") + "/"
    out = []
    for fi in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if fi.type != pafs.FileType.File or not fi.path.startswith(base):
            continue
        rel = fi.path[len(base):]
        if rel and (include_hidden or not is_hidden(rel)):
            out.append(rel)
    return sorted(out)


def open_input(fs, path: str):
    """A sequential binary stream of the raw bytes (compression=None: no .gz/.bz2 auto-decoding)."""
    return fs.open_input_stream(path, compression=None)


def read_bytes(fs, path: str) -> bytes:
    with open_input(fs, path) as f:
        return f.read()
