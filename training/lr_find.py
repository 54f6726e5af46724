"""The learning-rate range test (Smith, 2017; fastai's ``lr_find``).

Training as ``visiontune train`` would (the same data, strategy, augmentation,
loss and AdamW), the rate grows by the same factor every optimizer step, from
``start_lr`` to ``end_lr``; the loss is smoothed (an exponential average,
bias-corrected) and the test stops once it diverges (four times its lowest).
Two rates are read off the curve, as fastai does: where the smoothed loss falls
fastest against log(rate), and a tenth of the rate at its minimum. The weights
trained on the way are discarded; nothing goes into the model store.

Written here rather than taken from ``torch-lr-finder``: that library calls
``model.train()`` (so a frozen backbone's batch norms would learn from the test's
batches, unlike in training), moves data and runs mixed precision itself instead
of through Accelerate, and prints to stdout.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.config import TrainConfig
from training.data import DataSplits, ImageSet, load_data, make_loader
from training.model import (
    apply_strategy,
    create_model,
    load_backbone_config,
    sized_for,
    train_mode,
)
from training.preflight import OutputError, describe
from training.progress import Progress
from training.train import epoch_order, loss_function, make_augmenter, mixed_precision

SMOOTHING = 0.98  # fastai's weight of the running average
DIVERGED = 4.0  # the test stops when the smoothed loss exceeds this many times its lowest
# A smoothed loss that never falls 5% below where the kept points start is noise around a
# level: a steepest point read off it would mean nothing.
FELL = 0.95
PLOT = "lr_find.png"
CURVE = "lr_find.json"


class RangeTestError(ValueError):
    """A range test whose curve gives no rate; the message is one line for the user."""


class RangeTestConfig(BaseModel):
    """The rates `visiontune lr-find` sweeps."""

    model_config = ConfigDict(extra="forbid")

    start_lr: float = Field(1e-7, gt=0, description="Learning rate of the first step.")
    end_lr: float = Field(
        10.0,
        gt=0,
        description="Learning rate of the last step (the test stops sooner when the loss "
        "diverges).",
    )
    steps: int = Field(
        100,
        ge=20,
        description="Optimizer steps from --start-lr to --end-lr, the rate multiplied by the "
        "same factor at each; the first tenth and the last five are not used for the suggestion.",
    )

    @model_validator(mode="after")
    def _check_range(self) -> Self:
        if self.end_lr <= self.start_lr:
            raise ValueError("--end-lr must be above --start-lr")
        return self


@dataclass
class RangeTest:
    """The test's curve, one point per optimizer step."""

    lrs: list[float]
    losses: list[float]  # each step's training loss
    smoothed: list[float]
    diverged: bool
    planned: int  # the steps asked for
    image_size: tuple[int, int] | None = None  # the input it ran at, as training picks it


@dataclass
class Suggestion:
    """The rates read off a curve."""

    steepest: float  # the suggested rate: the smoothed loss falls fastest here
    minimum_tenth: float  # a tenth of the rate at the smoothed loss's minimum


def range_test(
    config: TrainConfig, sweep: RangeTestConfig, data: DataSplits | None = None
) -> RangeTest:
    """Run the test on ``config``'s data and strategy (``config.lr`` is not used, except that
    parameter groups keep their ratios to it, as layer-wise decay sets them)."""
    accelerator = Accelerator(
        mixed_precision=mixed_precision(config.mixed_precision),
        gradient_accumulation_steps=config.grad_accum,
    )
    set_seed(config.seed)
    load_backbone_config(config.backbone)  # fail on a bad --backbone before decoding the data
    data = data or load_data(config)
    config = sized_for(config, [source for source, _ in data.train])  # the size train picks
    model, preprocessing = create_model(config.backbone, data.labels, config.image_size)
    trainable = apply_strategy(model, config)
    ratios = [group["lr"] / config.lr for group in trainable.param_groups]
    optimizer = torch.optim.AdamW(trainable.param_groups, weight_decay=config.weight_decay)
    model, optimizer = accelerator.prepare(trainable.model, optimizer)
    loss_fn = loss_function(config, data).to(accelerator.device)
    augmenter = make_augmenter(config, preprocessing, data, accelerator.process_index)
    batches = _batches(ImageSet(data.train, preprocessing), config, accelerator)

    def step(lr: float) -> float:
        for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
            group["lr"] = lr * ratio
        losses = []
        for _ in range(config.grad_accum):
            epoch, batch, (images, labels) = next(batches)
            with accelerator.accumulate(model):
                pixel_values, targets = augmenter(images, labels, epoch, batch)
                loss = loss_fn(model(pixel_values=pixel_values).logits.float(), targets)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            losses.append(loss.detach())
        return float(accelerator.reduce(torch.stack(losses).mean(), reduction="mean"))

    train_mode(model)
    result = _sweep(step, sweep, accelerator.is_main_process)
    result.image_size = (preprocessing.height, preprocessing.width)
    return result


