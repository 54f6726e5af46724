"""`visiontune score TAG --data PATH_OR_URL --output OUT`: classify an archive of images into Parquet.

Runs the stored model itself (no service): ``--engine local`` in this process,
``--engine ray`` on Ray Data (``RAY_ADDRESS``, else a local Ray). Each image gets
a row: id, top-k labels and calibrated scores, the model tag, or an error.
Exit 0 when every image was scored, 1 when some could not be read, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import importlib.util

from visiontune.errors import EXIT_PARTIAL, CommandError
from visiontune.flags import quiet_transformers

NAME = "score"
HELP = "classify a folder, URL or dataset of images with a stored model into Parquet"
ENGINES = ("local", "ray")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tag", help="NAME:VERSION, NAME:latest or NAME@STAGE")
    parser.add_argument(
        "--data",
        required=True,
        help="a folder (searched recursively), an fsspec URL (s3://bucket/prefix, gs://..., "
        "file://...) or a Hugging Face dataset (a save_to_disk folder or a dataset name)",
    )
    parser.add_argument("--output", required=True, help="folder (or URL) of Parquet files to write")
    parser.add_argument(
        "--image-column", default="image", help="image column of a dataset (default image)"
    )
    parser.add_argument("--top-k", type=int, default=5, help="labels per image (default 5)")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="images per forward pass (default 64)"
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: this process, a decoding pool and batched forward passes; ray: Ray Data "
        "on the cluster at $RAY_ADDRESS, else a local Ray (default local)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a partly written --output: score only the images it lacks",
    )
    parser.add_argument(
        "--decoders",
        type=int,
        help="--engine local: decoding threads (default: one per usable core)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help="--engine ray: predictor actors (default: one per GPU of the cluster, else 1)",
    )
    parser.add_argument(
        "--num-cpus",
        type=int,
        help="--engine ray without RAY_ADDRESS: CPUs of the local Ray (default: all)",
    )


def run(args: argparse.Namespace) -> int:
    _check(args)
    quiet_transformers()
    from visiontune.scoring.model import StoredModel
    from visiontune.scoring.results import Output
    from visiontune.scoring.sources import open_source

    model = StoredModel.resolve(args.tag)
    source = open_source(args.data, args.image_column)
    output = Output(
        args.output, model=model.tag, top_k=args.top_k, data=args.data, resume=args.resume
    )
    todo = [index for index, id_ in enumerate(source.ids) if id_ not in output.done]
    options = {"batch_size": args.batch_size, "top_k": args.top_k}
    if todo and args.engine == "ray":
        from visiontune.scoring.ray_engine import score_ray

        score_ray(
            source, todo, model, output, **options, concurrency=args.concurrency,
            num_cpus=args.num_cpus,
        )  # fmt: skip
    elif todo:
        from visiontune.scoring.local import score_local

        score_local(source, todo, model, output, **options, decoders=args.decoders)
    rows, errors = output.counts()
    print(
        f"scored {rows - errors} of {len(source.ids)} images with {model.tag} into "
        f"{args.output} ({len(todo)} this run, {len(source.ids) - len(todo)} already there); "
        f"{errors} could not be read (see the error column)"
    )
    return EXIT_PARTIAL if errors else 0


def _check(args: argparse.Namespace) -> None:
    for name in ("top_k", "batch_size", "decoders", "concurrency", "num_cpus"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
    if args.engine == "local" and (args.concurrency or args.num_cpus):
        raise CommandError("--concurrency and --num-cpus are for --engine ray")
    if args.engine == "ray" and args.decoders:
        raise CommandError("--decoders is for --engine local (Ray decodes in its CPU tasks)")
    if args.engine == "ray" and importlib.util.find_spec("ray") is None:
        raise CommandError("--engine ray needs Ray: pip install 'visiontune[score]'")
