"""Measured retrieval quality: ground truth, query sets, ranking metrics and the evaluation
report of `castfinder eval` (no CLI, no printing).

The rooms:
- `ground_truth`: the ground-truth CSV, its rules, and each row mapped onto an indexed shot
  (`load_ground_truth`, `GroundTruth`, `CharacterTruth`);
- `annotated`: the annotator's own shots and which of them each indexed shot counts for
  (`AnnotatedShot`, `map_to_annotated`), for the annotated view;
- `queries`: the query images per character (`collect_queries`);
- `metrics`: precision@k, recall@k, AP and MAP, ties, both views (`Scores`, `score_ranking`,
  `score_annotated`, `resolve_ties`, `mean_average_precision`);
- `report`: one evaluation run (each character's images searched at once, its ranking
  scored) and its report: the JSON structure, the table's rows, the precision–recall curves;
- `plots`: those curves drawn as PNG files (matplotlib, imported when drawing).

Everything public is importable from `core.evaluation` itself. Importing this package is cheap
(standard library only); the engine is imported when an evaluation runs.
"""

from __future__ import annotations

from .annotated import AnnotatedShot, UnitKey, map_to_annotated
from .ground_truth import ABSENT, IGNORE, PRESENT, CharacterTruth, GroundTruth, GroundTruthError, load_ground_truth
from .metrics import (
    DEFAULT_KS,
    TIE_MODES,
    Scores,
    TieMode,
    mean_average_precision,
    resolve_ties,
    score_annotated,
    score_ranking,
)
from .queries import IMAGE_SUFFIXES, QueryFolderError, collect_queries

__all__ = [
    "ABSENT", "DEFAULT_KS", "IGNORE", "IMAGE_SUFFIXES", "PRESENT", "TIE_MODES", "AnnotatedShot", "CharacterTruth",
    "GroundTruth", "GroundTruthError", "QueryFolderError", "Scores", "TieMode", "UnitKey", "collect_queries",
    "load_ground_truth", "map_to_annotated", "mean_average_precision", "resolve_ties", "score_annotated",
    "score_ranking",
]
