"""The model lifecycle the `visiontune` commands drive.

- ``contract.stages`` (read side, importable by the service): ``resolve(ref)`` turns
  ``NAME:VERSION``, ``NAME:latest``, ``NAME`` or ``NAME@STAGE`` into the exact tag;
  ``read_record(name)`` is a name's registry (production version, stages, history).
- ``registry`` (write side): ``promote``, ``rollback``, ``rollback_target``, each
  change locked and atomic.
- ``gate``: the champion/challenger comparison (``GateRules``, ``compare``,
  ``write_verdict``; ``Refused`` is exit code 3).
- ``promotion``: ``promote_with_gate``, the gate against production then the registry.
- ``retrain``: ``retrain(RetrainRequest)``, a challenger trained, gated, promoted.
- ``release``: ``LocalRelease``, a model rolled out on this machine blue/green
  (podman pods behind nginx, ``proxy``), never changing a stage.
- ``cluster``: ``ClusterRelease``, a model built, pushed and rolled out with a
  Kubernetes overlay (``plan()`` is what ``--dry-run`` prints).
"""
