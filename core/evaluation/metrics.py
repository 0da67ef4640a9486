"""Ranking metrics: one character's ranked shots scored against its ground truth, per indexed
shot (`score_ranking`) and per annotated shot (`score_annotated`), and MAP over characters.

Conventions, fixed here and tested in tests/test_evaluation.py:

Metrics (`score_ranking`)
- The ranking is the engine's list of shot ids, best first. Repeated ids count once (first
  place). Ignored shots are taken out before anything else: they are neither hits nor misses
  and do not take a rank, so the shots after them move up.
- Ties: with `keys` (one sort key per ranked shot, e.g. the engine's (score, similarity)),
  shots with equal keys are a tie; `ties="pessimistic"` (the default) puts the non-relevant
  shots of each tie first, so a lucky tie-break (say by shot id) never raises a number;
  `ties="order"` keeps the given order. Without keys the given order is used as is.
- precision@k = relevant shots in the first k / k, also when fewer than k shots were
  returned (the missing places count as misses).
- recall@k = relevant shots in the first k / all relevant shots.
- AP = (sum over relevant shots found at rank r of precision@r) / all relevant shots, found or
  not: a relevant shot never returned adds 0.
- A character with no relevant shot has no recall and no AP (None): it is left out of MAP and
  of the mean precision/recall, with a warning.
- MAP = mean AP over the characters that have one.

Two views (`castfinder eval` reports both)
- Per indexed shot (`score_ranking` over `CharacterTruth.relevant/ignored`): the ground truth
  is mapped onto our cut, so where our cut merged annotated shots the merged shot is one
  relevant shot and the others are not asked for.
- Per annotated shot (`score_annotated` over `CharacterTruth.relevant_units/ignored_units` and
  `GroundTruth.shot_units`), the planners' measure: each ranked indexed shot counts for the one
  annotated shot it overlaps most. It is a hit if that annotated shot is relevant and not found
  higher up; a *duplicate* (a miss that takes a rank) if it was; it takes no rank if that
  annotated shot is ignored; otherwise it is a miss (another character's shot, a shot labelled
  0, or footage the file does not cover). AP, P@k and R@k are normalised by the relevant
  annotated shots, so annotated shots that our cut merged into another count as missed.
  Pessimistic ties put misses first, then the results of each newly found annotated shot
  together, the one with most results first. When the ground truth
  names indexed shots by id (frames folders), both views give the same numbers.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Callable, Literal, TypedDict, get_args

from .annotated import UnitKey

DEFAULT_KS = (5, 10, 20)
TieMode = Literal["pessimistic", "order"]
TIE_MODES: tuple[TieMode, ...] = get_args(TieMode)


@dataclass(frozen=True)
class Scores:
    """The metrics of one character's ranking. `ranking` is the scored list (ignored shots
    removed, ties resolved); `labels` marks each of its places as relevant or not."""

    ranking: tuple[int, ...]
    labels: tuple[bool, ...]
    relevant: int
    found: int  # relevant shots anywhere in the ranking
    ignored_retrieved: int  # ignored shots that were taken out of the ranking
    precision: dict[int, float]
    recall: dict[int, float | None]
    ap: float | None
    first_relevant_rank: int | None
    # Annotated view only (`score_annotated`): the annotated shot each place counts for (None:
    # none), and how many places were relevant annotated shots already found higher up.
    units: tuple[UnitKey | None, ...] = ()
    duplicates: int = 0

    @property
    def retrieved(self) -> int:
        return len(self.ranking)

    def pr_points(self) -> list[tuple[float, float]]:
        """(recall, precision) after each relevant shot found, in rank order."""
        points: list[tuple[float, float]] = []
        hits = 0
        if not self.relevant:
            return points
        for rank, is_rel in enumerate(self.labels, start=1):
            if is_rel:
                hits += 1
                points.append((hits / self.relevant, hits / rank))
        return points

    def interpolated_pr(self) -> list[tuple[float, float]]:
        """The interpolated curve: at each recall level reached, the best precision at that
        recall or beyond (p_interp(r) = max_{r' >= r} p(r')); starts at recall 0."""
        points = self.pr_points()
        if not points:
            return [(0.0, 0.0)]
        out, best = [], 0.0
        for recall, precision in reversed(points):
            best = max(best, precision)
            out.append((recall, best))
        out.reverse()
        return [(0.0, out[0][1]), *out]


def resolve_ties(ranking: Sequence[int], keys: Sequence[Hashable], relevant: set[int],
                 mode: TieMode = "pessimistic") -> list[int]:
    """Reorder runs of adjacent equal `keys`: "pessimistic" puts the non-relevant shots of a
    run before its relevant ones (each group keeping its order); "order" changes nothing."""
    if mode not in TIE_MODES:
        raise ValueError(f"unknown tie mode {mode!r}; use {' or '.join(TIE_MODES)}")
    if len(keys) != len(ranking):
        raise ValueError("keys must give one key per ranked shot")
    if mode == "order":
        return list(ranking)
    out: list[int] = []
    i = 0
    while i < len(ranking):
        j = i + 1
        while j < len(ranking) and keys[j] == keys[i]:
            j += 1
        run = ranking[i:j]
        out.extend([s for s in run if s not in relevant] + [s for s in run if s in relevant])
        i = j
    return out


def score_ranking(
    ranking: Sequence[int],
    relevant: Iterable[int],
    ignored: Iterable[int] = (),
    *,
    ks: Sequence[int] = DEFAULT_KS,
    keys: Sequence[Hashable] | None = None,
    ties: TieMode = "pessimistic",
) -> Scores:
    """Score one ranked list of shot ids against a character's ground truth (see the module
    docstring for the exact definitions)."""
    relevant = set(relevant)
    ignored = set(ignored) - relevant  # present wins, as in load_ground_truth
    if any(k < 1 for k in ks):
        raise ValueError("cut-offs k must be at least 1")
    if keys is not None and len(keys) != len(ranking):
        raise ValueError("keys must give one key per ranked shot")
    kept, kept_keys, dropped = _first_places(ranking, keys, lambda shot: shot in ignored)
    if keys is not None:
        kept = resolve_ties(kept, kept_keys, relevant, ties)
    labels = tuple(s in relevant for s in kept)
    return Scores(ranking=tuple(kept), labels=labels, ignored_retrieved=dropped,
                  **_rank_metrics(labels, len(relevant), ks))


def _first_places(ranking: Sequence[int], keys: Sequence[Hashable] | None,
                  is_ignored: Callable[[int], bool]) -> tuple[list[int], list[Hashable], int]:
    """The ranking with repeats removed and ignored shots taken out (they take no rank): the
    shots kept, their keys, and how many ignored shots were retrieved."""
    seen: set[int] = set()
    kept: list[int] = []
    kept_keys: list[Hashable] = []
    dropped = 0
    for i, shot in enumerate(ranking):
        if shot in seen:
            continue
        seen.add(shot)
        if is_ignored(shot):
            dropped += 1
            continue
        kept.append(shot)
        if keys is not None:
            kept_keys.append(keys[i])
    return kept, kept_keys, dropped


class _RankMetrics(TypedDict):
    relevant: int
    found: int
    first_relevant_rank: int | None
    precision: dict[int, float]
    recall: dict[int, float | None]
    ap: float | None


def _rank_metrics(labels: Sequence[bool], n_rel: int, ks: Sequence[int]) -> _RankMetrics:
    """P@k, R@k, AP (normalised by all `n_rel` relevant shots), hits and the first hit's rank."""
    hits, total = 0, 0.0
    first: int | None = None
    for rank, is_rel in enumerate(labels, start=1):
        if is_rel:
            hits += 1
            total += hits / rank
            first = first or rank
    return {"relevant": n_rel, "found": hits, "first_relevant_rank": first,
            "precision": {k: sum(labels[:k]) / k for k in ks},
            "recall": {k: (sum(labels[:k]) / n_rel if n_rel else None) for k in ks},
            "ap": total / n_rel if n_rel else None}


