"""The saved-model contract shared by `training` and `service`.

Kept deliberately small: the names both sides rely on, the metadata schema of a
stored model, and the image decoding + preprocessing that must be identical at
training and serving time.
"""
