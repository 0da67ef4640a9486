"""Making similarities comparable across channels, without labels.

Raw cosine similarities mean different things per channel: 0.87 is a weak face match (dlib
vectors of different people sit near 0.88) and a strong body match. Each index learns, per
channel, *different-identity* statistics from the movie itself: pairs of people seen side by side
in the same frame are two identities (boxes that overlap are left out: a detector's double boxes
around one person are not two people). A similarity becomes a z-score, how many standard
deviations it sits above the typical similarity of two different people in this movie, and a
logistic link turns z into a confidence: `sigmoid(a·z + b)`. The link depends on the kind of
channel (`LINKS`): fitted on the four development clips together (docs/EVALUATION.md), it puts 50%
at z = 2 for faces and z = 3 for bodies, where other people's similarities rarely reach.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import numpy.typing as npt

from ..geometry import iou

_MIN_PAIRS = 12
_MAX_PAIRS = 20000
# Two boxes in one frame overlapping less than this are two people, not a detector's double box.
_APART_IOU = 0.05
# A floor on the spread: a near-constant sample would turn tiny differences into huge z-scores.
_MIN_STD = 0.02
# Pairs drawn from different shots when too few frames show two people side by side.
_CROSS_SHOT_PAIRS = 4000
# Without enough pairs: a neutral mean and spread of different-identity similarities.
DEFAULT_NEGATIVES = (0.5, 0.15)


@dataclass(frozen=True)
class Calibration:
    neg_mean: float
    neg_std: float
    a: float = 2.0
    # 50% at z = 1.5. On GoldenEye and Titanic (docs/EVALUATION.md) true matches sit at z ≈ 0.4–6
    # and other people at z ≤ 1.5 in all but a few cases: a conservative midpoint.
    b: float = -3.0
    negatives: int = 0

    def z(self, sims: npt.ArrayLike) -> np.ndarray:
        return (np.asarray(sims, dtype=np.float64) - self.neg_mean) / self.neg_std

    def logit(self, z: npt.ArrayLike) -> np.ndarray:
        return self.a * np.asarray(z) + self.b

    def similarity_at(self, confidence: float) -> float:
        """The raw similarity at which the confidence reaches `confidence`."""
        z = (np.log(confidence / (1 - confidence)) - self.b) / self.a
        return float(self.neg_mean + z * self.neg_std)

    def confidence(self, sims: npt.ArrayLike) -> np.ndarray:
        """Probability that a similarity means the same identity."""
        return sigmoid(self.logit(self.z(sims)))

    def to_json(self) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict | None, default_neg: tuple[float, float] = DEFAULT_NEGATIVES) -> "Calibration":
        if not data:
            return cls(*default_neg)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


# (a, b) per channel kind. Measured over GoldenEye, Titanic, Office and Supernatural with the
# default channels (benchmarks/bench_quality.py): with these, results at >= 50% were right 98% of
# the time and held 75% of the true shots; the earlier single link (50% at z = 1.5 for every
# channel) was right 72% of the time there. Bodies need the higher bar: different people in
# similar clothes reach z = 2.7 (95th percentile), different faces z = 2.4 (99th).
LINKS = {"face": (2.0, -4.0), "body": (2.0, -6.0)}


def with_link(calib: Calibration, kind: str) -> Calibration:
    """`calib` with the measured link of its channel kind."""
    a, b = LINKS["face" if kind == "face" else "body"]
    return replace(calib, a=a, b=b)


def sigmoid(x: npt.ArrayLike) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def fit(vectors: np.ndarray, frames: np.ndarray, boxes: np.ndarray, shots: np.ndarray, seed: int = 0) -> Calibration:
    """Calibrate one channel from its vectors and their crops' frame ids, boxes and shot ids."""
    rng = np.random.default_rng(seed)
    vectors = np.asarray(vectors, dtype=np.float32)
    neg = _side_by_side(vectors, frames, boxes)
    if len(neg) < _MIN_PAIRS and len(vectors) >= 2:
        # Few frames with two people: pairs from different shots stand in (mostly other people).
        i = rng.integers(0, len(vectors), size=min(_CROSS_SHOT_PAIRS, len(vectors) ** 2))
        j = rng.integers(0, len(vectors), size=len(i))
        keep = shots[i] != shots[j]
        neg = np.einsum("ij,ij->i", vectors[i[keep]], vectors[j[keep]]).astype(np.float64)
    # A vector that is not finite (an embedding of nothing, normalised) gives no similarity: left
    # out, the statistics stay finite, and the manifest never holds a NaN (which loads as damage).
    neg = neg[np.isfinite(neg)]
    if len(neg) < _MIN_PAIRS:
        return Calibration(*DEFAULT_NEGATIVES, negatives=int(len(neg)))
    if len(neg) > _MAX_PAIRS:
        neg = rng.choice(neg, _MAX_PAIRS, replace=False)
    return Calibration(float(np.mean(neg)), float(max(np.std(neg), _MIN_STD)), negatives=int(len(neg)))


def _side_by_side(vectors: np.ndarray, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Similarities of pairs of crops from the same frame whose boxes do not overlap."""
    order = np.argsort(frames, kind="stable")
    bounds = np.flatnonzero(np.diff(frames[order])) + 1
    sims: list[np.ndarray] = []
    total = 0
    for members in np.split(order, bounds):
        if len(members) < 2:
            continue
        iu = np.triu_indices(len(members), 1)
        apart = iou(boxes[members], boxes[members])[iu] < 0.05
        block = (vectors[members] @ vectors[members].T)[iu][apart]
        sims.append(block.astype(np.float64))
        total += len(block)
        if total > _MAX_PAIRS:
            break
    return np.concatenate(sims) if sims else np.zeros(0)
