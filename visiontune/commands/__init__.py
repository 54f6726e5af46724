"""One module per `visiontune` sub-command: ``NAME``, ``HELP``, ``add_arguments``, ``run``."""

from visiontune.commands import (
    backbone,
    capture,
    deploy,
    evaluate,
    export,
    lr_find,
    models,
    optimize,
    predict,
    promote,
    retrain,
    rollback,
    score,
    shadow,
    train,
)

COMMANDS = (
    train,
    evaluate,
    models,
    predict,
    score,
    export,
    optimize,
    retrain,
    promote,
    rollback,
    deploy,
    backbone,
    lr_find,
    capture,
    shadow,
)
