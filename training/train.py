"""The fine-tuning loop, top to bottom.

``train(config)`` reads the data, swaps in a new head, trains what the strategy
says with AdamW + warm-up/cosine, keeps the best validation weights (early
stopping), fits a temperature, evaluates, and saves the model into the BentoML
store. ``train`` itself is the loop, on one screen; ``prepare`` builds what it
works with (a ``Run``), ``run_epoch`` is one pass of training steps (forward,
loss, backward, step), ``validate`` and ``select_best`` judge the epoch, and
``finish`` calibrates, evaluates and stores the best weights. Where the run
stands is a ``RunState`` (``training.checkpoint``).

Hugging Face Accelerate handles devices, mixed precision, gradient accumulation
and data parallelism (``accelerate launch`` / ``torchrun``). A checkpoint is
written every ``--checkpoint-every`` minutes and when Ctrl-C or SIGTERM stops the
run (``training.stopping``); ``--resume`` continues from it to the same weights as
an unbroken run. With several processes every decision to checkpoint or stop goes
through Accelerate's trigger, so all processes take it at the same step and none
is left waiting in a collective.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import bentoml
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from transformers import get_cosine_schedule_with_warmup

from contract.capture import captured_ids
from contract.images import Preprocessing
from contract.savedmodel import Lineage, ModelMetadata
from training import tracking
from training.augment import BatchAugmenter, warn_if_upscaled
from training.checkpoint import (
    NOT_COMPARED,
    RunState,
    checkpoint_path,
    load_checkpoint,
    load_progress,
    remove_checkpoint,
    save_checkpoint,
)
from training.config import TrainConfig
from training.data import DataSplits, ImageSet, load_data, make_loader
from training.ema import weight_average
from training.evaluate import (
    Evaluation,
    calibration,
    collect_logits,
    evaluate_logits,
    fit_temperature,
    write_report,
)
from training.mistakes import Predictions
from training.model import (
    apply_strategy,
    create_model,
    input_size_for,
    load_backbone_config,
    merge_adapters,
    train_mode,
)
from training.preflight import check_free_space, check_writable, describe
from training.progress import track
from training.stopping import Interrupted, StopRequests
from training.store import samples_of, save_model


class StoreError(RuntimeError):
    """The final save into the model store failed; the trained weights are in the checkpoint."""


@dataclass
class TrainResult:
    tag: bentoml.Tag | None  # None on all but the main process
    metadata: ModelMetadata
    run_dir: Path
    history: list[dict]


BeforeSave = Callable[[nn.Module, Preprocessing, ModelMetadata], ModelMetadata]


def train(
    config: TrainConfig,
    data: DataSplits | None = None,
    before_save: BeforeSave | None = None,
    stop: StopRequests | None = None,
) -> TrainResult:
    """Fine-tune as ``config`` says, on ``config.data`` unless ``data`` is given.

    ``before_save`` sees the finished model (adapters merged, on the CPU, in eval
    mode) and returns the metadata to store with it (``visiontune retrain`` adds
    the lineage and the gate's verdict there). ``stop`` is the caller's signal
    handling, if any; without it, Ctrl-C and SIGTERM are handled here.
    """
    with StopRequests() if stop is None else nullcontext(stop) as stop:
        run = prepare(config, data, before_save, stop)
        state, accelerator, config = run.state, run.accelerator, run.config
        last = state.epoch if state.done else config.epochs  # done: resumed for the save
        with stop.loop():
            for epoch in track(
                range(state.epoch, last),
                config.epochs,
                "epochs",
                unit="epoch",
                initial=state.epoch,
                show=accelerator.is_main_process,
                lines=False,  # each epoch prints its own line
            ):
                started = time.perf_counter()
                train_loss = run_epoch(run, epoch)
                row, score, candidate = validate(run, epoch, train_loss, started)
                state.history.append(row)
                accelerator.print(_epoch_line(row, config.epochs))
                tracking.log_epoch(accelerator, row)
                select_best(state, score, candidate)
                state.epoch = epoch + 1
                if state.bad >= config.patience:
                    accelerator.print(
                        f"early stop: no better validation {config.metric} (or loss at the "
                        f"same {config.metric}) in {config.patience} epochs"
                    )
                    break
        keep_trained_weights(run)
        result = finish(run)
        accelerator.end_training()
        return result


@dataclass
class Run:
    """Everything one training run works with, built once by ``prepare``."""

    config: TrainConfig
    data: DataSplits
    accelerator: Accelerator
    preprocessing: Preprocessing
    model: nn.Module  # prepared by Accelerate: wrapped for data parallelism and autocast
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_set: ImageSet
    val_loader: DataLoader
    loss_fn: nn.Module
    augmenter: BatchAugmenter
    ema: AveragedModel | None  # --ema-decay's average of the weights
    state: RunState
    stop: StopRequests
    before_save: BeforeSave | None
    timer: _Every  # --checkpoint-every
    resumed_losses: list[float]  # this process's losses of the interrupted epoch (--resume)


def prepare(
    config: TrainConfig, data: DataSplits | None, before_save: BeforeSave | None, stop
) -> Run:
    """The data, the model with its new head, the optimizer and schedule, all prepared by
    Accelerate; with ``--resume``, restored from the checkpoint."""
    accelerator = Accelerator(
        mixed_precision=mixed_precision(config.mixed_precision),
        gradient_accumulation_steps=config.grad_accum,
        log_with=tracking.tracker(config),
        project_dir=tracking.tracking_dir(config),
    )
    set_seed(config.seed)
    state = load_progress(config.run_dir, config) if config.resume else RunState()
    check_writable(config.run_dir)  # before hours of training, not after
    load_backbone_config(config.backbone)  # fail on a bad --backbone before decoding the data

    data = data or load_data(config)
    config, chosen_size = _size_for_small_images(config, data, accelerator)
    model, preprocessing = create_model(config.backbone, data.labels, config.image_size)
    trainable = apply_strategy(model, config)
    model = trainable.model
    check_free_space(config.run_dir, model)
    if not chosen_size:  # a size chosen for small images upscales them on purpose
        warn_if_upscaled([source for source, _ in data.train], preprocessing, config.augment)
    train_set = ImageSet(data.train, preprocessing)
    val_loader = make_loader(
        ImageSet(data.val, preprocessing), config.batch_size, workers=config.workers
    )
    optimizer = torch.optim.AdamW(trainable.param_groups, weight_decay=config.weight_decay)
    scheduler = _warmup_cosine(optimizer, config, len(train_set), accelerator.num_processes)
    # the average copies the model before Accelerate wraps its forward (autocast)
    ema = None
    if config.ema_decay is not None:
        ema = weight_average(model, config.ema_decay).to(accelerator.device)
    model, optimizer, scheduler, val_loader = accelerator.prepare(
        model, optimizer, scheduler, val_loader
    )
    loss_fn = loss_function(config, data).to(accelerator.device)
    augmenter = make_augmenter(config, preprocessing, data, accelerator.process_index)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)  # resumed with the rest of the state
    resumed_losses = []
    if config.resume:
        state.best_weights, resumed_losses = load_checkpoint(accelerator, config.run_dir)
        stop.checkpoint = checkpoint_path(config.run_dir)
    timer = _Every(config.checkpoint_every)
    tracking.start(accelerator, config)
    return Run(
        config, data, accelerator, preprocessing, model, optimizer, scheduler, train_set,
        val_loader, loss_fn, augmenter, ema, state, stop, before_save, timer, resumed_losses,
    )  # fmt: skip


def run_epoch(run: Run, epoch: int) -> float:
    """One pass over the training set (what is left of it on a resumed run): forward, loss,
    backward, step; a checkpoint when one is due. The epoch's mean training loss."""
    config, accelerator, state = run.config, run.accelerator, run.state
    loader = accelerator.prepare_data_loader(
        make_loader(
            run.train_set,
            config.batch_size,
            order=epoch_order(config.seed, epoch, len(run.train_set)),
            workers=config.workers,
        )
    )
    skip, steps = state.batches_done, len(loader)
    losses = []
    if skip:
        loader = accelerator.skip_first_batches(loader, skip)
        losses = [torch.tensor(x, device=accelerator.device) for x in run.resumed_losses]
    train_mode(run.model)
    for batch_index, (images, labels) in enumerate(
        track(
            loader,
            steps,
            f"epoch {epoch + 1}",
            unit="step",
            initial=skip,
            show=accelerator.is_main_process,
            leave=False,
        ),
        start=skip,
    ):
        with accelerator.accumulate(run.model):
            pixel_values, targets = run.augmenter(images, labels, epoch, batch_index)
            logits = run.model(pixel_values=pixel_values).logits
            loss = run.loss_fn(logits.float(), targets)
            accelerator.backward(loss)
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad()
        if run.ema is not None and accelerator.sync_gradients:
            run.ema.update_parameters(accelerator.unwrap_model(run.model))
        losses.append(loss.detach())
        if accelerator.sync_gradients:  # never in the middle of an accumulated step
            state.epoch, state.batches_done = epoch, batch_index + 1
            checkpoint_if_due(run, losses)
    state.batches_done = 0
    return _mean_loss(losses, accelerator)


def validate(
    run: Run, epoch: int, train_loss: float, started: float
) -> tuple[dict, list[float], nn.Module]:
    """The epoch's row of the history, and the weights it offers as the best with their
    score: the model's, or the weight average's when that scores better."""
    accelerator, labels = run.accelerator, run.data.labels
    val = evaluate_logits(
        *collect_logits(run.model, run.val_loader, run.preprocessing, accelerator), labels
    )
    row = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "val_loss": val.metrics.nll,
        "val_accuracy": val.metrics.accuracy,
        "val_macro_f1": val.metrics.macro_f1,
        "lr": run.scheduler.get_last_lr()[-1],
        "seconds": time.perf_counter() - started,
    }
    score, candidate = _score(val.metrics, run.config.metric), accelerator.unwrap_model(run.model)
    if run.ema is not None:
        ema_val = evaluate_logits(
            *collect_logits(run.ema, run.val_loader, run.preprocessing, accelerator), labels
        )
        row.update(ema_val_accuracy=ema_val.metrics.accuracy)
        row.update(ema_val_macro_f1=ema_val.metrics.macro_f1)
        ema_score = _score(ema_val.metrics, run.config.metric)
        if _better(ema_score, score):
            score, candidate = ema_score, run.ema.module
    return row, score, candidate


