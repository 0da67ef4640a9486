"""`manifest.json`: what an index holds and how it was built. Written last, so that its presence
with `"complete": true` is what makes an index loadable.

The indexer fills a `ManifestDraft` (what it knows once the film is read); `IndexWriter.commit`
completes it into a `Manifest` (each channel's file, dim, vector count and FAISS kind, the slug,
the build's id and time). Both are written and read with the JSON keys indexes have always had.

Unknown keys are kept (`extra="allow"`), so that a manifest written by another version of this
format round-trips unchanged; `to_json` writes exactly the fields a manifest was given or read
with, so that reading and writing back changes nothing.

Reading tells three cases apart (`read_manifest`): no manifest, or a build that says it is not
complete, is not an index (None); a manifest that exists but cannot be used (too big, nested too
deep, not JSON, a field of the wrong type, a number that is not finite, another format) raises
`IndexDamage` with the reason in words: the folder is a damaged index that users are told about.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import pydantic_core
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    RootModel,
    ValidationError,
    field_validator,
    model_validator,
)

from ..types import MovieInfo
from .layout import FORMAT_VERSION, MANIFEST

log = logging.getLogger(__name__)

# A manifest is a few kB (the fixture's: 2.4 kB); a file far bigger than any manifest is not read.
MAX_MANIFEST_BYTES = 1 << 20
# A manifest nests 4 levels (channels → name → calibration → value); deeper is damage, and a
# hostile depth must never reach a recursive parser or validator.
MAX_MANIFEST_DEPTH = 32


class IndexDamage(Exception):
    """An index folder's manifest or files fail a check: str(exc) is the reason, for users."""


class _Record(BaseModel):
    # NaN and Infinity are damage: they would reach `--json` output and arithmetic.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    def to_json(self) -> dict[str, JsonValue]:
        """The JSON object as written to disk: the fields that were given (or read), no defaults added."""
        return self.model_dump(mode="json", exclude_unset=True)


class SourceSpec(_Record):
    """What was indexed."""

    kind: str = ""  # "video" or "frames"
    path: str = ""  # absolute, as it was when indexed
    size: int = 0  # bytes: the file's, or a frames folder's files' together


class DetectorSpec(_Record):
    """The person detector an index was built with."""

    model: str = ""
    classes: list[int] = Field(default_factory=list)
    conf: float = 0.0
    imgsz: int = 0
    runtime: str = ""  # "torch", "openvino", …


class ChannelPlan(_Record):
    """A channel as the indexer describes it, before its vectors are written."""

    model: str = ""  # the embedding model's name or path; empty in manifests that did not record it
    kind: Literal["body", "face"] = "body"
    # `core.search.calibration.Calibration.to_json()`; absent when the channel had too few vectors to fit one.
    calibration: dict[str, float | int] | None = None

    @field_validator("calibration")
    @classmethod
    def _usable(cls, value: dict[str, float | int] | None) -> dict[str, float | int] | None:
        """What `Calibration.from_json` needs: an empty or absent calibration means the default;
        otherwise both statistics, finite, and a spread above zero (z-scores divide by it)."""
        if not value:
            return value
        missing = [k for k in ("neg_mean", "neg_std") if k not in value]
        if missing:
            raise ValueError(f"lacks {' and '.join(missing)}")
        if not all(math.isfinite(v) for v in value.values()):
            raise ValueError("holds a number that is not finite")
        if value["neg_std"] <= 0:
            raise ValueError(f"neg_std is {value['neg_std']}, not above 0")
        return value


class ChannelSpec(ChannelPlan):
    """A written channel: its FAISS file beside the manifest and what it holds."""

    dim: int = Field(gt=0)
    file: str = Field(min_length=1)  # relative to the index folder
    vectors: int = 0
    faiss: str = ""  # the kind actually built: "flat", "ivf" or "hnsw"


class Counts(_Record):
    """What the indexer saw and kept, over the whole film."""

    shots: int = 0
    frames_sampled: int = 0
    frames_still: int = 0
    persons_detected: int = 0
    crops_kept: int = 0
    duplicates_dropped: int = 0
    shots_without_people: int = 0


class StageSeconds(RootModel[dict[str, float]]):
    """Seconds spent per stage of the build ("open", "decode", "detect", "embed_<channel>", …);
    the stages depend on the channels, hence a mapping."""

    model_config = ConfigDict(allow_inf_nan=False)


class ManifestDraft(_Record):
    """Everything the indexer records about a build; `IndexWriter.commit` completes it."""

    name: str = Field(min_length=1)  # the movie's display name
    source: SourceSpec = Field(default_factory=SourceSpec)
    duration_s: float = 0.0
    embedder: str  # the channel whose figures `movie_info` reports
    channels: Mapping[str, ChannelPlan]
    detector: DetectorSpec = Field(default_factory=DetectorSpec)
    settings: dict[str, JsonValue] = Field(default_factory=dict)  # indexer._build_settings()["settings"]
    counts: Counts = Field(default_factory=Counts)
    warnings: list[str] = Field(default_factory=list)
    resumed: int = 0  # how many times the build was resumed from a checkpoint
    versions: dict[str, str] = Field(default_factory=dict)  # library versions
    seconds: StageSeconds = Field(default_factory=lambda: StageSeconds({}))
    elapsed_s: float = 0.0


