"""Engine settings, read from the environment or `.env` with the `CASTFINDER_` prefix.

Every field here is documented in `.env.example`; keep the two in step. Every number has a range
(`Field(ge=…, le=…)`; floats must be finite), so that a typo fails at start-up with a message
instead of an overflow, a hang or a machine out of memory an hour into indexing. `load_settings`
is the one way the front-ends read settings: its `SettingsError` names the flag or the variable
the user typed and the range allowed.
"""

from __future__ import annotations

import codecs
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import SettingsError

EmbedderName = Literal["dinov2", "clip"]
BODY_CHANNELS = ("dinov2", "clip", "osnet", "reid")
CHANNELS = (*BODY_CHANNELS, "face")
Aggregation = Literal["max", "frequency", "rrf"]
FaissKind = Literal["flat", "ivf", "hnsw"]
DeviceName = Literal["auto", "cpu", "cuda"]
DetRuntime = Literal["auto", "openvino", "torch"]
ShotDetectorName = Literal["editor", "content", "adaptive"]

# The machine's CPUs: the most threads a model may be given (CASTFINDER_TORCH_THREADS).
CPUS = os.cpu_count() or 1
# The kernel's pseudo file systems: nothing can be stored there. (/dev/null and its like are not
# folders, which is refused anyway; /dev/shm is a real, if volatile, place for files.)
_SYSTEM_DIRS = (Path("/proc"), Path("/sys"))
# The most detector input pixels in one batch (det_batch x det_imgsz^2): 8 frames at 1920 px.
DET_PIXELS_PER_BATCH = 8 * 1920**2
# Settings checked against the disk: a wrong one is a problem of the machine (exit 1), whatever set it.
_ON_DISK = frozenset({"index_dir"})


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
        allow_inf_nan=False,  # inf and nan are never a sensible size, rate or threshold
    )

    # Where built indexes live, one folder per movie. Checked when the settings are read (also
    # the default): a file, or a folder of /proc, /sys or /dev, is refused for every command.
    index_dir: Path = Field(Path("indexes"), validate_default=True)
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
    det_imgsz: int = Field(384, ge=32, le=1920)
    # auto: OpenVINO on the CPU (a .pt detector is exported once, cached beside its weights),
    # PyTorch on CUDA; openvino or torch to force one.
    det_runtime: DetRuntime = "auto"
    # Frames per PyTorch detector call (CUDA, or CASTFINDER_DET_RUNTIME=torch; OpenVINO runs one at
    # a time). Memory grows with batch x size^2: 8 frames at 1920 px took 2.4 GB on the CPU (64 at
    # 384 px, 2.1 GB), so a batch is at most 8 x (1920 / det_imgsz)^2 frames, and 64.
    det_batch: int = Field(8, ge=1, le=64)
    # Boxes smaller than this many pixels on their short side are too small to identify anyone.
    min_person_px: int = Field(16, ge=1, le=1024)

    embedder: EmbedderName = "dinov2"
    dinov2_model: str = "facebook/dinov2-small"
    clip_model: str = "openai/clip-vit-base-patch16"
    # Crops per embedding call: reid_0277 took 0.5 GB at 32 and 1.5 GB at 128 (2.9 GB at 256).
    embed_batch: int = Field(32, ge=1, le=128)
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
    min_face_px: int = Field(20, ge=4, le=512)
    # Faces in film frames are looked for at this input size at most (long side, SCRFD); a
    # 1280x720 frame runs at 640x384.
    face_frame_px: int = Field(640, ge=64, le=1920)
    # Link each person's detections across a shot's sampled frames (box overlap + appearance),
    # so that a confident face match lifts the whole track.
    tracks: bool = True
    # Propagation: the people matched confidently by a search become extra queries (their other
    # views in the film) for a second round, which finds their back views and other looks.
    expand: bool = True
    track_iou: float = Field(0.3, ge=0.0, le=1.0)

    # cuda is refused when the engine starts on a machine where torch finds no CUDA GPU (auto falls
    # back to cpu).
    device: DeviceName = "auto"
    # Torch (and ONNX Runtime, OpenVINO) intra-op threads; 0 keeps their default (all cores). More
    # threads than the machine has CPUs only slow every model down, so such a value is refused.
    torch_threads: int = Field(0, ge=0, le=CPUS, description=f"this machine has {CPUS} CPUs; 0 uses them all")

    # Sampling inside shots (video): a shot's first, middle and last moments and evenly between,
    # at least this many frames a second; and the frame rate that frames-folder names imply.
    sample_fps: float = Field(1.0, gt=0, le=30)
    # A video shot no longer than this many seconds is sampled once, in its middle, instead of at
    # its first and last moments. 0 (the default): off. 0.5 samples a fast-cut reel's montages
    # once: 20% fewer frames on the 720p development reel, at a cost of 0.001 MAP on the four
    # development clips (docs/PERFORMANCE.md).
    short_shot_s: float = Field(0.0, ge=0.0, le=10.0)
    frames_fps: float = Field(5.0, ge=0.1, le=240)
    # Shots: editor (hard cuts that stand out from their neighbours; a white flash starts a new
    # shot where it begins), content or adaptive (PySceneDetect's detectors). Measured in
    # docs/EVALUATION.md, "Shot boundaries".
    shot_detector: ShotDetectorName = "editor"
    # The content score (0-255) a cut must reach; empty: the detector's own (editor 15, content 27,
    # adaptive 15).
    scene_threshold: float | None = Field(None, gt=0, le=255)
    # Shortest shot in seconds, and also in frames (0: no limit in frames; 15 was the old default).
    min_shot_s: float = Field(0.2, ge=0, le=60)
    min_shot_frames: int = Field(0, ge=0, le=1000)

    # A sampled frame whose tiny grey copy differs from the shot's last processed frame by less
    # than this many grey levels (0-255, on average) is skipped before detection. 0: never.
    still_diff: float = Field(2.0, ge=0, le=255)
    # An index build is checkpointed at the first shot boundary after every this many seconds
    # of film; an interrupted `castfinder index` resumes from the last checkpoint.
    checkpoint_s: float = Field(120.0, ge=0.5, le=86_400)
    # Near-duplicate crops inside one shot are dropped when their cosine similarity to a kept
    # crop of the same shot exceeds the threshold.
    dedup: bool = True
    dedup_threshold: float = Field(0.97, gt=0.0, le=1.0)

    faiss_index: FaissKind = "flat"
    thumbnail_px: int = Field(480, ge=64, le=2048)
    # The cast (core/cast.py): face tracks whose mean faces are closer than this cosine distance,
    # on average over the two groups, are one identity. Measured on the development clips
    # (docs/EVALUATION.md, "The cast").
    cast_threshold: float = Field(0.8, gt=0.0, le=2.0)

    # The cast, online: a search from a cast member starts from at most this many of its face
    # crops (nearest its mean face, one per track first), as a search takes at most
    # MAX_QUERY_IMAGES screenshots ...
    cast_seeds: int = Field(10, ge=1, le=100)
    # ... and a contact sheet shows at most this many members (the most screen time first).
    cast_sheet_size: int = Field(12, ge=1, le=24)

    # Search.
    search_k: int = Field(500, ge=1, le=10_000)
    aggregation: Aggregation = "max"
    rrf_k: int = Field(60, ge=1, le=1000)
    # Results whose calibrated confidence is under this are low confidence (the bot marks them).
    low_score: float = Field(0.5, ge=0.0, le=1.0)
    # The screen-time timeline counts every match at or over low_score, not only the results shown,
    # up to this many shots (the best ones; the summary then says "at least"). A lead character of a
    # two-hour film is in a few hundred shots; the cap only bounds a pathological query's work.
    timeline_max_shots: int = Field(1000, ge=1, le=100_000)
    # Feedback ("not them"): a hit nearer the rejected person than the query loses this many times
    # the difference of the two similarities (0: the rejected shot only leaves the results) ...
    feedback_negative_weight: float = Field(2.0, ge=0.0, le=10.0)
    # ... and each judged person's track gives at most this many of its crops as query vectors.
    feedback_track_crops: int = Field(8, ge=1, le=64)
    index_cache_size: int = Field(4, ge=1, le=64)
    # Larger query images are refused before decoding (decompression bombs), and larger frames of a
    # frames folder skipped with a warning (at most Pillow's own hard limit, 2 × its MAX_IMAGE_PIXELS,
    # past which it refuses to decode whatever this says) ...
    max_image_pixels: int = Field(80_000_000, ge=1_000_000, le=178_956_970)
    # ... and images over this long side are downscaled before detection.
    max_query_side: int = Field(2048, ge=64, le=8192)
    # Query images one search takes at most: each is decoded and searched for people, so the work
    # grows with their number. A Telegram album holds at most 10.
    max_query_images: int = Field(20, ge=1, le=1000)

    # "Which movie is this?" (castfinder identify, the bot without a movie set). The catalogue of
    # every indexed movie: empty for a Milvus Lite file in the index folder (<index_dir>/.catalog.db),
    # which one process at a time may open, or a Milvus server's URI (http://host:19530), which
    # every process and machine shares. CASTFINDER_MILVUS_URI; CASTFINDER_CATALOG_URI, its first
    # name, still works.
    catalog_uri: str = Field("", validation_alias=AliasChoices("CASTFINDER_MILVUS_URI", "CASTFINDER_CATALOG_URI",
                                                               "catalog_uri"))
    # A screenshot whose best movie is less likely than this is "not in the catalogue".
    identify_min_confidence: float = Field(0.5, ge=0.0, le=1.0)

    # Indexing on a Ray cluster (`castfinder index --ray`, the optional extra castfinder[scale]):
    # the cluster's address ("local" or "auto": start one on this machine, on 127.0.0.1; empty:
    # no Ray unless --ray is given); film seconds per part (a long film is indexed in parts of
    # about this length, one per worker call); workers (actors holding the models; 0: one per GPU
    # of the cluster, else one per CPU).
    ray_address: str = ""
    ray_part_s: float = Field(300.0, ge=1.0, le=86_400)
    ray_workers: int = Field(0, ge=0, le=4096)

    @field_validator("index_dir")
    @classmethod
    def _usable_index_dir(cls, value: Path) -> Path:
        problem = index_dir_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("det_batch")
    @classmethod
    def _batch_fits_in_memory(cls, value: int, info: ValidationInfo) -> int:
        imgsz = info.data.get("det_imgsz")
        if imgsz and value * imgsz**2 > DET_PIXELS_PER_BATCH:
            limit = max(1, DET_PIXELS_PER_BATCH // imgsz**2)
            raise ValueError(f"a batch of {value} frames at {imgsz} px (CASTFINDER_DET_IMGSZ) needs several GB "
                             f"of memory (8 frames at 1920 px took 2.4 GB); at {imgsz} px use at most {limit}")
        return value

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
        """The device models run on. cuda on a machine without a CUDA GPU is refused here, when
        the engine starts (not while reading settings: only what runs models needs torch's answer)."""
        if self.device == "cuda" and not cuda_available():
            raise SettingsError("CASTFINDER_DEVICE (--device) is cuda, but torch finds no CUDA GPU on this machine: "
                                "use --device cpu, or CASTFINDER_DEVICE=auto to use a GPU only when there is one")
        if self.device != "auto":
            return self.device
        return "cuda" if cuda_available() else "cpu"


def cuda_available() -> bool:
    """Whether torch can run on a CUDA GPU here; without a GPU driver, answered without importing
    torch (two seconds of start-up that the CPU path never needs)."""
    if not _gpu_driver_present():
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _gpu_driver_present() -> bool:
    """Whether a GPU driver that torch could use (NVIDIA's, WSL's GPU bridge, or ROCm's, which
    torch.cuda also serves) may be loaded; torch.cuda.is_available() is never true on Linux without
    one. Elsewhere torch is asked."""
    if not sys.platform.startswith("linux"):
        return True
    return any(Path(p).exists() for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd"))


def index_dir_problem(path: Path) -> str | None:
    """Why indexes cannot live in `path`, or None. It need not exist yet (indexing makes it),
    but it must be, or be able to become, a folder of a real file system."""
    path = Path(path).expanduser()
    try:
        resolved = path.resolve()
        if any(resolved == d or d in resolved.parents for d in _SYSTEM_DIRS):
            system = " or ".join(map(str, _SYSTEM_DIRS))
            return f"{resolved} is in {system}, the kernel's own files; choose a folder of your own"
        if path.exists() and not path.is_dir():
            return f"{path} is a file, not a folder; choose a folder (it is made if missing)"
        ancestor = next((p for p in resolved.parents if p.exists()), None)
        if not path.exists() and ancestor is not None and not ancestor.is_dir():
            return f"{ancestor} is a file, so no folder can be made inside it"
        if path.is_dir() and not os.access(path, os.R_OK | os.X_OK):
            return f"{path} cannot be read (permission denied)"
    except (OSError, RuntimeError) as exc:  # a name too long, a symbolic-link loop …
        return f"{path} cannot be used: {getattr(exc, 'strerror', None) or exc}"
    return None


# --- reading settings: one message for every wrong value -----------------------------------------

S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], *, flags: Mapping[str, str] | None = None, **given: Any) -> S:
    """`cls(**given)` (values from flags or code, over the environment and `.env`), with every
    problem raised as one SettingsError naming what the user typed and the range allowed.
    `flags` maps a field to the flag that gave it (`sample_fps` → `--fps`). A `.env` saved as
    UTF-16 or UTF-8 with a byte-order mark is read as such; one that is not text is refused."""
    env_file = given.pop("_env_file", cls.model_config.get("env_file"))
    encoding = given.pop("_env_file_encoding", None) or cls.model_config.get("env_file_encoding") or "utf-8"
    files = [] if env_file is None else [env_file] if isinstance(env_file, (str, os.PathLike)) else list(env_file)
    if files:
        encoding = env_file_encoding([Path(f) for f in files], encoding)
    try:
        return cls(_env_file=env_file, _env_file_encoding=encoding, **given)
    except ValidationError as exc:
        raise settings_error(exc, cls, given, flags or {}, files) from None


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def env_file_encoding(files: list[Path], default: str) -> str:
    """The encoding to read the `.env` files with: the one their byte-order mark says (Windows'
    editors save UTF-16 or UTF-8 with one), else `default`. A file that does not decode is
    refused by name (SettingsError); a missing file is skipped, as pydantic-settings does."""
    found: set[str] = set()
    for path in files:
        if not path.is_file():
            continue  # missing (skipped), or a pipe: read as it comes, by pydantic-settings
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SettingsError(f"{path.resolve()} cannot be read ({exc.strerror}); fix its permissions or "
                                "remove it") from None
        encoding = next((name for bom, name in _BOMS if data.startswith(bom)), default)
        try:
            text = data.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            where = f" (byte {exc.start})" if isinstance(exc, UnicodeDecodeError) else ""
            raise SettingsError(f"{path.resolve()} is not {encoding} text{where}; save it as UTF-8") from None
        if "\0" in text:
            raise SettingsError(f"{path.resolve()} holds NUL bytes (UTF-16 without a byte-order mark?); "
                                "save it as UTF-8") from None
        found.add(encoding)
    if len(found) > 1:
        raise SettingsError(f"the settings files {', '.join(map(str, files))} have different encodings "
                            f"({', '.join(sorted(found))}); save them all as UTF-8")
    return found.pop() if found else default


