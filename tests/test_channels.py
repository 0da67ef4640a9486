"""Re-id and face channels, tracks, calibration and fusion."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import Engine, ModelNotFoundError
from core.indexing.tracks import ShotTracker
from core.models.factory import make_channel
from core.search.calibration import Calibration, fit
from tests.conftest import DATA, WEIGHTS, requires_shared

OSNET = WEIGHTS / "osnet_x0_25_msmt17.onnx"
YUNET = WEIGHTS / "face_detection_yunet.onnx"


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_a_person_walking_through_a_shot_keeps_one_track() -> None:
    tracker = ShotTracker(itertools.count(10))
    look = _unit([1, 0, 0])
    ids = [tracker.update(np.array([[10.0 + 15 * i, 10, 60 + 15 * i, 110]]), look[None])[0] for i in range(5)]
    assert ids == [10] * 5


def test_two_people_crossing_keep_their_own_tracks() -> None:
    tracker = ShotTracker()
    a, b = _unit([1, 0, 0]), _unit([0, 1, 0])
    first = tracker.update(np.array([[0.0, 0, 50, 100], [100, 0, 150, 100]]), np.stack([a, b]))
    # They meet in the middle: the boxes overlap both old boxes equally; appearance decides.
    second = tracker.update(np.array([[48.0, 0, 98, 100], [52, 0, 102, 100]]), np.stack([b, a]))
    assert second == [first[1], first[0]]


def test_a_track_survives_a_missed_detection_but_not_a_long_absence() -> None:
    tracker = ShotTracker()
    box, look = np.array([[0.0, 0, 50, 100]]), _unit([1, 0])[None]
    first = tracker.update(box, look)[0]
    tracker.update(np.zeros((0, 4)), None)
    assert tracker.update(box, look)[0] == first
    for _ in range(4):
        tracker.update(np.zeros((0, 4)), None)
    assert tracker.update(box, look)[0] != first


def test_calibration_learns_different_people_from_side_by_side_boxes() -> None:
    rng = np.random.default_rng(0)
    people = [_unit(rng.normal(size=16)) for _ in range(6)]
    vectors, frames, boxes = [], [], []
    for frame in range(40):
        a, b = rng.choice(6, 2, replace=False)
        for k, person in enumerate((a, b)):
            vectors.append(_unit(people[person] + 0.1 * rng.normal(size=16)))
            frames.append(frame)
            boxes.append([k * 100, 0, k * 100 + 50, 100])
        # The detector's double box around the first person: same identity, must not count.
        vectors.append(_unit(people[a] + 0.05 * rng.normal(size=16)))
        frames.append(frame)
        boxes.append([5, 5, 45, 95])
    calib = fit(np.stack(vectors), np.array(frames), np.array(boxes, float), np.zeros(len(frames), int))
    assert calib.negatives == 80  # two side-by-side pairs per frame; the overlapping double box is left out
    same = float(_unit(people[0] + 0.1 * rng.normal(size=16)) @ _unit(people[0] + 0.1 * rng.normal(size=16)))
    other = float(people[0] @ people[1])
    assert calib.z(same) > 3 and abs(calib.z(other)) < 3
    assert calib.confidence(same) > 0.9 and calib.confidence(other) < 0.5


def test_defaults_when_a_movie_has_too_few_pairs() -> None:
    calib = fit(np.eye(3, dtype=np.float32), np.arange(3), np.zeros((3, 4)), np.zeros(3, int))
    assert calib == Calibration(0.5, 0.15, negatives=0)
    assert Calibration.from_json(calib.to_json()) == calib


def test_missing_osnet_and_face_models_name_their_settings(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    with pytest.raises(ModelNotFoundError, match="CASTFINDER_OSNET_MODEL"):
        make_channel("osnet", str(tmp_path / "osnet.onnx"), settings, "cpu").load()
    with pytest.raises(ModelNotFoundError, match="CASTFINDER_FACE_DETECTOR"):
        make_channel("face", str(tmp_path / "yunet.onnx"), settings, "cpu").load()


def test_dlib_face_channel_embeds_faces_and_skips_crops_without_one(make_settings) -> None:
    pytest.importorskip("dlib", reason="the face extra (dlib-bin) is not installed")
    portrait = DATA / "titanic" / "portrait_rose.jpg"
    if not portrait.is_file():
        pytest.skip(f"needs {portrait}")
    channel = make_channel("face", "hog", make_settings(), "cpu")
    blank = Image.new("RGB", (200, 300), (128, 128, 128))
    rose = Image.open(portrait).convert("RGB")
    enc = channel.encode([blank, rose, rose.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    assert enc.rows.tolist() == [1, 2] and enc.vectors.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(enc.vectors, axis=1), 1, atol=1e-5)
    assert float(enc.vectors[0] @ enc.vectors[1]) > 0.9  # a mirrored face is the same person
    x1, y1, x2, y2 = enc.boxes[0]
    assert 0 <= x1 < x2 <= rose.width and 0 <= y1 < y2 <= rose.height


@requires_shared
def test_osnet_tells_people_apart(make_settings) -> None:
    channel = make_channel("osnet", str(OSNET), make_settings(), "cpu")
    assert channel.dim == 512
    jack = Image.open(DATA / "titanic" / "body_jack.jpg").convert("RGB")
    rose = Image.open(DATA / "titanic" / "body_rose.jpg").convert("RGB")
    v = channel.encode([jack, jack.transpose(Image.Transpose.FLIP_LEFT_RIGHT), rose]).vectors
    assert float(v[0] @ v[1]) > float(v[0] @ v[2])


@pytest.fixture(scope="module")
def goldeneye_fused(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """GoldenEye frames indexed with the real detector, OSNet and faces (YuNet + dlib)."""
    pytest.importorskip("dlib", reason="the face extra (dlib-bin) is not installed")
    from tests.conftest import GOLDENEYE_FRAMES, PERSON_DETECTOR, real_detector_settings

    if not (PERSON_DETECTOR.is_file() and OSNET.is_file() and YUNET.is_file() and GOLDENEYE_FRAMES.is_dir()):
        pytest.skip(f"needs the real footage and weights in {WEIGHTS.parent}")
    settings = real_detector_settings(tmp_path_factory.mktemp("fused"), Path("unused"), channels=["osnet", "face"],
                                      osnet_model=str(OSNET), face_detector=str(YUNET))
    engine = Engine(settings)
    engine.index(GOLDENEYE_FRAMES, "GoldenEye")
    return engine


def _ranking(engine: Engine, character: str, **kw) -> list[int]:
    queries = sorted((DATA / "goldeneye" / "queries").glob(f"{character}_*.jpg"))
    return [r.shot for r in engine.search("goldeneye", queries, top=22, **kw).results]


@pytest.mark.slow
def test_fused_channels_find_natalya_before_anyone_else(goldeneye_fused: Engine) -> None:
    natalya = {3, 5, 7, 9, 11, 17}
    ranking = [s for s in _ranking(goldeneye_fused, "natalya") if s != 13]  # 13 is ambiguous: ignored
    assert set(ranking[:6]) == natalya
    index = goldeneye_fused.open_index("goldeneye")
    assert set(index.info.channels) == {"osnet", "face"}
    assert index.face_box  # faces were found and stored with their boxes


@pytest.mark.slow
def test_each_channel_can_be_searched_alone(goldeneye_fused: Engine) -> None:
    face = goldeneye_fused.search("goldeneye", [DATA / "goldeneye" / "queries" / "natalya_1.jpg"], top=5,
                                  channels=["face"])
    assert face.results and face.results[0].shot in {3, 5, 7, 9, 11, 17}
    body = goldeneye_fused.search("goldeneye", [DATA / "goldeneye" / "queries" / "natalya_1.jpg"], top=5,
                                  channels=["osnet"], aggregation="rrf")
    assert body.results and body.aggregation == "rrf"
    from core import BadInputError

    with pytest.raises(BadInputError, match="no 'clip' channel"):
        goldeneye_fused.search("goldeneye", [DATA / "goldeneye" / "queries" / "natalya_1.jpg"], channels=["clip"])
    with pytest.raises(BadInputError, match="one channel"):
        goldeneye_fused.search("goldeneye", [DATA / "goldeneye" / "queries" / "natalya_1.jpg"], aggregation="rrf")


def test_a_face_match_lifts_the_whole_track() -> None:
    """Crop 0 shows the face (body seen badly), crop 1 the same person from behind; shot 2 holds a
    stranger whose body looks a bit more alike than the back view."""
    from types import SimpleNamespace

    from core.search.fusion import fuse
    from core.store import ChannelSpec

    calib = Calibration(0.0, 0.1)  # z = similarity / 0.1
    index = SimpleNamespace(
        crop_shot=np.array([1, 1, 2]), crop_track=np.array([7, 7, 8]), face_box={0: (0, 0, 10, 10)},
        channel={"osnet": ChannelSpec(kind="body", dim=3, file="osnet.faiss"),
                 "face": ChannelSpec(kind="face", dim=3, file="face.faiss")}.__getitem__,
        calibration={"osnet": calib, "face": calib},
    )
    hits = {"osnet": (np.array([[0.26, 0.15, 0.05]]), np.array([[2, 1, 0]])),
            "face": (np.array([[0.4]]), np.array([[0]]))}
    by_crop = fuse(index, hits, use_tracks=False, weigh_bodies=False)
    by_track = fuse(index, hits, use_tracks=True, weigh_bodies=False)
    assert [f.shot_id for f in by_crop] == [2, 1]
    assert [f.shot_id for f in by_track] == [1, 2]
    assert by_track[0].best_crop == 1  # located at the body's best view of the person
    assert by_track[0].confidence == pytest.approx(1 / (1 + np.exp(-((2 * 1.5 - 3) + (2 * 4 - 3)) / 2)))


@pytest.mark.slow
def test_the_hooded_query_finds_boris_first_and_confidently(goldeneye_fused: Engine) -> None:
    with_tracks = goldeneye_fused.search("goldeneye", [DATA / "goldeneye" / "queries" / "boris_2.jpg"], top=22)
    assert with_tracks.results[0].confidence > 0.5 and not with_tracks.results[0].low_confidence
    boris = {3, 5, 7, 9, 11, 13, 15, 17, 18, 19, 21}
    assert with_tracks.results[0].shot in boris  # the hooded query still finds him first
