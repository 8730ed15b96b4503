"""Batches and shards: which identities are made together, and which batches a shard makes.

A batch holds ``ids_per_batch`` whole identities (all their images); its contents depend only on the identity count
and ``ids_per_batch``, never on the shard count, so any split of the work makes the same batches, hence the same
files. ``--shard I/N`` (I counted from 0, as Slurm's ``SLURM_ARRAY_TASK_ID`` with ``--array=0-(N-1)``) takes the I-th
of N runs of consecutive batches, as equal as whole batches allow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidInputError


@dataclass(frozen=True)
class Batch:
    index: int
    start: int      # first identity
    stop: int       # one past the last identity

    @property
    def identities(self) -> range:
        return range(self.start, self.stop)


def make_batches(identities: int, ids_per_batch: int) -> list[Batch]:
    return [Batch(index, start, min(start + ids_per_batch, identities))
            for index, start in enumerate(range(0, identities, ids_per_batch))]


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise InvalidInputError(f"--shard must look like I/N (e.g. 0/8: the first of 8 shards), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise InvalidInputError(f"--shard {text}: I counts from 0 to N-1 (e.g. 0/8 ... 7/8)")
    return index, count


def shard_batches(batches: list[Batch], index: int, count: int) -> list[Batch]:
    """The ``index``-th of ``count`` consecutive runs of batches (empty when there are fewer batches than shards)."""
    total = len(batches)
    return batches[index * total // count:(index + 1) * total // count]
