"""Feedback that changes the answer: "not them" removes a shot and pushes its person's look-alikes
down, "that's them" adds the person's track to the query; the engine, the CLI and the bot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from castfinder.cli import main
from core import BadInputError, Engine, Feedback, Mark, Settings
from tests.media import make_video

# Shots as BGR colours: the tiny DINOv2 sees the query (RGB (200, 50, 30)) nearest the orange of
# "Bea" (shots 1 and 5), then the crimson of "Ann" (shot 3), and the rest far away.
BEA, ANN = (30, 115, 200), (115, 30, 200)
SEGMENTS = [(BEA, 30), ((200, 30, 30), 30), (ANN, 30), ((200, 200, 30), 30), (BEA, 30), ((120, 120, 120), 30)]
QUERY_RGB = (200, 50, 30)


def settings_for(index_dir: Path, dinov2: Path) -> Settings:
    return Settings(_env_file=None, index_dir=index_dir, detector="yolov8n.yaml", dinov2_model=str(dinov2),
                    device="cpu", det_imgsz=160, det_conf=0.0001, min_person_px=4, sample_fps=2,
                    channels=["dinov2"])


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory, tiny_dinov2: Path) -> tuple[Engine, Path]:
    """An engine with the six-shot film indexed as "Twins", and the query screenshot."""
    root = tmp_path_factory.mktemp("feedback")
    engine = Engine(settings_for(root / "indexes", tiny_dinov2))
    engine.index(make_video(root / "twins.mp4", SEGMENTS), "Twins")
    query = root / "query.png"
    Image.fromarray(np.full((96, 64, 3), QUERY_RGB, np.uint8)).save(query)
    return engine, query


def shots(response) -> list[int]:
    return [r.shot for r in response.results]


def test_the_film_is_what_the_feedback_tests_assume(film) -> None:
    engine, query = film
    ranking = shots(engine.search("Twins", [query], top=6))
    assert engine.movies()[0].shots == 6
    # Bea's two shots first, Ann's after them: the wrong person on top.
    assert set(ranking[:2]) == {1, 5} and ranking[2] == 3


def test_not_them_removes_the_shot_and_pushes_the_look_alike_down(film) -> None:
    engine, query = film
    before = engine.search("Twins", [query], top=6)
    top = before.results[0]
    after = engine.search("Twins", [query], top=6, feedback=Feedback(negatives=(Mark(top.shot_id, top.crop),)))
    ranking = shots(after)
    assert top.shot not in ranking
    other_bea = ({1, 5} - {top.shot}).pop()
    # Ann (shot 3) was under Bea's other shot; now above it.
    assert shots(before).index(other_bea) < shots(before).index(3)
    assert ranking[0] == 3 and ranking.index(other_bea) > ranking.index(3)
    assert len(ranking) == len(before.results) - 1


def test_that_s_them_adds_the_track_and_a_low_shot_rises(film) -> None:
    engine, query = film
    before = engine.search("Twins", [query], top=6)
    low = before.results[-1]
    after = engine.search("Twins", [query], top=6, feedback=Feedback(positives=(Mark(low.shot_id, low.crop),)))
    assert shots(after)[0] == low.shot and after.results[0].confidence > low.confidence
    # Nothing left the results: "that's them" adds, it does not remove.
    assert sorted(shots(after)) == sorted(shots(before))


def test_refine_from_the_stored_vectors_is_the_search_with_feedback(film) -> None:
    engine, query = film
    before = engine.search("Twins", [query], top=6)
    feedback = Feedback(positives=(Mark(before.results[-1].shot_id, before.results[-1].crop),),
                        negatives=(Mark(before.results[0].shot_id, before.results[0].crop),))
    # Through float16, as the bot stores them.
    stored = {name: v.astype(np.float16).astype(np.float32) for name, v in before.query_vectors.items()}
    refined = engine.refine("Twins", stored, feedback, top=6)
    direct = engine.search("Twins", [query], top=6, feedback=feedback)
    assert shots(refined) == shots(direct)


def test_marks_that_do_not_fit_the_index_are_refused(film) -> None:
    engine, query = film
    before = engine.search("Twins", [query], top=6)
    with pytest.raises(BadInputError, match="no shot 99"):
        engine.search("Twins", [query], feedback=Feedback(negatives=(Mark(99),)))
    r = before.results[0]
    other = next(x for x in before.results if x.shot_id != r.shot_id)
    with pytest.raises(BadInputError, match="older than the movie's index"):
        engine.refine("Twins", before.query_vectors, Feedback(negatives=(Mark(r.shot_id, other.crop),)))
    with pytest.raises(BadInputError, match="do not fit"):
        engine.refine("Twins", {"dinov2": np.ones((1, 7), np.float32)}, Feedback())


def test_cli_not_and_yes_apply_the_same_feedback(film, capsys, monkeypatch: pytest.MonkeyPatch,
                                                 tiny_dinov2: Path) -> None:
    engine, query = film
    for key, value in {"INDEX_DIR": str(engine.settings.index_dir), "DETECTOR": "yolov8n.yaml",
                       "DINOV2_MODEL": str(tiny_dinov2), "DET_IMGSZ": "160", "DEVICE": "cpu",
                       "CHANNELS": "dinov2"}.items():
        monkeypatch.setenv(f"CASTFINDER_{key}", value)
    assert main(["search", "--movie", "twins", "--top", "6", "--json", str(query)]) == 0
    before = [r["shot"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert main(["search", "--movie", "twins", "--top", "6", "--json", "--not", str(before[0]),
                 "--yes", str(before[-1]), str(query)]) == 0
    after = [r["shot"] for r in json.loads(capsys.readouterr().out)["results"]]
    expected = engine.search("Twins", [query], top=6, feedback=engine.feedback_for("Twins", yes=[before[-1]],
                                                                                     no=[before[0]]))
    assert after == shots(expected) and before[0] not in after and after[0] == before[-1]
    # A shot the movie does not have: one line, exit 1, no traceback.
    assert main(["search", "--movie", "twins", "--not", "42", str(query)]) == 1
    err = capsys.readouterr().err
    assert "no shot 42" in err and "Traceback" not in err
