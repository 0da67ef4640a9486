"""The real loading code, on tiny random models built from configs (nothing is downloaded)."""

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch
from PIL import Image

from core import ModelNotFoundError
from core.models.base import InferenceModel
from core.models.channels import Channel, Encoded
from core.models.detector import PersonDetector
from core.models.embedders import ClipEmbedder, Dinov2Embedder, make_embedder
from tests.conftest import GOLDENEYE_FRAMES, PERSON_DETECTOR, requires_shared


def _crops(n: int = 5) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 255, (80 + 7 * i, 40 + 3 * i, 3), dtype=np.uint8)) for i in range(n)]


def test_dinov2_embeds_the_mean_of_the_last_hidden_state_normalised(tiny_dinov2: Path) -> None:
    from transformers import AutoImageProcessor, AutoModel

    emb = make_embedder("dinov2", str(tiny_dinov2), device="cpu", batch=2)
    assert isinstance(emb, Dinov2Embedder) and emb.dim == 32
    crops = _crops()
    vectors = emb.embed(crops)
    assert vectors.shape == (5, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Independent reference computation with plain transformers.
    proc, model = AutoImageProcessor.from_pretrained(tiny_dinov2), AutoModel.from_pretrained(tiny_dinov2).eval()
    with torch.no_grad():
        ref = model(**proc(images=crops, return_tensors="pt")).last_hidden_state.mean(dim=1).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, ref, atol=1e-4)


def test_clip_embeds_the_projected_image_embedding(tiny_clip: Path) -> None:
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    emb = make_embedder("clip", str(tiny_clip), device="cpu", batch=3)
    assert isinstance(emb, ClipEmbedder) and emb.dim == 24
    crops = _crops(4)
    vectors = emb.embed(crops)
    proc = CLIPImageProcessor.from_pretrained(tiny_clip)
    model = CLIPVisionModelWithProjection.from_pretrained(tiny_clip).eval()
    with torch.no_grad():
        ref = model(**proc(images=crops, return_tensors="pt")).image_embeds.numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, ref, atol=1e-4)


def test_identical_crops_embed_identically_and_batches_do_not_matter(tiny_dinov2: Path) -> None:
    crops = _crops(3)
    one = make_embedder("dinov2", str(tiny_dinov2), device="cpu", batch=1).embed(crops)
    many = make_embedder("dinov2", str(tiny_dinov2), device="cpu", batch=8).embed(crops + [crops[0]])
    np.testing.assert_allclose(one, many[:3], atol=1e-5)
    np.testing.assert_allclose(many[0], many[3], atol=1e-6)


@pytest.mark.parametrize(("kind", "setting"),
                         [("dinov2", "CASTFINDER_DINOV2_MODEL"), ("clip", "CASTFINDER_CLIP_MODEL")])
def test_a_missing_embedding_model_names_the_setting(tmp_path: Path, kind: str, setting: str) -> None:
    with pytest.raises(ModelNotFoundError, match=setting):
        make_embedder(kind, str(tmp_path / "absent"), device="cpu", batch=1).load()
    # A hub id that is not in the cache, offline: the same clear error, not a traceback.
    with pytest.raises(ModelNotFoundError, match=setting):
        make_embedder(kind, "castfinder-tests/no-such-model", device="cpu", batch=1).load()


def _detector(model: str, **kw) -> PersonDetector:
    args = dict(classes=[0], conf=0.01, imgsz=160, batch=2, min_px=1, device="cpu")
    args.update(kw)
    return PersonDetector(model, **args).load()


