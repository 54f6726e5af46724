"""Transfer vs scratch: ImageNet's EfficientNet-Lite0 on Fashion-MNIST from 10 or 100 photos per class.

``linear``, ``partial``, ``full`` and ``lora`` fine-tune the imported ImageNet
backbone (``--backbone efficientnet-lite0``); ``scratch (full)`` is the same network
from random weights. Every run goes through ``training.train.train()`` with the
defaults a user gets (20 epochs at most, a cosine learning rate, early stopping after
5 epochs without progress, light augmentation, the small-image input size of 96 px)
and the per-strategy defaults (the peak learning rate; for ``full`` and ``lora``, a
weight average), on the same examples per class for a
given seed (the random-weight baseline trains all 20 epochs, no early stopping,
``full (64 px)`` at 64 px instead, and ``full (64 px, 30 epochs)`` at 64 px all of a
30-epoch schedule);
each epoch is validated on 30 photos per class of the validation split, and the
model is tested on 100 photos per class of Fashion-MNIST's published test split. Figures are means over seeds (each seed
draws other examples and another initialisation of the head); times are wall-clock
seconds of the whole run, evaluation included.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.common import RESULTS, machine_facts, parser, set_threads, write_result

BACKBONE = "efficientnet-lite0"
EVAL_PER_CLASS = 100  # test photos per class
VAL_PER_CLASS = 30  # validation photos per class, scored every epoch
# (row, initial weights, strategy)
ROWS = [
    ("linear", "pretrained", "linear"),
    ("partial", "pretrained", "partial"),
    ("full", "pretrained", "full"),
    ("lora", "pretrained", "lora"),
    ("scratch (full)", "random", "full"),
    ("full (64 px)", "pretrained", "full"),
    ("full (64 px, 30 epochs)", "pretrained", "full"),
]
# Rows that leave a default. From random weights the batch norms' running statistics need
# more steps than early stopping gives a few-shot run (at 10 per class it validated at
# chance and stopped after 6 epochs): the baseline trains the whole schedule. `full (64
# px)` measures what the default input (96 px, three times the photos' size) adds to a
# smaller one (EfficientNet's stride of 32 leaves a 2x2 map at 64 px, 3x3 at 96); `full
# (64 px, 30 epochs)` whether a longer schedule, trained to its end, makes up for it.
ROW_FLAGS = {
    "scratch (full)": {"patience": 20},
    "full (64 px)": {"image_size": 64},
    "full (64 px, 30 epochs)": {"image_size": 64, "epochs": 30, "patience": 30},
}
PROBE_STRENGTHS = [0.01, 0.1, 1.0]  # inverse L2 strengths the linear probe chooses from
TARGETS = {"full_at_100": 0.85, "full_minus_scratch_at_10": 0.15, "lora_gap_at_100": 0.02}


def run_one(backbone: str, strategy: str, shots: int, seed: int, work: Path, **flags):
    import bentoml

    from training.config import TrainConfig
    from training.data import load_data
    from training.train import train

    config = TrainConfig(
        data="fashion-mnist",
        per_class=shots,
        eval_per_class=EVAL_PER_CLASS,
        backbone=backbone,
        name="bench-transfer",
        strategy=strategy,
        seed=seed,
        output_dir=work / f"{strategy}-{shots}-{seed}",
        **flags,
    )
    data = load_data(config)
    val = {}
    for source, label in data.val:  # the first VAL_PER_CLASS of each class
        val.setdefault(label, []).append((source, label))
    data.val = [example for examples in val.values() for example in examples[:VAL_PER_CLASS]]
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = train(config, data=data)
    bentoml.models.delete(result.tag)
    return {
        "test_accuracy": result.metadata.test.accuracy,
        "test_images": result.metadata.test.n,
        "train_images": result.metadata.split["train"],
        "image_size": list(result.metadata.image_size),
        "lr": config.lr,
        "ema_decay": config.ema_decay,
        "epochs_run": len(result.history),
        "seconds": round(time.perf_counter() - started, 1),
    }


def features(model, examples: list, preprocessing, batch: int = 256):
    """The frozen backbone's pooled features of ``examples`` and their labels, as arrays."""
    import numpy as np
    import torch

    from training.data import ImageSet

    images = ImageSet(examples, preprocessing, cache=False)
    rows = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            pixels = torch.stack(
                [images[i][0] for i in range(start, min(start + batch, len(images)))]
            )
            pooled = model.base_model(pixel_values=preprocessing.normalize(pixels)).pooler_output
            rows.append(pooled.flatten(1).numpy())
    return np.concatenate(rows), images.labels.numpy()


