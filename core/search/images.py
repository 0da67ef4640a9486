"""Loading query images safely: anything a user sends ends up here."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import BadInputError
from ..geometry import Box, crop_box
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
    """Decode `source` into an RGB image, or raise BadInputError with a message for users."""
    label = _label(source)
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3:
            raise BadInputError(f"{label}: expected an H×W×3 RGB array, got shape {source.shape}.")
        image = Image.fromarray(source.astype(np.uint8), "RGB")
    else:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise BadInputError(f"{label}: no such file.")
            data = path.read_bytes()
        else:
            data = bytes(source)
        if not data:
            raise BadInputError(f"{label}: the file is empty.")
        image = _decode(data, label, max_pixels)
    if image.width * image.height > max_pixels:
        raise BadInputError(
            f"{label}: the image is too large ({image.width}×{image.height}); "
            f"send one under {max_pixels // 1_000_000} megapixels."
        )
    image = image.convert("RGB")
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def _decode(data: bytes, label: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than raising) between 1x and 2x its own limit; we check size
            # ourselves before decoding pixels, so its global limit is not touched.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise BadInputError(
                    f"{label}: the image is too large ({image.width}×{image.height}); "
                    f"send one under {max_pixels // 1_000_000} megapixels."
                )
            image.load()
            # Phone screenshots and photos carry their rotation in EXIF.
            return ImageOps.exif_transpose(image)
    except BadInputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, ImportError) as exc:
        # ImportError: ultralytics patches Image.open to fetch a HEIF plugin on unknown formats.
        raise BadInputError(f"{label}: not an image that can be read (JPEG, PNG, WebP …).") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(f"{label}: the image is damaged or truncated ({exc}).") from exc


def _label(source: ImageLike) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return "image"


def crop(image: Image.Image, bbox: Box) -> Image.Image:
    """A person's crop, cut by the same rule as at index time (`geometry.crop_box`)."""
    return image.crop(crop_box(bbox, image.width, image.height))