def select_best(state: RunState, score: list[float], candidate: nn.Module) -> None:
    """Keep ``candidate``'s weights if they beat the best so far; else count one more epoch
    without progress (for early stopping)."""
    if _better(score, state.best):
        state.best, state.bad, state.best_weights = score, 0, _copy_state(candidate)
    else:
        state.bad += 1


def checkpoint(run: Run, losses: list[torch.Tensor]) -> Path:
    """Save the run's state now (``losses``: this process's of the current epoch)."""
    kept = [float(loss) for loss in losses]
    return save_checkpoint(run.accelerator, run.config.run_dir, run.config, run.state, kept)


def keep_trained_weights(run: Run) -> None:
    """A last checkpoint once training is over, so the best weights are safe before the
    final save is tried; then stop if a signal asked to."""
    if not run.state.done:
        run.state.done = True
        with run.stop.critical():
            run.stop.checkpoint = checkpoint(run, [])
    if _any_process(run.accelerator, run.stop.requested):
        raise Interrupted(run.stop.checkpoint)


def finish(run: Run) -> TrainResult:
    """The best weights calibrated on validation, evaluated, saved to the store with the
    report beside them."""
    config, accelerator, data, preprocessing = (
        run.config,
        run.accelerator,
        run.data,
        run.preprocessing,
    )
    model = accelerator.unwrap_model(run.model)
    model.load_state_dict(run.state.best_weights)
    val_logits, val_labels = collect_logits(model, run.val_loader, preprocessing, accelerator)
    temperature = fit_temperature(val_logits, val_labels)
    val = evaluate_logits(val_logits, val_labels, data.labels, temperature)
    calibrations = {"validation": calibration(val_logits, val_labels, temperature)}
    predictions = Predictions.from_logits(data.val, val_logits, temperature)  # for the report
    test = None
    if data.test:
        test_loader = accelerator.prepare_data_loader(
            make_loader(
                ImageSet(data.test, preprocessing), config.batch_size, workers=config.workers
            )
        )
        test_logits, test_labels = collect_logits(model, test_loader, preprocessing, accelerator)
        test = evaluate_logits(test_logits, test_labels, data.labels, temperature)
        calibrations["test"] = calibration(test_logits, test_labels, temperature)
        predictions = Predictions.from_logits(data.test, test_logits, temperature)
    metadata = _metadata(config, data, preprocessing, temperature, val, test)
    tag = None
    if accelerator.is_main_process:
        model = merge_adapters(model).to("cpu").float().eval()
        if run.before_save is not None:
            metadata = run.before_save(model, preprocessing, metadata)
        samples = samples_of(data, preprocessing)
        with run.stop.critical():  # a signal now waits until the model is stored whole
            tag = _store(model, preprocessing, metadata, config, run.stop.checkpoint, samples)
            summary = {
                **_summary(str(tag), metadata, val, test, data),
                "calibration": calibrations,
            }
            write_report(config.run_dir, summary, run.state.history, data.labels, predictions)
            (config.run_dir / "config.json").write_text(
                json.dumps(metadata.training_config, indent=2)
            )
            remove_checkpoint(config.run_dir)
    accelerator.wait_for_everyone()
    history = run.state.history
    return TrainResult(tag=tag, metadata=metadata, run_dir=config.run_dir, history=history)