def linear_probe(image_size: int) -> dict:
    """Logistic regression on the frozen ImageNet backbone's features of all 60,000 training
    photos (no augmentation), its strength C chosen on the validation split, then refit on
    all 60,000; tested on the same photos as the other rows."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from training.config import TrainConfig
    from training.data import load_data
    from training.model import create_model

    started = time.perf_counter()
    config = TrainConfig(data="fashion-mnist", backbone=BACKBONE, image_size=image_size)
    data = load_data(config)
    test = load_data(config.model_copy(update={"eval_per_class": EVAL_PER_CLASS})).test
    model, preprocessing = create_model(BACKBONE, data.labels, image_size)
    model.eval()
    x_train, y_train = features(model, data.train, preprocessing)
    x_val, y_val = features(model, data.val, preprocessing)
    x_test, y_test = features(model, test, preprocessing)
    extracted = time.perf_counter() - started

    def fit(x, y, strength: float):
        probe = LogisticRegression(C=strength, max_iter=1000)
        return make_pipeline(StandardScaler(), probe).fit(x, y)

    by_strength = {c: fit(x_train, y_train, c).score(x_val, y_val) for c in PROBE_STRENGTHS}
    strength = max(by_strength, key=by_strength.get)
    final = fit(np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]), strength)
    return {
        "test_accuracy": float(final.score(x_test, y_test)),
        "test_images": len(y_test),
        "train_images": len(y_train) + len(y_val),
        "image_size": [image_size, image_size],
        "val_accuracy_by_C": {str(c): acc for c, acc in by_strength.items()},
        "C": strength,
        "feature_seconds": round(extracted, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }


def range_tests(shots: int) -> dict:
    """`visiontune lr-find`'s suggestions for each fine-tuning strategy at ``shots`` per
    class (seed 0), beside the strategy's default rate."""
    from training.config import TrainConfig
    from training.lr_find import RangeTestConfig, RangeTestError, range_test, suggest

    found = {}
    for row, weights, strategy in ROWS:
        if weights != "pretrained" or row in ROW_FLAGS:
            continue
        config = TrainConfig(
            data="fashion-mnist",
            backbone=BACKBONE,
            strategy=strategy,
            per_class=shots,
            eval_per_class=EVAL_PER_CLASS,
        )
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            curve = range_test(config, RangeTestConfig())
        try:
            suggestion = asdict(suggest(curve))
        except RangeTestError as err:
            suggestion = {"error": str(err)}
        found[row] = {
            "default_lr": config.lr,
            **suggestion,
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"  lr-find {row}: {found[row]}", flush=True)
    return found


def tabulate(runs: list[dict]) -> dict:
    """Mean and spread of the test accuracy and time per row and photos per class."""
    table = {}
    for row, *_ in ROWS:
        table[row] = {}
        for shots in sorted({r["per_class"] for r in runs}):
            mine = [r for r in runs if r["row"] == row and r["per_class"] == shots]
            if not mine:
                continue
            values = [r["test_accuracy"] for r in mine]
            table[row][str(shots)] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "seeds": len(values),
                "seconds": statistics.fmean(r["seconds"] for r in mine),
            }
    return table


def verdicts(table: dict) -> dict:
    """The issue's three targets, where the table holds what they need."""
    found = {}
    with contextlib.suppress(KeyError):
        found["full_at_100"] = table["full"]["100"]["mean"]
    with contextlib.suppress(KeyError):
        found["full_minus_scratch_at_10"] = (
            table["full"]["10"]["mean"] - table["scratch (full)"]["10"]["mean"]
        )
    with contextlib.suppress(KeyError):
        found["lora_gap_at_100"] = table["full"]["100"]["mean"] - table["lora"]["100"]["mean"]
    met = {
        "full_at_100": lambda v: v >= TARGETS["full_at_100"],
        "full_minus_scratch_at_10": lambda v: v >= TARGETS["full_minus_scratch_at_10"],
        "lora_gap_at_100": lambda v: v <= TARGETS["lora_gap_at_100"],
    }
    return {name: {"value": v, "met": met[name](v)} for name, v in found.items()}


