"""A job's account: counts, rates (overall and steady, once start-up is over) and the failures, written
under the output as _failures.csv (key, source, error) and _summary.json when the job ends, so a job
that lost some inputs says which and why and still keeps every output it wrote."""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field

from .. import storage
from .files import filesystem, put_atomic
from .settings import BatchSpec

FAILURES = "_failures.csv"
SUMMARY = "_summary.json"


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    megapixels: float = 0.0  # input megapixels of the images done in this run
    started: float = 0.0  # wall-clock times the job began, and the first and the last image left the model
    first_done: float = 0.0
    last_done: float = 0.0
    failures: list = field(default_factory=list)  # (key, source, error)

    @property
    def images_per_s(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    @property
    def megapixels_per_s(self) -> float:
        return self.megapixels / self.seconds if self.seconds else 0.0

    @property
    def steady_images_per_s(self) -> float:
        """Images/s between the first and the last image leaving the model: the rate once start-up
        (actors, model load) is over, which is what a large archive sees."""
        span = self.last_done - self.first_done
        return (self.done - 1) / span if self.done > 1 and span > 0 else 0.0

    @property
    def startup_seconds(self) -> float:
        """From the job's start to its first image out of the model (actor start, model load, one image)."""
        return self.first_done - self.started if self.done else 0.0

    def add(self, r: dict) -> None:
        """Count one result row."""
        if r["status"] == "done":
            self.done += 1
            self.megapixels += r["in_mp"]
            self.first_done = min(self.first_done or r["t"], r["t"])
            self.last_done = max(self.last_done, r["t"])
        elif r["status"] == "skipped":
            self.skipped += 1
        else:
            self.failed += 1
            self.failures.append((r["key"], r["source"], r["error"]))

    def text(self) -> str:
        first = f", first image after {self.startup_seconds:.1f} s" if self.done else ""
        return (f"{self.done} done, {self.skipped} skipped (already there), {self.failed} failed in "
                f"{self.seconds:.1f} s: {self.images_per_s:.2f} images/s, {self.megapixels_per_s:.2f} MP/s{first}")


def finish(spec: BatchSpec, summary: Summary) -> None:
    """Write _failures.csv and _summary.json; a failing write is a one-line error (outputs stay)."""
    try:
        _write_reports(spec, summary)
    except OSError as e:
        raise ValueError(f"--output {spec.output}: {summary.done} outputs written, but the job's report could "
                         f"not be: {storage.describe_error(e)}") from None


def _write_reports(spec: BatchSpec, summary: Summary) -> None:
    fs, root = filesystem(spec.output, spec.endpoint)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", "source", "error"])
    w.writerows(sorted(summary.failures))
    put_atomic(fs, f"{root}/{FAILURES}", buf.getvalue().encode())
    info = {k: v for k, v in asdict(summary).items() if k != "failures"}
    info.update(images_per_s=round(summary.images_per_s, 3), megapixels_per_s=round(summary.megapixels_per_s, 3),
                steady_images_per_s=round(summary.steady_images_per_s, 3),
                startup_seconds=round(summary.startup_seconds, 2),
                spec={k: v for k, v in asdict(spec).items()}, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    put_atomic(fs, f"{root}/{SUMMARY}", (json.dumps(info, indent=1) + "\n").encode())
