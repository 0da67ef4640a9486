"""What a user hands the engine by name: checked before anything opens it, and images decoded the
same way wherever they come from.

A path is only a claim. `movie.mp4` may be a named pipe that nobody writes to (opening it blocks
forever), a device that never ends (`/dev/zero`, `/dev/urandom`), a socket, a folder, or a name
longer than the file system takes (the first `stat` fails with ENAMETOOLONG). Every path a user
gives (a video, a frames folder and its frames, a query image) goes through `stat_input` /
`open_file` here, and every failure becomes one BadInputError line that says what the path is.

Images, query screenshots and frames-folder frames alike, are decoded by `open_image`: refused
over a pixel bound before their pixels are decoded, turned upright by their EXIF orientation,
and brought to 8-bit RGB by `to_rgb8`, so that the same picture gives the same pixels whatever
bit depth or colour mode it was saved in.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadInputError

# Paths in messages are cut to this many characters (a 5,000-character path is not a message).
_LABEL_MAX = 120

# Modes with an alpha channel (premultiplied ones too); "LAB" has an A but is a colour space.
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def short(path: Path | str) -> str:
    """`path` as a message shows it: whole when short, else its start and its end."""
    text = str(path)
    if len(text) <= _LABEL_MAX:
        return text
    half = (_LABEL_MAX - 1) // 2
    return f"{text[:half]}…{text[-half:]} ({len(text)} characters)"


def describe(mode: int) -> str:
    """What a file of this `st_mode` is, for a message."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def path_error(path: Path | str, exc: OSError | ValueError) -> BadInputError:
    """The message for a path the operating system refused."""
    label = short(path)
    if isinstance(exc, ValueError):  # an embedded NUL byte: no file system takes it
        return BadInputError(f"{label}: not a valid file name ({exc}).")
    code = exc.errno
    if code in (errno.ENOENT, errno.ENOTDIR):
        return BadInputError(f"{label}: no such file or folder.")
    if code == errno.ENAMETOOLONG:
        return BadInputError(
            f"{label}: the name is too long for the file system (most take 255 bytes a name and 4096 a "
            "path); rename the file or move it to a shorter path."
        )
    if code in (errno.EACCES, errno.EPERM):
        return BadInputError(f"{label}: permission denied; make it readable by this user.")
    if code == errno.ELOOP:
        return BadInputError(f"{label}: a symbolic link that points to itself (a loop).")
    return BadInputError(f"{label}: cannot be read ({exc.strerror or exc}).")


def stat_input(path: Path | str) -> os.stat_result:
    """`os.stat` of a path a user gave (through symbolic links), or BadInputError: no such file,
    a name too long, no permission. Never opens it."""
    try:
        return os.stat(path)
    except (OSError, ValueError) as exc:
        raise path_error(path, exc) from None


def check_file(path: Path | str, what: str = "a file") -> os.stat_result:
    """The stat of `path` when it is a regular file (or a link to one); else BadInputError naming
    what it is instead (a folder, a named pipe, a device, a socket)."""
    st = stat_input(path)
    if not stat.S_ISREG(st.st_mode):
        raise BadInputError(f"{short(path)}: {describe(st.st_mode)}, not {what}; give a regular file.")
    return st


