"""The BentoML service: ``bentoml serve service:ImageClassifier`` from the repository root."""

from service.classifier import ImageClassifier

__all__ = ["ImageClassifier"]