def _batches(train_set: ImageSet, config: TrainConfig, accelerator) -> Iterator[tuple]:
    """``(epoch, batch, (images, labels))`` for ever: passes over the training set, each in
    the order training's epoch of that number takes."""
    epoch = 0
    while True:
        loader = make_loader(
            train_set,
            config.batch_size,
            order=epoch_order(config.seed, epoch, len(train_set)),
            workers=config.workers,
        )
        for batch, pair in enumerate(accelerator.prepare_data_loader(loader)):
            yield epoch, batch, pair
        epoch += 1


def _sweep(step, sweep: RangeTestConfig, show: bool) -> RangeTest:
    """Step through the rates until the last or until the smoothed loss diverges."""
    factor = (sweep.end_lr / sweep.start_lr) ** (1 / (sweep.steps - 1))
    lrs, losses, smoothed = [], [], []
    average, diverged = 0.0, False
    bar = Progress(sweep.steps, "lr-find", unit="step", show=show, lines=False)
    for i in range(sweep.steps):
        lr = sweep.start_lr * factor**i
        loss = step(lr)
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(average / (1 - SMOOTHING ** (i + 1)))
        bar.update()
        if show and bar.bar is None and (i + 1) % 10 == 0:
            bar.line(f"  lr {lr:.2e}  loss {smoothed[-1]:.4f}")
        if not math.isfinite(loss) or smoothed[-1] > DIVERGED * min(smoothed):
            diverged = True
            break
    bar.close()
    return RangeTest(lrs, losses, smoothed, diverged, sweep.steps)


def suggest(result: RangeTest) -> Suggestion:
    """fastai's two rates, from the points left once the first tenth of the planned steps (the
    loss barely moves there) and the last five (diverging) are dropped: the steepest descent,
    searched up to the minimum (past it the curve only climbs), and a tenth of the minimum."""
    kept = slice(result.planned // 10, len(result.lrs) - 5)
    lr, loss = np.array(result.lrs[kept]), np.array(result.smoothed[kept])
    finite = np.isfinite(loss)
    lr, loss = lr[finite], loss[finite]
    if len(lr) < 3:
        raise RangeTestError(
            f"the loss diverged after {len(result.lrs)} steps, at learning rate "
            f"{result.lrs[-1]:.1e}, before the curve gives a rate: lower --start-lr or raise --steps"
        )
    lowest = int(np.argmin(loss))
    if lowest < 2 or loss[lowest] > FELL * loss[0]:
        raise RangeTestError(
            f"the smoothed loss did not fall at any rate up to {result.lrs[-1]:.1e}, so no rate "
            f"can be suggested: raise --steps or --batch-size, or try another --strategy"
        )
    slopes = np.diff(loss[: lowest + 1]) / np.diff(np.log(lr[: lowest + 1]))
    return Suggestion(float(lr[int(np.argmin(slopes))]), float(lr[lowest] / 10))


def check_output_dir(run_dir: Path) -> None:
    """The folder the plot goes to, created and written to before any work is done."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CURVE).touch()
    except OSError as err:
        raise OutputError(f"--output-dir {run_dir}: cannot write there ({describe(err)})") from None


def write_range_test(run_dir: Path, result: RangeTest, suggestion: Suggestion | None) -> Path:
    """``lr_find.json`` (the curve, a non-finite loss as null, and the suggestion) and
    ``lr_find.png`` (its plot) in ``run_dir``; the plot's path."""
    record = {
        key: [x if math.isfinite(x) else None for x in value] if isinstance(value, list) else value
        for key, value in asdict(result).items()
    }
    record["suggestion"] = asdict(suggestion) if suggestion else None
    (run_dir / CURVE).write_text(json.dumps(record, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(result.lrs, result.losses, color="0.75", linewidth=1, label="loss per step")
    ax.plot(result.lrs, result.smoothed, label="smoothed loss")
    if suggestion:
        for rate, style, color, name in (
            (suggestion.steepest, "--", "C1", "steepest descent (suggested)"),
            (suggestion.minimum_tenth, ":", "C2", "minimum / 10"),
        ):
            ax.axvline(rate, linestyle=style, color=color, label=f"{name} {rate:.1e}")
    finite = [x for x in result.smoothed if math.isfinite(x)]
    ax.set_ylim(top=1.05 * min(max(finite), 2 * finite[0]))  # past that, only the divergence
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss")
    ax.set_title("Learning-rate range test")
    ax.legend()
    fig.tight_layout()
    path = run_dir / PLOT
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
