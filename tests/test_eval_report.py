"""core.evaluation's harness and report without models: a scripted engine returns fixed rankings,
and the report's numbers, table rows, curves and plot names are checked by hand."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from core import BadInputError, Settings, Shot
from core.evaluation import load_ground_truth
from core.evaluation.harness import EvalRequest, evaluate, plan
from core.evaluation.plots import plot_name
from core.evaluation.report import build_report, pr_curves, quality_table
from core.store.layout import FORMAT_VERSION
from core.store.manifest import ChannelSpec, Manifest
from core.types import MovieInfo, SearchResponse, ShotResult

SHOTS = [Shot(i, i, None, 25 * (i - 1), 25 * i - 1, float(i - 1), float(i)) for i in range(1, 5)]
INFO = MovieInfo(slug="heat", name="Heat", path=Path("/indexes/heat"), duration_s=4.0, shots=4, frames=8, vectors=8,
                 embedder="dinov2", embedder_model="tiny", dim=32, source="heat.mp4", built_at="2024-01-01T00:00:00",
                 build_id="b1")
# navy is in shots 1 and 3, shot 2 is ambiguous; red has only an ambiguous shot (no AP); ghost has no images.
GROUND_TRUTH = "character,shot,label\nnavy,1,1\nnavy,3,1\nnavy,2,-1\nred,4,-1\nghost,2,1\n"
RANKINGS = {"navy": [2, 3, 4, 1], "red": [4, 1, 2, 3]}


class ScriptedEngine:
    """Answers each character's search with its fixed ranking, scores falling by rank."""

    def __init__(self) -> None:
        self.settings = Settings(_env_file=None, channels=["dinov2"])
        self.calls: list[dict] = []

    def search(self, movie, queries, *, top, aggregation, channels) -> SearchResponse:
        queries = list(queries)
        character = Path(queries[0].image).name.split("_")[0].lower()
        self.calls.append({"character": character, "top": top, "aggregation": aggregation, "channels": channels,
                           "select": {q.select for q in queries}})
        results = [ShotResult(rank=rank, shot=shot, shot_id=shot, scene=None, start_s=shot - 1.0, end_s=float(shot),
                              score=1.0 - rank / 10, thumbnail="", frame_s=shot - 0.5, bbox=(0.0, 0.0, 1.0, 1.0),
                              similarity=0.9 - rank / 10, confidence=0.8, low_confidence=False)
                   for rank, shot in enumerate(RANKINGS[character][:top], start=1)]
        return SearchResponse(movie="Heat", slug="heat", results=results, query_crops=len(queries),
                              whole_image_queries=0, aggregation=aggregation, elapsed_s=0.01)


@pytest.fixture
def run(tmp_path: Path):
    gt = tmp_path / "gt.csv"
    gt.write_text(GROUND_TRUTH)
    truth = load_ground_truth(gt, SHOTS)
    folder = tmp_path / "queries"
    queries = {"Navy": [folder / "Navy_1.png", folder / "Navy_2.png"], "red": [folder / "red_1.png"],
               "blue": [folder / "blue_1.png"]}
    manifest = Manifest(name="Heat", embedder="dinov2", channels={"dinov2": ChannelSpec(dim=4, file="dinov2.faiss")},
                        format=FORMAT_VERSION, complete=True, slug="heat", build_id="b1")
    index = SimpleNamespace(shots={s.id: s for s in SHOTS}, manifest=manifest)
    request = EvalRequest(ground_truth=gt, queries=folder, top=2, aggregation="max", ties="order")
    engine = ScriptedEngine()
    steps: list[tuple[int, str | None]] = []
    planned = plan(queries, truth, folder)
    evaluation = evaluate(engine, INFO, index, truth, queries, planned, request,  # a scripted engine and index
                          progress=lambda done, name: steps.append((done, name)))
    return SimpleNamespace(evaluation=evaluation, engine=engine, steps=steps, planned=planned, folder=folder)


def test_plan_pairs_images_with_ground_truth_and_says_what_is_left_out(run) -> None:
    assert [(c.name, len(c.images)) for c in run.planned.characters] == [("navy", 2), ("red", 1)]
    assert "blue: query images but no ground truth; not scored." in run.planned.warnings
    assert f"ghost: ground truth but no query images in {run.folder}; not scored." in run.planned.warnings
    truth = run.evaluation.truth
    with pytest.raises(BadInputError, match="No character has both query images and ground truth"):
        plan({"blue": [Path("blue_1.png")]}, truth, run.folder)


