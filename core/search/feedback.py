"""A user's feedback on results ("that's them", "not them") turned into changes of the one search.

- A **positive** mark names a result's shot and the crop that showed the person: the crops of that
  person's track in the shot (index `crops.track_id`) become extra query rows, searched and
  ranked through the same hits as the query's own rows. The person is then found the way the
  film itself shows them (their other angles, their clothes in this film).
- A **negative** mark removes its shot from the results and drops the crops of that person's
  track from every hit list. The rest of the film is then compared with that person: a hit
  nearer the rejected person than the query (its similarity to the nearest crop of the rejected
  track higher than its similarity to the query row) loses `weight` times the difference. Hits
  nearer the query keep their similarity, so calibrated confidences of the right person stay
  what they were: only look-alikes of the rejected person go down.

Both apply inside the search function the engine ranks with (`Plan.search`), so propagation's
second round (core.search.fusion.expand) sees the same penalties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import BadInputError
from ..store import MovieIndex
from ..types import Feedback, Mark, QueryVectors

SearchFn = Callable[[str, np.ndarray], tuple[np.ndarray, np.ndarray]]

# FAISS's own padding value for missing hits: dropped crops look like no hit at all.
_NO_HIT = np.float32(-3.4028235e38)


def track_crops(index: MovieIndex, crop: int) -> np.ndarray:
    """The crops of the person shown by `crop` in its shot: its track, or the crop alone when it
    was not tracked."""
    track = int(index.crop_track[crop])
    if track < 0:
        return np.array([crop], dtype=np.int64)
    return np.flatnonzero((index.crop_track == track) & (index.crop_shot == index.crop_shot[crop]))


def marks_for_shots(index: MovieIndex, numbers: Sequence[int]) -> tuple[Mark, ...]:
    """Marks for shots as users see them numbered (`Shot.number`, as search results print them);
    the engine picks each shot's person. A number that is no shot, or several (a frames folder
    numbers shots per scene), is refused."""
    marks = []
    for number in dict.fromkeys(numbers):
        ids = [shot.id for shot in index.shots.values() if shot.number == number]
        if len(ids) != 1:
            why = "no" if not ids else f"{len(ids)} shots numbered"
            raise BadInputError(f"{index.info.name!r} has {why} shot {number}; give shot numbers as search "
                                "prints them.")
        marks.append(Mark(ids[0]))
    return tuple(marks)


def resolve(index: MovieIndex, mark: Mark, query: QueryVectors, channels: list[str]) -> int:
    """The crop a mark stands for: its own (checked to lie in its shot) or, without one, the
    shot's crop most similar to the query in the first body channel the query has rows in."""
    if mark.shot_id not in index.shots:
        raise BadInputError(f"this movie has no shot {mark.shot_id}.")
    if mark.crop is not None:
        if not 0 <= mark.crop < len(index.crop_shot) or int(index.crop_shot[mark.crop]) != mark.shot_id:
            raise BadInputError(f"crop {mark.crop} is not in shot {mark.shot_id}: the results are older than "
                                "the movie's index. Search again.")
        return mark.crop
    members = np.flatnonzero(index.crop_shot == mark.shot_id)
    shot = index.shots[mark.shot_id].number
    if not len(members):
        raise BadInputError(f"shot {shot} shows nobody the index could search for.")
    order = sorted(channels, key=lambda c: index.channel(c).kind == "face")  # body channels first
    for channel in order:
        rows = query.get(channel)
        if rows is None or not len(rows):
            continue
        vectors = index.vectors(channel, members)
        if vectors is None:
            continue
        return int(members[int(np.argmax((vectors @ rows.T).max(axis=1)))])
    return int(members[0])


