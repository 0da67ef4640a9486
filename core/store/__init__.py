"""On-disk indexes: `<index_dir>/<slug>/` holds

- `manifest.json`: what was built, how, with which models (`Manifest`, a pydantic model); written
  last, so its presence with `"complete": true` is what makes an index loadable;
- `meta.sqlite`: shots and crops (every vector's shot, frame time, box, detection score);
- `<channel>.faiss`: one FAISS index per embedding channel, vector ids = crop ids;
- `thumbs/shot_<id>.jpg`: one thumbnail per shot;
- `cast/member_<n>.jpg`: the portraits of the cast (core/cast.py; its members are tables of
  `meta.sqlite`), in indexes built with a face channel since casts exist.

A folder with a manifest that fails validation, or whose files are not those the manifest
describes (health.py: sizes, FAISS headers, SQLite tables, crop ids; checked cheaply on every
listing and fully as `MovieIndex` loads), is a *damaged* index: `IndexCatalog.scan` lists it
apart with the reason, and loading it raises `DamagedIndexError`, never a crash. A folder without
a manifest, or with `"complete": false`, is a leftover and not listed at all.

Indexes are built in a hidden sibling folder and swapped in with renames at the end, so an
interrupted run leaves the previous index untouched and never a half index that loads. Vectors
stream to raw files there (`vectors/<channel>.f32` and `.ids`), so memory does not grow with
the film. Every few minutes of film the build folder is checkpointed (`checkpoint.json`, written
after the database commit and the vector files' fsync): a run interrupted by Ctrl-C, kill -9 or
a power cut resumes from the last checkpoint when the same source is indexed with the same
settings (the folder's name and the checkpoint carry a key of both), and starts afresh otherwise.

Processes sharing an index folder coordinate with flock(2) (`locks`): a build holds its folder's
`pid` file for its whole life, and the index folder itself is locked exclusively for tidy-up,
claims and swaps, shared for listing and loading. Disk faults met while indexing become one
`StorageError` (`faults`).
"""

from .health import check_files
from .layout import BUILDING_PREFIX, CHECKPOINT, FORMAT_VERSION, MANIFEST, META, OLD_PREFIX, VECTORS
from .manifest import (
    ChannelPlan,
    ChannelSpec,
    Counts,
    DetectorSpec,
    IndexDamage,
    Manifest,
    ManifestDraft,
    SourceSpec,
    StageSeconds,
    movie_info,
    read_manifest,
)
from .reader import IndexCatalog, Listing, MovieIndex, damaged_movie, inspect_folder, list_indexes
from .recovery import tidy_index_dir
from .writer import Checkpoint, CropRow, IndexWriter, build_faiss

__all__ = [
    "BUILDING_PREFIX", "CHECKPOINT", "ChannelPlan", "ChannelSpec", "Checkpoint", "Counts", "CropRow", "DetectorSpec",
    "FORMAT_VERSION", "IndexCatalog", "IndexDamage", "IndexWriter", "Listing", "MANIFEST", "META", "Manifest",
    "ManifestDraft", "MovieIndex", "OLD_PREFIX", "SourceSpec", "StageSeconds", "VECTORS", "build_faiss",
    "check_files", "damaged_movie", "inspect_folder", "list_indexes", "movie_info", "read_manifest",
    "tidy_index_dir",
]
