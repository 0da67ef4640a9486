"""The models castfinder knows by name: where each comes from, its checksum and its licence.

`resolve_model` turns a setting's value (a registry name or a path) into a local file, looking
in CASTFINDER_MODELS_DIR, then the user cache, then downloading (verified by sha256) into the
cache. Ultralytics detectors and Hugging Face models are listed too, but their files live in
those libraries' own caches. Importing this module is cheap: no torch, onnx or network.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import stat
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

from ..errors import ModelNotFoundError

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger(__name__)

Kind = Literal["face_detector", "face_embedder", "reid", "detector", "huggingface"]
KINDS: tuple[str, ...] = ("face_detector", "face_embedder", "reid", "detector", "huggingface")


@dataclass(frozen=True)
class ModelFile:
    filename: str
    urls: tuple[str, ...] = ()  # tried in order
    sha256: str | None = None  # None only for files another library manages
    size: int | None = None


@dataclass(frozen=True)
class Derivation:
    """A file we build from an official artefact because none is published in the form we run."""

    source: ModelFile  # the official artefact, downloaded and verified like any other file
    converter: str  # "module:function", called as function(source_path, output_path)
    note: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: Kind
    files: tuple[ModelFile, ...]  # the first is the main file (for an OpenVINO IR: the .xml)
    licence: str
    commercial_use: bool
    source: str
    description: str
    derived_from: Derivation | None = None

    @property
    def main(self) -> ModelFile:
        return self.files[0]

    @property
    def managed_by(self) -> str:
        """Who downloads and caches the files: castfinder, ultralytics or huggingface."""
        return {"detector": "ultralytics", "huggingface": "huggingface"}.get(self.kind, "castfinder")


_SCRFD_COMMIT = "9e14b462707fe75105c99213fba911646366aebd"
_OMZ = "https://storage.openvinotoolkit.org/repositories/open_model_zoo/2023.0/models_bin/1"
_YUNET_COMMIT = "47534e27c9851bb1128ccc0102f1145e27f23f98"
_OSNET_COMMIT = "9a5b6fbdf36285fd5b384532f6c2ecd15a675ca2"
_EDGEFACE_COMMIT = "5eeebb9a6dee6e533f3ce06ffebb2e6d30c2c9c7"
_INSIGHTFACE_TERMS = ("InsightFace pretrained models: non-commercial research purposes only "
                      "(hpc203's export has no licence file)")


def _scrfd(name: str, filename: str, sha256: str, size: int, description: str) -> ModelSpec:
    # Verified: these URLs' bytes are the git blobs of hpc203/scrfd-opencv at this commit; their
    # sha256 and size equal ../shared/weights (checked from a snapshot of the repository).
    return ModelSpec(
        name=name, kind="face_detector",
        files=(ModelFile(filename, (
            f"https://raw.githubusercontent.com/hpc203/scrfd-opencv/{_SCRFD_COMMIT}/weights/{filename}",
            f"https://github.com/hpc203/scrfd-opencv/raw/{_SCRFD_COMMIT}/weights/{filename}",
        ), sha256, size),),
        licence=_INSIGHTFACE_TERMS, commercial_use=False,
        source=f"InsightFace SCRFD, ONNX export by hpc203/scrfd-opencv@{_SCRFD_COMMIT[:7]}",
        description=description,
    )


def _ultralytics(name: str, description: str) -> ModelSpec:
    return ModelSpec(
        name=name, kind="detector", files=(ModelFile(name),),
        licence="AGPL-3.0 (Ultralytics; an Enterprise licence exists for closed-source use)",
        commercial_use=True, source="github.com/ultralytics/assets releases (downloaded by ultralytics)",
        description=description,
    )


_REGISTRY_ENTRIES: tuple[ModelSpec, ...] = (
    _scrfd("scrfd_2.5g", "scrfd_2.5g_kps.onnx",
           "32d20c77b9e2dc1d07e94c2ab9d25bdd5cd05eddbe0b46e7b38e7a1eca22e99a", 3_291_017,
           "SCRFD-2.5GF face detector with 5 landmarks (640x640 input)"),
    _scrfd("scrfd_500m", "scrfd_500m_kps.onnx",
           "517cb1980c72422e676738fc45431700fb7cbee56d0f825b623ee427b3e5ce58", 2_524_095,
           "SCRFD-500MF face detector with 5 landmarks; faster, finds fewer small faces"),
    ModelSpec(
        name="yunet", kind="face_detector",
        # opencv_zoo keeps its models in Git LFS: media.githubusercontent.com serves the payload
        # (raw.githubusercontent.com would serve the pointer). Verified: sha256 and size equal
        # ../shared/weights and the (file, revision, sha256, size) pins of several independent
        # projects; the snapshot of opencv_zoo available here predates this revision, so the URL
        # itself could not be fetched. The unpinned main URL is the fallback.
        files=(ModelFile("face_detection_yunet.onnx", (
            f"https://media.githubusercontent.com/media/opencv/opencv_zoo/{_YUNET_COMMIT}"
            "/models/face_detection_yunet/face_detection_yunet_2026may.onnx",
            "https://media.githubusercontent.com/media/opencv/opencv_zoo/main"
            "/models/face_detection_yunet/face_detection_yunet_2026may.onnx",
        ), "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0", 229_738),),
        licence="MIT (OpenCV Zoo YuNet)", commercial_use=True,
        source=f"opencv/opencv_zoo@{_YUNET_COMMIT[:7]} face_detection_yunet_2026may.onnx",
        description="YuNet face detector with 5 landmarks (any input size; cv2.FaceDetectorYN)",
    ),
    ModelSpec(
        name="edgeface_xs", kind="face_embedder",
        # No ONNX is published: the file is converted on first use from the official checkpoint.
        # A reference conversion has this sha256; conversions made here are recorded in a
        # provenance file beside them (their bytes depend on the torch version).
        files=(ModelFile("edgeface_xs_q_fp32.onnx", (),
                         "bf250ae33a1a66179685046b4fc0a08c87e2f783b779b81c2286f2fb5942d1f1", 9_152_288),),
        derived_from=Derivation(
            source=ModelFile("edgeface_xs_q.pt", (
                # The authors' URL (EdgeFace's torch.hub entry points load it from here; the
                # branch is unpinned, the sha256 check guards it) ...
                "https://gitlab.idiap.ch/bob/bob.paper.tbiom2023_edgeface/-/raw/master/checkpoints/edgeface_xs_q.pt",
                # ... and the same blob, as committed by Anjith George (Idiap), in a GitHub copy
                # of that repository's history. Verified: this blob's sha256 and size equal
                # ../shared/weights/edgeface_xs_q.pt.
                f"https://raw.githubusercontent.com/yayoimizuha/face_recognition_train/{_EDGEFACE_COMMIT}"
                "/checkpoints/edgeface_xs_q.pt",
            ), "a31314377876ab9fa2a75e5638bc528efe79fd17d5c9c0a228fb7f846d7581a6", 2_993_451),
            converter="core.models.convert:edgeface_to_onnx",
            note="int8 Linear weights dequantized to float32, exported to ONNX opset 17 (needs the convert extra)",
        ),
        licence="code BSD-3-Clause; weights trained on WebFace (research only), treat as non-commercial",
        commercial_use=False,
        source="Idiap EdgeFace edgeface_xs_q.pt (gitlab.idiap.ch/bob/bob.paper.tbiom2023_edgeface)",
        description="EdgeFace-XS face recognition, 512-d, 112x112 aligned faces",
    ),
    ModelSpec(
        name="reid_0277", kind="reid",
        # Verified: size and SHA-384 of both files equal the checksums in open_model_zoo's
        # models/intel/person-reidentification-retail-0277/model.yml (2023.0), whose `source`
        # fields are these URLs; sha256 and size equal ../shared/weights.
        files=(
            ModelFile("person-reidentification-retail-0277.xml",
                      (f"{_OMZ}/person-reidentification-retail-0277/FP16/person-reidentification-retail-0277.xml",),
                      "82039b1bb986231c50345550e59def94e63579998e9cddbd1a312f293eb87729", 616_140),
            ModelFile("person-reidentification-retail-0277.bin",
                      (f"{_OMZ}/person-reidentification-retail-0277/FP16/person-reidentification-retail-0277.bin",),
                      "6bb69e09d07733cc3896b29081d2627f92db7b9aacd50f1a8c3df491cb10f1b7", 4_178_806),
        ),
        licence="Apache-2.0 (Intel Open Model Zoo)", commercial_use=True,
        source="Intel Open Model Zoo 2023.0, person-reidentification-retail-0277 FP16 IR",
        description="Person re-identification, 256-d (OpenVINO IR; BGR 256x128 input)",
    ),
    ModelSpec(
        name="osnet_x0_25", kind="reid",
        # torchreid publishes .pth checkpoints only (Google Drive); this is the best public ONNX
        # export found. Verified: the blob at this commit has the sha256 and size of
        # ../shared/weights/osnet_x0_25_msmt17.onnx. Not an official artefact.
        files=(ModelFile("osnet_x0_25_msmt17.onnx", (
            f"https://raw.githubusercontent.com/akshaydhame2001/YOLOv8_Tracking_TensorRT/{_OSNET_COMMIT}"
            "/osnet_x0_25_msmt17.onnx",
        ), "61b2604171ef9d58d21758626f83b35a253c3d7123976523a6e03068c3c95d7b", 921_616),),
        licence="MIT (torchreid)", commercial_use=True,
        source="torchreid model zoo osnet_x0_25_msmt17, a public ONNX export",
        description="OSNet x0.25 person re-identification, 512-d (RGB 256x128 input)",
    ),
    _ultralytics("yolov8n.pt", "YOLOv8n COCO detector (person = class 0)"),
    _ultralytics("yolov8s.pt", "YOLOv8s COCO detector (person = class 0); the default"),
    _ultralytics("yolov8m.pt", "YOLOv8m COCO detector (person = class 0)"),
    _ultralytics("yolo11n.pt", "YOLO11n COCO detector (person = class 0)"),
    _ultralytics("yolo11s.pt", "YOLO11s COCO detector (person = class 0)"),
    ModelSpec(
        name="facebook/dinov2-small", kind="huggingface", files=(ModelFile("config.json"),),
        licence="Apache-2.0", commercial_use=True, source="huggingface.co/facebook/dinov2-small",
        description="DINOv2 ViT-S/14 image embeddings, 384-d (the dinov2 channel)",
    ),
    ModelSpec(
        name="openai/clip-vit-base-patch16", kind="huggingface", files=(ModelFile("config.json"),),
        licence="MIT (OpenAI CLIP; its model card calls deployed use out of scope)", commercial_use=True,
        source="huggingface.co/openai/clip-vit-base-patch16",
        description="CLIP ViT-B/16 image embeddings, 512-d (the clip channel)",
    ),
)

REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _REGISTRY_ENTRIES}

# Which kind of model each setting takes, and its default (preferred when a folder holds several).
SETTING_KINDS: dict[str, tuple[str, str]] = {
    "CASTFINDER_FACE_DETECTOR": ("face_detector", "scrfd_2.5g"),
    "CASTFINDER_FACE_MODEL": ("face_embedder", "edgeface_xs"),
    "CASTFINDER_REID_MODEL": ("reid", "reid_0277"),
    "CASTFINDER_OSNET_MODEL": ("reid", "osnet_x0_25"),
    "CASTFINDER_DETECTOR": ("detector", "yolov8s.pt"),
    "CASTFINDER_DINOV2_MODEL": ("huggingface", "facebook/dinov2-small"),
    "CASTFINDER_CLIP_MODEL": ("huggingface", "openai/clip-vit-base-patch16"),
}
_WHAT = {"face_detector": "face detector", "face_embedder": "face recognition model",
         "reid": "re-identification model", "detector": "person detector", "huggingface": "embedding model"}
# Files a folder may hold for a kind, when none of the registry's files is there.
_EXTENSIONS = {"face_detector": (".onnx",), "face_embedder": (".onnx",), "reid": (".xml", ".onnx"),
               "detector": (".pt", ".onnx", ".engine", ".torchscript")}
_TRUE = ("1", "true", "yes", "on")

SettingsOrDir = Union["Settings", Path, str, None]


# --- where files live -------------------------------------------------------------------------

def user_cache_models_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("castfinder")) / "models"


def models_dir(settings: SettingsOrDir = None) -> Path:
    """CASTFINDER_MODELS_DIR (settings.models_dir) or else the user cache's models folder."""
    if isinstance(settings, (str, Path)):
        return Path(settings).expanduser()
    configured = getattr(settings, "models_dir", None) if settings is not None else None
    return Path(configured).expanduser() if configured else user_cache_models_dir()


