"""Fusing several channels' hits into one ranking of shots.

The unit of evidence is a person: a track (one person's detections across a shot's sampled
frames) or, without tracks, a single crop. For each unit and channel, the best similarity to any
query crop is turned into a calibrated logit (core.search.calibration); a unit's fused logit is the
weighted mean over the channels that can speak for it: body channels always, the face channel
when the query and the unit both show a face. A face seen once in a track thus counts for the
track's back views and blurred frames too. A shot scores its best unit.

Two refinements on top:
- **Channel weights.** A query from outside the film (a poster, a press photo) shows other
  clothes: its body matches nobody in the film well, while its face still does. Body channels are
  weighted by how well the query's body matches *anyone* in the film (the calibrated confidence of
  its best hit), so such a body stops diluting the face.
- **Propagation** (query expansion): the people matched confidently in the first round become
  extra queries, with the film's own views of them (other angles, back views, other shots), for a
  second round. A unit found only in the second round is capped below the seed that found it and
  discounted, so one wrong seed can add candidates but never outrank the first round's matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..store import MovieIndex
from ..types import RankedShot
from .calibration import sigmoid

Hits = dict[str, tuple[np.ndarray, np.ndarray]]  # channel -> (similarities, crop ids), one row per query crop

# A body that matches nobody in the film better than this confidence counts less, down to the floor.
_BODY_WEIGHT_FLOOR = 0.25
# Propagation: seeds are the first round's units at or above this confidence, at most this many,
# each with at most this many of its own crops as queries.
EXPAND_MIN_CONFIDENCE = 0.8
EXPAND_SEEDS = 6
_EXPAND_CROPS_PER_SEED = 6
# A second-round match is worth at most its seed's logit minus this.
EXPAND_DISCOUNT = 1.0


@dataclass
class UnitScores:
    """Per unit (track or crop): fused logit (−inf where no channel spoke) and the crop that shows it."""

    unit_of: np.ndarray  # crop id -> unit number
    logits: np.ndarray
    similarity: np.ndarray
    crop: np.ndarray


def _units(index: MovieIndex, use_tracks: bool) -> tuple[np.ndarray, int]:
    raw = index.crop_track if use_tracks else np.arange(len(index.crop_shot))
    # Compact unit numbers 0..U-1 so that per-unit sums are plain array operations.
    _, unit_of = np.unique(raw, return_inverse=True)
    return unit_of, int(unit_of.max()) + 1 if len(unit_of) else 0


def _is_body(index: MovieIndex, channel: str) -> bool:
    return index.channel(channel).kind != "face"


def body_weights(index: MovieIndex, hits: Hits) -> dict[str, float]:
    """Each channel's weight in the mean: 1 for faces; for a body channel the confidence of its
    best hit anywhere in the film, between the floor and 1."""
    weights = {}
    for channel, (sims, ids) in hits.items():
        if not _is_body(index, channel) or not (ids >= 0).any():
            weights[channel] = 1.0
            continue
        best = float(index.calibration[channel].confidence(float(sims[ids >= 0].max())))
        weights[channel] = float(np.clip(best, _BODY_WEIGHT_FLOOR, 1.0))
    return weights


def score_units(index: MovieIndex, hits: Hits, *, use_tracks: bool,
                weights: dict[str, float] | None = None) -> UnitScores:
    n = len(index.crop_shot)
    unit_of, n_units = _units(index, use_tracks)
    weights = weights or {}
    logit_sum = np.zeros(n_units)
    weight_sum = np.zeros(n_units)
    shown_sim = np.full(n_units, np.nan)  # similarity and crop that locate the unit in results
    shown_crop = np.full(n_units, -1, dtype=np.int64)
    shown_is_body = np.zeros(n_units, dtype=bool)
    for channel, (sims, ids) in hits.items():
        valid = ids >= 0
        if not valid.any():
            continue  # no query vector in this channel (no face in the query): it cannot speak
        calib = index.calibration[channel]
        body = _is_body(index, channel)
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
        w = weights.get(channel, 1.0)
        logit_sum[members] += w * calib.logit(calib.z(sims_for[members]))
        weight_sum[members] += w
        # Locate each unit by its best body view; a face hit only where no body hit exists.
        found = best_crop >= 0
        better = found & ((body & ~shown_is_body) | ((body == shown_is_body) & ~(best_sim <= shown_sim)))
        shown_sim[better], shown_crop[better], shown_is_body[better] = best_sim[better], best_crop[better], body
    logits = np.where(weight_sum > 0, logit_sum / np.maximum(weight_sum, 1e-12), -np.inf)
    # A unit no channel returned is located by its first crop.
    first_crop = np.full(n_units, n, dtype=np.int64)
    np.minimum.at(first_crop, unit_of, np.arange(n))
    crop_of_unit = np.where(shown_crop >= 0, shown_crop, first_crop)
    return UnitScores(unit_of, logits, shown_sim, crop_of_unit)


def rank_shots(index: MovieIndex, units: UnitScores) -> list[RankedShot]:
    """Shots by their best unit's fused logit (ties by shot id); score and confidence are its
    probability. Sorting by the logit keeps apart shots whose probabilities both round to 1."""
    spoken = np.isfinite(units.logits)
    if not spoken.any():
        return []
    shot_of_unit = index.crop_shot[np.minimum(units.crop, len(index.crop_shot) - 1)]
    best_unit: dict[int, int] = {}
    for u in np.flatnonzero(spoken)[np.argsort(-units.logits[spoken], kind="stable")]:
        best_unit.setdefault(int(shot_of_unit[u]), int(u))
    ranked = []
    for shot, u in sorted(best_unit.items(), key=lambda item: (-units.logits[item[1]], item[0])):
        confidence = float(sigmoid(float(units.logits[u])))
        sim = float(units.similarity[u])  # NaN where only a bound or the second round spoke
        ranked.append(RankedShot(shot, confidence, sim if np.isfinite(sim) else 0.0, int(units.crop[u]), confidence))
    return ranked


SearchFn = Callable[[str, np.ndarray], tuple[np.ndarray, np.ndarray]]


def fuse(index: MovieIndex, hits: Hits, *, use_tracks: bool, weigh_bodies: bool = True,
         expand_with: SearchFn | None = None) -> list[RankedShot]:
    """Shots ranked from several channels' hits; with `expand_with` (a search of the index's own
    vectors), the confident first-round people are propagated (see `expand`)."""
    weights = body_weights(index, hits) if weigh_bodies else None
    units = score_units(index, hits, use_tracks=use_tracks, weights=weights)
    if expand_with is not None:
        units = expand(index, units, list(hits), expand_with, use_tracks=use_tracks)
    return rank_shots(index, units)


def expand(index: MovieIndex, first: UnitScores, channels: list[str], search: SearchFn, *,
           use_tracks: bool, min_confidence: float = EXPAND_MIN_CONFIDENCE, seeds: int = EXPAND_SEEDS,
           discount: float = EXPAND_DISCOUNT) -> UnitScores:
    """The first round's scores raised by a second round from its confident units (see module doc).
    `search(channel, vectors)` returns FAISS hits of the index's own vectors."""
    logits = first.logits
    threshold = float(np.log(min_confidence / (1 - min_confidence)))
    order = np.argsort(-np.where(np.isfinite(logits), logits, -np.inf), kind="stable")
    chosen = [int(u) for u in order[:seeds] if logits[u] >= threshold]
    if not chosen:
        return first
    has_face = np.zeros(len(first.unit_of), dtype=bool)
    if index.face_box:
        has_face[np.fromiter(index.face_box, dtype=np.int64, count=len(index.face_box))] = True
    best = logits.copy()
    for seed in chosen:
        crops = np.flatnonzero(first.unit_of == seed)
        hits: Hits = {}
        for channel in channels:
            members = crops[has_face[crops]] if not _is_body(index, channel) else crops
            if not len(members):
                continue
            members = members[np.linspace(0, len(members) - 1, min(len(members), _EXPAND_CROPS_PER_SEED)).astype(int)]
            vectors = index.vectors(channel, members)
            if vectors is None:
                continue
            hits[channel] = search(channel, vectors)
        if not hits:
            continue
        second = score_units(index, hits, use_tracks=use_tracks).logits
        capped = np.minimum(second, logits[seed]) - discount
        best = np.maximum(best, capped)
    # The seeds themselves keep their own first-round score.
    return UnitScores(first.unit_of, best, first.similarity, first.crop)
