"""What every `castfinder` command shares: exit codes, the error line, the console, the flags of
the commands that load models or search, and choices taken from the engine's settings.

Importing this module is cheap (stdlib only): the settings module, rich and the engine are
imported inside the functions that need them, so `castfinder --help` loads no model library.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, get_args

if TYPE_CHECKING:
    from rich.console import Console

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_ERROR) -> int:
    """Say what went wrong in one line on stderr; returns the exit code to leave with."""
    print(f"castfinder: error: {message}", file=sys.stderr)
    return code


def print_json(data: object) -> None:
    """Print `data` as one line of strict JSON: NaN or Infinity raise ValueError instead of
    printing what no JSON parser accepts (so that a regression fails loudly in tests)."""
    print(json.dumps(data, ensure_ascii=False, allow_nan=False))


def console() -> Console:
    from rich.console import Console

    # Piped output is read by people and scripts alike: don't squeeze it into 80 columns.
    return Console() if sys.stdout.isatty() else Console(width=200)


@contextlib.contextmanager
def engine_output_to_stderr() -> Iterator[None]:
    """Keep stdout for our results alone (`--json` must print exactly one object)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def choices(literal: Any) -> list[str]:
    """The values of a `Literal[...]` type, as argparse `choices`: the settings are the one place
    that lists them."""
    values = get_args(literal)
    if not values or not all(isinstance(v, str) for v in values):
        raise TypeError(f"{literal!r} is not a Literal of strings")
    return list(values)


def model_flags() -> argparse.ArgumentParser:
    """Flags shared by the commands that load models; each overrides a CASTFINDER_ setting."""
    from core.settings import DetRuntime, DeviceName, EmbedderName

    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("models and storage (override CASTFINDER_* settings)")
    g.add_argument("--index-dir", type=Path, help="where indexes live (CASTFINDER_INDEX_DIR)")
    g.add_argument("--detector", help="YOLO model name or path (CASTFINDER_DETECTOR)")
    g.add_argument("--person-classes", help="comma list of person class ids (CASTFINDER_PERSON_CLASSES)")
    g.add_argument("--embedder", choices=choices(EmbedderName), help="embedding model family (CASTFINDER_EMBEDDER)")
    g.add_argument("--dinov2-model", help="HF id or local folder (CASTFINDER_DINOV2_MODEL)")
    g.add_argument("--clip-model", help="HF id or local folder (CASTFINDER_CLIP_MODEL)")
    g.add_argument("--device", choices=choices(DeviceName), help="CASTFINDER_DEVICE")
    g.add_argument("--det-runtime", choices=choices(DetRuntime),
                   help="person detector runtime (CASTFINDER_DET_RUNTIME; auto: OpenVINO on the CPU)")
    g.add_argument("--reid-model", help="body re-id model: reid_0277 or a path (CASTFINDER_REID_MODEL)")
    g.add_argument("--osnet-model",
                   help="OSNet re-id model: osnet_x0_25 or an ONNX path (CASTFINDER_OSNET_MODEL)")
    g.add_argument("--face-detector",
                   help="scrfd_2.5g, scrfd_500m, yunet, hog, cnn or a path (CASTFINDER_FACE_DETECTOR)")
    g.add_argument("--face-model", help="edgeface_xs, dlib or an ONNX path (CASTFINDER_FACE_MODEL)")
    g.add_argument("--threads", type=int, dest="torch_threads", help="torch CPU threads (CASTFINDER_TORCH_THREADS)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    g.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    return p


def search_flags() -> argparse.ArgumentParser:
    """Flags of the commands that search (`search`, `eval`)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--channels", dest="search_channels",
                   help="search only these of the index's channels, e.g. face (default: all of them)")
    p.add_argument("--no-tracks", action="store_false", dest="tracks", default=None,
                   help="fuse channels per crop instead of per tracked person (CASTFINDER_TRACKS)")
    p.add_argument("--no-expand", action="store_false", dest="expand", default=None,
                   help="one round of search: no second round from the confident matches (CASTFINDER_EXPAND)")
    return p


def aggregation_flag(parser: argparse.ArgumentParser) -> None:
    """`--aggregation`, the same for `search` and `eval`."""
    from core.settings import Aggregation

    parser.add_argument("--aggregation", choices=choices(Aggregation), help="how hits make a shot's score")


def channel_list(value: str | None) -> list[str]:
    """`--channels face, OSNet` → ["face", "osnet"]."""
    return list(dict.fromkeys(v.strip().lower() for v in (value or "").split(",") if v.strip()))
