"""One module per `visiontune` sub-command: ``NAME``, ``HELP``, ``add_arguments``, ``run``."""

from visiontune.commands import evaluate, models, predict, promote, rollback, train

COMMANDS = (train, evaluate, models, predict, promote, rollback)
