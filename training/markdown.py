"""Text written into the Markdown of the training report and the model card."""

from __future__ import annotations


def table_cell(text: object) -> str:
    """``text`` as one Markdown table cell (or heading): one line, its pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")