def test_a_random_yolo_from_its_yaml_runs_batched() -> None:
    # A random YOLO's head starts with class probabilities near 1.6e-4 (its bias prior, whatever the
    # seed): at conf 1e-4 it proposes boxes on any picture, so every check below runs on real boxes.
    torch.manual_seed(0)
    det = _detector("yolov8n.yaml", conf=1e-4)
    rng = np.random.default_rng(0)
    # Two frames of one size (one batch of 2), then two of other sizes (each its own call).
    images = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in ((120, 200, 3), (120, 200, 3), (90, 90, 3))]
    images.append(np.zeros((64, 64, 3), np.uint8))
    out = det.detect(images)
    assert len(out) == 4 and all(out)
    for dets, img in zip(out, images):
        height, width = img.shape[:2]
        for d in dets:
            x1, y1, x2, y2 = d.bbox
            assert 1e-4 <= d.score <= 1 and 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    # A batch finds what the frames find one at a time.
    for batched, image in zip(out, images):
        [alone] = det.detect([image])
        assert len(alone) == len(batched)
        np.testing.assert_allclose([d.bbox for d in alone], [d.bbox for d in batched], atol=1e-3)
    # People too small to identify (under min_px on their short side) are dropped.
    big = _detector("yolov8n.yaml", conf=1e-4, min_px=100).detect(images)
    assert big[0] and all(min(d.bbox[2] - d.bbox[0], d.bbox[3] - d.bbox[1]) >= 100 for d in big[0])
    assert big[3] == []


def test_a_missing_detector_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="CASTFINDER_DETECTOR"):
        _detector(str(tmp_path / "people.pt"))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelNotFoundError, match="CASTFINDER_DETECTOR"):
        _detector(str(broken))


def test_person_classes_the_detector_does_not_have_are_refused() -> None:
    with pytest.raises(ModelNotFoundError, match="CASTFINDER_PERSON_CLASSES"):
        _detector("yolov8n.yaml", classes=[0, 400])


# --- the detector's runtime ---------------------------------------------------------------------

@pytest.fixture
def tiny_pt(tmp_path: Path, monkeypatch) -> Path:
    """A random YOLOv8n saved as a .pt file in a writable folder; the user cache is private."""
    from ultralytics import YOLO

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch.manual_seed(0)
    path = tmp_path / "weights" / "people.pt"
    path.parent.mkdir()
    YOLO("yolov8n.yaml").save(str(path))
    return path