@dataclass
class Plan:
    """One query's feedback, ready to apply: extra query rows, dropped crops, removed shots."""

    index: MovieIndex
    k: int
    weight: float
    positives: dict[str, np.ndarray] = field(default_factory=dict)  # channel -> extra query rows
    negatives: dict[str, np.ndarray] = field(default_factory=dict)  # channel -> rejected people's rows
    dropped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # per crop
    removed: set[int] = field(default_factory=set)  # shot ids out of the results
    _near: dict[str, np.ndarray | None] = field(default_factory=dict)

    def rows(self, channel: str, query: np.ndarray) -> np.ndarray:
        """The query's rows of `channel` with the positives' rows after them."""
        extra = self.positives.get(channel)
        if extra is None or not len(extra):
            return query
        return np.concatenate([query.reshape(-1, extra.shape[1]).astype(np.float32), extra])

    def search(self, channel: str, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """FAISS hits of `vectors` with the negatives applied, each row again best first."""
        sims, ids = self.index.search(channel, vectors, self.k)
        if not self.removed or not ids.size:
            return sims, ids
        sims, ids = sims.astype(np.float32, copy=True), ids.copy()
        valid = ids >= 0
        gone = valid & self.dropped[np.where(valid, ids, 0)]
        ids[gone], sims[gone] = -1, _NO_HIT
        near = self._nearness(channel)
        if near is not None and self.weight > 0:
            live = ids >= 0
            calib = self.index.calibration[channel]
            nearness = np.where(live, near[np.where(live, ids, 0)], -np.inf)
            rejected = np.where(live, calib.confidence(nearness), 0.0)
            closer = np.where(live, np.maximum(nearness - sims, 0.0), 0.0)
            sims = (sims - self.weight * (calib.neg_std * rejected + closer)).astype(np.float32)
        order = np.argsort(-sims, axis=1, kind="stable")
        return np.take_along_axis(sims, order, axis=1), np.take_along_axis(ids, order, axis=1)

    def _nearness(self, channel: str) -> np.ndarray | None:
        """Per crop, its best similarity to the rejected people in `channel` (−inf where none of
        their rows found it); None when they have no vector in this channel."""
        if channel not in self._near:
            rows = self.negatives.get(channel)
            near: np.ndarray | None = None
            if rows is not None and len(rows):
                sims, ids = self.index.search(channel, rows, self.k)
                near = np.full(len(self.index.crop_shot), -np.inf, dtype=np.float32)
                valid = ids >= 0
                np.maximum.at(near, ids[valid], sims[valid].astype(np.float32))
            self._near[channel] = near
        return self._near[channel]


def plan(index: MovieIndex, feedback: Feedback, query: QueryVectors, channels: list[str], *, k: int,
         weight: float, per_track: int) -> Plan:
    """What `feedback` changes in a search of `index` in `channels`. A shot marked both ways
    counts as rejected: "not them" is the stronger statement."""
    result = Plan(index, k, weight, dropped=np.zeros(len(index.crop_shot), dtype=bool))
    rejected = {m.shot_id for m in feedback.negatives}
    for marks, target, negative in ((feedback.positives, result.positives, False),
                                    (feedback.negatives, result.negatives, True)):
        for mark in marks:
            if not negative and mark.shot_id in rejected:
                continue
            members = track_crops(index, resolve(index, mark, query, channels))
            if negative:
                result.dropped[members] = True
                result.removed.add(mark.shot_id)
            for channel in channels:
                vectors = _track_vectors(index, channel, members, per_track)
                if vectors is not None:
                    target[channel] = np.concatenate([target[channel], vectors]) if channel in target else vectors
    return result


def _track_vectors(index: MovieIndex, channel: str, members: np.ndarray, per_track: int) -> np.ndarray | None:
    if index.channel(channel).kind == "face":
        members = np.array([c for c in members if int(c) in index.face_box], dtype=np.int64)
    if not len(members):
        return None
    # Evenly through the track: its first, last and middle views, not its first few frames.
    members = members[np.linspace(0, len(members) - 1, min(len(members), per_track)).astype(int)]
    return index.vectors(channel, members)
