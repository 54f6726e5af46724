"""`visiontune lr-find`: a learning-rate range test on the data and strategy `train` would use.

The data, model, strategy, augmentation and batch flags are `train`'s own (generated
from :class:`training.config.TrainConfig`, less those that only a full run uses);
the sweep's are :class:`training.lr_find.RangeTestConfig`'s. The plot and the curve
go to the run folder; the weights trained on the way are not kept.
"""

from __future__ import annotations

import argparse

from training.config import TrainConfig
from training.lr_find import RangeTestConfig
from visiontune.errors import CommandError
from visiontune.flags import add_config_flags, config_values, quiet_transformers

NAME = "lr-find"
HELP = "find a learning rate for `train`: a range test, its plot (in the run folder) and the suggested rate"
# TrainConfig fields a range test has no use for: the rate it sweeps, the epochs, early
# stopping, the weight average, checkpoints, tracking, and how big the held-out sets are.
NOT_USED = (
    "lr",
    "epochs",
    "warmup_ratio",
    "patience",
    "metric",
    "ema_decay",
    "resume",
    "checkpoint_every",
    "report_to",
    "eval_per_class",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, TrainConfig, skip=NOT_USED)
    add_config_flags(parser, RangeTestConfig)


def run(args: argparse.Namespace) -> int:
    config = TrainConfig.model_validate(config_values(args, TrainConfig))
    sweep = RangeTestConfig.model_validate(config_values(args, RangeTestConfig))
    quiet_transformers()
    from accelerate import PartialState

    from training.lr_find import (
        RangeTestError,
        check_output_dir,
        range_test,
        suggest,
        write_range_test,
    )

    check_output_dir(config.run_dir)
    result = range_test(config, sweep)
    if not PartialState().is_main_process:  # under `accelerate launch`, one process reports
        return 0
    try:
        suggestion = suggest(result)
    except RangeTestError as err:
        plot = write_range_test(config.run_dir, result, None)
        raise CommandError(f"{err} (plot {plot})") from None
    plot = write_range_test(config.run_dir, result, suggestion)
    stopped = f", stopped at {result.lrs[-1]:.1e}: the loss diverged" if result.diverged else ""
    print(
        f"suggested lr {suggestion.steepest:.1e} (steepest descent of the smoothed loss; "
        f"minimum / 10: {suggestion.minimum_tenth:.1e}){stopped}  plot {plot}"
    )
    return 0
