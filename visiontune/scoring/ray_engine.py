"""``--engine ray``: Ray Data's batch inference, on the cluster at ``RAY_ADDRESS`` or a local Ray.

The pipeline is Ray's batch-inference pattern, streamed block by block:

1. a dataset of the images still to score (ids and paths, or a dataset's rows);
2. ``map_batches(decode_batch)`` in CPU tasks: read each file and decode it as the
   service does (``results.decode``). Files are read here rather than by
   ``read_binary_files``, whose read task fails (and with it the job) on one
   unreadable file; here that file gets its own row with the error;
3. ``map_batches(ScoreBatch)``, a predictor class: each actor loads the stored
   model once and classifies ``batch_size`` images per call. With GPUs there is one
   actor per GPU (``--concurrency`` says otherwise) and the decoding stays in CPU
   tasks beside them; on CPUs alone there is one actor of one CPU per CPU of the
   cluster, and Ray fuses the decoding into the actors (each decodes the images it
   classifies, so no pixels travel between processes);
4. ``write_parquet`` into the output folder, the same rows as ``--engine local``.

Every worker reads the model from its folder in the store, so that folder must be
at the same path on every node (the store volume in a cluster; a local Ray shares
this machine's).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pyarrow as pa

from contract.images import Preprocessing
from contract.savedmodel import ModelMetadata
from visiontune.scoring.model import StoredModel
from visiontune.scoring.results import Output, decode, error_rows, failure, scored_rows
from visiontune.scoring.sources import Source, cell_bytes

ROWS_PER_BLOCK = 256
# what every Ray worker needs from the driver's environment
PASSED_ENV = ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "OMP_NUM_THREADS")


def score_ray(
    source: Source,
    todo: list[int],
    model: StoredModel,
    output: Output,
    *,
    batch_size: int,
    top_k: int,
    concurrency: int | None = None,
    num_cpus: int | None = None,
) -> None:
    """Score the images ``todo`` (indices into ``source``) into ``output`` with Ray Data."""
    import ray

    started_here = _connect(num_cpus)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        actors = concurrency or (gpus or max(1, int(resources.get("CPU", 1))))
        decoded = _images(source, todo).map_batches(
            decode_batch,
            batch_format="pyarrow",
            fn_kwargs={"filesystem": source.filesystem, "preprocessing": model.preprocessing},
        )
        scored = decoded.map_batches(
            ScoreBatch,
            batch_format="numpy",
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=1 if gpus else None,
            fn_constructor_kwargs={
                "path": model.path,
                "metadata": model.metadata.model_dump(mode="json"),
                "tag": model.tag,
                "top_k": top_k,
            },
        )
        scored.write_parquet(output.root, filesystem=_arrow_filesystem(output))
    finally:
        if started_here:
            ray.shutdown()


def _connect(num_cpus: int | None) -> bool:
    """Join ``RAY_ADDRESS`` when set, else start a local Ray (``num_cpus`` CPUs); True if started."""
    import ray

    if ray.is_initialized():
        return False
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    address = os.environ.get("RAY_ADDRESS")
    ray.init(
        address=address or None,
        num_cpus=None if address else num_cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": env},
    )
    return True


def _images(source: Source, todo: list[int]):
    """The images still to score as Ray blocks of ``ROWS_PER_BLOCK`` rows."""
    import ray

    if source.dataset is not None:
        table = source.dataset.select(todo).flatten_indices().data.table
    else:
        table = pa.table(
            {"id": [source.ids[i] for i in todo], "path": [source.paths[i] for i in todo]}
        )
    blocks = [table.slice(start, ROWS_PER_BLOCK) for start in range(0, len(table), ROWS_PER_BLOCK)]
    return ray.data.from_arrow(blocks)


def decode_batch(batch: pa.Table, filesystem, preprocessing: Preprocessing) -> pa.Table:
    """Rows of ``id`` and ``path`` (files) or ``image`` (dataset cells) to model-size pixels.

    An image that fails gets zero pixels and its ``error``; the predictor skips it."""
    ids = batch.column("id").to_pylist()
    if "path" in batch.column_names:
        paths = batch.column("path").to_pylist()
        reads = [lambda path=path: filesystem.cat_file(path) for path in paths]
    else:
        cells = batch.column("image").to_pylist()
        reads = [lambda cell=cell: cell_bytes(cell) for cell in cells]
    blank = np.zeros((preprocessing.height, preprocessing.width, 3), np.uint8)
    pixels, errors = [], []
    for read in reads:
        try:
            pixels.append(decode(read(), preprocessing))
            errors.append(None)
        except Exception as err:  # any failure is this image's, written in its row
            pixels.append(blank)
            errors.append(failure(err))
    from ray.data.extensions import ArrowTensorArray

    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "pixels": ArrowTensorArray.from_numpy(np.stack(pixels)),
            "error": pa.array(errors, pa.string()),  # typed even when all are null
        }
    )


class ScoreBatch:
    """A Ray Data predictor class: the stored model loaded once per actor."""

    def __init__(self, path: str, metadata: dict, tag: str, top_k: int):
        from visiontune.flags import quiet_transformers

        quiet_transformers()
        self.model = StoredModel(
            tag=tag,
            path=path,
            metadata=ModelMetadata.model_validate(metadata),
            preprocessing=Preprocessing.from_pretrained(path),
        )
        self.predictor = self.model.predictor()
        self.top_k = top_k

    def __call__(self, batch: dict) -> pa.Table:
        ids, errors = list(batch["id"]), list(batch["error"])
        good = [i for i, error in enumerate(errors) if error is None]
        bad = [i for i, error in enumerate(errors) if error is not None]
        tables = []
        if good:
            probabilities = self.predictor(batch["pixels"][good])
            labels, tag = self.model.metadata.labels, self.model.tag
            tables.append(
                scored_rows([ids[i] for i in good], probabilities, labels, self.top_k, tag)
            )
        if bad:
            tables.append(
                error_rows([ids[i] for i in bad], [errors[i] for i in bad], self.model.tag)
            )
        return pa.concat_tables(tables)


def _arrow_filesystem(output: Output):
    """None for a local folder (Ray writes it directly), else the fsspec filesystem for Arrow."""
    if output.filesystem.protocol in ("file", ("file", "local")):
        return None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(output.filesystem))
