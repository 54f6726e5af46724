"""`visiontune train`: fine-tune a backbone with a new head and save it to the store.

The flags are generated from :class:`training.config.TrainConfig`. Ctrl-C and
SIGTERM are handled from the first moment (before torch is imported), so any
interruption ends with one line and exit 130 (see ``training.stopping``).
``--resume-if-present`` resumes when the run folder holds a checkpoint, so the
pods of a multi-node job restarted after a lost node run the same command again.
"""

from __future__ import annotations

import argparse

from training.checkpoint import has_checkpoint
from training.config import TrainConfig
from training.stopping import StopRequests
from visiontune.flags import add_config_flags, config_values, quiet_transformers

NAME = "train"
HELP = "fine-tune a backbone and save it to the store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, TrainConfig)


def run(args: argparse.Namespace) -> int:
    config = TrainConfig.model_validate(config_values(args, TrainConfig))
    if config.resume_if_present and has_checkpoint(config.run_dir):
        config = config.model_copy(update={"resume": True, "resume_if_present": False})
    with StopRequests() as stop:
        quiet_transformers()
        from training.train import train

        result = train(config, stop=stop)
    if result.tag is not None:
        m = result.metadata
        held_out = f"  test acc {m.test.accuracy:.4f}" if m.test else ""
        print(
            f"saved {result.tag}  val acc {m.validation.accuracy:.4f}  "
            f"val macro-F1 {m.validation.macro_f1:.4f}{held_out}  "
            f"T={m.temperature:.3f}  report {result.run_dir / 'report.md'}"
        )
    return 0
