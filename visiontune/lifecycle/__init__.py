"""The model lifecycle the `visiontune` commands drive: the stage registry
(``registry``), the champion/challenger gate (``gate``) and retraining (``retrain``)."""
