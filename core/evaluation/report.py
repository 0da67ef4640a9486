"""The report of an evaluation run (harness.py): its JSON structure, the rows of its table and the
data of its precision–recall curves. Nothing here prints or draws.

The JSON report (`castfinder eval --json`, one object) holds everything needed to reproduce a
number: `command` (the equivalent command line, every option explicit), `argv` (the actual one
when run as `castfinder eval`), `config` (aggregation, people, channels, ties, depth, cut-offs,
the engine settings, the index manifest, library versions), per-character metrics, rankings and
missed shots, `summary` (MAP, mean P@k/R@k), `warnings` and `plots`.

Two views of the same rankings (definitions: metrics.py): per indexed shot (the ground truth
mapped onto our cut; `characters.<name>.ap/precision/recall/relevant/first_rank`,
`summary.map`) and per annotated shot (each result counts for the annotated shot it overlaps
most; annotated shots merged by our cut into another count as missed, repeats as misses;
`characters.<name>.annotated.{ap, precision, recall, relevant, first_rank, found, duplicates,
missed, ranking}`, `summary.map_annotated`, `summary.annotated`). `first_rank` is the rank of
the first relevant result (ignored shots take no rank); `summary.first_in_top3` counts the
characters whose first relevant result is in the top 3. `ground_truth.indexed_to_annotated`
says which annotated shot each indexed shot counts for. Listed rankings show the engine's own
order (--top places), with ignored shots marked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from ..types import Shot
from ..versions import library_versions
from .annotated import UnitKey
from .ground_truth import GroundTruth
from .harness import CharacterResult, Evaluation
from .metrics import Scores, mean_average_precision
from .shots import shot_label

REPORT_FORMAT = 1

Label = Literal["relevant", "ignored", "absent"]
AnnotatedLabel = Literal["relevant", "ignored", "duplicate", "absent"]


# -- the JSON structure ------------------------------------------------------------------------
class RankedShotEntry(TypedDict):
    rank: int
    shot: int
    scene: int | None
    shot_id: int
    start_s: float
    end_s: float
    score: float
    similarity: float | None
    confidence: float | None
    label: Label


class AnnotatedShotEntry(TypedDict):
    rank: int
    shot_id: int
    annotated_shot: str | None  # the annotated shot this indexed shot counts for
    label: AnnotatedLabel


class AnnotatedReport(TypedDict):
    ap: float | None
    precision: dict[str, float | None]
    recall: dict[str, float | None]
    relevant: int
    ignored: int
    retrieved: int
    ignored_retrieved: int
    found: int
    duplicates: int
    first_rank: int | None
    relevant_shots: list[str]
    missed: list[str]
    ranking: list[AnnotatedShotEntry]


class CharacterReport(TypedDict):
    queries: list[str]
    query_crops: int
    whole_image_queries: int
    relevant: int
    ignored: int
    retrieved: int  # after taking ignored shots out
    ignored_retrieved: int
    found: int
    first_relevant_rank: int | None
    first_rank: int | None  # rank of the first relevant shot (ignored shots take none)
    ap: float | None
    precision: dict[str, float | None]
    recall: dict[str, float | None]
    relevant_shots: list[str]
    missed: list[str]
    ranking: list[RankedShotEntry]
    search_s: float
    annotated: AnnotatedReport


class MeanScores(TypedDict):
    map: float | None
    characters_scored: int
    mean_precision: dict[str, float | None]
    mean_recall: dict[str, float | None]
    first_in_top3: int


class Summary(MeanScores):
    map_annotated: float | None
    annotated: MeanScores


class MovieEntry(TypedDict):
    name: str
    slug: str
    build_id: str
    built_at: str
    path: str
    shots: int


class ConfigEntry(TypedDict):
    aggregation: str
    people: str
    top: int
    depth: int
    ks: list[int]
    channels: list[str]
    ties: str
    search_k: int
    settings: dict[str, Any]
    index_manifest: dict[str, Any]
    versions: dict[str, str]


class GroundTruthEntry(TypedDict):
    path: str
    forms: dict[str, int]
    rows_of_other_movies: int
    characters: list[str]
    annotated_shots: int
    indexed_to_annotated: dict[str, str | None]


class QueriesEntry(TypedDict):
    path: str
    characters: dict[str, list[str]]


class Report(TypedDict):
    format: int
    movie: MovieEntry
    command: str
    argv: list[str] | None
    config: ConfigEntry
    ground_truth: GroundTruthEntry
    queries: QueriesEntry
    characters: dict[str, CharacterReport]
    summary: Summary
    warnings: list[str]
    plots: dict[str, str]
    evaluated_at: str
    elapsed_s: float


def build_report(evaluation: Evaluation, *, command: str, argv: list[str] | None, plots: Mapping[str, str],
                 elapsed_s: float) -> Report:
    """The JSON report of a run. `command`: the equivalent command line; `argv`: the actual one
    (None when not run from the command line); `plots`: the curves written, by character."""
    e, request = evaluation, evaluation.request
    ks = request.ks
    shots = e.index.shots
    index = e.index
    truth = e.truth
    characters = {name: _character_report(r, truth, shots, request.top, ks) for name, r in e.results.items()}
    scored = [r.scores for r in e.results.values()]
    return {
        "format": REPORT_FORMAT,
        "movie": {"name": e.info.name, "slug": e.info.slug, "build_id": e.info.build_id,
                  "built_at": e.info.built_at, "path": str(e.info.path), "shots": len(shots)},
        "command": command,
        "argv": argv,
        "config": {
            "aggregation": request.aggregation, "people": request.people, "top": request.top, "depth": e.depth,
            "ks": list(ks),
            "channels": list(request.channels) or list(index.manifest.channels),
            "ties": request.ties, "search_k": e.settings.search_k,
            "settings": e.settings.model_dump(mode="json"),
            "index_manifest": index.manifest.to_json(),
            "versions": library_versions(),
        },
        "ground_truth": {"path": str(request.ground_truth.resolve()), "forms": truth.forms,
                         "rows_of_other_movies": truth.skipped_rows,
                         "characters": sorted(truth),
                         "annotated_shots": len(truth.units),
                         # which annotated shot each indexed shot counts for (null: none)
                         "indexed_to_annotated": {
                             shot_label(shots[i]): (truth.units[u].name if u is not None else None)
                             for i, u in sorted(truth.shot_units.items(),
                                                key=lambda kv: (shots[kv[0]].start_frame, kv[0]))}},
        "queries": {"path": str(request.queries.resolve()),
                    "characters": {n: [str(p.resolve()) for p in ps] for n, ps in e.queries.items()}},
        "characters": characters,
        "summary": _summary(scored, [r.annotated for r in e.results.values()], ks),
        "warnings": e.warnings,
        "plots": dict(plots),
        "evaluated_at": e.evaluated_at,
        "elapsed_s": elapsed_s,
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def _mean(values: Iterable[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def _mean_scores(scores: Sequence[Scores], ks: Sequence[int]) -> MeanScores:
    """Means over the characters with an AP (a character with no relevant shot has none)."""
    defined = [s for s in scores if s.ap is not None]
    return {
        "map": _round(mean_average_precision(s.ap for s in defined)),
        "characters_scored": len(defined),
        "mean_precision": {str(k): _round(_mean([s.precision[k] for s in defined])) for k in ks},
        "mean_recall": {str(k): _round(_mean([s.recall[k] for s in defined])) for k in ks},
        "first_in_top3": sum(1 for s in defined if s.first_relevant_rank is not None and s.first_relevant_rank <= 3),
    }


def _summary(scored: Sequence[Scores], annotated: Sequence[Scores], ks: Sequence[int]) -> Summary:
    per_shot, per_annotated = _mean_scores(scored, ks), _mean_scores(annotated, ks)
    return {**per_shot, "map_annotated": per_annotated["map"], "annotated": per_annotated}


def _character_report(result: CharacterResult, truth: GroundTruth, shots: Mapping[int, Shot], top: int,
                      ks: Sequence[int]) -> CharacterReport:
    s, response, t = result.scores, result.response, result.query.truth
    found = set(s.ranking)
    listed: list[RankedShotEntry] = []
    for r in response.results[:top]:
        label: Label = "relevant" if r.shot_id in t.relevant else "ignored" if r.shot_id in t.ignored else "absent"
        listed.append({"rank": r.rank, "shot": r.shot, "scene": r.scene, "shot_id": r.shot_id,
                       "start_s": round(r.start_s, 3), "end_s": round(r.end_s, 3), "score": round(r.score, 4),
                       "similarity": _round(r.similarity),
                       "confidence": _round(r.confidence), "label": label})
    ordered = sorted(t.relevant, key=lambda i: (shots[i].start_frame, i))
    return {
        "queries": [str(p.resolve()) for p in result.query.images],
        "query_crops": response.query_crops,
        "whole_image_queries": response.whole_image_queries,
        "relevant": s.relevant,
        "ignored": len(t.ignored),
        "retrieved": s.retrieved,
        "ignored_retrieved": s.ignored_retrieved,
        "found": s.found,
        "first_relevant_rank": s.first_relevant_rank,
        "first_rank": s.first_relevant_rank,
        "ap": _round(s.ap),
        "precision": {str(k): _round(s.precision[k]) for k in ks},
        "recall": {str(k): _round(s.recall[k]) for k in ks},
        "relevant_shots": [shot_label(shots[i]) for i in ordered],
        "missed": [shot_label(shots[i]) for i in ordered if i not in found],
        "ranking": listed,
        "search_s": round(response.elapsed_s, 3),
        "annotated": _annotated_report(result, truth, top, ks),
    }


def _annotated_report(result: CharacterResult, truth: GroundTruth, top: int, ks: Sequence[int]) -> AnnotatedReport:
    """The annotated view of one character: metrics over the annotated shots, which of them were
    missed, and what each listed indexed shot counted for."""
    a, t = result.annotated, result.query.truth
    counted = dict(zip(a.ranking, zip(a.units, a.labels)))
    listed: list[AnnotatedShotEntry] = []
    for r in result.response.results[:top]:
        unit = truth.shot_units.get(r.shot_id)
        label: AnnotatedLabel
        if unit is not None and unit in t.ignored_units and unit not in t.relevant_units:
            label = "ignored"
        elif r.shot_id in counted and counted[r.shot_id][1]:
            label = "relevant"
        elif unit is not None and unit in t.relevant_units:
            label = "duplicate"
        else:
            label = "absent"
        listed.append({"rank": r.rank, "shot_id": r.shot_id,
                       "annotated_shot": truth.units[unit].name if unit is not None else None, "label": label})
    found = {u for u, hit in zip(a.units, a.labels) if hit}
    ordered = sorted(t.relevant_units, key=lambda k: _unit_order(truth, k))
    return {
        "ap": _round(a.ap),
        "precision": {str(k): _round(a.precision[k]) for k in ks},
        "recall": {str(k): _round(a.recall[k]) for k in ks},
        "relevant": a.relevant,
        "ignored": len(t.ignored_units - t.relevant_units),
        "retrieved": a.retrieved,
        "ignored_retrieved": a.ignored_retrieved,
        "found": a.found,
        "duplicates": a.duplicates,
        "first_rank": a.first_relevant_rank,
        "relevant_shots": [truth.units[k].name for k in ordered],
        "missed": [truth.units[k].name for k in ordered if k not in found],
        "ranking": listed,
    }


def _unit_order(truth: GroundTruth, key: UnitKey) -> tuple[str, float, float, str]:
    u = truth.units[key]
    return (u.form, u.start, u.end, u.name)


# -- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class QualityTable:
    """The table of `castfinder eval`, as plain text: one row per character and a row of means.
    The first column (the character) is text, the others numbers; `total_emphasis` holds the
    places of the mean row that matter most (the two MAPs)."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    total: list[str]
    total_emphasis: frozenset[int]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _rank(value: int | None) -> str:
    return "–" if value is None else str(value)


