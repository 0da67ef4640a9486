"""Engine settings, read from the environment or `.env` with the `CASTFINDER_` prefix.

Every field here is documented in `.env.example`; keep the two in step.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EmbedderName = Literal["dinov2", "clip"]
BODY_CHANNELS = ("dinov2", "clip", "osnet", "reid")
CHANNELS = (*BODY_CHANNELS, "face")
Aggregation = Literal["max", "frequency", "rrf"]
FaissKind = Literal["flat", "ivf", "hnsw"]
DeviceName = Literal["auto", "cpu", "cuda"]
DetRuntime = Literal["auto", "openvino", "torch"]
ShotDetectorName = Literal["editor", "content", "adaptive"]


def face_spec(detector: str, model: str) -> str:
    """The face channel's model as an index records it: detector and recogniser."""
    return f"{detector}+{model}"


def parse_face_spec(spec: str) -> tuple[str, str]:
    """(detector, recogniser) of a recorded face model; indexes from before the ONNX faces
    recorded only dlib's detector."""
    detector, sep, model = spec.rpartition("+")
    return (detector, model) if sep and detector else (spec, "dlib")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CASTFINDER_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # Where built indexes live, one folder per movie.
    index_dir: Path = Path("indexes")
    # Model files named in the registry (`castfinder models`) are looked for here first, then in
    # the user cache (platformdirs: ~/.cache/castfinder/models on Linux). Downloads go here when it
    # is writable, else to the cache.
    models_dir: Path | None = None

    # People detector (ultralytics): a model name such as "yolov8s.pt" (downloaded on first
    # use) or a path to a .pt/.onnx file.
    detector: str = "yolov8s.pt"
    # Class ids that count as a person. COCO models: "0". Some fine-tuned detectors split people
    # into several classes (e.g. "0,1").
    person_classes: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [0])
    det_conf: float = Field(0.35, ge=0.0, le=1.0)
    # The largest inference size; each frame is letterboxed to its own long side (a multiple of
    # 32) when that is smaller. 384 found everyone worth finding on the development clips at
    # 0.4x the cost of 640 (docs/PERFORMANCE.md).
    det_imgsz: int = Field(384, ge=32)
    # auto: OpenVINO on the CPU (a .pt detector is exported once, cached beside its weights),
    # PyTorch on CUDA; openvino or torch to force one.
    det_runtime: DetRuntime = "auto"
    det_batch: int = Field(8, ge=1)
    # Boxes smaller than this many pixels on their short side are too small to identify anyone.
    min_person_px: int = Field(16, ge=1)

    embedder: EmbedderName = "dinov2"
    dinov2_model: str = "facebook/dinov2-small"
    clip_model: str = "openai/clip-vit-base-patch16"
    embed_batch: int = Field(32, ge=1)
    # Embedding channels an index holds, comma-separated, from dinov2, clip, osnet, reid, face.
    # The default is the best measured configuration (docs/EVALUATION.md). Empty: the embedder
    # above alone. The first body channel drives de-duplication and tracks.
    channels: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["face", "reid"])
    # Body re-identification (the reid channel): a registry name (`castfinder models`) or a path
    # to an OpenVINO IR (.xml, its .bin beside it) or an OSNet-style ONNX file.
    reid_model: str = "reid_0277"
    # OSNet re-identification (the osnet channel): a registry name or an ONNX path (256x128 input).
    osnet_model: str = "osnet_x0_25"
    # Face detector: scrfd_2.5g, scrfd_500m or yunet (ONNX, with landmarks; a registry name or a
    # path), or dlib's hog / cnn (with CASTFINDER_FACE_MODEL=dlib; needs the face extra).
    face_detector: str = "scrfd_2.5g"
    # Face recognition: edgeface_xs (512-d, ONNX; a registry name or a path) or dlib (128-d ResNet,
    # the face extra; no download).
    face_model: str = "edgeface_xs"
    min_face_px: int = Field(20, ge=4)
    # Faces in film frames are looked for at this input size at most (long side, SCRFD); a
    # 1280x720 frame runs at 640x384.
    face_frame_px: int = Field(640, ge=64)
    # Link each person's detections across a shot's sampled frames (box overlap + appearance),
    # so that a confident face match lifts the whole track.
    tracks: bool = True
    # Propagation: the people matched confidently by a search become extra queries (their other
    # views in the film) for a second round, which finds their back views and other looks.
    expand: bool = True
    track_iou: float = Field(0.3, ge=0.0, le=1.0)

    device: DeviceName = "auto"
    # Torch intra-op threads; 0 keeps torch's default (all cores).
    torch_threads: int = Field(0, ge=0)

    # Sampling inside shots (video): a shot's first, middle and last moments and evenly between,
    # at least this many frames a second; and the frame rate that frames-folder names imply.
    sample_fps: float = Field(1.0, gt=0)
    # A video shot no longer than this many seconds is sampled once, in its middle, instead of at
    # its first and last moments. 0 (the default): off. 0.5 samples a fast-cut reel's montages
    # once: 20% fewer frames on the 720p development reel, at a cost of 0.001 MAP on the four
    # development clips (docs/PERFORMANCE.md).
    short_shot_s: float = Field(0.0, ge=0.0, le=10.0)
    frames_fps: float = Field(5.0, gt=0)
    # Shots: editor (hard cuts that stand out from their neighbours; a white flash starts a new
    # shot where it begins), content or adaptive (PySceneDetect's detectors). Measured in
    # docs/EVALUATION.md, "Shot boundaries".
    shot_detector: ShotDetectorName = "editor"
    # The content score (0-255) a cut must reach; empty: the detector's own (editor 15, content 27,
    # adaptive 15).
    scene_threshold: float | None = Field(None, gt=0)
    # Shortest shot in seconds, and also in frames (0: no limit in frames; 15 was the old default).
    min_shot_s: float = Field(0.2, ge=0)
    min_shot_frames: int = Field(0, ge=0)

    # A sampled frame whose tiny grey copy differs from the shot's last processed frame by less
    # than this many grey levels (0-255, on average) is skipped before detection. 0: never.
    still_diff: float = Field(2.0, ge=0)
    # An index build is checkpointed at the first shot boundary after every this many seconds
    # of film; an interrupted `castfinder index` resumes from the last checkpoint.
    checkpoint_s: float = Field(120.0, gt=0)
    # Near-duplicate crops inside one shot are dropped when their cosine similarity to a kept
    # crop of the same shot exceeds the threshold.
    dedup: bool = True
    dedup_threshold: float = Field(0.97, gt=0.0, le=1.0)

    faiss_index: FaissKind = "flat"
    thumbnail_px: int = Field(480, ge=64)

    # Search.
    search_k: int = Field(500, ge=1)
    aggregation: Aggregation = "max"
    rrf_k: int = Field(60, ge=1)
    # Results whose calibrated confidence is under this are low confidence (the bot marks them).
    low_score: float = Field(0.5, ge=0.0, le=1.0)
    index_cache_size: int = Field(4, ge=1)
    # Larger query images are refused before decoding (decompression bombs), and larger frames of a
    # frames folder skipped with a warning ...
    max_image_pixels: int = Field(80_000_000, ge=1)
    # ... and images over this long side are downscaled before detection.
    max_query_side: int = Field(2048, ge=64)
    # Query images one search takes at most: each is decoded and searched for people, so the work
    # grows with their number. A Telegram album holds at most 10.
    max_query_images: int = Field(20, ge=1, le=1000)

    @field_validator("channels", mode="before")
    @classmethod
    def _split_channels(cls, value: object) -> object:
        if isinstance(value, str):
            value = [p.strip().lower() for p in value.split(",") if p.strip()]
        if isinstance(value, (list, tuple)):
            unknown = [v for v in value if v not in CHANNELS]
            if unknown:
                raise ValueError(f"unknown channel {unknown[0]!r}; choose from {', '.join(CHANNELS)}")
            return list(dict.fromkeys(value))
        return value

    @field_validator("models_dir", mode="before")
    @classmethod
    def _empty_models_dir(cls, value: object) -> object:
        # `CASTFINDER_MODELS_DIR=` (as in .env.example) means unset, not the current folder.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("scene_threshold", mode="before")
    @classmethod
    def _empty_threshold(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("person_classes", mode="before")
    @classmethod
    def _split_classes(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            if not parts:
                raise ValueError("CASTFINDER_PERSON_CLASSES needs at least one class id, e.g. 0")
            return [int(p) for p in parts]
        if isinstance(value, int):
            return [value]
        return value

    def model_for(self, channel: str) -> str:
        return {"dinov2": self.dinov2_model, "clip": self.clip_model, "osnet": self.osnet_model,
                "reid": self.reid_model, "face": face_spec(self.face_detector, self.face_model)}[channel]

    def index_channels(self) -> list[str]:
        return list(self.channels) or [self.embedder]

    def resolve_device(self) -> str:
        if self.device != "auto":
            return self.device
        if not _gpu_driver_present():
            return "cpu"  # without importing torch: two seconds of start-up that the CPU path never needs
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def _gpu_driver_present() -> bool:
    """Whether a GPU driver that torch could use (NVIDIA's, WSL's GPU bridge, or ROCm's, which
    torch.cuda also serves) may be loaded; torch.cuda.is_available() is never true on Linux without
    one. Elsewhere torch is asked."""
    if not sys.platform.startswith("linux"):
        return True
    return any(Path(p).exists() for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd"))
