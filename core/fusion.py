"""Fusing several channels' hits into one ranking of shots.

The unit of evidence is a person: a track (one person's detections across a shot's sampled
frames) or, without tracks, a single crop. For each unit and channel, the best similarity to any
query crop is turned into a calibrated logit (core.calibration); a unit's fused logit is the mean
over the channels that can speak for it: body channels always, the face channel when the query
and the unit both show a face. A face seen once in a track thus counts for the track's back views
and blurred frames too. A shot scores its best unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibration import sigmoid
from .store import MovieIndex


@dataclass(frozen=True)
class FusedShot:
    shot_id: int
    confidence: float
    logit: float
    similarity: float  # the raw similarity behind the best unit (body if it has one)
    best_crop: int


def fuse(index: MovieIndex, hits: dict[str, tuple[np.ndarray, np.ndarray]], *, use_tracks: bool) -> list[FusedShot]:
    n = len(index.crop_shot)
    raw_units = index.crop_track if use_tracks else np.arange(n)
    # Compact unit numbers 0..U-1 so that per-unit sums are plain array operations.
    unit_ids, unit_of = np.unique(raw_units, return_inverse=True)
    n_units = len(unit_ids)
    logit_sum = np.zeros(n_units)
    logit_count = np.zeros(n_units)
    shown_sim = np.full(n_units, np.nan)  # similarity and crop that locate the unit in results
    shown_crop = np.full(n_units, -1, dtype=np.int64)
    shown_is_body = np.zeros(n_units, dtype=bool)
    for channel, (sims, ids) in hits.items():
        valid = ids >= 0
        if not valid.any():
            continue  # no query vector in this channel (no face in the query): it cannot speak
        calib = index.calibration[channel]
        body = index.manifest["channels"][channel].get("kind", "body") != "face"
        flat_ids, flat_sims = ids[valid], sims[valid].astype(np.float64)
        # Best similarity per unit over every query crop: first occurrence in descending order.
        order = np.argsort(-flat_sims, kind="stable")
        units_sorted = unit_of[flat_ids[order]]
        seen, first = np.unique(units_sorted, return_index=True)
        best_sim = np.full(n_units, np.nan)
        best_sim[seen] = flat_sims[order][first]
        best_crop = np.full(n_units, -1, dtype=np.int64)
        best_crop[seen] = flat_ids[order][first]
        if body:
            members = np.ones(n_units, dtype=bool)  # every unit has a body vector
        else:
            members = np.zeros(n_units, dtype=bool)
            members[unit_of[np.fromiter(index.face_box, dtype=np.int64, count=len(index.face_box))]] = True
        # Units beyond the top-k sit below the weakest returned similarity: use it as their bound.
        sims_for = np.where(np.isnan(best_sim), flat_sims.min(), best_sim)
        logit_sum[members] += calib.logit(calib.z(sims_for[members]))
        logit_count[members] += 1
        # Locate each unit by its best body view; a face hit only where no body hit exists.
        found = best_crop >= 0
        better = found & ((body & ~shown_is_body) | ((body == shown_is_body) & ~(best_sim <= shown_sim)))
        shown_sim[better], shown_crop[better], shown_is_body[better] = best_sim[better], best_crop[better], body
    spoken = logit_count > 0
    if not spoken.any():
        return []
    logits = np.where(spoken, logit_sum / np.maximum(logit_count, 1), -np.inf)
    # A unit no channel returned is located by its first crop.
    first_crop = np.full(n_units, n, dtype=np.int64)
    np.minimum.at(first_crop, unit_of, np.arange(n))
    crop_of_unit = np.where(shown_crop >= 0, shown_crop, first_crop)
    shot_of_unit = index.crop_shot[crop_of_unit]
    by_shot: dict[int, FusedShot] = {}
    for u in np.flatnonzero(spoken)[np.argsort(-logits[spoken], kind="stable")]:
        shot = int(shot_of_unit[u])
        if shot not in by_shot:
            by_shot[shot] = FusedShot(shot, float(sigmoid(logits[u])), float(logits[u]), float(shown_sim[u]),
                                      int(crop_of_unit[u]))
    return sorted(by_shot.values(), key=lambda f: (-f.logit, f.shot_id))