def settings_error(exc: ValidationError, cls: type[BaseSettings], given: Mapping[str, Any],
                   flags: Mapping[str, str], files: list[str | os.PathLike[str]] | None = None) -> SettingsError:
    """One line per wrong value: what the user typed, where (a flag, the environment, `.env`) and
    what is allowed (a number's range, from the field's own bounds)."""
    problems: list[str] = []
    from_flags = False
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        info = cls.model_fields.get(field)
        value = error.get("input")
        if field in given:
            # A flag out of its range is a usage error; a flag naming an unusable folder is not.
            from_flags = from_flags or (field in flags and field not in _ON_DISK)
            shown = f"{value:g}" if isinstance(value, float) else value
            source = f"{flags[field]} {shown}" if field in flags else f"{field}={value!r}"
        else:
            source = _env_source(cls, field, value, files)
        if info is not None and _is_number(info.annotation) and error["type"] != "value_error":
            what = f"must be {_range(info)}"
            if info.description:
                what += f" ({info.description})"
        else:
            what = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{source}: {what}")
    return SettingsError("invalid settings: " + "; ".join(problems), from_flags=from_flags)


def _env_source(cls: type[BaseSettings], field: str, value: object, files: list[str | os.PathLike[str]] | None) -> str:
    """`CASTFINDER_X=value` and where it was set: the environment, a `.env` file, or the default."""
    info = cls.model_fields.get(field)
    alias = info.validation_alias if info is not None and isinstance(info.validation_alias, str) else None
    name = alias or f"{cls.model_config.get('env_prefix', '')}{field}".upper()
    if any(k.upper() == name for k in os.environ):
        where = "in the environment"
    elif files and any(Path(f).is_file() for f in files):
        where = f"in {', '.join(str(Path(f).resolve()) for f in files if Path(f).is_file())}"
    else:
        where = "the default"
    return f"{name}={value} ({where})"


def _is_number(annotation: object) -> bool:
    """int or float, or either of them or None (bool is neither; a list of ints is a list)."""
    args = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    return any(a in (int, float) for a in args) and all(a in (int, float, type(None)) for a in args)


def _range(info: Any) -> str:
    """"a whole number from 1 to 64", "a number over 0 and at most 30" … from the field's bounds."""
    low = next((("at least", m.ge) if isinstance(m, Ge) else ("over", m.gt)
                for m in info.metadata if isinstance(m, (Ge, Gt))), None)
    high = next((("at most", m.le) if isinstance(m, Le) else ("under", m.lt)
                 for m in info.metadata if isinstance(m, (Le, Lt))), None)
    kind = "a whole number" if info.annotation is int else "a number"
    if low and high and low[0] == "at least" and high[0] == "at most":
        text = f"from {low[1]:g} to {high[1]:g}"
    else:
        text = " and ".join(f"{word} {bound:g}" for word, bound in filter(None, (low, high)))
    empty = " (or empty)" if type(None) in (getattr(info.annotation, "__args__", None) or ()) else ""
    return f"{kind} {text}{empty}".rstrip()
