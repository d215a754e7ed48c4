"""The `perceptual` loggers: what the library and the stages narrate (progress, warnings, the one-line
errors of a stage's entry point) goes through ``logging`` to stderr, as bare lines.

    log = get(__name__)           # pipelines.promote -> the logger perceptual.promote
    setup()                       # an entry point: INFO and up on stderr ("%(message)s")

perceptual_core logs under perceptual.core.* (it imports nothing from here). Once setup() has put its
handler on `perceptual`, records stop there (they would print twice where a library configured the
root logger); without setup() (a library user, a Ray Train worker) they propagate to the root logger.
"""
from __future__ import annotations

import logging
import sys

ROOT = "perceptual"


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record is emitted (pytest's capsys, a
    redirected stream), not to the stream that was current when it was installed."""

    perceptual = True  # how setup() recognises its handler (also across a reload of this module)

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns one; the property ignores it
        pass


def get(name: str) -> logging.Logger:
    """The logger of module ``name`` (``__name__``) under `perceptual`: pipelines.X.Y -> perceptual.X.Y."""
    parts = [p for p in name.split(".") if p]
    if parts[:1] == ["pipelines"]:
        parts = parts[1:]
    return logging.getLogger(".".join([ROOT, *parts]))


def setup(level: int | str | None = None) -> logging.Logger:
    """Install one stderr handler on the `perceptual` logger (idempotent) and set its level.

    ``level`` None: INFO on the first call, else the level an earlier call set (a stage's main() run
    by `perceptual -q ...` keeps -q). The `perceptual` CLI passes its -v/-q level explicitly."""
    logger = logging.getLogger(ROOT)
    if not any(getattr(h, "perceptual", False) for h in logger.handlers):
        logger.addHandler(_Stderr())
        # not also through the root logger: a library that configures it (basicConfig, as some of
        # the driver's imports do) would print every line twice
        logger.propagate = False
        if level is None:
            level = logging.INFO
    if level is not None:
        logger.setLevel(level)
    return logger


def setup_worker() -> None:
    """setup() for code that may run in a Ray worker process, whose stderr Ray forwards to the driver.
    Ray Train's workers send the root logger to the console (INFO, bare lines) themselves, and the
    `perceptual` records propagate there: a second handler would print each line twice. A process
    with no logging configured (another kind of worker, or the driver) gets setup()."""
    if not logging.getLogger().handlers:
        setup()
