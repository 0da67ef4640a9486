"""The `castfinder` command: exit codes, messages and machine-readable output."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from castfinder.cli import main
from tests.media import make_video

SEGMENTS = [((30, 10, 10), 30), ((40, 230, 240), 20), ((0, 0, 160), 40)]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_dinov2: Path) -> Path:
    import torch

    torch.manual_seed(0)
    index_dir = tmp_path / "indexes"
    for key, value in {"INDEX_DIR": str(index_dir), "DETECTOR": "yolov8n.yaml", "DINOV2_MODEL": str(tiny_dinov2),
                       "DET_CONF": "0.0001", "DET_IMGSZ": "160", "MIN_PERSON_PX": "4", "DEVICE": "cpu",
                       "CHANNELS": "dinov2"}.items():
        monkeypatch.setenv(f"CASTFINDER_{key}", value)
    return index_dir


@pytest.fixture
def indexed(env: Path, tmp_path: Path, capsys) -> Path:
    video = make_video(tmp_path / "heat.mp4", SEGMENTS)
    assert main(["index", str(video), "--movie", "Heat (1995)", "--fps", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Indexed 'Heat (1995)'" in out and "3 shots" in out
    return video


@pytest.fixture
def query(tmp_path: Path) -> Path:
    path = tmp_path / "query.png"
    Image.fromarray(np.full((96, 64, 3), (200, 30, 30), np.uint8)).save(path)
    return path


def test_search_prints_a_table_with_times_and_thumbnails(indexed: Path, query: Path, capsys) -> None:
    assert main(["search", "--movie", "heat", "--top", "2", str(query)]) == 0
    out = capsys.readouterr().out
    unwrapped = out.replace("\n", "").replace("│", "").replace(" ", "")  # the thumbnail column folds long paths
    assert "Heat (1995)" in out and "00:00:0" in out and "thumbs" in unwrapped
    assert re.search(r"people \d+\.\d\d s · embed \d+\.\d\d s · search \d+\.\d\d s · rank \d+\.\d\d s", out)


def test_search_json_is_one_object_with_the_stable_schema(indexed: Path, query: Path, capsys) -> None:
    assert main(["search", "--movie", "HEAT", "--top", "3", "--json", str(query), str(query)]) == 0
    data = json.loads(capsys.readouterr().out)
    # Three shots, three asked for; the red query matches the red shot (BGR (0, 0, 160) is the third).
    assert data["movie"] == "Heat (1995)" and len(data["results"]) == 3
    assert data["results"][0]["shot"] == 3 and sorted(r["shot"] for r in data["results"]) == [1, 2, 3]
    for rank, r in enumerate(data["results"], start=1):
        assert r["rank"] == rank and isinstance(r["shot"], int) and r["scene"] is None
        assert isinstance(r["start_s"], float) and r["start_s"] < r["end_s"] and len(r["bbox"]) == 4


def test_movies_lists_what_is_indexed(indexed: Path, capsys) -> None:
    assert main(["movies", "--json"]) == 0
    [m] = json.loads(capsys.readouterr().out)["movies"]
    assert (m["name"], m["slug"], m["shots"]) == ("Heat (1995)", "heat-1995", 3)
    assert main(["movies"]) == 0
    assert "heat-1995" in capsys.readouterr().out


def test_no_movies_yet_says_how_to_index_one(env: Path, capsys) -> None:
    assert main(["movies"]) == 0
    assert "castfinder index" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["search", "--movie", "Casablanca", "{query}"], 1, "No indexed movie matches 'Casablanca'"),
        (["search", "--movie", "heat", "{notimage}"], 1, "not an image"),
        (["search", "--movie", "heat", "{tmp}/missing.png"], 1, "no such file"),
        (["search", "--movie", "heat", "--people", "0", "{query}"], 2, "--people"),
        (["search", "--movie", "heat", "--people", "99", "{query}"], 1, "there is no person 99"),
        (["search", "--movie", "heat", "--top", "0", "{query}"], 2, "--top"),
        (["index", "{textmp4}", "--movie", "Heat (1995)"], 1, "not a video"),
        (["index", "{tmp}/empty", "--movie", "Heat (1995)"], 1, "no frames found"),
        (["index", "{video}", "--movie", "../Heat (1995)"], 1, "looks like a file path"),
        (["index", "{video}", "--movie", "Heat", "--fps", "-1"], 2, "invalid settings"),
    ],
)
def test_bad_input_gets_a_message_and_a_nonzero_exit(indexed: Path, query: Path, tmp_path: Path, env: Path, capsys,
                                                     argv: list[str], code: int, message: str) -> None:
    notimage = tmp_path / "notes.png"
    notimage.write_text("hello")
    textmp4 = tmp_path / "movie.mp4"
    textmp4.write_text("not a video")
    (tmp_path / "empty").mkdir()
    before = sorted(p.name for p in env.iterdir())
    manifest = (env / "heat-1995" / "manifest.json").read_bytes()
    args = [a.format(query=query, notimage=notimage, tmp=tmp_path, textmp4=textmp4, video=indexed) for a in argv]
    assert main(args) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in env.iterdir()) == before
    assert (env / "heat-1995" / "manifest.json").read_bytes() == manifest


def test_the_console_script_runs(env: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "castfinder", "movies", "--json"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"movies": [], "damaged": []}
    proc = subprocess.run([sys.executable, "-m", "castfinder", "search", "--movie", "x"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "images" in proc.stderr


def _choices_by_command() -> dict[str, dict[str, list[str]]]:
    """{command: {dest: choices}} of every option of every sub-command that has choices."""
    import argparse

    from castfinder.cli import build_parser

    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: {a.dest: list(a.choices) for a in p._actions if a.choices is not None}
            for name, p in sub.choices.items()}


def test_every_choice_list_is_the_settings_literal() -> None:
    """The CLI never retypes the values a setting accepts: each choice list is the Literal's."""
    from typing import get_args

    from core.evaluation.harness import PeopleMode
    from core.evaluation.metrics import TieMode
    from core.settings import Aggregation, DetRuntime, DeviceName, EmbedderName, FaissKind, Settings

    expected = {"embedder": EmbedderName, "device": DeviceName, "det_runtime": DetRuntime,
                "faiss_index": FaissKind, "aggregation": Aggregation, "ties": TieMode, "people": PeopleMode}
    found = _choices_by_command()
    seen = set()
    for command, options in found.items():
        for dest, values in options.items():
            assert dest in expected, f"{command} --{dest}: choices that do not come from a Literal"
            assert values == list(get_args(expected[dest])), (command, dest)
            seen.add(dest)
    assert seen == set(expected)
    # Where the option is a setting, the Literal is the field's own type: every value is accepted.
    for dest in ("embedder", "device", "det_runtime", "faiss_index", "aggregation"):
        assert Settings.model_fields[dest].annotation == expected[dest]
    assert found["eval"]["aggregation"] == found["search"]["aggregation"]
    assert {c for c, o in found.items() if "device" in o} == {"index", "movies", "search", "cast", "people", "eval",
                                                               "identify", "engines"}


