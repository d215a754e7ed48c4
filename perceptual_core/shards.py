"""Stream patch datasets (Parquet shards of PNG bytes) into PyTorch without loading a shard whole.

The prepare stages write ``<split>-NNNNN.parquet`` files whose rows hold PNG-encoded patches
(style: ``image``; SR: ``hr``, ``lr_x4``, ``lr_x8``) in small row groups. Ray Data reads the
same files with ``ray.data.read_parquet``; this module is the plain-PyTorch route (single
process, DDP, DataLoader workers), which needs nothing but pyarrow.
"""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info


def decode_png(data: bytes) -> torch.Tensor:
    """PNG bytes -> float32 C x H x W in [0, 1]."""
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).div_(255.0)


def shard_files(root: str | Path, split: str) -> list[Path]:
    files = sorted(Path(root).glob(f"shards/{split}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{root}: no shards/{split}-*.parquet (run the prepare stage first)")
    return files


class PatchShards(IterableDataset):
    """Iterate decoded patches: dicts of column -> tensor (image columns) or str (``key``).

    Work is split over DDP ranks (``rank``/``world_size``) and DataLoader workers by row group
    (by row when there are fewer groups than consumers), so each row goes to exactly one
    consumer per epoch; ``shuffle`` permutes row groups and
    rows inside a bounded buffer, seeded by ``seed + epoch`` (call ``set_epoch``).
    """

    def __init__(self, files: Sequence[str | Path], columns: Sequence[str], *, shuffle: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1, buffer: int = 256):
        self.files = [Path(f) for f in files]
        self.columns = list(columns)
        self.shuffle, self.seed, self.buffer = shuffle, seed, buffer
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.groups = [(i, g) for i, f in enumerate(self.files) for g in range(pq.ParquetFile(f).num_row_groups)]
        self.num_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _consumer(self) -> tuple[int, int]:
        info = get_worker_info()
        n_workers, worker = (info.num_workers, info.id) if info else (1, 0)
        return self.world_size * n_workers, self.rank * n_workers + worker

    def _rows(self) -> Iterator[dict]:
        groups = list(self.groups)
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(groups)
        stride, offset = self._consumer()
        # Whole row groups per consumer when there are enough of them (each reads only its own);
        # otherwise (a small dataset) every consumer reads all groups and keeps every stride-th row.
        by_group = len(groups) >= stride
        mine = groups[offset::stride] if by_group else groups
        handles: dict[int, pq.ParquetFile] = {}
        k = 0
        for fi, g in mine:
            pf = handles.setdefault(fi, pq.ParquetFile(self.files[fi]))
            table = pf.read_row_group(g, columns=self.columns)
            cols = {c: table.column(c).to_pylist() for c in self.columns}
            for r in range(table.num_rows):
                k += 1
                if by_group or (k - 1) % stride == offset:
                    yield {c: (v[r] if isinstance(v[r], str) else decode_png(v[r])) for c, v in cols.items()}

    def __iter__(self) -> Iterator[dict]:
        if not self.shuffle:
            yield from self._rows()
            return
        rng = random.Random(self.seed + self.epoch + 7919 * (self.rank + 1))
        buf: list[dict] = []
        for row in self._rows():
            buf.append(row)
            if len(buf) >= self.buffer:
                yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf
