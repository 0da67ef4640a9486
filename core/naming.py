"""Movie names → filesystem-safe slugs, and time formatting."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SLUG_MAX = 64


def slugify(name: str) -> str:
    """A slug safe on every filesystem: lowercase ASCII letters, digits and single dashes.

    Accents fold to their base letter ("Amélie" → "amelie"); names with nothing ASCII left
    (emoji, CJK) get a stable hash so that two such names never collide.
    """
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    digest = hashlib.sha1(name.strip().casefold().encode("utf-8")).hexdigest()[:8]
    if not text:
        return f"movie-{digest}"
    if len(text) > _SLUG_MAX:
        text = text[: _SLUG_MAX - 9].rstrip("-") + "-" + digest
    return text


def clean_name(name: str) -> str:
    """The display name: whitespace collapsed, control characters removed."""
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    return " ".join(name.split())


def same_movie_name(a: str, b: str) -> bool:
    """Whether two names are the same movie's: equal after `name_key`. Re-indexing under such a
    name replaces the index; another name that lands on the same slug does not (see
    IndexWriter)."""
    return name_key(a) == name_key(b)


def name_key(name: str) -> str:
    """A name as compared for identity: the display name (`clean_name`), NFKC-normalised,
    case-folded and NFKC-normalised again, whitespace collapsed. So "Heat", " HEAT " and the
    full-width "ＨＥＡＴ" are one movie; "Heat!", "Héat" and "Heat 2" are others."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", clean_name(name)).casefold())
    return " ".join(folded.split())


def format_ts(seconds: float, *, decimals: int = 3) -> str:
    """`HH:MM:SS.mmm` (or fewer decimals); never rounds up into the next shot's time."""
    scale = 10**decimals
    total = int(seconds * scale + 1e-6)
    frac = total % scale
    secs = total // scale
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    base = f"{h:02d}:{m:02d}:{s:02d}"
    return f"{base}.{frac:0{decimals}d}" if decimals else base
