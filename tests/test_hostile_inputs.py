"""Inputs that are not what they claim: a named pipe, a device, a socket or a folder given as a
video or a screenshot, names too long for the file system, `people --save` where nothing can be
written, a search with hundreds of screenshots, images of every bit depth. Each gets one line
that says what it is (exit 1), never a traceback or a hang, and the existing index stays as it was.

The frames-folder cases are in tests/test_hostile_frames.py."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import BadInputError
from tests.hostile import no_traceback, run_cli, snapshot
from tests.media import make_video

SEGMENTS = [((30, 10, 10), 30), ((40, 230, 240), 20), ((0, 0, 160), 40)]
QUICK = 60  # seconds: each refusal below comes before any model loads; a hang fails at this deadline


def tiny_settings(index_dir: Path, dinov2: Path) -> dict[str, str]:
    """The tiny models' settings, as CASTFINDER_* variables (for a CLI in its own process)."""
    return {"CASTFINDER_INDEX_DIR": str(index_dir), "CASTFINDER_DETECTOR": "yolov8n.yaml",
            "CASTFINDER_DINOV2_MODEL": str(dinov2), "CASTFINDER_DET_CONF": "0.0001", "CASTFINDER_DET_IMGSZ": "160",
            "CASTFINDER_MIN_PERSON_PX": "4", "CASTFINDER_DEVICE": "cpu", "CASTFINDER_CHANNELS": "dinov2"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_dinov2: Path) -> dict[str, str]:
    """The CLI's environment, with an index of a tiny video ("Heat") already built."""
    from core import Engine, Settings

    root = tmp_path_factory.mktemp("hostile-inputs")
    variables = tiny_settings(root / "indexes", tiny_dinov2)
    settings = Settings(_env_file=None, **{k.removeprefix("CASTFINDER_").lower(): v for k, v in variables.items()})
    Engine(settings, load_models=False).index(make_video(root / "heat.mp4", SEGMENTS), "Heat")
    return variables


@pytest.fixture
def index_dir(env: dict[str, str]) -> Iterator[Path]:
    """The index folder; the test fails unless every byte of it is the same afterwards."""
    folder = Path(env["CASTFINDER_INDEX_DIR"])
    before = snapshot(folder)
    yield folder
    assert snapshot(folder) == before


@pytest.fixture
def query(tmp_path: Path) -> Path:
    path = tmp_path / "query.png"
    Image.fromarray(np.full((96, 64, 3), (200, 30, 30), np.uint8)).save(path)
    return path


def make_odd(kind: str, folder: Path, name: str) -> Path:
    """A path named like a video or an image that is something else."""
    path = folder / name
    if kind == "fifo":
        os.mkfifo(path)  # nobody ever writes to it: opening it to read would block forever
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "folder":
        path.mkdir()
    else:
        device = Path(f"/dev/{kind}")
        if not device.exists():
            pytest.skip(f"no {device} here")
        path = device
    return path


WHAT = {"fifo": "a named pipe (FIFO)", "zero": "a device", "urandom": "a device", "socket": "a socket",
        "folder": "a folder"}


@pytest.mark.parametrize("kind", list(WHAT))
@pytest.mark.parametrize("command", ["index", "search", "people"])
def test_a_path_that_is_not_a_regular_file_is_refused_before_it_is_opened(
        env: dict[str, str], index_dir: Path, tmp_path: Path, command: str, kind: str) -> None:
    odd = make_odd(kind, tmp_path, "movie.mp4" if command == "index" else "shot.png")
    args = {"index": ["index", str(odd), "--movie", "Heat", "--quiet"],
            "search": ["search", "--movie", "heat", "--quiet", str(odd)],
            "people": ["people", str(odd)]}[command]
    proc = run_cli(args, env, timeout=QUICK)
    assert proc.returncode == 1 and no_traceback(proc), proc.stderr
    assert WHAT[kind] in proc.stderr and str(odd) in proc.stderr
    if command == "index" and kind == "folder":  # an empty folder named like a video: both said
        assert "a folder, not a video file, and no frames found" in proc.stderr


