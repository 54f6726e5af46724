"""One module per `visiontune` sub-command: ``NAME``, ``HELP``, ``add_arguments``, ``run``."""

from visiontune.commands import (
    deploy,
    evaluate,
    models,
    predict,
    promote,
    retrain,
    rollback,
    train,
)

COMMANDS = (train, evaluate, models, predict, retrain, promote, rollback, deploy)
