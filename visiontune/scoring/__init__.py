"""Batch scoring of image archives with a stored model (``visiontune score``).

Images come from a folder, an fsspec URL or a Hugging Face dataset
(:mod:`.sources`); each is decoded and preprocessed exactly as the service does it
(:func:`.results.decode`), classified by the stored model's calibrated
:class:`contract.predictor.Predictor`, and written as Parquet rows
(:mod:`.results`). Two engines run the same steps: one process with a decode pool
(:mod:`.local`), or Ray Data on a local or remote Ray cluster (:mod:`.ray_engine`).
Nothing here imports the service.
"""
