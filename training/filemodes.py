"""Saved files readable by whoever may read their folder.

safetensors 0.8 writes its files through a temporary file that is always created
``0600`` and renamed into place (safetensors issue 782), so a model saved by one
user, or by root while building an image, is unreadable by the user that serves
it, while its ``config.json`` beside it is not. Folders we write get every file's
mode back to what an ordinary new file gets: ``0666`` less the umask.
"""

from __future__ import annotations

import os
from pathlib import Path


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def restore_file_modes(folder: Path) -> None:
    """Give every file under ``folder`` the mode ``open()`` would have given it."""
    mode = 0o666 & ~umask()
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)
