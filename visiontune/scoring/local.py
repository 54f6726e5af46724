"""``--engine local``: one process, a pool of decoding threads feeding batched forward passes.

Pillow decodes and resizes in C with the GIL released, and torch runs the forward
pass in its own threads, so the pool decodes the next batches while the model
classifies this one. At most a few batches are decoded ahead (memory stays flat
on any archive), and results are written every ``PART_ROWS`` images, so a run
killed midway keeps what it wrote for ``--resume``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from contract.images import Preprocessing
from training.progress import Progress
from visiontune.scoring.model import StoredModel
from visiontune.scoring.results import Output, decode, error_rows, failure, scored_rows
from visiontune.scoring.sources import Source

PART_ROWS = 4096
BATCHES_AHEAD = 3


def default_decoders() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def score_local(
    source: Source,
    todo: list[int],
    model: StoredModel,
    output: Output,
    *,
    batch_size: int,
    top_k: int,
    decoders: int | None = None,
) -> None:
    """Score the images ``todo`` (indices into ``source``) into ``output``."""
    predictor = model.predictor()
    labels = model.metadata.labels
    progress = Progress(len(todo), "scoring", unit="img")
    pending: list[pa.Table] = []
    with ThreadPoolExecutor(decoders or default_decoders(), thread_name_prefix="decode") as pool:
        for batch in _batches(_decoded(pool, source, todo, model.preprocessing, batch_size)):
            ids, arrays, errors = batch
            good = [i for i, array in enumerate(arrays) if array is not None]
            if good:
                probabilities = predictor(np.stack([arrays[i] for i in good]))
                pending.append(
                    scored_rows([ids[i] for i in good], probabilities, labels, top_k, model.tag)
                )
            bad = [i for i, array in enumerate(arrays) if array is None]
            if bad:
                pending.append(
                    error_rows([ids[i] for i in bad], [errors[i] for i in bad], model.tag)
                )
            if sum(len(table) for table in pending) >= PART_ROWS:
                output.write(pa.concat_tables(pending))
                pending = []
            progress.update(len(ids))
    if pending:
        output.write(pa.concat_tables(pending))
    progress.close()


def decode_one(source: Source, index: int, preprocessing: Preprocessing):
    """(id, array or None, error or None) of one image."""
    try:
        return source.ids[index], decode(source.read(index), preprocessing), None
    except Exception as err:  # any failure is this image's, written in its row
        return source.ids[index], None, failure(err)


def _decoded(
    pool: ThreadPoolExecutor, source: Source, todo: list[int], preprocessing, batch_size: int
) -> Iterator[list[tuple]]:
    """Batches of decoded images in order, with at most ``BATCHES_AHEAD`` batches in flight."""
    queued: deque[list[Future]] = deque()
    for start in range(0, len(todo), batch_size):
        queued.append(
            [
                pool.submit(decode_one, source, index, preprocessing)
                for index in todo[start : start + batch_size]
            ]
        )
        if len(queued) >= BATCHES_AHEAD:
            yield [future.result() for future in queued.popleft()]
    while queued:
        yield [future.result() for future in queued.popleft()]


def _batches(decoded: Iterator[list[tuple]]) -> Iterator[tuple[list, list, list]]:
    for batch in decoded:
        ids, arrays, errors = zip(*batch, strict=True)
        yield list(ids), list(arrays), list(errors)
