"""`manifest.json`: what an index holds and how it was built. Written last, so that its presence
with `"complete": true` is what makes an index loadable."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..types import MovieInfo
from .layout import FORMAT_VERSION, MANIFEST


def write_json_durably(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_manifest(path: Path) -> dict | None:
    """The manifest of a complete index, or None when `path` is not one."""
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("complete") is not True or data.get("format") != FORMAT_VERSION:
        return None
    return data


def movie_info(path: Path, manifest: dict) -> MovieInfo:
    channel = manifest["embedder"]
    spec = manifest["channels"][channel]
    counts = manifest.get("counts", {})
    return MovieInfo(
        slug=manifest["slug"],
        name=manifest["name"],
        path=path,
        duration_s=float(manifest.get("duration_s", 0.0)),
        shots=int(counts.get("shots", 0)),
        frames=int(counts.get("frames_sampled", 0)),
        vectors=int(spec.get("vectors", 0)),
        embedder=channel,
        embedder_model=spec.get("model", ""),
        dim=int(spec["dim"]),
        source=manifest.get("source", {}).get("path", ""),
        channels=tuple(manifest["channels"]),
        built_at=manifest.get("built_at", ""),
        build_id=manifest["build_id"],
    )


