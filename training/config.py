"""The training configuration: one typed object, validated once at the edge.

The CLI builds its flags from these fields (their descriptions are the help
text), and the resolved config is written next to the run and into the stored
model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract.savedmodel import DEFAULT_MODEL_NAME

Strategy = Literal["linear", "partial", "full", "lora"]
Augment = Literal["none", "light", "strong", "randaugment", "trivialaugment"]
# Fields only one strategy reads: given with another, they are refused; the config
# recorded with a model (and in a checkpoint) leaves out those of other strategies.
STRATEGY_FIELDS = {
    "unfreeze_blocks": "partial",
    "lora_rank": "lora",
    "lora_alpha": "lora",
    "layer_decay": "full",
}


def default_workers() -> int:
    """Loader processes for a streaming set: the cores this process may use, less one
    for the training loop itself, at most 8 (past that, decoding rarely is the limit)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores - 1))


# Defaults measured per strategy (benchmarks.transfer, BENCHMARKS.md "transfer").
# The peak learning rate: a frozen backbone's head alone takes a larger step than weights
# that carry pretrained features.
DEFAULT_LR: dict[str, float] = {"linear": 1e-2, "partial": 1e-3, "full": 1e-3, "lora": 2e-3}
# The weight average: full and LoRA fine-tuning move many weights on few examples, so the
# weights of any one epoch are noisy; their average validates and tests better (measured,
# BENCHMARKS.md). Linear and partial were measured without it.
DEFAULT_EMA_DECAY: dict[str, float] = {"full": 0.99, "lora": 0.99}


def _by_strategy(defaults: dict):
    """A default_factory: the value ``defaults`` gives the strategy (None where it gives none)."""
    return lambda fields: defaults.get(fields.get("strategy", "full"))


