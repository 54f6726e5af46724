"""Training throughput: `visiontune train`'s loop against a plain PyTorch loop and HF Trainer.

Three loops train the same model (full fine-tuning), on the same decoded digits
(the uint8 cache ``training.data.ImageSet`` builds), at the same batch size:

- ``visiontune``: ``training.train.train()`` itself, unchanged (Accelerate,
  ``accumulate``, warm-up + cosine schedule, progress, per-batch normalisation),
  with ``--augment none``;
- ``augmented``: the same with the default ``--augment light`` (every batch
  warped and colour-jittered on the device by ``training.augment``);
- ``plain``: the limit, a bare ``forward / backward / AdamW.step / zero_grad``
  loop that slices batches straight out of the cached tensor;
- ``hf_trainer``: the peer, ``transformers.Trainer`` with the same optimizer,
  schedule and batch normalisation (in its collator), no clipping, no logging,
  evaluation or saving.

What is timed is each epoch's training loop, from its first batch fetch to the
end of its last optimizer step: data loading from the cache and normalisation
are in, image decoding, model creation, validation, calibration and saving are
out (visiontune's epochs are timed by wrapping the progress bar that
``train()`` iterates). The first epoch of every run is a warm-up and is not
counted. The loops alternate round by round (in a rotating order) and the
figures are medians over rounds, so a noisy neighbour slows all of them alike.

Throughput is counted per CPU-second of the training process (``time.process_time``,
with one torch thread: ``make bench`` passes ``--threads 1``) as well as per
wall-clock second. On a machine shared with other work, wall-clock time mostly
measures how often the scheduler lets the process run; CPU time measures the
loop's own work, so the ratios and the target use it, and the wall-clock figures
are there to read beside them.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from benchmarks.common import median, parser, rotations, set_threads, write_result

VARIANTS = ["visiontune", "augmented", "plain", "hf_trainer"]

# name: (backbone preset, image size, batch size, timed epochs per run); efficientnet-lite0
# is the real CNN (ImageNet weights, imported), the others random ViTs built from configs
WORKLOADS = {
    "demo-vit-16px": ("small", 16, 16, 4),
    "deit-tiny-48px": ("deit-tiny", 48, 32, 1),
    "efficientnet-lite0-64px": ("efficientnet-lite0", 64, 32, 1),
}
LR = 1e-3
WEIGHT_DECAY = 0.01


def config_for(backbone: Path, image_size: int, batch_size: int, epochs: int, run_dir: Path):
    from training.config import TrainConfig

    return TrainConfig(
        augment="none",
        data="digits",
        backbone=str(backbone),
        name="bench-train-throughput",
        strategy="full",
        image_size=image_size,
        batch_size=batch_size,
        epochs=epochs,
        patience=epochs,  # never stop early: every epoch is timed
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        output_dir=run_dir,
    )


class Stopwatch:
    """Wall-clock and process CPU seconds of each epoch."""

    def __init__(self):
        self.seconds: list[tuple[float, float]] = []
        self._started = (0.0, 0.0)

    def start(self) -> None:
        self._started = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        wall, cpu = self._started
        self.seconds.append((time.perf_counter() - wall, time.process_time() - cpu))


class EpochClock(Stopwatch):
    """Stands in for ``training.train.track``: times each pass over an epoch's batches."""

    def __init__(self):
        from training.progress import track

        super().__init__()
        self._track = track

    def __call__(self, iterable, total, description: str, **options):
        steps = self._track(iterable, total, description, **options)
        return self._timed(steps) if description.startswith("epoch ") else steps

    def _timed(self, bar):
        self.start()
        yield from bar
        self.stop()


def run_visiontune(config) -> list[tuple[float, float]]:
    import bentoml

    from training import train as train_module

    clock = EpochClock()
    with mock.patch.object(train_module, "track", clock), _quiet():
        result = train_module.train(config)
    bentoml.models.delete(result.tag)
    return clock.seconds


def _prepared(config):
    """The same split, model and decoded cache ``train()`` builds, for the other loops."""
    from accelerate.utils import set_seed

    from training.data import ImageSet, load_data
    from training.model import apply_strategy, create_model

    set_seed(config.seed)
    data = load_data(config)
    model, preprocessing = create_model(config.backbone, data.labels, config.image_size)
    model = apply_strategy(model, config).model
    train_set = ImageSet(data.train, preprocessing)
    return model, preprocessing, train_set


def run_plain(config) -> list[tuple[float, float]]:
    model, preprocessing, train_set = _prepared(config)
    images, labels = train_set.cache, train_set.labels
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=WEIGHT_DECAY)
    loss_fn = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    clock = Stopwatch()
    for _ in range(config.epochs):
        clock.start()
        order = torch.randperm(len(labels), generator=generator)
        for batch in order.split(config.batch_size):
            logits = model(pixel_values=preprocessing.normalize(images[batch])).logits
            loss = loss_fn(logits, labels[batch])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        clock.stop()
    return clock.seconds