def test_each_character_is_searched_once_for_the_whole_index(run) -> None:
    assert run.engine.calls == [
        {"character": "navy", "top": 4, "aggregation": "max", "channels": None, "select": {"main"}},
        {"character": "red", "top": 4, "aggregation": "max", "channels": None, "select": {"main"}},
    ]
    assert run.steps == [(0, "navy"), (1, None), (1, "red"), (2, None)]


def test_the_report_scores_the_rankings(run) -> None:
    report = build_report(run.evaluation, command="castfinder eval …", argv=None, plots={}, elapsed_s=1.5)
    assert list(report) == ["format", "movie", "command", "argv", "config", "ground_truth", "queries", "characters",
                            "summary", "warnings", "plots", "evaluated_at", "elapsed_s"]
    assert json.loads(json.dumps(report)) == report
    assert report["config"]["channels"] == ["dinov2"]  # the index's channels, from its manifest
    assert report["config"]["index_manifest"]["build_id"] == "b1"
    navy, red = report["characters"]["navy"], report["characters"]["red"]
    # navy: 2 (ignored, takes no rank), 3 ✓, 4, 1 ✓ → AP = (1/1 + 2/3) / 2
    assert navy["ap"] == pytest.approx(0.8333, abs=1e-4) and navy["first_rank"] == 1
    assert navy["precision"] == {"2": 0.5, "5": 0.4, "10": 0.2, "20": 0.1}
    assert (navy["relevant"], navy["ignored"], navy["ignored_retrieved"], navy["retrieved"]) == (2, 1, 1, 3)
    assert [(r["shot"], r["label"]) for r in navy["ranking"]] == [(2, "ignored"), (3, "relevant")]  # --top 2
    assert navy["relevant_shots"] == ["1", "3"] and navy["missed"] == []
    assert navy["annotated"]["ap"] == navy["ap"]  # shots named by id: both views agree
    assert red["ap"] is None and red["recall"]["5"] is None
    assert any(w.startswith("red: no relevant shot") for w in report["warnings"])
    summary = report["summary"]
    assert summary["map"] == navy["ap"] and summary["characters_scored"] == 1 and summary["first_in_top3"] == 1
    assert summary["annotated"]["map"] == summary["map_annotated"] == navy["ap"]
    assert report["config"]["channels"] == ["dinov2"] and report["config"]["ks"] == [2, 5, 10, 20]
    assert report["ground_truth"]["indexed_to_annotated"] == {"1": "1", "2": "2", "3": "3", "4": "4"}
    assert report["queries"]["characters"]["Navy"][0].endswith("Navy_1.png")


def test_the_table_rows_and_the_curves(run) -> None:
    report = build_report(run.evaluation, command="", argv=None, plots={}, elapsed_s=0.0)
    table = quality_table(report)
    assert table.title == "Heat: retrieval quality (max, dinov2, people main, ties order)"
    assert table.columns[:7] == ["character", "images", "relevant", "ignored", "found", "P@2", "P@5"]
    navy, red = table.rows
    assert navy[:6] == ["navy", "2", "2", "1", "2/2", "0.500"] and navy[table.columns.index("AP")] == "0.833"
    assert red[table.columns.index("AP")] == "–" and red[table.columns.index("1st")] == "–"
    assert all(len(row) == len(table.columns) for row in (*table.rows, table.total))
    assert {table.total[i] for i in table.total_emphasis} == {"MAP 0.833"}
    [curve] = pr_curves(run.evaluation)  # red has no AP: no curve
    assert curve.character == "navy" and curve.ap == pytest.approx(5 / 6)
    assert curve.points == [(0.5, 1.0), (1.0, pytest.approx(2 / 3))]
    assert curve.interpolated[0] == (0.0, 1.0) and curve.annotated_ap == pytest.approx(5 / 6)


def test_plot_names_are_safe_and_distinct() -> None:
    assert plot_name("yel[low]", {}) == "yel_low"
    assert plot_name("...", {}) == "character"
    assert plot_name("a/b", {"a:b": "/plots/a_b_pr.png"}) == "a_b-2"