class TrainConfig(BaseModel):
    """Everything `visiontune train` needs to fine-tune a backbone with a new head."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data: str = Field(
        description="A folder of class sub-folders (optionally split into train/ val/ test/), "
        "a Hugging Face dataset (hub name or local folder), or an embedded dataset: 'digits' "
        "(scikit-learn's 8x8 handwritten digits) or 'fashion-mnist' (Zalando's 28x28 product "
        "photos, from Debian's dataset-fashion-mnist)."
    )
    backbone: str = Field(
        description="Hub id or local folder in Hugging Face format of a model "
        "AutoModelForImageClassification supports (ViT, DeiT, ConvNeXt, ResNet, Swin, DINOv2, "
        "EfficientNet...), or a source `visiontune backbone import` knows "
        "(efficientnet-lite0: ImageNet weights, imported into the cache on first use)."
    )
    name: str = Field(DEFAULT_MODEL_NAME, description="Model name in the BentoML model store.")
    strategy: Strategy = Field(
        "full",
        description="linear: train the head only; partial: the last N blocks + head; "
        "full: everything; lora: low-rank adapters (merged into the weights at save) + head.",
    )
    unfreeze_blocks: int = Field(2, ge=1, description="Blocks trained by --strategy partial.")
    lora_rank: int = Field(
        16,
        ge=1,
        description="LoRA rank (--strategy lora); 16 measured closer to full fine-tuning "
        "than 8 (BENCHMARKS.md).",
    )
    lora_alpha: float = Field(
        default_factory=lambda values: 2.0 * values["lora_rank"],
        gt=0,
        description="LoRA scaling alpha (--strategy lora); default: 2 x --lora-rank.",
    )
    layer_decay: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Layer-wise learning-rate decay per block towards the input "
        "(--strategy full only), e.g. 0.75.",
    )
    class_weighted: bool = Field(
        False, description="Weight the loss by inverse class frequency (imbalanced data)."
    )
    classes: list[str] | None = Field(
        None,
        description="Keep only these labels; default: all. Comma-separated, or repeat the flag "
        "(each value one label, commas included), or a JSON list.",
    )
    augment: Augment = Field(
        "light",
        description="Augmentation of training batches: none; light (a random resized crop, "
        "small rotation/shift/shear, brightness/contrast jitter); strong (wider ranges, blur, "
        "random erasing); randaugment; trivialaugment. docs/training.md says what each does.",
    )
    flip: bool = Field(
        False,
        description="Also flip training images horizontally (off: it changes digits and text).",
    )
    mixup: float = Field(
        0.0,
        ge=0,
        le=10,
        description="Mixup: blend image pairs and their labels with a Beta(a, a) weight; "
        "a = this value, e.g. 0.2 (0: off).",
    )
    cutmix: float = Field(
        0.0,
        ge=0,
        le=10,
        description="CutMix: paste a patch of another image, labels mixed by area; "
        "Beta(a, a) sizes the patch, e.g. 1.0 (0: off). With --mixup, each batch uses one.",
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="Label smoothing: the share of each target spread over all classes, e.g. 0.1.",
    )
    ema_decay: float | None = Field(
        default_factory=_by_strategy(DEFAULT_EMA_DECAY),
        ge=0,
        lt=1,
        description="Keep an exponential moving average of the weights with this decay "
        "(e.g. 0.999), validated each epoch and kept when it scores better; 0: off. "
        "Default by strategy: "
        + ", ".join(f"{name} {decay:g}" for name, decay in DEFAULT_EMA_DECAY.items())
        + ", off otherwise (measured, BENCHMARKS.md).",
    )
    per_class: int | None = Field(
        None, ge=1, description="Use at most this many training images per class (few-shot)."
    )
    eval_per_class: int | None = Field(
        None,
        ge=1,
        description="Validate and test on at most this many images per class (quicker "
        "epochs on a large dataset); default: all of them.",
    )
    image_column: str = Field("image", description="Image column of a Hugging Face dataset.")
    label_column: str = Field("label", description="Label column of a Hugging Face dataset.")
    image_size: int | None = Field(
        None,
        ge=8,
        description="Square input (crop) size; default: the backbone processor's own. "
        "A shortest-edge resize before the crop scales with it.",
    )
    val_fraction: float = Field(
        0.15, gt=0, lt=1, description="Share held out for validation when no split is given."
    )
    test_fraction: float = Field(
        0.15, ge=0, lt=1, description="Share held out for testing when no split is given (0: none)."
    )
    epochs: int = Field(
        20,
        ge=1,
        description="Maximum number of epochs (the learning rate follows a cosine over them).",
    )
    batch_size: int = Field(32, ge=1, description="Images per step per device.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    lr: float = Field(
        default_factory=_by_strategy(DEFAULT_LR),
        gt=0,
        description="Peak learning rate; default by strategy: "
        + ", ".join(f"{name} {lr:g}" for name, lr in DEFAULT_LR.items())
        + " (measured, BENCHMARKS.md).",
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps for linear warm-up.")
    patience: int = Field(
        5, ge=1, description="Stop after this many epochs without a better validation metric."
    )
    metric: Literal["macro_f1", "accuracy"] = Field(
        "macro_f1",
        description="Validation metric for early stopping and the best weights; an epoch that "
        "ties it at a lower validation loss counts as better.",
    )
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 (or fp16) on CUDA, none on CPU."
    )
    seed: int = Field(0, description="Seed for the split, initialisation and data order.")
    strict: bool = Field(
        False, description="Fail on a corrupt or non-image file instead of skipping it."
    )
    output_dir: Path | None = Field(
        None, description="Run folder for checkpoints and the report (default runs/NAME)."
    )
    resume: bool = Field(False, description="Continue from the checkpoint in the run folder.")
    resume_if_present: bool = Field(
        False,
        description="Continue from the run folder's checkpoint when it has one, else start "
        "afresh: the one command a restarted pod or job runs again unchanged.",
    )
    checkpoint_every: float = Field(
        10,
        ge=0,
        description="Minutes between checkpoints in the run folder, so a killed run loses at most "
        "that much (0: only when stopped by Ctrl-C or SIGTERM).",
    )
    workers: int = Field(
        default_factory=default_workers,
        ge=0,
        description="Loader processes decoding images when they do not fit the in-memory "
        "cache (0: decode in the training process); default: the usable CPU cores less one, "
        "at most 8.",
    )
    report_to: Literal["none", "tensorboard", "mlflow", "wandb"] = Field(
        "none",
        description="Track the run with this Accelerate tracker: hyperparameters, and each "
        "epoch's losses and validation metrics (TensorBoard logs go to RUN_DIR/tensorboard).",
    )

    @field_validator("ema_decay")
    @classmethod
    def _zero_is_off(cls, decay: float | None) -> float | None:
        return decay or None

    @model_validator(mode="after")
    def _check_combinations(self) -> Self:
        for field, strategy in STRATEGY_FIELDS.items():
            given = field in self.model_fields_set and getattr(self, field) is not None
            if given and self.strategy != strategy:
                flag = "--" + field.replace("_", "-")
                raise ValueError(
                    f"{flag} applies to --strategy {strategy} only; "
                    f"use --strategy {strategy} or drop {flag}"
                )
        self._check_mixing()
        if self.resume and self.resume_if_present:
            raise ValueError(
                "--resume needs a checkpoint and --resume-if-present starts without one; "
                "give one of them"
            )
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                "--val-fraction + --test-fraction leave under 10% for training; lower them"
            )
        return self

    def _check_mixing(self) -> None:
        """Mixup and cutmix need a partner image in the batch and a backbone that learns."""
        for flag, value in (("--mixup", self.mixup), ("--cutmix", self.cutmix)):
            if not value:
                continue
            if self.strategy == "linear":
                raise ValueError(
                    f"{flag} with --strategy linear trains only the head on blends the "
                    f"frozen backbone never adapts to, which gains nothing; use --strategy "
                    f"partial, full or lora, or drop {flag}"
                )
            if self.batch_size < 2:
                raise ValueError(
                    f"{flag} mixes images within a batch and --batch-size 1 has none to "
                    f"mix with; use --batch-size 2 or more, or drop {flag}"
                )

    @property
    def run_dir(self) -> Path:
        return self.output_dir or Path("runs") / self.name

    def recorded(self, exclude: set[str] = frozenset(), **dump) -> dict:
        """The config as recorded (with a model, in a checkpoint, for a tracker): every field
        but those of other strategies than this one's and ``exclude``."""
        others = {field for field, strategy in STRATEGY_FIELDS.items() if strategy != self.strategy}
        return self.model_dump(exclude=others | set(exclude), **dump)
