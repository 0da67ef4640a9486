"""One evaluation run: each character that has both query images and ground truth is searched
with all of its images at once (as a user sending an album would) and its ranking is scored in
both views (metrics.py). The report of the run is report.py's.

The engine is asked for every shot of the index (depth = max(top, number of shots)), so AP sees
the whole ranking the engine returns; ties are resolved with the engine's (score, similarity)
as the sort key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..errors import BadInputError
from .ground_truth import CharacterTruth, GroundTruth
from .metrics import DEFAULT_KS, Scores, TieMode, score_annotated, score_ranking

if TYPE_CHECKING:
    from ..engine import Engine
    from ..settings import Settings
    from ..store import MovieIndex
    from ..types import MovieInfo, SearchResponse

PeopleMode = Literal["main", "all"]  # whom to search for in each query image
# Called with (characters done, the character being searched now, or None once it is done).
EvalProgress = Callable[[int, str | None], None]


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate and how: the options of `castfinder eval`."""

    ground_truth: Path
    queries: Path
    top: int  # ranked shots listed per character, and an extra cut-off
    aggregation: str  # the flag, or the settings' own when none was given
    people: PeopleMode = "main"
    ties: TieMode = "pessimistic"
    channels: tuple[str, ...] = ()  # the index's channels to search; empty: all of them

    @property
    def ks(self) -> tuple[int, ...]:
        """The cut-offs k of P@k and R@k: 5, 10, 20 and `top`."""
        return tuple(sorted(set(DEFAULT_KS) | {self.top}))


@dataclass(frozen=True)
class CharacterQuery:
    """A character to evaluate: its query images and its ground truth."""

    name: str  # as the ground truth spells it
    images: list[Path]
    truth: CharacterTruth


@dataclass(frozen=True)
class Plan:
    characters: list[CharacterQuery]
    warnings: list[str]  # the ground truth's, and characters that cannot be scored


@dataclass(frozen=True)
class CharacterResult:
    query: CharacterQuery
    response: SearchResponse
    scores: Scores  # per indexed shot
    annotated: Scores  # per annotated shot


@dataclass(frozen=True)
class Evaluation:
    """Everything one run measured, as report.py needs it."""

    request: EvalRequest
    settings: Settings
    info: MovieInfo
    index: MovieIndex
    truth: GroundTruth
    queries: dict[str, list[Path]]  # every character's query images, scored or not
    depth: int  # shots asked of the engine per character
    results: dict[str, CharacterResult]  # by character, in query order
    warnings: list[str]
    evaluated_at: str  # UTC, ISO 8601, when the searches ended


def plan(queries: dict[str, list[Path]], truth: GroundTruth, queries_dir: Path) -> Plan:
    """Pair each character's query images with its ground truth (names match case-insensitively).
    A character with only one of the two is named in a warning; with no pair at all there is
    nothing to measure (BadInputError)."""
    warnings = list(truth.warnings)
    characters = []
    for name, paths in queries.items():
        t = truth.get_character(name)
        if t is None:
            warnings.append(f"{name}: query images but no ground truth; not scored.")
        else:
            characters.append(CharacterQuery(t.name, paths, t))
    with_queries = {name.casefold() for name in queries}
    for name in truth:
        if name.casefold() not in with_queries:
            warnings.append(f"{name}: ground truth but no query images in {queries_dir}; not scored.")
    if not characters:
        raise BadInputError(
            f"No character has both query images and ground truth (queries: {', '.join(queries)}; "
            f"ground truth: {', '.join(truth) or 'none'})."
        )
    return Plan(characters, warnings)


def evaluate(engine: Engine, info: MovieInfo, index: MovieIndex, truth: GroundTruth,
             queries: dict[str, list[Path]], planned: Plan, request: EvalRequest, *,
             progress: EvalProgress | None = None) -> Evaluation:
    """Search and score every planned character, in order."""
    from ..search.images import QueryImage

    ks = request.ks
    depth = max(request.top, len(index.shots))
    warnings = list(planned.warnings)
    results: dict[str, CharacterResult] = {}
    for done, character in enumerate(planned.characters):
        if progress is not None:
            progress(done, character.name)
        response = engine.search(
            info, [QueryImage(p, select=request.people, name=str(p)) for p in character.images],
            top=depth, aggregation=request.aggregation, channels=list(request.channels) or None)
        ranking = [r.shot_id for r in response.results]
        keys = [(r.score, r.similarity) for r in response.results]
        t = character.truth
        s = score_ranking(ranking, t.relevant, t.ignored, ks=ks, keys=keys, ties=request.ties)
        a = score_annotated(ranking, truth.shot_units, t.relevant_units, t.ignored_units, ks=ks, keys=keys,
                            ties=request.ties)
        if s.ap is None:
            warnings.append(f"{character.name}: no relevant shot in the ground truth; AP undefined, left out of MAP.")
        results[character.name] = CharacterResult(character, response, s, a)
        if progress is not None:
            progress(done + 1, None)
    return Evaluation(
        request=request, settings=engine.settings, info=info, index=index, truth=truth, queries=queries,
        depth=depth, results=results, warnings=warnings,
        evaluated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