def _search_dirs(settings: SettingsOrDir) -> list[Path]:
    return list(dict.fromkeys([models_dir(settings), user_cache_models_dir()]))


def writable(folder: Path) -> bool:
    """Whether files may be added to `folder`: permission to, and not a folder whose owner marked
    it read-only (root may write anywhere, but a shared r-x folder is meant to stay as it is)."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return folder.is_dir() and os.access(folder, os.W_OK) and bool(mode & stat.S_IWUSR)


def _write_dir(settings: SettingsOrDir) -> Path:
    """Where downloads and conversions go: the models dir, unless it cannot be written to (a
    read-only shared folder), then the user cache."""
    for folder in _search_dirs(settings):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if writable(folder):
            return folder
    return user_cache_models_dir()


def offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("CASTFINDER_OFFLINE", "HF_HUB_OFFLINE"))


# --- verification -----------------------------------------------------------------------------

_hashes: dict[tuple[str, int, int], str] = {}
_hashes_lock = threading.Lock()


def sha256_of(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so loading twice hashes once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _hashes_lock:
        if key in _hashes:
            return _hashes[key]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    with _hashes_lock:
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def _provenance_path(path: Path) -> Path:
    return path.with_name(path.name + ".provenance.json")


def _mismatch(path: Path, mf: ModelFile, spec: ModelSpec | None = None) -> str | None:
    """Why `path` is not the registered file, or None when it is."""
    size = path.stat().st_size
    if mf.sha256 is None:
        return None
    digest = sha256_of(path)
    if digest == mf.sha256 and (mf.size is None or size == mf.size):
        return None
    if spec is not None and spec.derived_from is not None and mf is spec.main:
        # Converted here: the provenance file records its hash and the source it came from.
        try:
            record = json.loads(_provenance_path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        if record.get("sha256") == digest and record.get("source_sha256") == spec.derived_from.source.sha256:
            return None
    return (f"{path} is not the expected file (size {size}, sha256 {digest[:12]}…; expected size {mf.size}, "
            f"sha256 {mf.sha256[:12]}…): delete or replace it")


def _error(spec_or_name: ModelSpec | str, setting: str, reason: str) -> ModelNotFoundError:
    reason = " ".join(reason.splitlines())  # the CLI prints one line
    name = spec_or_name.name if isinstance(spec_or_name, ModelSpec) else spec_or_name
    kind = spec_or_name.kind if isinstance(spec_or_name, ModelSpec) else SETTING_KINDS.get(setting, ("", ""))[0]
    return ModelNotFoundError(_WHAT.get(kind, "model"), name, setting, reason)


# --- downloads --------------------------------------------------------------------------------

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(target: Path) -> threading.Lock:
    # One lock per target file: two channels loading at once download it once.
    with _locks_guard:
        return _locks.setdefault(str(target.resolve()), threading.Lock())


class _BadDownload(Exception):
    pass


def _download(mf: ModelFile, target: Path, timeout: float = 60.0) -> None:
    """Stream the file into a temporary file beside `target`, verify it, rename it into place.
    Tries each URL in turn; raises _BadDownload naming each failure. Never leaves a partial
    file at `target`, whatever happens (network, checksum, Ctrl-C)."""
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    failures: list[str] = []
    try:
        for url in mf.urls:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "castfinder"})
                with urllib.request.urlopen(request, timeout=timeout) as response, tmp.open("wb") as out:
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else mf.size
                    digest, done = hashlib.sha256(), 0
                    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=mf.filename,
                              file=sys.stderr, disable=not sys.stderr.isatty(), leave=False) as bar:
                        for chunk in iter(lambda: response.read(1 << 16), b""):
                            out.write(chunk)
                            digest.update(chunk)
                            done += len(chunk)
                            bar.update(len(chunk))
                if mf.size is not None and done != mf.size:
                    raise _BadDownload(f"got {done} of {mf.size} bytes")
                if mf.sha256 is not None and digest.hexdigest() != mf.sha256:
                    raise _BadDownload(f"checksum mismatch (sha256 {digest.hexdigest()[:12]}…)")
                os.replace(tmp, target)
                log.info("downloaded %s from %s", target, url)
                return
            except (OSError, http.client.HTTPException, ValueError, _BadDownload) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                failures.append(f"{url}: {reason or type(exc).__name__}")
                log.warning("download of %s failed: %s", mf.filename, failures[-1])
        raise _BadDownload("; ".join(failures) or "no download URL")
    finally:
        tmp.unlink(missing_ok=True)


def _not_in(dirs: list[Path]) -> str:
    return f"is not in {dirs[0]}" if len(dirs) == 1 else f"is in neither {' nor '.join(map(str, dirs))}"


def _not_here(mf: ModelFile, dirs: list[Path]) -> str:
    return f"{mf.filename} {_not_in(dirs)}"


def _fetch(spec: ModelSpec, mf: ModelFile, target: Path, setting: str, dirs: list[Path]) -> Path:
    with _lock_for(target):
        if target.is_file() and _mismatch(target, mf, spec) is None:
            return target  # another thread got it meanwhile
        try:
            _download(mf, target)
        except _BadDownload as exc:
            raise _error(spec, setting, f"could not download {mf.filename}: {exc}; put the file in "
                                        f"CASTFINDER_MODELS_DIR ({dirs[0]})") from None
    return target


def _find(spec: ModelSpec, mf: ModelFile, folder: Path, setting: str) -> Path | None:
    path = folder / mf.filename
    if not path.is_file():
        return None
    problem = _mismatch(path, mf, spec)
    if problem:
        # A file with the registered name but other bytes is never used silently.
        raise _error(spec, setting, problem)
    return path


def _ensure(spec: ModelSpec, setting: str, settings: SettingsOrDir, download: bool,
            extra_dirs: tuple[Path, ...] = ()) -> Path:
    """The main file of a castfinder-managed model, its other files beside it."""
    dirs = [*extra_dirs, *_search_dirs(settings)]
    for folder in dirs:
        found = [_find(spec, mf, folder, setting) for mf in spec.files]
        if found[0] is not None and all(found):
            return found[0]
    allowed = download and not offline()
    why = "offline" if download else "downloads are off"
    if spec.derived_from is not None:
        return _convert(spec, setting, settings, dirs, allowed, why)
    target_dir = _write_dir(settings)
    for mf in spec.files:
        if _find(spec, mf, target_dir, setting) is None:
            if not allowed:
                raise _error(spec, setting, f"{why}, and {_not_here(mf, dirs)}: copy it into "
                                            "CASTFINDER_MODELS_DIR or allow the download")
            _fetch(spec, mf, target_dir / mf.filename, setting, dirs)
    return target_dir / spec.main.filename


def _convert(spec: ModelSpec, setting: str, settings: SettingsOrDir, dirs: list[Path], allowed: bool,
             why: str) -> Path:
    derivation = spec.derived_from
    assert derivation is not None
    source = next((p for p in (_find(spec, derivation.source, d, setting) for d in dirs) if p), None)
    target_dir = _write_dir(settings)
    if source is None:
        if not allowed:
            raise _error(spec, setting, f"{why}, and {spec.main.filename} (or {derivation.source.filename} to "
                                        f"convert it from) {_not_in(dirs)}: copy "
                                        "it into CASTFINDER_MODELS_DIR or allow the download")
        source = _fetch(spec, derivation.source, target_dir / derivation.source.filename, setting, dirs)
    target = target_dir / spec.main.filename
    with _lock_for(target):
        if target.is_file() and _mismatch(target, spec.main, spec) is None:
            return target
        import importlib

        from .convert import ConversionUnavailable

        module, _, func = derivation.converter.partition(":")
        convert = getattr(importlib.import_module(module), func)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target_dir)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            log.warning("converting %s into %s (once)", source, target)
            try:
                convert(source, tmp)
            except ConversionUnavailable as exc:
                raise _error(spec, setting, f"{exc}; or put {spec.main.filename} in CASTFINDER_MODELS_DIR") from None
            record = {"sha256": sha256_of(tmp), "size": tmp.stat().st_size,
                      "source": derivation.source.filename, "source_sha256": derivation.source.sha256,
                      "converter": derivation.converter, "note": derivation.note}
            # The record first: a converted file never sits at its name without the record that
            # vouches for it.
            _provenance_path(target).write_text(json.dumps(record, indent=1), encoding="utf-8")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


# --- ultralytics and Hugging Face ---------------------------------------------------------------

def ultralytics_weights_dir() -> Path:
    """ultralytics' weights folder, read from its settings file as ultralytics would, without
    importing it (its import probes the network and loads torch)."""
    from platformdirs import user_config_dir

    env = os.environ.get("YOLO_CONFIG_DIR")
    config = (Path(env).expanduser() / "Ultralytics" if env
              else Path(user_config_dir("Ultralytics", appauthor=False, roaming=True)))
    try:
        configured = json.loads((config / "settings.json").read_text(encoding="utf-8")).get("weights_dir")
    except (OSError, ValueError, AttributeError):
        configured = None
    if configured:
        return Path(configured)
    # ultralytics' default: "weights" in the git checkout around the working folder, or in it.
    here = Path.cwd().resolve()
    root = next((d for d in (here, *here.parents) if (d / ".git").exists()), here)
    return root / "weights"


def _ultralytics_cached(name: str) -> Path | None:
    # ultralytics looks in the working folder, then its weights folder.
    for path in (Path(name), ultralytics_weights_dir() / name):
        if path.is_file():
            return path.resolve()
    return None


def huggingface_cached(repo_id: str) -> Path | None:
    """The snapshot folder of a cached Hugging Face model (config and weights), without network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    config = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(config, str):
        return None
    for weights in ("model.safetensors", "pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(repo_id, weights), str):
            return Path(config).parent
    return None


def _library_model(spec: ModelSpec, setting: str, settings: SettingsOrDir, download: bool) -> Path:
    if spec.kind == "detector":
        for folder in _search_dirs(settings):
            if (folder / spec.main.filename).is_file():
                return folder / spec.main.filename
        cached = _ultralytics_cached(spec.name)
    else:
        cached = huggingface_cached(spec.name)
    if cached is not None:
        return cached
    if not download or offline():
        why = "offline" if download else "downloads are off"
        where = "ultralytics' weights folder" if spec.kind == "detector" else "the Hugging Face cache"
        raise _error(spec, setting, f"{why}, and it is not in {where}: download it once online, "
                                    "or set a local path")
    try:
        if spec.kind == "detector":
            from ultralytics.utils.downloads import attempt_download_asset

            path = Path(attempt_download_asset(spec.name))
        else:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(spec.name))
    except Exception as exc:  # the libraries raise many kinds of network errors
        raise _error(spec, setting, f"download failed: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
    if not path.exists():
        raise _error(spec, setting, "download failed")
    return path


# --- resolving a setting's value ----------------------------------------------------------------

def names_of_kind(kind: str | None) -> list[str]:
    return [s.name for s in REGISTRY.values() if kind is None or s.kind == kind]


def _in_folder(folder: Path, setting: str, settings: SettingsOrDir, download: bool) -> Path:
    kind, default = SETTING_KINDS.get(setting, (None, None))
    if kind == "huggingface":
        return folder  # a saved transformers model is a folder
    specs = sorted((s for s in REGISTRY.values() if kind is None or s.kind == kind),
                   key=lambda s: s.name != default)
    for spec in specs:
        if spec.managed_by != "castfinder":
            if (folder / spec.main.filename).is_file():
                return folder / spec.main.filename
            continue
        # Files the user put there themselves: used as they are (their name says what they are).
        if all((folder / mf.filename).is_file() for mf in spec.files):
            return folder / spec.main.filename
        if spec.derived_from and (folder / spec.derived_from.source.filename).is_file():
            return _ensure(spec, setting, settings, download, extra_dirs=(folder,))
    extensions = _EXTENSIONS.get(kind or "", tuple(ext for v in _EXTENSIONS.values() for ext in v))
    matches = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if len(matches) == 1:
        return matches[0]
    what = "several" if matches else "no"
    raise _error(str(folder), setting, f"the folder holds {what} {'/'.join(extensions)} files and none of "
                                       f"{', '.join(s.main.filename for s in specs)}; name the file itself")


def resolve_model(value: str, *, setting: str, settings_or_models_dir: SettingsOrDir,
                  download: bool = True) -> Path:
    """The local path of the model that a setting names: an existing file; a folder (the
    registry file of the setting's kind in it, or its one model file); or a registry name,
    found in CASTFINDER_MODELS_DIR or the user cache (size and sha256 checked) or else
    downloaded. For an OpenVINO IR the path is the .xml, its .bin beside it.

    Raises ModelNotFoundError (one line, naming the setting) for anything else, when offline
    with the file missing, or when a local file's checksum does not match. Thread-safe."""
    text = str(value).strip()
    path = Path(text).expanduser()
    if text and path.is_file():
        if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
            raise _error(text, setting, f"the OpenVINO IR needs {path.with_suffix('.bin').name} beside it")
        return path
    if text and path.is_dir():
        return _in_folder(path, setting, settings_or_models_dir, download)
    spec = REGISTRY.get(text)
    if spec is None:
        kind = SETTING_KINDS.get(setting, (None, None))[0]
        choices = ", ".join(names_of_kind(kind)) or "none"
        raise _error(text, setting, f"not a file, a folder or a registered model; registered "
                                    f"{_WHAT.get(kind or '', 'model')}s: {choices} (see `castfinder models`)")
    if spec.managed_by != "castfinder":
        return _library_model(spec, setting, settings_or_models_dir, download)
    return _ensure(spec, setting, settings_or_models_dir, download)


# --- what is available (for `castfinder models`) -------------------------------------------------

@dataclass(frozen=True)
class ModelStatus:
    spec: ModelSpec
    available: bool
    where: str  # "models dir", "cache", "ultralytics", "huggingface cache", "convertible", "mismatch", ""
    path: Path | None
    size: int | None  # bytes of all files, registered or found
    problem: str = ""


def model_status(spec: ModelSpec, settings: SettingsOrDir = None) -> ModelStatus:
    """Whether a model is on this machine and where; never touches the network."""
    registered = sum(mf.size for mf in spec.files if mf.size) or None
    if spec.managed_by == "ultralytics":
        dirs = _search_dirs(settings)
        found = next((d / spec.main.filename for d in dirs if (d / spec.main.filename).is_file()), None)
        found = found or _ultralytics_cached(spec.name)
        if found is None:
            return ModelStatus(spec, False, "", None, None)
        return ModelStatus(spec, True, "ultralytics" if found.parent not in dirs else _label(found.parent, settings),
                           found, found.stat().st_size)
    if spec.managed_by == "huggingface":
        found = huggingface_cached(spec.name)
        size = sum(p.stat().st_size for p in found.iterdir() if p.is_file()) if found else None
        return ModelStatus(spec, found is not None, "huggingface cache" if found else "", found, size)
    for folder in _search_dirs(settings):
        paths = [folder / mf.filename for mf in spec.files]
        if all(p.is_file() for p in paths):
            problem = next((m for m in (_mismatch(p, mf, spec) for p, mf in zip(paths, spec.files)) if m), "")
            return ModelStatus(spec, not problem, "mismatch" if problem else _label(folder, settings),
                               paths[0], sum(p.stat().st_size for p in paths), problem)
    if spec.derived_from is not None:
        for folder in _search_dirs(settings):
            src = folder / spec.derived_from.source.filename
            if src.is_file() and _mismatch(src, spec.derived_from.source) is None:
                return ModelStatus(spec, True, "convertible", src, registered)
    return ModelStatus(spec, False, "", None, registered)


def _label(folder: Path, settings: SettingsOrDir) -> str:
    return "cache" if folder == user_cache_models_dir() else "models dir"
