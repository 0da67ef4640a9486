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
    unit_of = index.crop_track if use_tracks else np.arange(n)
    kinds = {c: index.manifest["channels"][c].get("kind", "body") for c in hits}
    logits: dict[int, list[float]] = {}
    best_sim: dict[int, tuple[float, int, bool]] = {}  # unit -> (similarity, crop, from a body channel)
    for channel, (sims, ids) in hits.items():
        if sims.size == 0:
            continue  # no query vector in this channel (no face in the query): it cannot speak
        calib = index.calibration[channel]
        valid = ids >= 0
        flat_ids, flat_sims = ids[valid], sims[valid]
        # Best similarity per unit over every query crop of this channel.
        order = np.argsort(-flat_sims, kind="stable")
        unit_best: dict[int, tuple[float, int]] = {}
        for crop, sim in zip(flat_ids[order], flat_sims[order]):
            unit_best.setdefault(int(unit_of[crop]), (float(sim), int(crop)))
        # Units beyond the top-k sit below the weakest returned similarity: use it as their bound.
        floor = float(flat_sims.min()) if len(flat_sims) else -1.0
        if kinds[channel] == "face":
            members = {int(unit_of[c]) for c in index.face_box}
        else:
            members = None  # every unit has a body vector
        for unit in (members if members is not None else set(unit_of.tolist())):
            sim, crop = unit_best.get(unit, (floor, -1))
            logits.setdefault(unit, []).append(float(calib.logit(calib.z(sim))))
            body = kinds[channel] != "face"
            if crop >= 0:
                prev = best_sim.get(unit)
                if prev is None or (body and not prev[2]) or (body == prev[2] and sim > prev[0]):
                    best_sim[unit] = (sim, crop, body)
    first_crop = {}
    for crop in range(n):
        first_crop.setdefault(int(unit_of[crop]), crop)
    by_shot: dict[int, FusedShot] = {}
    for unit, values in logits.items():
        logit = float(np.mean(values))
        sim, crop, _ = best_sim.get(unit, (float("nan"), first_crop[unit], True))
        shot = int(index.crop_shot[crop])
        if shot not in by_shot or logit > by_shot[shot].logit:
            by_shot[shot] = FusedShot(shot, float(sigmoid(logit)), logit, sim, crop)
    return sorted(by_shot.values(), key=lambda f: (-f.logit, f.shot_id))