def run_hf_trainer(config) -> list[tuple[float, float]]:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model, preprocessing, train_set = _prepared(config)

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(train_set)

        def __getitem__(self, index):
            return {"pixel_values": train_set.cache[index], "labels": train_set.labels[index]}

    def collate(rows):
        return {
            "pixel_values": preprocessing.normalize(torch.stack([r["pixel_values"] for r in rows])),
            "labels": torch.stack([r["labels"] for r in rows]),
        }

    clock = Stopwatch()

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            clock.start()

        def on_epoch_end(self, args, state, control, **kwargs):
            clock.stop()

    with tempfile.TemporaryDirectory(prefix="bench-hf-trainer-") as out:
        arguments = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=config.batch_size,
            num_train_epochs=config.epochs,
            learning_rate=config.lr,
            weight_decay=WEIGHT_DECAY,
            lr_scheduler_type="cosine",
            warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of all steps
            max_grad_norm=0.0,  # visiontune and the plain loop do not clip
            optim="adamw_torch",
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            dataloader_num_workers=0,
            remove_unused_columns=False,
            use_cpu=not torch.cuda.is_available(),
            seed=config.seed,
        )
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=Rows(),
            data_collator=collate,
            callbacks=[EpochTimer()],
        )
        with _quiet():
            trainer.train()
    return clock.seconds


def run_augmented(config) -> list[tuple[float, float]]:
    return run_visiontune(config.model_copy(update={"augment": "light"}))


RUNNERS = {
    "visiontune": run_visiontune,
    "augmented": run_augmented,
    "plain": run_plain,
    "hf_trainer": run_hf_trainer,
}


@contextlib.contextmanager
def _quiet():
    """Progress bars and per-epoch lines go nowhere (they still run)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def measure(workload: str, rounds: int, work: Path, quick: bool = False) -> dict:
    from training.backbones import save_random_backbone
    from training.data import load_data
    from training.pretrained import resolve

    preset, image_size, batch_size, timed_epochs = WORKLOADS[workload]
    timed_epochs = 1 if quick else timed_epochs
    if preset == "efficientnet-lite0":
        backbone = Path(resolve(preset))
    else:
        backbone = save_random_backbone(work / workload, "vit", image_size, preset, num_labels=10)
    config = config_for(backbone, image_size, batch_size, 1 + timed_epochs, work / "run")
    images = len(load_data(config).train)
    rate: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu_ms: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for order in rotations(VARIANTS, rounds):
        for name in order:
            seconds = RUNNERS[name](config)
            if len(seconds) != config.epochs:
                raise RuntimeError(f"{name}: timed {len(seconds)} epochs, expected {config.epochs}")
            steady = seconds[1:]  # the first epoch warms up
            rate[name].append(images * len(steady) / sum(wall for wall, _ in steady))
            cpu_ms[name].append(1000 * sum(cpu for _, cpu in steady) / (images * len(steady)))
            print(
                f"  {workload:15s} {name:11s} {rate[name][-1]:8.1f} images/s "
                f"{cpu_ms[name][-1]:6.2f} CPU ms/image",
                flush=True,
            )
    wall_ratios = {
        name: [v / p for v, p in zip(rate[name], rate["plain"], strict=True)] for name in VARIANTS
    }
    ratios = {
        name: [p / v for v, p in zip(cpu_ms[name], cpu_ms["plain"], strict=True)]
        for name in VARIANTS
    }
    return {
        "preset": preset,
        "image_size": image_size,
        "batch_size": batch_size,
        "train_images_per_epoch": images,
        "steps_per_epoch": math.ceil(images / batch_size),
        "timed_epochs_per_run": timed_epochs,
        "images_per_cpu_second": {name: 1000 / median(v) for name, v in cpu_ms.items()},
        "images_per_second": {name: median(v) for name, v in rate.items()},
        "ratio_to_plain": {name: median(v) for name, v in ratios.items()},
        "wall_ratio_to_plain": {name: median(v) for name, v in wall_ratios.items()},
        "by_round": {
            "cpu_ms_per_image": cpu_ms,
            "images_per_second": rate,
            "ratio_to_plain": ratios,
            "wall_ratio_to_plain": wall_ratios,
        },
    }


TARGET = 0.9
AUGMENTED_TARGET = 0.85
ROUNDS = 5


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0])
    args.add_argument(
        "--workloads",
        nargs="+",
        choices=list(WORKLOADS),
        default=list(WORKLOADS),
        help="workloads to measure (default: all)",
    )
    args.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds (default {ROUNDS})")
    args = args.parse_args(argv)
    set_threads(args)
    started = time.perf_counter()
    rounds = 1 if args.quick else args.rounds
    workloads = ["demo-vit-16px"] if args.quick else args.workloads
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as work:
        for workload in workloads:
            results[workload] = measure(workload, rounds, Path(work), args.quick)
    summary = {}
    for workload, r in results.items():
        ratio = r["ratio_to_plain"]
        summary[workload] = {
            "visiontune_over_plain": ratio["visiontune"],
            "hf_trainer_over_plain": ratio["hf_trainer"],
            "visiontune_over_plain_wall": r["wall_ratio_to_plain"]["visiontune"],
            "target": TARGET,
            "met": ratio["visiontune"] >= TARGET,
            "augmented_over_plain": ratio["augmented"],
            "augmented_over_plain_wall": r["wall_ratio_to_plain"]["augmented"],
            "augmented_target": AUGMENTED_TARGET,
            "augmented_met": ratio["augmented"] >= AUGMENTED_TARGET,
        }
        print(
            f"{workload}: visiontune/plain {ratio['visiontune']:.3f} "
            f"(target >= {TARGET}: {'met' if ratio['visiontune'] >= TARGET else 'MISSED'}), "
            f"hf_trainer/plain {ratio['hf_trainer']:.3f}, augmented/plain "
            f"{ratio['augmented']:.3f} (target >= {AUGMENTED_TARGET})"
        )
    write_result(
        "train_throughput",
        {"rounds": rounds, "workloads": results, "summary": summary},
        args,
        started,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
