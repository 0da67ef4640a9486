"""Loading query images safely: anything a user sends ends up here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence, Union

import numpy as np
from PIL import Image

from ..errors import BadInputError
from ..geometry import Box, crop_box
from ..inputs import array_to_uint8, open_image, short, to_rgb8
from ..types import Person

try:  # iPhone photos are HEIC; registering here also stops ultralytics from pip-installing it
    from pi_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # optional: without it HEIC files are refused with a clear message
    pass

ImageLike = Union[bytes, bytearray, str, Path, Image.Image, np.ndarray]
Selection = Union[Literal["main", "all"], tuple[int, ...]]  # whom to search in a query image


@dataclass(frozen=True)
class QueryImage:
    """One query screenshot and which of its people to search for.

    `select`: "main" (the most prominent person), "all", or 1-based indices of
    `Engine.find_people`'s result. `people` may carry that result to avoid detecting twice.
    """

    image: ImageLike
    select: Selection = "main"
    people: Sequence[Person] | None = None
    name: str = ""


def load_image(source: ImageLike, *, max_pixels: int, max_side: int | None = None) -> Image.Image:
    """Decode `source` into an 8-bit RGB image, or raise BadInputError with a message for users.
    Files and bytes go through `core.inputs.open_image` (regular files only, the pixel bound before
    decoding, EXIF rotation, one bit-depth rule shared with frames-folder frames)."""
    label = _label(source)
    if isinstance(source, Image.Image):
        image = to_rgb8(source, label)
    elif isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3:
            raise BadInputError(f"{label}: expected an H×W×3 RGB array, got shape {source.shape}.")
        image = Image.fromarray(np.ascontiguousarray(array_to_uint8(source)), "RGB")
    else:
        image = open_image(Path(source) if isinstance(source, (str, Path)) else bytes(source), label=label,
                           max_pixels=max_pixels)
    if image.width * image.height > max_pixels:
        raise BadInputError(
            f"{label}: the image is too large ({image.width}×{image.height}); "
            f"send one under {max_pixels / 1e6:g} megapixels."
        )
    if max_side and max(image.size) > max_side:
        if image is source:  # an RGB image of the caller's: shrink a copy, never theirs
            image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def _label(source: ImageLike) -> str:
    if isinstance(source, (str, Path)):
        return short(source)
    return "image"


def crop(image: Image.Image, bbox: Box) -> Image.Image:
    """A person's crop, cut by the same rule as at index time (`geometry.crop_box`)."""
    return image.crop(crop_box(bbox, image.width, image.height))