def score_annotated(
    ranking: Sequence[int],
    shot_units: Mapping[int, UnitKey | None],
    relevant_units: Iterable[UnitKey],
    ignored_units: Iterable[UnitKey] = (),
    *,
    ks: Sequence[int] = DEFAULT_KS,
    keys: Sequence[Hashable] | None = None,
    ties: TieMode = "pessimistic",
) -> Scores:
    """Score a ranking of indexed shot ids against the *annotated* shots (see the module
    docstring): each place counts for the annotated shot `shot_units[shot]` (None: none). A place
    whose annotated shot is relevant and not found higher up is a hit; one whose relevant
    annotated shot was already found is a duplicate (a miss); one whose annotated shot is ignored
    takes no rank; anything else is a miss. AP, P@k and R@k are normalised by the relevant
    annotated shots. `Scores.ranking` holds indexed shot ids, `Scores.units` their annotated shots.
    """
    relevant = set(relevant_units)
    ignored = set(ignored_units) - relevant
    if ties not in TIE_MODES:
        raise ValueError(f"unknown tie mode {ties!r}; use {' or '.join(TIE_MODES)}")
    if any(k < 1 for k in ks):
        raise ValueError("cut-offs k must be at least 1")
    if keys is not None and len(keys) != len(ranking):
        raise ValueError("keys must give one key per ranked shot")
    kept, kept_keys, dropped = _first_places(
        ranking, keys, lambda shot: shot_units.get(shot) is not None and shot_units.get(shot) in ignored)
    if keys is not None and ties == "pessimistic":
        kept = _pessimistic_annotated(kept, kept_keys, shot_units, relevant)
    units = tuple(shot_units.get(s) for s in kept)
    found: set[UnitKey] = set()
    labels: list[bool] = []
    for unit in units:
        hit = unit is not None and unit in relevant and unit not in found
        if unit is not None and hit:
            found.add(unit)
        labels.append(hit)
    duplicates = sum(1 for u, hit in zip(units, labels) if not hit and u is not None and u in relevant)
    return Scores(ranking=tuple(kept), labels=tuple(labels), ignored_retrieved=dropped, units=units,
                  duplicates=duplicates, **_rank_metrics(labels, len(relevant), ks))


