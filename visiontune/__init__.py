"""What users drive: the `visiontune` command line, the HTTP client, and the model lifecycle.

``visiontune.cli`` assembles one sub-command per module of ``visiontune.commands``;
``visiontune.errors`` is the one place where failures become a one-line message
and an exit code; ``visiontune.client`` speaks the service's HTTP contract.
"""