class Manifest(ManifestDraft):
    """The manifest of a complete index of this format."""

    channels: dict[str, ChannelSpec]
    # Strict: `1` is not `true`, and "2" is not format 2.
    format: int = Field(strict=True)
    complete: bool = Field(strict=True)  # true once everything else is written
    slug: str = Field(min_length=1)
    build_id: str = Field(min_length=1)
    built_at: str = ""  # ISO 8601, UTC

    @model_validator(mode="after")
    def _loadable(self) -> "Manifest":
        if self.format != FORMAT_VERSION:
            raise ValueError(f"format {self.format}, not {FORMAT_VERSION}")
        if not self.complete:
            raise ValueError("an incomplete build")
        if self.embedder not in self.channels:
            raise ValueError(f"the embedder {self.embedder!r} is not one of the channels {sorted(self.channels)}")
        return self


def write_json_durably(path: Path, data: Mapping[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_manifest(path: Path) -> Manifest | None:
    """The manifest of the complete index in folder `path`; None when the folder holds no index
    (no manifest, or a build that says it is not complete). Raises `IndexDamage` when a manifest
    is there but cannot be used, with the reason in words."""
    data = read_manifest_json(path)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise IndexDamage(f"{MANIFEST} holds {_json_type(data)}, not an object")
    if data.get("complete") is False:
        log.debug("%s holds an incomplete build", path)
        return None
    version = data.get("format")
    if isinstance(version, int) and not isinstance(version, bool) and version != FORMAT_VERSION:
        raise IndexDamage(f"it was built by another version of castfinder (index format {_json_type(version)}; "
                          f"this version reads format {FORMAT_VERSION})")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise IndexDamage(f"{MANIFEST}: {describe_errors(exc)}") from None
    if manifest.slug != path.name:
        raise IndexDamage(f"its manifest is that of {manifest.slug!r}, not of the folder {path.name!r} "
                          "(a copied or renamed index)")
    return manifest


def read_manifest_json(path: Path) -> object | None:
    """The parsed JSON of folder `path`'s manifest; None when there is none. Raises `IndexDamage`
    for a manifest that is not a regular file, too big, not UTF-8, not JSON or nested too deep."""
    file = path / MANIFEST
    try:
        # O_NONBLOCK: a FIFO named manifest.json must not hang the listing; it is refused below.
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IndexDamage(f"{MANIFEST} cannot be read ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IndexDamage(f"{MANIFEST} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise IndexDamage(f"{MANIFEST} cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise IndexDamage(f"{MANIFEST} is over {MAX_MANIFEST_BYTES // 1024} kB, far more than a manifest holds")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise IndexDamage(f"{MANIFEST} is not UTF-8 text") from None
    try:
        # pydantic's parser (jiter) is not recursive past its own limit: a hostile depth raises
        # ValueError here, never RecursionError. NaN and Infinity parse, and fail validation.
        data = pydantic_core.from_json(text)
    except ValueError as exc:
        if "recursion limit" in str(exc):
            raise IndexDamage(f"{MANIFEST} is nested more than {MAX_MANIFEST_DEPTH} levels deep") from None
        raise IndexDamage(f"{MANIFEST} is not valid JSON ({exc})") from None
    if _depth_over(data, MAX_MANIFEST_DEPTH):
        raise IndexDamage(f"{MANIFEST} is nested more than {MAX_MANIFEST_DEPTH} levels deep")
    return data


def _depth_over(data: object, limit: int) -> bool:
    """Whether JSON `data` nests deeper than `limit` (without recursion)."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


# pydantic's error types → what the value should have been, in words.
_SHOULD_BE = {
    "dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object",
    "list_type": "a list", "string_type": "a string", "int_type": "a whole number", "int_parsing": "a whole number",
    "int_from_float": "a whole number", "float_type": "a number", "float_parsing": "a number",
    "finite_number": "a finite number (not NaN or Infinity)", "bool_type": "true or false",
    "bool_parsing": "true or false",
}
# Where a value may take several types, pydantic adds the tried type to the error's location.
_UNION_TAGS = {"float", "int", "str", "bool", "none", "list", "dict"}


def describe_errors(exc: ValidationError) -> str:
    """A validation error in one line: the first problem (where, what it should be, what it is),
    and how many more there are."""
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        loc = [str(part) for part in err["loc"]]
        while loc and loc[-1] in _UNION_TAGS:
            loc.pop()
        where = ".".join(loc) or "the manifest"
        if err["type"] == "missing":
            text = f"{where} is missing"
        elif err["type"] in _SHOULD_BE:
            text = f"{where} should be {_SHOULD_BE[err['type']]}, not {_json_type(err.get('input'))}"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            text = f"{where}: {msg[:1].lower()}{msg[1:]}"
        if text not in problems:
            problems.append(text)
    more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
    return problems[0] + more if problems else "invalid"


def _json_type(value: object) -> str:
    """The JSON type of a parsed value, in words (never its contents: they may be huge)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 20 else "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object" if isinstance(value, dict) else type(value).__name__


def movie_info(path: Path, manifest: Manifest) -> MovieInfo:
    spec = manifest.channels[manifest.embedder]
    return MovieInfo(
        slug=manifest.slug,
        name=manifest.name,
        path=path,
        duration_s=manifest.duration_s,
        shots=manifest.counts.shots,
        frames=manifest.counts.frames_sampled,
        vectors=spec.vectors,
        embedder=manifest.embedder,
        embedder_model=spec.model,
        dim=spec.dim,
        source=manifest.source.path,
        channels=tuple(manifest.channels),
        built_at=manifest.built_at,
        build_id=manifest.build_id,
    )