def test_a_pipe_swapped_in_after_the_check_still_cannot_block(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is opened without blocking and checked again on the open descriptor: a named
    pipe that replaces a checked file (a race) is refused, not waited on."""
    from core import inputs
    from core.search.images import load_image

    pipe = tmp_path / "shot.png"
    os.mkfifo(pipe)
    monkeypatch.setattr(inputs, "check_file", lambda path, what="a file": os.stat(path))  # the race: check passed
    with pytest.raises(BadInputError, match=r"a named pipe \(FIFO\), not an image file"):
        load_image(pipe, max_pixels=10**7)


LONG_NAME = "x" * 300 + ".png"  # longer than the 255 bytes a name that Linux file systems take
LONG_PATH = "/tmp/" + "deep/" * 1000 + "shot.png"  # 5,005 characters: over the 4,096 of a path


@pytest.mark.parametrize("which", ["name", "path"])
@pytest.mark.parametrize("command", ["index", "search", "people"])
def test_names_too_long_for_the_file_system_get_a_message(env: dict[str, str], index_dir: Path, tmp_path: Path,
                                                          command: str, which: str) -> None:
    target = str(tmp_path / LONG_NAME) if which == "name" else LONG_PATH
    args = {"index": ["index", target, "--movie", "Heat", "--quiet"],
            "search": ["search", "--movie", "heat", "--quiet", target],
            "people": ["people", target]}[command]
    proc = run_cli(args, env, timeout=QUICK)
    assert proc.returncode == 1 and no_traceback(proc), proc.stderr
    assert "the name is too long for the file system" in proc.stderr
    assert "rename the file or move it to a shorter path" in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert len(line) < 400  # the path is shortened in the message, not printed whole


def test_a_movie_name_of_5000_characters_gets_a_short_folder(env: dict[str, str], index_dir: Path,
                                                             tmp_path: Path) -> None:
    from core import slugify
    from core.store import read_manifest

    name = "Zebra crossing at night " * 209  # 5,016 characters
    assert len(slugify(name)) <= 64 and len(slugify(name.replace(" ", ""))) <= 64
    video = make_video(tmp_path / "zebra.mp4", SEGMENTS[:1])
    other = {**env, "CASTFINDER_INDEX_DIR": str(tmp_path / "indexes")}  # the shared index stays as it was
    proc = run_cli(["index", str(video), "--movie", name, "--quiet", "--json"], other, timeout=300)
    assert proc.returncode == 0 and no_traceback(proc), proc.stderr
    report = json.loads(proc.stdout)
    folder = Path(report["path"])
    assert report["slug"] == folder.name and len(folder.name) <= 64
    manifest = read_manifest(folder)
    assert manifest is not None and manifest.name == " ".join(name.split())


def test_people_save_into_a_missing_folder_says_so_and_creates_nothing(
        env: dict[str, str], index_dir: Path, query: Path, tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "folder" / "people.jpg"
    proc = run_cli(["people", str(query), "--save", str(target)], env, timeout=QUICK)
    assert proc.returncode == 1 and no_traceback(proc), proc.stderr
    assert f"the folder {target.parent} does not exist; create it first" in proc.stderr
    assert not (tmp_path / "no").exists()


def test_people_save_onto_a_folder_is_refused(env: dict[str, str], index_dir: Path, query: Path,
                                              tmp_path: Path) -> None:
    proc = run_cli(["people", str(query), "--save", str(tmp_path)], env, timeout=QUICK)
    assert proc.returncode == 1 and no_traceback(proc), proc.stderr
    assert "a folder; give a file name such as people.jpg" in proc.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a disk that is always full)")
def test_people_save_onto_a_full_disk_says_so(env: dict[str, str], index_dir: Path, query: Path) -> None:
    proc = run_cli(["people", str(query), "--save", "/dev/full"], env, timeout=300)
    assert proc.returncode == 1 and no_traceback(proc), proc.stderr
    assert "--save /dev/full: could not write it: no space left on the disk" in proc.stderr


def test_people_save_writes_a_jpeg_and_replaces_an_old_file(env: dict[str, str], index_dir: Path, query: Path,
                                                            tmp_path: Path) -> None:
    target = tmp_path / "out" / "people.jpg"
    target.parent.mkdir()
    target.write_bytes(b"old")
    target.chmod(0o640)
    proc = run_cli(["people", str(query), "--save", str(target)], env, timeout=300)
    assert proc.returncode == 0 and no_traceback(proc), proc.stderr
    assert f"Saved {target}" in proc.stdout
    assert Image.open(target).format == "JPEG" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in target.parent.iterdir()] == ["people.jpg"]  # no temporary file left beside it


def test_a_search_with_200_images_is_refused_at_once(env: dict[str, str], index_dir: Path, query: Path) -> None:
    proc = run_cli(["search", "--movie", "heat", "--quiet", *[str(query)] * 200], env, timeout=QUICK)
    assert proc.returncode == 1 and no_traceback(proc), proc.stderr
    assert "200 query images; a search takes at most 20 (CASTFINDER_MAX_QUERY_IMAGES)" in proc.stderr


def test_the_engine_caps_query_images(make_settings, query: Path) -> None:
    from core import Engine

    engine = Engine(make_settings(max_query_images=3), load_models=False)
    capped = r"^4 query images; a search takes at most 3 \(CASTFINDER_MAX_QUERY_IMAGES\)"
    with pytest.raises(BadInputError, match=capped):
        engine.search("anything", [query] * 4)  # refused before the movie is even looked up

    def endless() -> Iterator[Path]:
        while True:
            yield query

    with pytest.raises(BadInputError, match=r"^more than 3 query images"):
        engine.search("anything", endless())


@pytest.mark.parametrize("value", ["0", "1001", "many"])
def test_the_query_image_cap_is_bounded(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from core import Settings

    monkeypatch.setenv("CASTFINDER_MAX_QUERY_IMAGES", value)
    with pytest.raises(ValidationError, match="max_query_images"):
        Settings(_env_file=None)


def test_search_shows_its_progress_on_stderr(env: dict[str, str], index_dir: Path, query: Path,
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from castfinder.cli import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["search", "--movie", "heat", "--json", str(query), str(query), str(query)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["movie"] == "Heat"  # stdout is still exactly one object
    assert "Finding people" in captured.err and "3/3" in captured.err and "Searching" in captured.err
    assert main(["search", "--movie", "heat", "--quiet", str(query)]) == 0
    assert "Finding people" not in capsys.readouterr().err


# -- bit depth and colour modes ---------------------------------------------------------------

def _grey() -> np.ndarray:
    """An 8-bit grey picture with every level in it."""
    return np.arange(96 * 64, dtype=np.int64).reshape(96, 64).__mod__(256).astype(np.uint8)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_a_16_bit_grey_png_loads_as_its_8_bit_version(tmp_path: Path) -> None:
    from core.search.images import load_image

    grey = _grey()
    eight, sixteen = tmp_path / "g8.png", tmp_path / "g16.png"
    Image.fromarray(grey, "L").save(eight)
    Image.fromarray(grey.astype(np.uint16) * 257).save(sixteen)  # 8 → 16 bits as every tool scales it
    assert Image.open(sixteen).mode == "I;16"
    loaded = np.asarray(load_image(sixteen, max_pixels=10**7))
    assert np.array_equal(loaded, np.asarray(load_image(eight, max_pixels=10**7)))
    assert np.array_equal(loaded, np.repeat(grey[:, :, None], 3, axis=2))


def test_a_16_bit_query_scores_as_its_8_bit_version(env: dict[str, str], index_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The user-visible side: the same picture saved at 16 bits finds the same shots, same scores
    (Pillow's own conversion clipped it to white: scores off by up to 0.6 with the tiny model)."""
    from castfinder.cli import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    grey = _grey()
    Image.fromarray(grey, "L").save(tmp_path / "g8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    results = []
    for name in ("g8.png", "g16.png"):
        assert main(["search", "--movie", "heat", "--json", "--quiet", str(tmp_path / name)]) == 0
        results.append(json.loads(capsys.readouterr().out)["results"])
    assert results[0] == results[1] and results[0]


def _modes() -> dict[str, tuple[Image.Image, np.ndarray]]:
    """Images in each colour mode and the 8-bit RGB each must load as."""
    grey = _grey()
    rgb = np.stack([grey, 255 - grey, np.roll(grey, 7)], axis=2)
    grey3 = np.repeat(grey[:, :, None], 3, axis=2)
    opaque = np.full(grey.shape, 255, np.uint8)
    half = (np.arange(grey.shape[1]) < grey.shape[1] // 2)[None, :].repeat(grey.shape[0], 0)  # left half clear
    alpha = np.where(half, 0, 255).astype(np.uint8)
    over_white = np.where(half[:, :, None], 255, grey3).astype(np.uint8)
    palette = Image.fromarray(grey, "P")
    palette.putpalette([level for level in range(256) for _ in range(3)])  # index i shows grey i
    palette.info["transparency"] = int(grey[0, 0])  # level 0 is transparent
    keyed = grey3.copy()
    keyed[grey == grey[0, 0]] = 255
    return {
        "I;16": (Image.fromarray(grey.astype(np.uint16) * 257), grey3),
        "I": (Image.fromarray(grey.astype(np.int32) * 257, "I"), grey3),
        "F 0-1": (Image.fromarray(grey.astype(np.float32) / 255, "F"), grey3),
        "F 0-255": (Image.fromarray(grey.astype(np.float32), "F"), grey3),
        "L": (Image.fromarray(grey, "L"), grey3),
        "LA opaque": (Image.fromarray(np.dstack([grey, opaque]), "LA"), grey3),
        "LA half clear": (Image.fromarray(np.dstack([grey, alpha]), "LA"), over_white),
        "RGBA half clear": (Image.fromarray(np.dstack([grey3, alpha]), "RGBA"), over_white),
        "P with transparency": (palette, keyed),
        "CMYK": (Image.fromarray(rgb, "RGB").convert("CMYK"), rgb),
        "RGB": (Image.fromarray(rgb, "RGB"), rgb),
    }


@pytest.mark.parametrize("mode", list(_modes()))
def test_every_mode_loads_as_8_bit_rgb_the_same_way_from_memory_and_from_a_file(mode: str, tmp_path: Path) -> None:
    from core.search.images import load_image

    image, expected = _modes()[mode]
    loaded = load_image(image, max_pixels=10**7)
    assert loaded.mode == "RGB" and np.array_equal(np.asarray(loaded), expected)
    if image.mode in ("I;16", "L", "LA", "RGBA", "P", "RGB"):  # what PNG can hold: through the file too
        path = tmp_path / "q.png"
        path.write_bytes(_png(image))
        assert np.array_equal(np.asarray(load_image(path, max_pixels=10**7)), expected)


def test_a_48_bit_rgb_png_and_16_bit_arrays_take_the_high_byte(tmp_path: Path) -> None:
    import cv2

    from core.search.images import load_image

    rgb = np.stack([_grey(), 255 - _grey(), np.roll(_grey(), 7)], axis=2)
    deep = rgb.astype(np.uint16) * 257
    path = tmp_path / "rgb48.png"
    cv2.imwrite(str(path), deep[:, :, ::-1])  # OpenCV writes BGR
    assert np.array_equal(np.asarray(load_image(path, max_pixels=10**7)), rgb)
    assert np.array_equal(np.asarray(load_image(deep, max_pixels=10**7)), rgb)
    assert np.array_equal(np.asarray(load_image(rgb.astype(np.float64) / 255, max_pixels=10**7)), rgb)


def test_a_real_196_megapixel_png_is_refused_without_a_traceback(tmp_path: Path) -> None:
    """Over twice Pillow's own bound, where Image.open itself raises DecompressionBombError."""
    from core.search.images import load_image

    path = tmp_path / "huge.png"
    Image.new("1", (14_000, 14_000), 1).save(path)  # 196 megapixels in 50 kB
    with pytest.raises(BadInputError, match=r"too large \(196 megapixels\); send one under 80 megapixels"):
        load_image(path, max_pixels=80_000_000)
