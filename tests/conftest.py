"""Shared fixtures: tiny random models built from configs, the real weights from ../shared when
present, and small real indexes. Nothing here downloads anything."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.postgres_server import PostgresServer, find_bindir, missing_reason
from tests.tiny_models import save_clip, save_dinov2

# Before ultralytics / transformers are imported anywhere: no network, no writes to ~/.config.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="castfinder-yolo-"))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# Tests build their settings explicitly; a developer's CASTFINDER_* must not leak in.
for _key in [k for k in os.environ if k.startswith("CASTFINDER_") and k != "CASTFINDER_SHARED"]:
    del os.environ[_key]

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CASTFINDER_SHARED", REPO.parent / "shared")).resolve()
DATA = SHARED / "data"
WEIGHTS = SHARED / "weights"
PERSON_DETECTOR = WEIGHTS / "person_yolov8s_falldet.pt"
TITANIC = DATA / "titanic" / "titanic_20s.mp4"
GOLDENEYE_FRAMES = DATA / "goldeneye" / "frames"

requires_shared = pytest.mark.skipif(
    not (PERSON_DETECTOR.is_file() and TITANIC.is_file() and GOLDENEYE_FRAMES.is_dir()),
    reason=f"needs the real footage and weights in {SHARED} (only on the project's own machines)",
)


@pytest.fixture(autouse=True)
def _no_bot_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOT_TOKEN", raising=False)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session (127.0.0.1, a free port, a temp dir); skips with
    the reason when PostgreSQL or asyncpg is not installed."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    bindir = find_bindir()
    assert bindir is not None
    server = PostgresServer(bindir)
    try:
        server.init()
        yield server
    finally:
        server.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """What `Storage.open` opens, once per backend: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "bot.sqlite3"
    server: PostgresServer = request.getfixturevalue("postgres")
    return await server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def tiny_dinov2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 32-d DINOv2 saved the way a Hugging Face repo is laid out (config, weights, processor)."""
    return save_dinov2(tmp_path_factory.mktemp("tiny-dinov2"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random CLIP vision tower with a 24-d projection, saved like a Hugging Face repo."""
    return save_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture
def make_settings(tmp_path: Path, tiny_dinov2: Path):
    """Settings for a test: a private index dir, the tiny DINOv2, a random YOLO unless told."""
    from core import Settings

    def make(**overrides) -> Settings:
        # The tiny DINOv2 alone unless a test asks for channels (the product's default channels
        # need real weights).
        values = dict(index_dir=tmp_path / "indexes", detector="yolov8n.yaml", dinov2_model=str(tiny_dinov2),
                      device="cpu", det_imgsz=320, channels=["dinov2"])
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


def real_detector_settings(index_dir: Path, dinov2: Path, **overrides):
    from core import Settings

    values = dict(index_dir=index_dir, detector=str(PERSON_DETECTOR), person_classes=[0, 1],
                  dinov2_model=str(dinov2), device="cpu", channels=["dinov2"], models_dir=WEIGHTS)
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def titanic_engine(tmp_path_factory: pytest.TempPathFactory, tiny_dinov2: Path):
    """An engine with the real person detector and a real index of the Titanic clip (1 fps, to
    keep it quick), movie name "Titanic". Skips without ../shared."""
    if not (PERSON_DETECTOR.is_file() and TITANIC.is_file()):
        pytest.skip(f"needs {PERSON_DETECTOR} and {TITANIC}")
    from core import Engine

    settings = real_detector_settings(tmp_path_factory.mktemp("titanic-index"), tiny_dinov2, sample_fps=1.0)
    engine = Engine(settings)
    engine.index(TITANIC, "Titanic")
    return engine