def _exports(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*_openvino_model")) if folder.is_dir() else []


def test_a_pt_detector_runs_through_openvino_on_the_cpu_and_finds_the_same_people(tiny_pt: Path) -> None:
    image = np.random.default_rng(0).integers(0, 255, (240, 426, 3), dtype=np.uint8)
    torch_det = _detector(str(tiny_pt), runtime="torch", conf=1e-4)
    ov_det = _detector(str(tiny_pt), conf=1e-4)  # auto on the CPU
    assert (torch_det.runtime, ov_det.runtime) == ("torch", "openvino")
    [exported] = _exports(tiny_pt.parent)  # beside the weights, named by their checksum
    from core.models.registry import sha256_of

    assert exported == f"people-{sha256_of(tiny_pt)[:16]}_openvino_model"
    ours, theirs = ov_det.detect([image])[0], torch_det.detect([image])[0]
    assert ours and len(ours) == len(theirs)
    np.testing.assert_allclose([d.bbox for d in ours], [d.bbox for d in theirs], atol=1.0)
    # The export is made once: a second detector loads it as it is.
    stamp = (tiny_pt.parent / exported).stat().st_mtime_ns
    assert _detector(str(tiny_pt)).runtime == "openvino"
    assert (tiny_pt.parent / exported).stat().st_mtime_ns == stamp and len(_exports(tiny_pt.parent)) == 1


def test_changed_weights_are_exported_again_and_a_read_only_folder_uses_the_cache(tiny_pt: Path,
                                                                               tmp_path: Path) -> None:
    from ultralytics import YOLO

    torch.manual_seed(1)
    YOLO("yolov8n.yaml").save(str(tiny_pt))  # other weights under the same name
    tiny_pt.parent.chmod(0o555)
    try:
        assert _detector(str(tiny_pt)).runtime == "openvino"
    finally:
        tiny_pt.parent.chmod(0o755)
    assert _exports(tiny_pt.parent) == []  # a read-only models folder is left as it is
    assert len(_exports(tmp_path / "cache" / "castfinder" / "models" / "exports")) == 1


def test_a_failed_export_falls_back_to_pytorch_unless_openvino_was_asked_for(tiny_pt: Path, monkeypatch,
                                                                            caplog) -> None:
    import core.models.detector

    def broken(weights: Path) -> Path:
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(core.models.detector, "openvino_export", broken)
    with caplog.at_level("WARNING"):
        det = _detector(str(tiny_pt))
    assert det.runtime == "torch" and "stays on PyTorch" in caplog.text and "converter crashed" in caplog.text
    assert det.detect([np.zeros((64, 64, 3), np.uint8)]) is not None
    with pytest.raises(ModelNotFoundError, match="CASTFINDER_DET_RUNTIME"):
        _detector(str(tiny_pt), runtime="openvino")
    with pytest.raises(ModelNotFoundError, match="CASTFINDER_DET_RUNTIME"):
        _detector("yolov8n.yaml", runtime="openvino")  # a config has no weights to export


def test_the_inference_size_follows_the_frame_up_to_the_cap() -> None:
    from core.models.detector import inference_size

    assert inference_size((240, 426, 3), 640) == 448  # a small frame is not blown up to 640
    assert inference_size((720, 1280, 3), 640) == 640
    assert inference_size((720, 1280, 3), 384) == 384
    assert inference_size((544, 1280, 3), 500) == 480  # the cap itself is a multiple of 32
    assert inference_size((20, 30, 3), 640) == 32


def test_a_cached_export_runs_without_torch_or_ultralytics(tiny_pt: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    _detector(str(tiny_pt))  # exports once
    code = (
        "import sys, numpy as np\n"
        "from core.models.detector import PersonDetector\n"
        f"d = PersonDetector({str(tiny_pt)!r}, classes=[0], conf=0.01, imgsz=160, batch=2, min_px=1, device='cpu')\n"
        "d.detect([np.zeros((90, 160, 3), np.uint8)])\n"
        "print(d.runtime, 'torch' in sys.modules, 'ultralytics' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ},
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["openvino", "False", "False"]


@requires_shared
def test_the_real_detector_finds_the_boxes_ultralytics_finds_on_film_frames() -> None:
    from ultralytics import YOLO

    from core.models.detector import cached_export, inference_size

    det = PersonDetector(str(PERSON_DETECTOR), classes=[0, 1], conf=0.35, imgsz=384, batch=8, min_px=1,
                         device="cpu").load()
    assert det.runtime == "openvino"
    reference = YOLO(str(cached_export(PERSON_DETECTOR)), task="detect")
    frames = sorted(GOLDENEYE_FRAMES.glob("*.jpg"))[::3]
    people = 0
    for path in frames:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        ours = det.detect([rgb])[0]
        res = reference.predict([np.ascontiguousarray(rgb[:, :, ::-1])], imgsz=inference_size(rgb.shape, 384),
                                conf=0.35, classes=[0, 1], agnostic_nms=True, device="cpu", verbose=False)[0]
        theirs = res.boxes.xyxy.numpy()
        assert len(ours) == len(theirs), path.name
        if ours:
            np.testing.assert_allclose([d.bbox for d in ours], theirs, atol=0.05)
            np.testing.assert_allclose([d.score for d in ours], res.boxes.conf.numpy(), atol=1e-4)
        people += len(ours)
    assert people >= 15  # GoldenEye's frames are full of people: a real comparison, not of empty lists


# --- one shape for every model: load once, declared sizes, the factory, the engine's cache -------

class _Counting(InferenceModel[int, int]):
    """A model whose loading is counted, and fails while `broken` is set."""

    role = "body"
    name = model_name = "counting"

    def __init__(self, broken: bool = False) -> None:
        super().__init__()
        self.loads = 0
        self.broken = broken

    def _load(self) -> None:
        self.loads += 1
        if self.broken:
            raise ModelNotFoundError("counting model", "counting", "CASTFINDER_TEST", "broken")

    def _predict(self, inputs: int) -> int:
        return inputs + 1


def test_a_model_loads_once_when_many_threads_load_it_at_once() -> None:
    model = _Counting()
    gate = threading.Barrier(8)

    def load(_: int) -> _Counting:
        gate.wait(timeout=30)
        return model.load()

    with ThreadPoolExecutor(8) as pool:
        loaded = list(pool.map(load, range(8)))
    assert model.loads == 1 and all(m is model for m in loaded) and model.loaded
    assert model.predict(1) == 2 and model.loads == 1


def test_a_failed_load_is_tried_again_and_predict_loads_first() -> None:
    model = _Counting(broken=True)
    with pytest.raises(ModelNotFoundError, match="CASTFINDER_TEST"):
        model.predict(1)
    assert not model.loaded
    model.broken = False
    assert model.predict(1) == 2 and model.loads == 2 and model.loaded


def test_embedding_sizes_are_read_from_the_config_without_a_forward_pass(tiny_dinov2: Path, tiny_clip: Path,
                                                                         monkeypatch) -> None:
    def no_forward(self, pixel_values):
        raise AssertionError("a forward pass to learn the size")

    monkeypatch.setattr(Dinov2Embedder, "_forward", no_forward)
    monkeypatch.setattr(ClipEmbedder, "_forward", no_forward)
    assert make_embedder("dinov2", str(tiny_dinov2), device="cpu", batch=2).dim == 32
    assert make_embedder("clip", str(tiny_clip), device="cpu", batch=2).dim == 24


def test_the_factory_makes_models_from_settings_without_reading_a_file(make_settings, tmp_path: Path) -> None:
    from core.models.factory import make_model

    settings = make_settings(osnet_model=str(tmp_path / "absent.onnx"))
    detector = make_model("detector", settings, "cpu")
    assert isinstance(detector, PersonDetector) and detector.model_name == "yolov8n.yaml" and not detector.loaded
    osnet = make_model("osnet", settings, "cpu")  # the file is looked for when it loads
    assert osnet.model_name == settings.osnet_model and not osnet.loaded
    with pytest.raises(ModelNotFoundError, match="CASTFINDER_OSNET_MODEL"):
        osnet.load()
    assert make_model("face", settings, "cpu").model_name == settings.model_for("face")
    with pytest.raises(ValueError, match="unknown model role"):
        make_model("faces", settings, "cpu")


class _SlowChannel(Channel):
    """A channel whose loading waits until the test lets it finish."""

    role = kind = "body"
    name = "slow"

    def __init__(self, model: str, started: threading.Event, release: threading.Event) -> None:
        super().__init__()
        self.model_name = model
        self.started, self.release = started, release

    def _load(self) -> None:
        self.started.set()
        if not self.release.wait(timeout=120):
            raise TimeoutError("the test never let the channel finish loading")
        self._dim = 4

    def _predict(self, inputs: Sequence[Image.Image]) -> Encoded:
        return Encoded(np.ones((len(inputs), 4), np.float32), np.arange(len(inputs)))


def test_a_channel_loading_slowly_never_stalls_detection(make_settings, monkeypatch) -> None:
    import core.engine
    from core import Engine

    started, release = threading.Event(), threading.Event()
    monkeypatch.setattr(core.engine, "make_channel",
                        lambda name, model, settings, device: _SlowChannel(model, started, release))
    engine = Engine(make_settings(), load_models=False)
    with ThreadPoolExecutor(3) as pool:
        loading = pool.submit(engine.channel_for, "slow", "m")
        try:
            assert started.wait(timeout=60)
            # The detector loads and detects while the channel is still loading; a second thread
            # asking for the same channel waits for that one load.
            again = pool.submit(engine.channel_for, "slow", "m")
            people = pool.submit(lambda: engine.detector.detect([np.zeros((64, 96, 3), np.uint8)]))
            assert len(people.result(timeout=120)) == 1
            assert not loading.done() and not again.done()
        finally:
            release.set()
        channel = loading.result(timeout=60)
    assert again.result() is channel and channel.dim == 4 and channel.loaded
