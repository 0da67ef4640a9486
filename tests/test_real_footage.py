"""Acceptance on real footage from ../shared with the real person detector (skipped elsewhere)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from castfinder.cli import main
from tests.conftest import DATA, GOLDENEYE_FRAMES, PERSON_DETECTOR, TITANIC, WEIGHTS, requires_shared

pytestmark = [requires_shared, pytest.mark.shared]
TITANIC_FPS = 24000 / 1001


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_dinov2: Path) -> Path:
    index_dir = tmp_path / "indexes"
    monkeypatch.setenv("CASTFINDER_INDEX_DIR", str(index_dir))
    monkeypatch.setenv("CASTFINDER_DETECTOR", str(PERSON_DETECTOR))
    monkeypatch.setenv("CASTFINDER_PERSON_CLASSES", "0,1")
    monkeypatch.setenv("CASTFINDER_DINOV2_MODEL", str(tiny_dinov2))
    monkeypatch.setenv("CASTFINDER_DEVICE", "cpu")
    # The product's default channels (faces + body re-id), from the real weights.
    monkeypatch.setenv("CASTFINDER_MODELS_DIR", str(WEIGHTS))
    return index_dir


def _titanic_truth() -> list[tuple[int, int, int]]:
    with open(DATA / "titanic" / "ground_truth.csv") as fh:
        rows = {(int(r["shot"]), int(r["start_frame"]), int(r["end_frame"])) for r in csv.DictReader(fh)}
    return sorted(rows)


@pytest.mark.slow
def test_titanic_clip_is_cut_into_its_three_shots_and_search_finds_them(cli_env: Path, capsys) -> None:
    assert main(["index", str(TITANIC), "--movie", "Titanic", "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shots"] == 3 and report["persons_detected"] > 0
    truth = _titanic_truth()

    assert main(["search", "--movie", "titanic", "--top", "5", "--json",
                 str(DATA / "titanic" / "body_jack.jpg"), str(DATA / "titanic" / "body_rose.jpg")]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)  # exactly one JSON object on stdout
    assert data["movie"] == "Titanic"
    # Both characters are in every shot, so all three come back (five asked for, three exist), in
    # the order of how well they can be seen: shot 1 is a close-up of their faces, shot 3 shows them
    # whole at the bow, shot 2 only tiny, far off (the ground truth's own note).
    assert [r["shot"] for r in data["results"]] == [1, 3, 2]
    assert [r["rank"] for r in data["results"]] == [1, 2, 3]
    assert data["results"][0]["score"] > data["results"][1]["score"] > data["results"][2]["score"]
    found = {r["shot"]: r for r in data["results"]}
    two_frames = 2 / TITANIC_FPS
    for shot, start_frame, end_frame in truth:
        r = found[shot]
        assert r["start_s"] == pytest.approx(start_frame / TITANIC_FPS, abs=two_frames)
        assert r["end_s"] == pytest.approx((end_frame + 1) / TITANIC_FPS, abs=two_frames)
        assert r["start_s"] <= r["frame_s"] < r["end_s"]
        assert r["scene"] is None and Path(r["thumbnail"]).is_file()
        x1, y1, x2, y2 = r["bbox"]
        assert 0 <= x1 < x2 <= 426 and 0 <= y1 < y2 <= 240


@pytest.mark.slow
def test_goldeneye_frames_folder_keeps_its_22_shot_ids(cli_env: Path, capsys) -> None:
    assert main(["index", str(GOLDENEYE_FRAMES), "--movie", "GoldenEye (1995)", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["movies", "--json"]) == 0
    [movie] = json.loads(capsys.readouterr().out)["movies"]
    assert (movie["name"], movie["slug"], movie["shots"]) == ("GoldenEye (1995)", "goldeneye-1995", 22)
    # Every one of the 66 frames is sampled: detected, or skipped as the same picture as the last.
    counts = json.loads((Path(movie["path"]) / "manifest.json").read_text())["counts"]
    assert movie["frames"] == counts["frames_sampled"] and counts["frames_sampled"] + counts["frames_still"] == 66
    import sqlite3

    db = sqlite3.connect(Path(movie["path"]) / "meta.sqlite")
    rows = db.execute("SELECT scene, number, start_frame, end_frame, start_s, end_s FROM shots ORDER BY id").fetchall()
    expected_order = sorted(range(1, 23))
    assert [r[1] for r in rows] == expected_order and {r[0] for r in rows} == {1}
    for i, (_, _, a, b, s, e) in enumerate(rows):
        assert (a, b) == (3 * i, 3 * i + 2)
        assert (s, e) == pytest.approx((3 * i / 5, (3 * i + 3) / 5))

    assert main(["search", "--movie", "golden", "--top", "22", "--json",
                 str(DATA / "goldeneye" / "queries" / "natalya_1.jpg")]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert results and all(r["scene"] == 1 and 1 <= r["shot"] <= 22 for r in results)
    assert len({r["shot"] for r in results}) == len(results)


def test_variable_frame_rate_video_gets_presentation_timestamps(cli_env: Path, capsys) -> None:
    video = DATA / "goldeneye" / "goldeneye_10s_vfr.mp4"
    assert main(["index", str(video), "--movie", "GoldenEye VFR", "--fps", "1", "--quiet"]) == 0
    capsys.readouterr()
    from core import Engine, Settings

    index = Engine(Settings(), load_models=False).open_index("goldeneye vfr")
    shots = sorted(index.shots.values(), key=lambda s: s.id)
    assert len(shots) == 3
    # Cuts near 3.75 s and 8.76 s; frame-count / average-fps arithmetic would put them elsewhere.
    assert shots[1].start_s == pytest.approx(3.754, abs=0.09)
    assert shots[2].start_s == pytest.approx(8.759, abs=0.09)
    assert shots[2].end_s == pytest.approx(9.968, abs=0.09)
