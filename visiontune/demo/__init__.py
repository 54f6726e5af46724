"""`make demo`: transfer learning, honestly, offline, on 2 CPU cores in a few minutes.

``python -m visiontune.demo`` fine-tunes ImageNet's EfficientNet-Lite0 on a few
Fashion-MNIST photos per class beside the same network from random weights, then
serves the fine-tuned model and classifies held-out photos over HTTP
(:mod:`visiontune.demo.fashion`). ``--digits`` runs the smaller story on
scikit-learn's digits, whose backbone the demo pretrains itself
(:mod:`visiontune.demo.digits`).
"""
