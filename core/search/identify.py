"""Scoring "which movie is this?": the catalogue's hits for one screenshot → a movie, its shots
and a calibrated confidence.

Two kinds of evidence, each turned into a probability per (movie, shot):

- the whole frame: the cosine of the screenshot's frame descriptor to the shot's frames, through a
  logistic fitted on the development clips (benchmarks/bench_identify.py): a frame of the movie
  itself, recompressed, resized or letterboxed, scores over 0.9; a frame of another film rarely
  over 0.8;
- the people: each person's vectors (face, body) against every movie's, each similarity turned
  into a confidence by that movie's own calibration (core/search/calibration.py), as a search does.

A shot's confidence is the noisy-OR of its two: evidence that agrees adds up. A movie's is its best
shot's, lowered by how close the runner-up movie is (two movies that both match well leave
doubt). Below `min_confidence` the answer is "not in the catalogue".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..catalog import Hit
from .calibration import Calibration, sigmoid

# The frame evidence's logistic: cosine → probability (benchmarks/bench_identify.py).
FRAME_CENTER = 0.86
FRAME_WIDTH = 0.025
# Movies under this confidence are not offered as "closest candidates": they are no closer than chance.
PLAUSIBLE = 0.2


@dataclass
class ShotEvidence:
    frame: float = 0.0  # probability from the whole frame
    people: float = 0.0  # from the people in it
    frame_s: float = 0.0  # when: the best evidence's time
    best: float = -1.0  # the probability frame_s belongs to

    def add(self, kind: str, confidence: float, frame_s: float) -> None:
        if kind == "frame":
            self.frame = max(self.frame, confidence)
        else:
            self.people = max(self.people, confidence)
        if confidence > self.best:
            self.best, self.frame_s = confidence, frame_s

    @property
    def confidence(self) -> float:
        return 1.0 - (1.0 - self.frame) * (1.0 - self.people)

    @property
    def evidence(self) -> str:
        parts = [name for name, p in (("frame", self.frame), ("people", self.people)) if p >= 0.5 * self.confidence]
        return "+".join(parts) or "frame"


@dataclass
class Tally:
    """Evidence gathered per movie and shot."""

    shots: dict[str, dict[int, ShotEvidence]] = field(default_factory=dict)

    def add(self, slug: str, shot_id: int, kind: str, confidence: float, frame_s: float) -> None:
        self.shots.setdefault(slug, {}).setdefault(shot_id, ShotEvidence()).add(kind, confidence, frame_s)

    def add_frames(self, hits: list[Hit]) -> None:
        for hit in hits:
            self.add(hit.slug, hit.shot_id, "frame", frame_confidence(hit.similarity), hit.frame_s)

    def add_people(self, hits: list[Hit], calibrations: dict[str, Calibration]) -> None:
        for hit in hits:
            calib = calibrations.get(hit.slug)
            if calib is not None:
                self.add(hit.slug, hit.shot_id, "people", float(calib.confidence(hit.similarity)), hit.frame_s)

    def movies(self) -> list[tuple[str, float]]:
        """(slug, confidence), best first: each movie's best shot, less the doubt a close runner-up
        leaves (a share of the runner-up's probability, so that two strong matches halve)."""
        best = sorted(((slug, max(e.confidence for e in shots.values())) for slug, shots in self.shots.items()),
                      key=lambda t: -t[1])
        out = []
        for i, (slug, conf) in enumerate(best):
            others = max((c for j, (_, c) in enumerate(best) if j != i), default=0.0)
            out.append((slug, conf * conf / (conf + others) if conf + others > 0 else 0.0))
        return sorted(out, key=lambda t: -t[1])

    def best_shots(self, slug: str, top: int) -> list[tuple[int, ShotEvidence]]:
        shots = self.shots.get(slug, {})
        return sorted(shots.items(), key=lambda t: -t[1].confidence)[:top]


def frame_confidence(similarity: float) -> float:
    return float(sigmoid((similarity - FRAME_CENTER) / FRAME_WIDTH))