def arguments(argv: list[str] | None):
    args = parser(__doc__.splitlines()[0])
    args.add_argument(
        "--rows",
        nargs="+",
        choices=[row for row, *_ in ROWS],
        default=[row for row, *_ in ROWS],
        help="strategies to run (default: all)",
    )
    args.add_argument(
        "--per-class", nargs="+", type=int, default=[10, 100], help="photos per class (10 100)"
    )
    args.add_argument("--seeds", type=int, default=3, help="seeds per row and size (default 3)")
    args.add_argument(
        "--no-probe",
        dest="probe",
        action="store_false",
        help="leave out the linear probe on all 60,000 photos",
    )
    args.add_argument(
        "--no-lr-find",
        dest="lr_find",
        action="store_false",
        help="leave out the learning-rate range test of each strategy",
    )
    args.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs the result file already holds and run only the others; "
        "processes started with --resume on other --rows share the file",
    )
    return args.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    set_threads(args)
    started = time.perf_counter()
    from training.backbones import save_random_copy
    from training.pretrained import resolve
    from visiontune.flags import quiet_transformers

    quiet_transformers()
    shots_list = [10] if args.quick else args.per_class
    seeds = 1 if args.quick else args.seeds
    quick = {"epochs": 2} if args.quick else {}
    rows = [row for row in ROWS if row[0] in args.rows]
    done = {_key(run) for run in _stored(args)["runs"]} if args.resume else set()
    runs, probe, lr_find = [], None, None
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as work:
        work = Path(work)
        pretrained = resolve(BACKBONE)
        backbones = {
            "pretrained": BACKBONE,
            "random": str(save_random_copy(pretrained, work / "r")),
        }
        for shots in shots_list:
            for seed in range(seeds):
                for row, weights, strategy in rows:
                    if (row, shots, seed) in done:
                        continue
                    flags = {**ROW_FLAGS.get(row, {}), **quick}
                    run = run_one(backbones[weights], strategy, shots, seed, work, **flags)
                    run.update(row=row, strategy=strategy, weights=weights)
                    run.update(per_class=shots, seed=seed, **_where())
                    print(
                        f"  {row:15s} per class {shots:4d} seed {seed}: accuracy "
                        f"{run['test_accuracy']:.3f} ({run['epochs_run']} epochs, "
                        f"{run['seconds']}s)",
                        flush=True,
                    )
                    runs.append(run)
                    save(args, started, runs, probe, lr_find)  # a cut run keeps what it did
        if args.probe and not args.quick and not (args.resume and _stored(args).get("probe")):
            probe = linear_probe(_default_size(pretrained))
            print(f"  linear probe, all 60,000: accuracy {probe['test_accuracy']:.3f}", flush=True)
            save(args, started, runs, probe, lr_find)
        if args.lr_find and not args.quick and not (args.resume and _stored(args).get("lr_find")):
            lr_find = range_tests(100)

    save(args, started, runs, probe, lr_find)
    return 0


def _defaults() -> dict:
    """The training defaults every run took (the learning rate is per strategy, in each run)."""
    from training.config import TrainConfig

    fields = ("epochs", "patience", "augment", "batch_size", "warmup_ratio", "weight_decay")
    return {name: TrainConfig.model_fields[name].default for name in fields}


def _where() -> dict:
    """The CPU and commit a run was measured on: runs kept by --resume may come from others."""
    machine = machine_facts()
    return {"cpu": machine["cpu"], "commit": machine["git_commit"]}


def _key(run: dict) -> tuple:
    return (run["row"], run["per_class"], run["seed"])


def _default_size(backbone: str) -> int:
    """The input size ``visiontune train`` picks for Fashion-MNIST's photos."""
    from training.embedded import read_fashion_mnist
    from training.model import input_size_for

    photos = [source for source, _ in read_fashion_mnist()[0]["train"][:256]]
    return input_size_for(backbone, photos)


def _path(args) -> Path:
    return args.output or RESULTS / ("transfer.quick.json" if args.quick else "transfer.json")


def _stored(args) -> dict:
    path = _path(args)
    return json.loads(path.read_text()) if path.exists() else {"runs": []}


def save(args, started: float, runs: list[dict], probe: dict | None, lr_find: dict | None):
    """Write this process's ``runs``, ``probe`` and ``lr_find``; with --resume, added to what
    the file holds (under a lock, so that processes on other rows add theirs)."""
    path = _path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stored = _stored(args) if args.resume else {"runs": []}
        mine = {_key(run) for run in runs}
        merged = [r for r in stored["runs"] if _key(r) not in mine] + runs
        order = [row for row, *_ in ROWS]
        merged.sort(key=lambda r: (r["per_class"], r["seed"], order.index(r["row"])))
        table = tabulate(merged)
        write_result(
            "transfer",
            {
                "backbone": f"{BACKBONE} (ImageNet-1k)",
                "data": "Fashion-MNIST",
                "eval_per_class": EVAL_PER_CLASS,
                "val_per_class": VAL_PER_CLASS,
                "defaults": _defaults(),
                "table": table,
                "probe": probe or stored.get("probe"),
                "lr_find": lr_find or stored.get("lr_find"),
                "targets": TARGETS,
                "verdicts": verdicts(table),
                "runs": merged,
            },
            args,
            started,
        )


if __name__ == "__main__":
    raise SystemExit(main())
