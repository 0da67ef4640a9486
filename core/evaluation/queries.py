"""Query images per character, from a folder in either of two layouts (see `collect_queries`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".heic"})


class QueryFolderError(BadInputError):
    """A query folder with no usable images."""


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def collect_queries(folder: Path | str) -> dict[str, list[Path]]:
    """Query images per character, from either layout (both may be mixed):

    - `<folder>/<character>_<anything>.<ext>` (or `<folder>/<character>.<ext>`): the character is
      the part of the file name before the first `_`;
    - `<folder>/<character>/<anything>.<ext>`: every image in the sub-folder (not recursive).

    All images of a character form one query. Names keep their spelling; two spellings that
    differ only in case are the same character (the first one, in sorted order, is kept).
    Extensions: .jpg .jpeg .png .webp .bmp .heic, any case; other files and hidden files are
    ignored. Paths are sorted, so the result is the same on every run.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise QueryFolderError(f"{folder}: no such query folder.")
    found: dict[str, list[Path]] = {}
    keys: dict[str, str] = {}

    def add(name: str, path: Path) -> None:
        name = name.strip()
        if not name:
            return
        display = keys.setdefault(name.casefold(), name)
        found.setdefault(display, []).append(path)

    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            for image in sorted(entry.iterdir()):
                if _is_image(image):
                    add(entry.name, image)
        elif _is_image(entry):
            add(entry.stem.split("_", 1)[0], entry)
    if not found:
        raise QueryFolderError(
            f"{folder}: no query images; name them <character>_<n>.jpg (or .png), or put each "
            "character's images in a <character>/ sub-folder."
        )
    return {name: sorted(paths) for name, paths in sorted(found.items(), key=lambda kv: kv[0].casefold())}

