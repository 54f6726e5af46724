"""Fonts that draw labels in any script on the report's plots.

matplotlib draws text with DejaVu Sans, which has no CJK, Arabic, Devanagari or
emoji glyphs: it would draw empty boxes. Since matplotlib 3.6 text falls back
glyph by glyph through a list of families, so the plots use DejaVu Sans followed
by the installed fonts that cover the labels' other characters (``make``
installs Noto, Droid Sans Fallback and Symbola on Debian). matplotlib builds its
font list once and caches it, so fonts installed later are added here before the
search. Characters that no installed font covers are returned, for a warning;
they are drawn as boxes, and the report is written either way. (Glyphs are drawn
one by one, left to right: Arabic letters appear in their isolated forms.)
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

DEFAULT_FAMILY = "DejaVu Sans"
# Fonts whose glyphs are placeholders for a script, not letters (matplotlib ships one).
PLACEHOLDER_FONTS = ("Last Resort",)


def families_for(texts: Iterable[str]) -> tuple[list[str], set[str]]:
    """Font families that together draw ``texts`` (DejaVu Sans first), and the characters none draws."""
    from matplotlib import font_manager

    needed = {char for text in texts for char in text if char.isprintable() and not char.isspace()}
    default = font_manager.findfont(DEFAULT_FAMILY, fallback_to_default=True)
    missing = {char for char in needed if ord(char) not in _charmap(default)}
    families = [DEFAULT_FAMILY]
    if not missing:
        return families, missing
    _add_system_fonts()
    candidates = [
        entry
        for entry in sorted(font_manager.fontManager.ttflist, key=_regular_first)
        if not entry.name.startswith(PLACEHOLDER_FONTS)
    ]
    while missing:  # greedily, the font that draws most of what is still missing
        best, covered = max(
            (
                (entry, {c for c in missing if ord(c) in _charmap(entry.fname)})
                for entry in candidates
            ),
            key=lambda pair: len(pair[1]),
        )
        if not covered:
            break
        families.append(best.name)
        missing -= covered
    return families, missing


@cache
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):  # a font file FreeType cannot read draws nothing
        return frozenset()


@cache
def _add_system_fonts() -> None:
    """Fonts installed after matplotlib cached its font list become usable in this process."""
    from matplotlib import font_manager

    known = {entry.fname for entry in font_manager.fontManager.ttflist}
    for path in sorted(font_manager.findSystemFonts()):
        if path not in known:
            try:
                font_manager.fontManager.addfont(path)
            except (OSError, RuntimeError, ValueError):
                continue  # unreadable font: skipped, as matplotlib itself does


def _regular_first(entry) -> tuple:
    weight = entry.weight if isinstance(entry.weight, int) else 400
    return (entry.style != "normal", abs(weight - 400), entry.name, entry.fname)
