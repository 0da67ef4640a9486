"""`manifest.json`: what an index holds and how it was built. Written last, so that its presence
with `"complete": true` is what makes an index loadable.

The indexer fills a `ManifestDraft` (what it knows once the film is read); `IndexWriter.commit`
completes it into a `Manifest` (each channel's file, dim, vector count and FAISS kind, the slug,
the build's id and time). Both are written and read with the JSON keys indexes have always had.

Unknown keys are kept (`extra="allow"`), so that a manifest written by another version of this
format round-trips unchanged; `to_json` writes exactly the fields a manifest was given or read
with, so that reading and writing back changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, RootModel, ValidationError, model_validator

from ..types import MovieInfo
from .layout import FORMAT_VERSION, MANIFEST

log = logging.getLogger(__name__)


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")

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


class ManifestDraft(_Record):
    """Everything the indexer records about a build; `IndexWriter.commit` completes it."""

    name: str  # the movie's display name
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
    """The manifest of a complete index of this format in folder `path`, or None when there is
    none: no manifest, an unreadable or malformed one, an incomplete build, another format."""
    try:
        text = (path / MANIFEST).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        log.debug("no readable manifest in %s: %s", path, exc)
        return None
    try:
        # Pydantic parses the JSON itself, with a nesting limit: a hostile file cannot exhaust the stack.
        return Manifest.model_validate_json(text)
    except (ValidationError, ValueError, RecursionError) as exc:
        log.debug("%s holds no complete index of format %d: %s", path, FORMAT_VERSION, exc)
        return None


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