def open_file(path: Path | str, what: str = "a file") -> IO[bytes]:
    """`path` opened for reading, when it is a regular file. Opened without blocking, so that a
    named pipe swapped in after a check cannot hang us, and checked again on the open descriptor
    (what was really opened, not what the name pointed to a moment before)."""
    check_file(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:
        raise path_error(path, exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadInputError(f"{short(path)}: {describe(st.st_mode)}, not {what}; give a regular file.")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_image(source: Path | bytes, *, label: str, max_pixels: int, limit_hint: str = "") -> Image.Image:
    """An image file or its bytes decoded to 8-bit RGB, upright; BadInputError for anything that is
    not a readable image of at most `max_pixels` pixels (checked before its pixels are decoded).
    `limit_hint` ends the message of an image over the bound (default: send a smaller one)."""
    hint = limit_hint or f"send one under {max_pixels / 1e6:g} megapixels"
    if isinstance(source, Path):
        with open_file(source, "an image file") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise BadInputError(f"{label}: the file is empty.")
            return _decode(fh, label, max_pixels, hint)
    if not source:
        raise BadInputError(f"{label}: the file is empty.")
    return _decode(io.BytesIO(source), label, max_pixels, hint)


def _decode(fh: IO[bytes], label: str, max_pixels: int, hint: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than raising) between 1x and 2x its own limit; we check size
            # ourselves before decoding pixels, so its global limit is not touched.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(fh)
            if image.width * image.height > max_pixels:
                size = f"{image.width}×{image.height}"
                raise BadInputError(f"{label}: the image is too large ({size}); {hint}.")
            image.load()
            # Phone screenshots and photos carry their rotation in EXIF.
            return to_rgb8(ImageOps.exif_transpose(image), label)
    except BadInputError:
        raise
    except Image.DecompressionBombError as exc:
        # Over twice Pillow's own limit (about 179 megapixels): Image.open refuses it itself, and
        # says its size only in its message.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found[1]) / 1e6:.0f} megapixels" if found else "over 179 megapixels"
        raise BadInputError(f"{label}: the image is too large ({size}); {hint}.") from None
    except (UnidentifiedImageError, ImportError) as exc:
        # ImportError: ultralytics patches Image.open to fetch a HEIF plugin on unknown formats.
        raise BadInputError(f"{label}: not an image that can be read (JPEG, PNG, WebP …).") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadInputError(f"{label}: the image is damaged or truncated ({exc}).") from exc


def to_rgb8(image: Image.Image, label: str = "image") -> Image.Image:
    """`image` as 8-bit RGB, the one rule for query images and frames alike.

    - 16-bit and 32-bit integer grey (modes I;16*, I): the high byte, as Pillow itself reads 16-bit
      RGB PNGs (Pillow's own convert clips everything over 255 to white instead).
    - Floating point grey (F): 0-1 when nothing is above 1 (the convention of float images), else
      0-255; clipped, NaN as black.
    - Transparency (an alpha channel, or a palette or grey value marked transparent): laid over
      white, as a viewer shows it; the colours hidden under transparent pixels are arbitrary.
    - Anything else (1, L, P, CMYK, YCbCr …): Pillow's conversion.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "F" or mode == "I" or mode.startswith("I;"):
        values = np.asarray(image)
        grey = _float_to_uint8(values) if mode == "F" else (
            (np.clip(values.astype(np.int64), 0, 65535) >> 8).astype(np.uint8))
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        key = image.info.get("transparency")
        if mode != "F" and isinstance(key, int) and not isinstance(key, bool):
            rgb[values == key] = 255
        return Image.fromarray(rgb, "RGB")
    try:
        if mode in _ALPHA_MODES or "transparency" in image.info:
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            canvas.alpha_composite(rgba)
            return canvas.convert("RGB")
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise BadInputError(f"{label}: its colour mode ({mode}) cannot be turned into RGB ({exc}).") from exc


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if values.size and float(values.max()) <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def array_to_uint8(values: np.ndarray) -> np.ndarray:
    """An image array as 8-bit: uint16 by its high byte (as `to_rgb8` reads 16-bit images), floats
    as 0-1 or 0-255, booleans as black and white, other integers clipped to 0-255."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if values.dtype == np.uint16:
        return (values >> 8).astype(np.uint8)
    if np.issubdtype(values.dtype, np.floating):
        return _float_to_uint8(values)
    if np.issubdtype(values.dtype, np.integer):
        return np.clip(values, 0, 255).astype(np.uint8)
    raise BadInputError(f"an image array of {values.dtype} cannot be read; give uint8 RGB.")