def _size_for_small_images(
    config: TrainConfig, data: DataSplits, accelerator
) -> tuple[TrainConfig, int | None]:
    """Without ``--image-size``, small images train at about three times their size (the size
    chosen, or None where the backbone's own input is kept)."""
    if config.image_size is not None:
        return config, None
    size = input_size_for(config.backbone, [source for source, _ in data.train])
    if size is None:
        return config, None
    accelerator.print(
        f"small training images: training at {size} px, about three times their size "
        f"(the backbone's own input is larger; --image-size chooses)"
    )
    return config.model_copy(update={"image_size": size}), size


def _warmup_cosine(optimizer, config: TrainConfig, images: int, processes: int):
    """Linear warm-up, then a cosine to zero over every optimizer step of the run."""
    steps_per_epoch = math.ceil(
        math.ceil(images / (config.batch_size * processes)) / config.grad_accum
    )
    optimizer_steps = steps_per_epoch * config.epochs
    # Accelerate steps a prepared scheduler once per process for every optimizer step.
    return get_cosine_schedule_with_warmup(
        optimizer,
        num_warmup_steps=int(config.warmup_ratio * optimizer_steps) * processes,
        num_training_steps=optimizer_steps * processes,
    )


def _store(model, preprocessing, metadata, config: TrainConfig, kept: Path, samples) -> bentoml.Tag:
    try:
        return save_model(model, preprocessing, metadata, name=config.name, samples=samples)
    except Exception as err:  # disk full, store unwritable...: say where the weights are
        raise StoreError(
            f"cannot save the model into the store ({describe(err)}); the trained weights are "
            f"kept in {kept}: fix that and run the same command with --resume to save them"
        ) from err


