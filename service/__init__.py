"""The BentoML service: ``bentoml serve service:ImageClassifier`` from the repository root.

``ImageClassifier`` is imported when first asked for, not with the package: its
module resolves ``VISIONTUNE_MODEL`` in the model store at import, and the helper
modules (``service.inputs``, ``service.settings``...) import without a store.
"""

__all__ = ["ImageClassifier"]


def __getattr__(name: str):
    if name == "ImageClassifier":
        from service.classifier import ImageClassifier

        return ImageClassifier
    raise AttributeError(f"module 'service' has no attribute {name!r}")
