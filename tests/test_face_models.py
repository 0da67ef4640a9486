"""The ONNX face pipeline (SCRFD → ArcFace alignment → EdgeFace), the OpenVINO re-id channel, and
the fusion refinements (body weights, propagation)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from core import ModelNotFoundError
from core.models.face_models import ARCFACE_TEMPLATE, FaceBox, align, assign_faces
from core.models.factory import make_channel
from core.search.calibration import Calibration
from core.search.fusion import expand, fuse, score_units
from core.store import ChannelSpec
from tests.conftest import DATA, WEIGHTS

SCRFD = WEIGHTS / "scrfd_2.5g_kps.onnx"
EDGEFACE = WEIGHTS / "edgeface_xs_q_fp32.onnx"
REID = WEIGHTS / "person-reidentification-retail-0277.xml"
GE_QUERIES = DATA / "goldeneye" / "queries"

needs_face_weights = pytest.mark.skipif(
    not (SCRFD.is_file() and EDGEFACE.is_file() and GE_QUERIES.is_dir()),
    reason=f"needs SCRFD and EdgeFace in {WEIGHTS} and the GoldenEye queries (only on the project's machines)",
)


def _image(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


# -- geometry, no weights needed -------------------------------------------------------------
def test_faces_go_to_the_person_whose_head_they_are() -> None:
    people = np.array([[0, 0, 100, 300], [80, 0, 200, 300], [300, 0, 400, 300]], float)
    head_left = FaceBox((30, 20, 70, 60), 0.9)
    head_middle = FaceBox((120, 30, 160, 70), 0.8)
    a_hand = FaceBox((330, 250, 360, 280), 0.95)  # low in the box: not where a head is
    got = assign_faces([head_left, head_middle, a_hand], people)
    assert got == {0: head_left, 1: head_middle}


def test_one_face_per_person_the_most_confident_first() -> None:
    people = np.array([[0, 0, 100, 300]], float)
    weak, strong = FaceBox((20, 20, 60, 60), 0.5), FaceBox((30, 25, 70, 65), 0.9)
    assert assign_faces([weak, strong], people) == {0: strong}


def test_alignment_puts_the_landmarks_on_the_arcface_template() -> None:
    image = np.full((400, 400, 3), 128, np.uint8)
    # A face twice the template's size, rotated by 20°, somewhere in the image.
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = (ARCFACE_TEMPLATE - 56) @ rot.T * 2 + [200, 180]
    # Mark the left eye: after alignment the mark sits where the template's left eye is.
    x, y = landmarks[0].round().astype(int)
    image[y - 2 : y + 3, x - 2 : x + 3] = [255, 0, 0]
    out = align(image, landmarks.astype(np.float32))
    assert out.shape == (112, 112, 3)
    red = np.argwhere((out[:, :, 0] > 200) & (out[:, :, 1] < 60) & (out[:, :, 2] < 60))
    assert np.abs(red.mean(axis=0)[::-1] - ARCFACE_TEMPLATE[0]).max() < 2.0


# -- the real models ------------------------------------------------------------------------
@needs_face_weights
def test_scrfd_finds_the_faces_in_the_queries(make_settings) -> None:
    channel = make_channel("face", f"{SCRFD}+{EDGEFACE}", make_settings(), "cpu")
    assert channel.dim == 512 and channel.per_frame
    queries = [*sorted(GE_QUERIES.glob("*.jpg")), DATA / "titanic" / "portrait_jack.jpg",
               DATA / "titanic" / "portrait_rose.jpg", DATA / "titanic" / "face_rose.jpg"]
    enc = channel.encode([_image(p) for p in queries])
    # Every query shows a face, the 160-px close-up of Rose that fills its frame included.
    assert enc.rows.tolist() == list(range(len(queries)))
    for (x1, y1, x2, y2), path in zip(enc.boxes, queries):
        w, h = _image(path).size
        assert -0.1 * w <= x1 < x2 <= 1.1 * w and -0.1 * h <= y1 < y2 <= 1.1 * h and x2 - x1 > 40
    assert channel.encode([Image.new("RGB", (200, 300), (128, 128, 128))]).rows.tolist() == []


@needs_face_weights
def test_edgeface_ranks_the_same_person_above_another(make_settings) -> None:
    channel = make_channel("face", f"{SCRFD}+{EDGEFACE}", make_settings(), "cpu")
    names = ["boris_1", "boris_2", "natalya_1", "natalya_2"]
    v = channel.encode([_image(GE_QUERIES / f"{n}.jpg") for n in names]).vectors
    sims = v @ v.T
    # boris_2 is the hooded one: still closer to boris_1 than to either natalya.
    assert sims[0, 1] > max(sims[0, 2], sims[0, 3], sims[1, 2], sims[1, 3])
    assert sims[2, 3] > max(sims[2, 0], sims[2, 1], sims[3, 0], sims[3, 1])
    jack, rose, rose_face = (_image(DATA / "titanic" / n)
                             for n in ("portrait_jack.jpg", "body_rose.jpg", "face_rose.jpg"))
    t = channel.encode([jack, rose, rose_face]).vectors
    assert float(t[1] @ t[2]) > float(t[0] @ t[2])


@needs_face_weights
def test_faces_are_found_once_per_frame_and_given_to_their_people(make_settings) -> None:
    channel = make_channel("face", f"{SCRFD}+{EDGEFACE}", make_settings(), "cpu")
    frame = np.asarray(_image(GE_QUERIES / "natalya_1.jpg"))
    h, w = frame.shape[:2]
    # Two frames: natalya's box, then the same frame with a box where nobody's head is and hers.
    people = [np.array([[0, 0, w, h]], float), np.array([[0, h * 0.8, 40, h], [0, 0, w, h]], float)]
    enc = channel.encode_frames([frame, frame], people)
    assert enc.rows.tolist() == [0, 2]  # people are numbered across frames
    assert float(enc.vectors[0] @ enc.vectors[1]) > 0.99


@pytest.mark.skipif(not (REID.is_file() and (DATA / "goldeneye" / "frames").is_dir()),
                    reason=f"needs {REID.name} and the GoldenEye frames")
def test_reid_0277_ranks_natalyas_crops_above_boriss(make_settings) -> None:
    pytest.importorskip("openvino", reason="openvino is not installed")
    from tests.conftest import PERSON_DETECTOR

    channel = make_channel("reid", str(REID), make_settings(), "cpu")
    assert channel.dim == 256 and channel.kind == "body"
    from core.models.detector import PersonDetector

    detector = PersonDetector(str(PERSON_DETECTOR), classes=[0, 1], conf=0.35, imgsz=640, batch=4, min_px=16,
                              device="cpu")

    def main_person(path: Path) -> Image.Image:
        image = _image(path)
        best = max(detector.detect([np.asarray(image)])[0],
                   key=lambda d: (d.bbox[2] - d.bbox[0]) * (d.bbox[3] - d.bbox[1]))
        return image.crop(tuple(int(v) for v in best.bbox))

    natalya = [main_person(GE_QUERIES / f"natalya_{i}.jpg") for i in (1, 2)]
    boris = [main_person(GE_QUERIES / f"boris_{i}.jpg") for i in (1, 2)]
    v = channel.encode([*natalya, *boris]).vectors
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert float(v[0] @ v[1]) > max(float(v[0] @ v[2]), float(v[0] @ v[3]))


def test_a_missing_reid_model_names_its_setting(make_settings, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="CASTFINDER_REID_MODEL"):
        make_channel("reid", str(tmp_path / "nothing.xml"), make_settings(), "cpu").load()


def test_dlib_detectors_cannot_feed_edgeface(make_settings) -> None:
    with pytest.raises(ModelNotFoundError, match="landmarks"):
        make_channel("face", "hog+edgeface_xs", make_settings(), "cpu").load()


# -- fusion refinements, on a tiny synthetic index ------------------------------------------
def _index(crop_shot, crop_track, faces, vectors=None):
    calib = Calibration(0.0, 0.1)  # z = similarity / 0.1; 50% at similarity 0.15
    return SimpleNamespace(
        crop_shot=np.array(crop_shot), crop_track=np.array(crop_track), face_box={i: (0, 0, 10, 10) for i in faces},
        channel={"reid": ChannelSpec(kind="body", dim=3, file="reid.faiss"),
                 "face": ChannelSpec(kind="face", dim=3, file="face.faiss")}.__getitem__,
        calibration={"reid": calib, "face": calib},
        vectors=lambda channel, ids: None if vectors is None else vectors[channel][np.asarray(ids)],
    )


def test_a_body_that_matches_nobody_in_the_film_counts_less_than_the_face() -> None:
    """A press photo: other clothes, so the body's best match anywhere is weak; the face is clear.
    Shot 1 holds the character (face matches), shot 2 a stranger with a slightly closer body."""
    index = _index([1, 2], [1, 2], faces=[0, 1])
    hits = {"reid": (np.array([[0.10, 0.02]]), np.array([[1, 0]])),
            "face": (np.array([[0.38, 0.0]]), np.array([[0, 1]]))}
    weighted = fuse(index, hits, use_tracks=True)
    plain = fuse(index, hits, use_tracks=True, weigh_bodies=False)
    assert weighted[0].shot_id == plain[0].shot_id == 1
    # Unweighted, the unconvincing body drags the face match down to a weak result.
    assert plain[0].confidence < 0.75 < weighted[0].confidence


def test_propagation_finds_the_back_view_and_stays_below_its_seed() -> None:
    """Shot 1: the character's face matches (seed). Shot 2: the same character from behind, whose
    stored body vector is near the seed's own but far from the query's. Shot 3: a stranger."""
    body = np.array([[1.0, 0, 0], [0.96, 0.28, 0], [0, 0, 1.0]], np.float32)
    index = _index([1, 2, 3], [1, 2, 3], faces=[0], vectors={"reid": body, "face": np.eye(3, dtype=np.float32)})
    hits = {"reid": (np.array([[0.2, 0.05, 0.04]]), np.array([[0, 2, 1]])),
            "face": (np.array([[0.6]]), np.array([[0]]))}
    first = score_units(index, hits, use_tracks=True)

    def search(channel, vectors):
        stored = body if channel == "reid" else np.eye(3, dtype=np.float32)[:1]
        sims = vectors @ stored.T
        order = np.argsort(-sims, axis=1)
        return np.take_along_axis(sims, order, 1), order

    second = expand(index, first, ["reid", "face"], search, use_tracks=True)
    seed, back, stranger = second.logits
    assert first.logits[1] < first.logits[2] + 1.0  # the back view was no better than a stranger
    assert back > stranger and back > first.logits[1]  # found through the seed's own views
    assert back <= seed - 1.0  # a second-round match never outranks its seed
    assert seed == first.logits[0]


def test_propagation_needs_a_confident_seed() -> None:
    index = _index([1, 2], [1, 2], faces=[], vectors={"reid": np.eye(2, dtype=np.float32)})
    hits = {"reid": (np.array([[0.12, 0.05]]), np.array([[0, 1]]))}  # confidence under 50%
    first = score_units(index, hits, use_tracks=True)
    calls = []
    second = expand(index, first, ["reid"], lambda c, v: calls.append(c) or (v[:, :1], np.zeros((len(v), 1), int)),
                    use_tracks=True)
    assert calls == [] and np.array_equal(second.logits, first.logits)


@pytest.mark.skipif(not SCRFD.is_file(), reason=f"needs {SCRFD}")
def test_a_face_detector_given_as_the_reid_model_is_refused_by_name(make_settings) -> None:
    with pytest.raises(ModelNotFoundError, match="not a re-id model") as err:
        make_channel("reid", str(SCRFD), make_settings(), "cpu").load()
    assert "not a re-id model" in str(err.value) and "CASTFINDER_REID_MODEL" in str(err.value)


@needs_face_weights
def test_scrfd_runs_a_wide_frame_at_its_own_shape_and_finds_the_same_faces() -> None:
    from core.models.face_models import ScrfdDetector

    free = ScrfdDetector(SCRFD).load()
    square = ScrfdDetector(SCRFD).load()
    square.session, square.free_size = free.session, False  # as the export ships: 640×640 only
    assert free.free_size and free.input_size(1280, 544, upscale=False)[0] == (640, 288)
    assert square.input_size(1280, 544)[0] == (640, 640)
    frames = sorted((DATA / "goldeneye" / "frames").glob("*.jpg"))[::6]
    found_free = found_square = 0
    for path in frames:
        rgb = np.asarray(_image(path))
        a, b = free.detect(rgb, upscale=False), square.detect(rgb)
        found_free, found_square = found_free + len(a), found_square + len(b)
        for face in a:  # each face found at 640×288 is one of the square pass's, in the same place
            size = face.box[2] - face.box[0]
            assert any(max(abs(u - v) for u, v in zip(face.box, other.box)) < 2 + 0.03 * size for other in b)
    assert found_square and found_free >= found_square - 1


@needs_face_weights
def test_faces_are_looked_for_around_the_heads_only_and_found_as_in_the_whole_frame(make_settings) -> None:
    import cv2

    from core.models.detector import PersonDetector
    from core.models.face_models import head_region
    from tests.conftest import PERSON_DETECTOR

    clip = DATA / "supernatural" / "supernatural_edit.mp4"
    if not (PERSON_DETECTOR.is_file() and clip.is_file()):
        pytest.skip(f"needs {PERSON_DETECTOR} and {clip}")
    encoder = make_channel("face", f"{SCRFD}+{EDGEFACE}", make_settings(), "cpu").encoder
    people = PersonDetector(str(PERSON_DETECTOR), classes=[0, 1], conf=0.35, imgsz=384, batch=4, min_px=16,
                            device="cpu")
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while (frame := cap.read()[1]) is not None:
        frames.append(frame)
    cropped = faces = 0
    for bgr in frames[::24]:  # a frame a second
        frame = np.ascontiguousarray(bgr[:, :, ::-1])
        boxes = np.array([d.bbox for d in people.detect([frame])[0]]).reshape(-1, 4)
        if not len(boxes):
            continue
        h, w = frame.shape[:2]
        x1, y1, x2, y2 = head_region(boxes, w, h)
        cropped += (x2 - x1) * (y2 - y1) < 0.9 * w * h
        whole = assign_faces(encoder._faces(frame, upscale=False, max_side=encoder.frame_px), boxes)
        near = assign_faces(encoder._frame_faces(frame, boxes), boxes)
        assert whole.keys() == near.keys()
        for k in whole:
            np.testing.assert_allclose(whole[k].landmarks, near[k].landmarks, atol=0.5)
        faces += len(whole)
    assert cropped >= 3 and faces >= 10  # the shortcut was taken, on frames with faces