class _Every:
    """A timer for periodic checkpoints (``minutes`` 0: never due)."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.reset()

    def reset(self) -> None:
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.seconds > 0 and time.monotonic() - self.last >= self.seconds


def checkpoint_if_due(run: Run, losses: list[torch.Tensor]) -> None:
    """Checkpoint when any process was asked to stop or the main one's timer is due; then stop
    if asked. Every process calls this at the same steps, and Accelerate's trigger (one
    all-reduce) makes their decisions one, so they all save and stop at the same step."""
    accelerator, stop, timer = run.accelerator, run.stop, run.timer
    if accelerator.num_processes == 1:  # no one to agree with: no all-reduce, no device sync
        if not (stop.requested or timer.due()):
            return
    else:
        if stop.requested or (accelerator.is_main_process and timer.due()):
            accelerator.set_trigger()
        if not accelerator.check_trigger():
            return
    stopping = _any_process(accelerator, stop.requested)
    with stop.critical():
        stop.checkpoint = checkpoint(run, losses)
    timer.reset()
    if stopping:
        raise Interrupted(stop.checkpoint)


def _any_process(accelerator, flag: bool) -> bool:
    return bool(accelerator.reduce(torch.tensor(int(flag), device=accelerator.device)).item())


def make_augmenter(config: TrainConfig, preprocessing, data: DataSplits, process_index: int):
    return BatchAugmenter(
        preprocessing,
        len(data.labels),
        policy=config.augment,
        flip=config.flip,
        mixup=config.mixup,
        cutmix=config.cutmix,
        seed=config.seed,
        process_index=process_index,
    )


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def _mean_loss(losses: list[torch.Tensor], accelerator) -> float:
    """The epoch's training loss averaged over every process's batches."""
    if not losses:
        return float("nan")
    return float(accelerator.reduce(torch.stack(losses).mean(), reduction="mean"))


def loss_function(config: TrainConfig, data: DataSplits) -> nn.CrossEntropyLoss:
    return nn.CrossEntropyLoss(
        weight=_class_weights(data) if config.class_weighted else None,
        label_smoothing=config.label_smoothing,
    )


def _class_weights(data: DataSplits) -> torch.Tensor:
    counts = torch.tensor(list(data.label_counts.values()), dtype=torch.float)
    return counts.sum() / (len(counts) * counts.clamp(min=1))


def mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _score(metrics, metric: str) -> list[float]:
    """An epoch's standing: the validation metric, then the validation loss.

    A small validation set often reaches the metric's ceiling (every image right)
    within a few epochs; ranked on the metric alone, the first epoch to get there would
    be kept and training stopped ``patience`` epochs later, however much the model
    still gained in confidence. The loss breaks such ties.
    """
    return [getattr(metrics, metric), metrics.nll]


def _better(score: list[float], best: list[float] | None) -> bool:
    """A higher metric, or the same metric at a lower loss."""
    if best is None:
        return True
    return score[0] > best[0] or (score[0] == best[0] and score[1] < best[1])


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _epoch_line(row: dict, epochs: int) -> str:
    ema = f"  ema_val_acc {row['ema_val_accuracy']:.4f}" if "ema_val_accuracy" in row else ""
    return (
        f"epoch {row['epoch']}/{epochs}  train_loss {row['train_loss']:.4f}  "
        f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}  "
        f"val_f1 {row['val_macro_f1']:.4f}{ema}  lr {row['lr']:.2e}  {row['seconds']:.1f}s"
    )


def _metadata(
    config, data: DataSplits, preprocessing, temperature, val: Evaluation, test
) -> ModelMetadata:
    return ModelMetadata(
        labels=data.labels,
        backbone=config.backbone,
        strategy=config.strategy,
        image_size=(preprocessing.height, preprocessing.width),
        temperature=temperature,
        label_counts=data.label_counts,
        validation=val.metrics,
        test=test.metrics if test else None,
        dataset_fingerprint=data.fingerprint,
        split=data.sizes,
        training_config=_resolved_config(config, data),
        versions={
            pkg: version(pkg)
            for pkg in ("visiontune", "torch", "transformers", "accelerate", "peft", "bentoml")
        },
        lineage=_captured_lineage(config.data),
    )


def _captured_lineage(data: str) -> Lineage | None:
    """Data labelled from live traffic (``visiontune capture import``) names its inference ids."""
    ids = captured_ids(data)
    return Lineage(captured={data: ids}) if ids else None


def _resolved_config(config: TrainConfig, data: DataSplits) -> dict:
    resolved = config.recorded(NOT_COMPARED, mode="json")
    resolved["output_dir"] = str(config.run_dir)
    resolved["skipped_files"] = [f"{path}: {reason}" for path, reason in data.skipped]
    resolved["given_split"] = data.given_split
    return {key: value for key, value in resolved.items() if value is not None}


def _summary(tag: str, metadata: ModelMetadata, val: Evaluation, test, data: DataSplits) -> dict:
    return {
        "tag": tag,
        "backbone": metadata.backbone,
        "strategy": metadata.strategy,
        "temperature": metadata.temperature,
        "dataset_fingerprint": metadata.dataset_fingerprint,
        "split": data.sizes,
        "label_counts": data.label_counts,
        "skipped": len(data.skipped),
        "validation": val.as_dict(),
        "test": test.as_dict() if test else None,
    }