def _pessimistic_annotated(ranking: list[int], keys: list[Hashable], shot_units: Mapping[int, UnitKey | None],
                           relevant: set[UnitKey]) -> list[int]:
    """Ties of the annotated view, resolved against us. In each run of equal keys the misses come
    first (including repeats of annotated shots found before the run), then the results of each
    annotated shot newly found in the run, together, the shot with the most results first: every
    hit then lands as low as the run allows (the k-th new hit can be preceded at most by all the
    results of k-1 other annotated shots). Each group keeps its order."""
    out: list[int] = []
    found: set[UnitKey] = set()
    i = 0
    while i < len(ranking):
        j = i + 1
        while j < len(ranking) and keys[j] == keys[i]:
            j += 1
        misses: list[int] = []
        groups: dict[UnitKey, list[int]] = {}  # in order of first appearance
        for shot in ranking[i:j]:
            unit = shot_units.get(shot)
            if unit is None or unit not in relevant or unit in found:
                misses.append(shot)
            else:
                groups.setdefault(unit, []).append(shot)
        out.extend(misses)
        for group in sorted(groups.values(), key=len, reverse=True):  # stable: ties keep their order
            out.extend(group)
        found.update(groups)
        i = j
    return out


def mean_average_precision(aps: Iterable[float | None]) -> float | None:
    """Mean of the defined APs; None when there is none."""
    values = [a for a in aps if a is not None]
    return sum(values) / len(values) if values else None
