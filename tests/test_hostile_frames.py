"""Frames folders whose files are not what their names claim: frames that are no image at all or
empty, numbers too large for the index, frames declaring 2,500 megapixels, named pipes and devices
named like frames, frames of every bit depth. A folder with nothing readable is refused like an
empty one; a bad frame among good ones is skipped with a warning that names it."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.hostile import no_traceback, run_cli, snapshot
from tests.media import make_frames_folder


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width×height RGB pixels and holds almost none: what a decompression
    bomb looks like to a reader that trusts the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_dinov2: Path) -> dict[str, str]:
    """The CLI's environment, with an index ("Old") already built from a good frames folder."""
    from core import Engine, Settings

    root = tmp_path_factory.mktemp("hostile-frames")
    variables = {"CASTFINDER_INDEX_DIR": str(root / "indexes"), "CASTFINDER_DETECTOR": "yolov8n.yaml",
                 "CASTFINDER_DINOV2_MODEL": str(tiny_dinov2), "CASTFINDER_DET_CONF": "0.0001",
                 "CASTFINDER_DET_IMGSZ": "160", "CASTFINDER_MIN_PERSON_PX": "4", "CASTFINDER_DEVICE": "cpu",
                 "CASTFINDER_CHANNELS": "dinov2"}
    settings = Settings(_env_file=None, **{k.removeprefix("CASTFINDER_").lower(): v for k, v in variables.items()})
    Engine(settings, load_models=False).index(make_frames_folder(root / "old", "old", {(1, 1): 2}), "Old")
    return variables


@pytest.fixture
def index_dir(env: dict[str, str]) -> Path:
    return Path(env["CASTFINDER_INDEX_DIR"])


@pytest.mark.parametrize("content", ["random bytes", "zero bytes"])
def test_a_folder_with_no_readable_frame_is_refused_and_nothing_is_written(
        env: dict[str, str], index_dir: Path, tmp_path: Path, content: str) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for j in range(6):
        data = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes() if content == "random bytes" else b""
        (folder / f"film-1-shot_{j // 2 + 1}-frame_{j}.jpg").write_bytes(data)
    before, listing = snapshot(index_dir), sorted(p.name for p in index_dir.iterdir())
    proc = run_cli(["index", str(folder), "--movie", "Film", "--quiet"], env, timeout=300)
    assert proc.returncode == 1 and no_traceback(proc), proc.stderr
    why = "not an image that can be read" if content == "random bytes" else "the file is empty"
    assert f"{folder}: not one of its frames could be read as an image (6 tried; the first: " in proc.stderr
    assert why in proc.stderr and "nothing was indexed" in proc.stderr
    assert snapshot(index_dir) == before and sorted(p.name for p in index_dir.iterdir()) == listing


def test_bad_frames_among_good_ones_are_skipped_with_a_warning_each(
        env: dict[str, str], index_dir: Path, tmp_path: Path) -> None:
    folder = make_frames_folder(tmp_path / "frames", "film", {(1, 1): 2, (1, 2): 2})
    good = (folder / "film-1-shot_1-frame_0.jpg").read_bytes()
    (folder / "film-1-shot_99999999999999999999-frame_0.jpg").write_bytes(good)  # over SQLite's 64 bits
    (folder / f"film-{'7' * 30}-shot_1-frame_0.jpg").write_bytes(good)
    (folder / "film-1-shot_2-frame_7.png").write_bytes(png_header(50_000, 50_000))  # 2,500 megapixels declared
    Image.new("1", (14_000, 14_000), 1).save(folder / "film-1-shot_2-frame_8.png")  # a real 196-megapixel PNG
    (folder / "film-1-shot_2-frame_9.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    os.mkfifo(folder / "film-1-shot_2-frame_10.jpg")  # opening it would block forever
    (folder / "film-1-shot_2-frame_11.jpg").mkdir()
    if Path("/dev/zero").exists():
        (folder / "film-1-shot_2-frame_12.jpg").symlink_to("/dev/zero")  # would never end
    before = snapshot(index_dir)
    proc = run_cli(["index", str(folder), "--movie", "Film", "--quiet", "--json"], env, timeout=300)
    assert proc.returncode == 0 and no_traceback(proc), proc.stderr
    report = json.loads(proc.stdout)
    warnings = "\n".join(report["warnings"])
    assert "2 frame file(s) have a scene, shot or frame number of more than 9 digits" in warnings
    not_regular = 3 if Path("/dev/zero").exists() else 2
    assert f"{not_regular} file(s) named like frames are not regular files" in warnings
    assert "film-1-shot_2-frame_7.png: the image is too large (2500 megapixels); frames are read up to 80 " \
           "megapixels (CASTFINDER_MAX_IMAGE_PIXELS); skipped" in warnings
    assert "film-1-shot_2-frame_8.png: the image is too large (196 megapixels)" in warnings
    assert "film-1-shot_2-frame_9.jpg: " in warnings
    # The good frames are all there: two shots of two frames.
    assert report["shots"] == 2 and report["frames_sampled"] == 4
    assert snapshot(index_dir) != before and "old" in os.listdir(index_dir)


def test_a_folder_whose_frames_are_all_unusable_names_is_refused(env: dict[str, str], index_dir: Path,
                                                                  tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "film-1-shot_99999999999999999999-frame_0.jpg").write_bytes(b"")
    os.mkfifo(folder / "film-1-shot_1-frame_0.jpg")
    before = snapshot(index_dir)
    proc = run_cli(["index", str(folder), "--movie", "Film", "--quiet"], env, timeout=300)
    assert proc.returncode == 1 and no_traceback(proc), proc.stderr
    assert "no frames found (1 file(s) named like frames are not regular files" in proc.stderr
    assert "1 frame file(s) have a scene, shot or frame number of more than 9 digits" in proc.stderr
    assert snapshot(index_dir) == before


def test_frames_of_any_bit_depth_give_the_pixels_a_query_image_gives(tmp_path: Path) -> None:
    """One decoder for frames and query images: a 16-bit grey frame is its 8-bit version, and
    both are what `load_image` makes of the same file."""
    from core.indexing.sources import FramesFolderSource
    from core.search.images import load_image
    from core.types import no_progress

    grey = (np.arange(64 * 48).reshape(48, 64) % 256).astype(np.uint8)
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(grey, "L").save(folder / "film-1-shot_1-frame_0.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "film-1-shot_2-frame_0.png")
    source = FramesFolderSource(folder, fps=5.0)
    frames = list(source.sample(source.shots(no_progress), 5.0, no_progress))
    assert len(frames) == 2 and not source.warnings
    expected = np.repeat(grey[:, :, None], 3, axis=2)
    for frame, name in zip(frames, ("film-1-shot_1-frame_0.png", "film-1-shot_2-frame_0.png")):
        assert frame.image.dtype == np.uint8 and np.array_equal(frame.image, expected)
        assert np.array_equal(frame.image, np.asarray(load_image(folder / name, max_pixels=10**7)))
