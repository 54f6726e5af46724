"""`visiontune retrain --data NEW`: train a challenger like the champion, gate it, promote it.

Exit 0 promoted (with ``--no-promote``: the gate passed), 3 refused by the gate
(the challenger stays a candidate, production untouched), 2 usage or data error.
The training flags are :class:`training.config.TrainConfig`'s; given, they
override the champion's recorded config.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from contract.savedmodel import DEFAULT_MODEL_TAG
from training.config import TrainConfig
from visiontune.commands.promote import add_gate_flags, gate_rules
from visiontune.flags import add_config_flags, config_values, quiet_transformers
from visiontune.lifecycle.gate import Refused

NAME = "retrain"
HELP = "train a challenger on new data, gate it against the champion, promote it if better"
# Not training flags here: --data is the new data, --metric the gate's, the name the champion's.
NOT_OVERRIDABLE = ("data", "name", "metric", "resume", "output_dir")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        help="new labelled images: " + TrainConfig.model_fields["data"].description,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--merge",
        dest="mode",
        action="store_const",
        const="merge",
        default="merge",
        help="train on the new images plus the champion's recorded data (default)",
    )
    mode.add_argument(
        "--replace",
        dest="mode",
        action="store_const",
        const="replace",
        help="train on the new images alone",
    )
    parser.add_argument(
        "--champion",
        default=DEFAULT_MODEL_TAG,
        help=f"the model to beat, NAME@STAGE or NAME:VERSION (default {DEFAULT_MODEL_TAG})",
    )
    parser.add_argument(
        "--no-promote",
        dest="promote",
        action="store_false",
        help="report the gate's verdict, promote nothing",
    )
    parser.add_argument(
        "--output-dir", type=Path, help="run folder (default runs/NAME/retrain-TIME)"
    )
    add_gate_flags(parser)
    add_config_flags(parser, TrainConfig, skip=NOT_OVERRIDABLE)


def run(args: argparse.Namespace) -> int:
    from visiontune.lifecycle.retrain import RetrainRequest, retrain

    overrides = config_values(args, TrainConfig)
    for name in NOT_OVERRIDABLE:
        overrides.pop(name, None)
    quiet_transformers()
    result = retrain(
        RetrainRequest(
            data=args.data,
            champion=args.champion,
            mode=args.mode,
            overrides=overrides,
            eval_data=args.eval_data,
            rules=gate_rules(args),
            promote=args.promote,
            run_dir=args.output_dir,
        )
    )
    verdict = result.verdict
    print(f"challenger {result.challenger} (candidate), champion {result.champion}")
    print(f"held-out: {verdict.held_out}")
    print(f"gate: {'passed' if verdict.passed else 'refused'}: {verdict.reason}")
    print(f"comparison: {result.run_dir / 'gate.md'}")
    if not verdict.passed:
        raise Refused(f"{result.challenger} stays a candidate; production is unchanged")
    if result.change is not None:
        print(f"{result.challenger} is production ({result.champion} archived)")
    return 0