@pytest.mark.parametrize(("flag", "dest"), [("--embedder", "embedder"), ("--device", "device"),
                                            ("--det-runtime", "det_runtime"), ("--faiss", "faiss_index")])
def test_each_choice_reaches_the_settings(flag: str, dest: str) -> None:
    from castfinder.cli import build_parser, make_settings

    for value in _choices_by_command()["index"][dest]:
        args = build_parser().parse_args(["index", "film.mp4", "--movie", "m", flag, value])
        assert getattr(make_settings(args), dest) == value


def test_the_cli_imports_no_engine_until_a_command_runs() -> None:
    """`castfinder --help` and usage errors answer without loading FAISS, OpenCV or torch, and
    the CLI's modules form a tree: common imports neither command module, eval_cmd not cli."""
    code = ("import sys\n"
            "import castfinder.common\n"
            "assert not {'castfinder.cli', 'castfinder.eval_cmd'} & set(sys.modules)\n"
            "import castfinder.eval_cmd\n"
            "assert 'castfinder.cli' not in sys.modules\n"
            "from castfinder.cli import build_parser\n"
            "build_parser().parse_args(['eval', '--movie', 'm', '--ground-truth', 'g', '--queries', 'q'])\n"
            "print(sorted({'faiss', 'cv2', 'torch', 'numpy', 'transformers', 'rich'} & set(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