def quality_table(report: Report) -> QualityTable:
    cfg = report["config"]
    ks = cfg["ks"]
    title = (f"{report['movie']['name']}: retrieval quality ({cfg['aggregation']}, "
             f"{'+'.join(cfg['channels']) or '?'}, people {cfg['people']}, ties {cfg['ties']})")
    columns = ["character", "images", "relevant", "ignored", "found", *[f"P@{k}" for k in ks],
               *[f"R@{k}" for k in ks], "AP", "1st", "ann. found", "ann. AP", "ann. 1st"]
    rows = []
    for name, c in report["characters"].items():
        a = c["annotated"]
        rows.append([name, str(len(c["queries"])), str(c["relevant"]), str(c["ignored"]),
                     f"{c['found']}/{c['relevant']}",
                     *[_fmt(c["precision"][str(k)]) for k in ks], *[_fmt(c["recall"][str(k)]) for k in ks],
                     _fmt(c["ap"]), _rank(c["first_rank"]), f"{a['found']}/{a['relevant']}", _fmt(a["ap"]),
                     _rank(a["first_rank"])])
    summary = report["summary"]
    total = [f"mean ({summary['characters_scored']})", "", "", "", "",
             *[_fmt(summary["mean_precision"][str(k)]) for k in ks],
             *[_fmt(summary["mean_recall"][str(k)]) for k in ks],
             f"MAP {_fmt(summary['map'])}", f"≤3: {summary['first_in_top3']}", "",
             f"MAP {_fmt(summary['map_annotated'])}", f"≤3: {summary['annotated']['first_in_top3']}"]
    return QualityTable(title, columns, rows, total, frozenset({columns.index("AP"), columns.index("ann. AP")}))


# -- the precision–recall curves -----------------------------------------------------------------
@dataclass(frozen=True)
class PrCurve:
    """One character's precision–recall curve, per indexed shot, with the annotated view's
    interpolated curve beside it when that has an AP."""

    character: str
    movie: str
    aggregation: str
    ap: float
    found: int
    relevant: int
    interpolated: list[tuple[float, float]]  # (recall, interpolated precision), from recall 0
    points: list[tuple[float, float]]  # (recall, precision) after each relevant shot found
    annotated_ap: float | None = None
    annotated_interpolated: list[tuple[float, float]] | None = None


def pr_curves(evaluation: Evaluation) -> list[PrCurve]:
    """The curves of the characters that have an AP, in report order."""
    curves = []
    for name, r in evaluation.results.items():
        s, a = r.scores, r.annotated
        if s.ap is None:
            continue
        curves.append(PrCurve(
            character=name, movie=evaluation.info.name, aggregation=evaluation.request.aggregation, ap=s.ap,
            found=s.found, relevant=s.relevant, interpolated=s.interpolated_pr(), points=s.pr_points(),
            annotated_ap=a.ap, annotated_interpolated=a.interpolated_pr() if a.ap is not None else None))
    return curves
