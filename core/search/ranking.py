"""Turning per-crop FAISS hits into a ranking of shots."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..types import RankedShot

AGGREGATIONS = ("max", "frequency", "rrf")
RRF_K = 60  # the constant of reciprocal-rank fusion (Cormack et al. 2009)


def aggregate(
    sims: np.ndarray,
    ids: np.ndarray,
    crop_shot: np.ndarray,
    method: str,
    *,
    rrf_k: int = RRF_K,
    count_from: float = -1.0,
    confidence: Callable[[float], float] | None = None,
) -> list[RankedShot]:
    """Rank shots from `sims`/`ids` (one row of FAISS hits per query crop), best first.

    - `max`: a shot scores its best similarity over all query crops.
    - `frequency`: the share of the likely matches (hits with similarity ≥ `count_from`) that fall
      in the shot: how often the person keeps coming back in it. Without a floor, a large k makes
      every crop a hit and frequency would only count people per shot.
    - `rrf`: reciprocal-rank fusion of each query crop's shot ranking, scaled so that a shot
      ranked first by every query crop scores 1.
    Ties are broken by best similarity, then by shot id, so rankings are deterministic.
    `confidence` maps a shot's best similarity to a calibrated probability (the channel's
    calibration); without it a shot's confidence is its score.
    """
    if method not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {method!r}; use max, frequency or rrf")
    best_sim: dict[int, float] = {}
    best_crop: dict[int, int] = {}
    counts: dict[int, int] = {}
    rrf: dict[int, float] = {}
    total_hits = 0
    n_queries = len(sims)
    for row_sims, row_ids in zip(sims, ids):
        seen_in_row: set[int] = set()
        rank = 0
        for sim, crop in zip(row_sims, row_ids):
            if crop < 0:  # FAISS pads with -1 when it has fewer than k results
                continue
            shot = int(crop_shot[crop])
            sim = float(sim)
            if sim >= count_from:
                total_hits += 1
                counts[shot] = counts.get(shot, 0) + 1
            if shot not in best_sim or sim > best_sim[shot]:
                best_sim[shot] = sim
                best_crop[shot] = int(crop)
            # Hits arrive best first, so a shot's first hit in a row gives its rank there.
            if shot not in seen_in_row:
                seen_in_row.add(shot)
                rank += 1
                rrf[shot] = rrf.get(shot, 0.0) + 1.0 / (rrf_k + rank)
    if method == "max":
        scores = best_sim
    elif method == "frequency":
        scores = {s: counts.get(s, 0) / max(total_hits, 1) for s in best_sim}
    else:
        top = n_queries / (rrf_k + 1)
        scores = {s: v / top for s, v in rrf.items()}
    order = sorted(scores, key=lambda s: (-scores[s], -best_sim[s], s))
    return [
        RankedShot(s, float(scores[s]), best_sim[s], best_crop[s],
                   float(confidence(best_sim[s])) if confidence is not None else float(scores[s]))
        for s in order
    ]
