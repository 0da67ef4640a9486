"""Damaged indexes on disk: each is refused by validation with a reason users read, listed apart
from the movies, and never hides, breaks or alters a healthy one.

One small index folder (two movies, two channels of different dimensions) is built once per
module; each case copies it and damages the copy of "Heat (1995)", leaving "Alien" healthy."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from castfinder.cli import main
from core import DamagedIndexError, Engine, Settings
from core.search import calibration
from core.store import MANIFEST, META, build_faiss
from tests.hostile import no_traceback, run_cli, snapshot
from tests.media import make_video

HEAT, ALIEN = "heat-1995", "alien"
# Different lengths: the two indexes hold different numbers of crops and vectors.
HEAT_SEGMENTS = [((30, 10, 10), 30), ((40, 230, 240), 20), ((0, 0, 160), 40)]
ALIEN_SEGMENTS = [((200, 200, 30), 24), ((10, 120, 10), 36)]


def _settings(index_dir: Path, dinov2: Path, clip: Path) -> dict[str, str]:
    # A random YOLO proposes boxes below its head's initial class probability (tests/test_indexing.py).
    return {"INDEX_DIR": str(index_dir), "DETECTOR": "yolov8n.yaml", "DINOV2_MODEL": str(dinov2),
            "CLIP_MODEL": str(clip), "DET_CONF": "0.0001", "DET_IMGSZ": "160", "MIN_PERSON_PX": "4",
            "DEVICE": "cpu", "CHANNELS": "dinov2,clip", "SAMPLE_FPS": "2"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_dinov2: Path, tiny_clip: Path) -> Path:
    import torch

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hostile-index")
    values = {k.lower(): v for k, v in _settings(root / "indexes", tiny_dinov2, tiny_clip).items()}
    engine = Engine(Settings(_env_file=None, **values), load_models=False)  # type: ignore[arg-type]
    engine.index(make_video(root / "heat.mp4", HEAT_SEGMENTS), "Heat (1995)")
    engine.index(make_video(root / "alien.mp4", ALIEN_SEGMENTS), "Alien")
    counts = {m.slug: m.vectors for m in engine.movies()}
    assert len(counts) == 2 and counts[HEAT] != counts[ALIEN], counts  # "another index's file" relies on it
    return root / "indexes"


@pytest.fixture
def index_dir(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dinov2: Path,
              tiny_clip: Path) -> Path:
    """A private copy of the built folder, which the CLI uses."""
    import torch

    torch.manual_seed(0)
    copy = tmp_path / "indexes"
    shutil.copytree(built, copy)
    for key, value in _settings(copy, tiny_dinov2, tiny_clip).items():
        monkeypatch.setenv(f"CASTFINDER_{key}", value)
    return copy


@pytest.fixture
def query(tmp_path: Path) -> Path:
    path = tmp_path / "query.png"
    Image.fromarray(np.full((96, 64, 3), (200, 30, 30), np.uint8)).save(path)
    return path


def strict_json(text: str) -> dict:
    """`json.loads` that refuses NaN and Infinity, as every JSON parser but Python's does."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} in JSON output")

    return json.loads(text, parse_constant=refuse)


# -- the damage ---------------------------------------------------------------------------------

def _manifest(folder: Path, change: Callable[[dict], object]) -> None:
    path = folder / MANIFEST
    data = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(change(data)), encoding="utf-8")  # json.dumps writes NaN as NaN


def _with(data: dict, **parts: object) -> dict:
    return {**data, **parts}


def _channel(data: dict, name: str, **parts: object) -> dict:
    return _with(data, channels={**data["channels"], name: {**data["channels"][name], **parts}})


def _calibration(data: dict, **parts: object) -> dict:
    return _channel(data, "dinov2", calibration={**data["channels"]["dinov2"]["calibration"], **parts})


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


def _swap(a: Path, b: Path) -> None:
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)


def _faiss_like(folder: Path, *, dim: int | None = None, shift: int = 0) -> None:
    """Replace dinov2.faiss with a well-formed flat index of other vectors: another dimension, or
    crop ids shifted past the crops."""
    spec = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["channels"]["dinov2"]
    n, d = spec["vectors"], dim or spec["dim"]
    index, _ = build_faiss(np.eye(n, d, dtype=np.float32), np.arange(n) + shift, "flat")
    import faiss

    (folder / "dinov2.faiss").write_bytes(faiss.serialize_index(index).tobytes())


def _sql(folder: Path, statement: str) -> None:
    db = sqlite3.connect(folder / META)
    db.execute(statement)
    db.commit()
    db.close()


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


# (damage of folder heat, given the index folder; a regex of the reason users read)
DAMAGE: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    # manifest.json: a field of the wrong type, a number that is not finite, limits
    "manifest: source a string": (lambda h, _: _manifest(h, lambda d: _with(d, source="heat.mp4")),
                                  "source should be an object, not a string"),
    "manifest: counts a list": (lambda h, _: _manifest(h, lambda d: _with(d, counts=[3, 21])),
                                "counts should be an object, not a list"),
    "manifest: calibration a string": (lambda h, _: _manifest(h, lambda d: _channel(d, "dinov2", calibration="x")),
                                       r"channels\.dinov2\.calibration should be an object, not a string"),
    "manifest: built_at a number": (lambda h, _: _manifest(h, lambda d: _with(d, built_at=20260101)),
                                    "built_at should be a string, not 20260101"),
    "manifest: name a number": (lambda h, _: _manifest(h, lambda d: _with(d, name=7)),
                                "name should be a string, not 7"),
    "manifest: a channel a string": (lambda h, _: _manifest(h, lambda d: _with(d, channels={
                                         **d["channels"], "clip": "clip.faiss"})),
                                     r"channels\.clip should be an object, not a string"),
    "manifest: NaN calibration": (lambda h, _: _manifest(h, lambda d: _calibration(d, neg_mean=float("nan"))),
                                  r"channels\.dinov2\.calibration\.neg_mean should be a finite number "
                                  r"\(not NaN or Infinity\), not NaN"),
    "manifest: calibration spread 0": (lambda h, _: _manifest(h, lambda d: _calibration(d, neg_std=0)),
                                       r"channels\.dinov2\.calibration: neg_std is 0, not above 0"),
    "manifest: Infinity duration": (lambda h, _: _manifest(h, lambda d: _with(d, duration_s=float("inf"))),
                                    r"duration_s should be a finite number \(not NaN or Infinity\), not Infinity"),
    "manifest: 40 levels deep": (lambda h, _: _manifest(h, lambda d: _with(d, warnings=[[[[[[[[[[[[[[[[[[
                                     [[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]])),
                                 "manifest.json is nested more than 32 levels deep"),
    "manifest: over the size limit": (lambda h, _: (h / MANIFEST).write_text(
                                          (h / MANIFEST).read_text(encoding="utf-8") + " " * (1 << 20)),
                                      r"manifest.json is over 1024 kB"),
    "manifest: a FIFO": (lambda h, _: _fifo(h / MANIFEST), "manifest.json is not a regular file"),
    "manifest: another folder's": (lambda h, _: _manifest(h, lambda d: _with(d, slug=ALIEN)),
                                   "its manifest is that of 'alien', not of the folder 'heat-1995'"),
    # FAISS files
    "faiss: missing": (lambda h, _: (h / "dinov2.faiss").unlink(), "dinov2.faiss is missing"),
    "faiss: truncated": (lambda h, _: _truncate(h / "dinov2.faiss"), r"dinov2.faiss is \d+ bytes, .*\(truncated\)"),
    "faiss: zeroed": (lambda h, _: _zero(h / "dinov2.faiss"), "dinov2.faiss is not a FAISS index of castfinder's"),
    "faiss: dinov2 and clip swapped": (lambda h, _: _swap(h / "dinov2.faiss", h / "clip.faiss"),
                                       "dinov2.faiss holds 24-d vectors, but channel dinov2 is 32-d"),
    "faiss: wrong dim": (lambda h, _: _faiss_like(h, dim=16), "dinov2.faiss holds 16-d vectors, but channel dinov2"),
    "faiss: another index's": (lambda h, d: shutil.copyfile(d / ALIEN / "dinov2.faiss", h / "dinov2.faiss"),
                               r"dinov2.faiss holds \d+ vectors, but channel dinov2 has \d+ \(a file of another"),
    "faiss: ids past the crops": (lambda h, _: _faiss_like(h, shift=1000),
                                  r"dinov2.faiss holds a vector of crop \d+, but meta.sqlite has crops 0 to \d+"),
    # meta.sqlite
    "sqlite: missing": (lambda h, _: (h / META).unlink(), "meta.sqlite is missing"),
    "sqlite: truncated": (lambda h, _: _truncate(h / META), r"meta.sqlite is truncated \(\d+ of \d+ bytes\)"),
    "sqlite: zeroed": (lambda h, _: _zero(h / META), "meta.sqlite is not a SQLite database"),
    "sqlite: dangling shot rows": (lambda h, _: _sql(h, "UPDATE crops SET shot_id = 999 WHERE id = 0"),
                                   "meta.sqlite: crop 0 belongs to shot 999, which does not exist"),
    "sqlite: a table missing": (lambda h, _: _sql(h, "DROP TABLE faces"), "meta.sqlite has no table faces"),
    "sqlite: crops missing": (lambda h, _: _sql(h, "DELETE FROM crops WHERE id > 0"),
                              r"channel \w+ has \d+ vectors but meta.sqlite only 1 crops"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_index_is_listed_apart_refused_with_its_reason_and_hides_nothing(
        case: str, index_dir: Path, query: Path, capsys: pytest.CaptureFixture[str]) -> None:
    damage, reason = DAMAGE[case]
    heat, alien = index_dir / HEAT, index_dir / ALIEN
    damage(heat, index_dir)
    healthy, damaged = snapshot(alien), snapshot(heat)

    assert main(["movies"]) == 0
    out = capsys.readouterr().out
    assert ALIEN in out and "Damaged indexes (1), not searchable until re-indexed:" in out
    assert re.search(reason, out) and "re-index: castfinder index " in out

    assert main(["movies", "--json"]) == 0
    listing = strict_json(capsys.readouterr().out)
    assert [m["slug"] for m in listing["movies"]] == [ALIEN]
    [entry] = listing["damaged"]
    assert (entry["slug"], entry["path"]) == (HEAT, str(heat)) and re.search(reason, entry["reason"])
    assert shlex.split(entry["reindex"])[:2] == ["castfinder", "index"] and "--movie" in entry["reindex"]

    assert main(["search", "--movie", "heat", "--json", str(query)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.search(r"castfinder: error: The index of '.+' \(.+heat-1995\) is damaged: ", captured.err)
    assert re.search(reason, captured.err) and "Re-index it: castfinder index " in captured.err
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1

    assert main(["search", "--movie", "alien", "--json", str(query)]) == 0
    found = strict_json(capsys.readouterr().out)
    assert found["movie"] == "Alien" and found["results"]
    assert snapshot(alien) == healthy and snapshot(heat) == damaged


def test_the_printed_reindex_command_repairs_the_index(built: Path, index_dir: Path, capsys) -> None:
    _truncate(index_dir / HEAT / "dinov2.faiss")
    assert main(["movies", "--json"]) == 0
    [entry] = strict_json(capsys.readouterr().out)["damaged"]
    command = shlex.split(entry["reindex"])
    assert command == ["castfinder", "index", str(built.parent / "heat.mp4"), "--movie", "Heat (1995)"]
    assert main([*command[1:], "--quiet"]) == 0
    capsys.readouterr()
    assert main(["movies", "--json"]) == 0
    listing = strict_json(capsys.readouterr().out)
    assert sorted(m["slug"] for m in listing["movies"]) == [ALIEN, HEAT] and listing["damaged"] == []


def test_a_200000_deep_manifest_breaks_no_command(index_dir: Path, query: Path, tiny_dinov2: Path,
                                                  tiny_clip: Path) -> None:
    """In its own process, with Python's default recursion limit: no RecursionError anywhere."""
    heat, alien = index_dir / HEAT, index_dir / ALIEN
    text = (heat / MANIFEST).read_text(encoding="utf-8")
    (heat / MANIFEST).write_text(text.replace('"warnings": []', '"warnings": ' + "[" * 200_000 + "]" * 200_000),
                                 encoding="utf-8")
    healthy = snapshot(alien)
    env = {f"CASTFINDER_{k}": v for k, v in _settings(index_dir, tiny_dinov2, tiny_clip).items()}
    listed = run_cli(["movies", "--json"], env)
    assert listed.returncode == 0 and no_traceback(listed), listed.stderr
    listing = strict_json(listed.stdout)
    assert [m["slug"] for m in listing["movies"]] == [ALIEN]
    assert listing["damaged"][0]["reason"] == "manifest.json is nested more than 32 levels deep"
    refused = run_cli(["search", "--movie", "heat-1995", str(query)], env)
    assert refused.returncode == 1 and no_traceback(refused) and "RecursionError" not in refused.stderr
    assert "nested more than 32 levels deep. Re-index it: castfinder index VIDEO --movie heat-1995" in refused.stderr
    assert snapshot(alien) == healthy


def test_the_engine_calls_the_bot_makes_survive_a_200000_deep_manifest(index_dir: Path, query: Path) -> None:
    heat = index_dir / HEAT
    (heat / MANIFEST).write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
    engine = Engine(Settings(_env_file=None), load_models=False)  # type: ignore[call-arg]
    assert [m.slug for m in engine.movies()] == [ALIEN]
    [damaged] = engine.damaged_movies()
    assert (damaged.slug, damaged.reason) == (HEAT, "manifest.json is nested more than 32 levels deep")
    assert [m.slug for m in engine.match_movies("heat")] == []
    with pytest.raises(DamagedIndexError, match="nested more than 32 levels deep"):
        engine.resolve_movie("heat")
    with pytest.raises(DamagedIndexError):
        engine.search("heat-1995", [query])
    assert engine.search(engine.resolve_movie("Alien"), [query]).results


@pytest.mark.parametrize("damage", ["missing", "truncated", "zeroed"])
def test_a_damaged_thumbnail_costs_the_picture_not_the_result(damage: str, index_dir: Path, query: Path,
                                                               capsys) -> None:
    """The result comes back with `"thumbnail": null`; the other shots keep theirs."""
    thumbs = sorted((index_dir / HEAT / "thumbs").iterdir())
    broken, kept = thumbs[0], thumbs[1:]
    {"missing": Path.unlink, "truncated": _truncate, "zeroed": _zero}[damage](broken)
    assert main(["movies", "--json"]) == 0
    assert strict_json(capsys.readouterr().out)["damaged"] == []
    assert main(["search", "--movie", "heat", "--top", "10", "--json", str(query)]) == 0
    results = strict_json(capsys.readouterr().out)["results"]
    by_shot = {r["shot"]: r["thumbnail"] for r in results}
    assert len(by_shot) == len(thumbs)  # every shot came back
    assert by_shot[int(broken.stem.split("_")[1])] is None
    assert all(by_shot[int(t.stem.split("_")[1])] == str(t.resolve()) for t in kept)
    assert main(["search", "--movie", "heat", "--top", "10", str(query)]) == 0
    assert "(no thumbnail: its file is missing or damaged)" in capsys.readouterr().out


def test_damage_found_only_by_loading_is_listed_from_then_on(index_dir: Path, query: Path) -> None:
    """A crop row the listing's checks do not read: the search refuses it, and the listing of the
    same engine shows it damaged until its files change."""
    engine = Engine(Settings(_env_file=None), load_models=False)  # type: ignore[call-arg]
    assert len(engine.movies()) == 2
    _sql(index_dir / HEAT, "UPDATE crops SET x1 = 'left' WHERE id = 0")
    with pytest.raises(DamagedIndexError, match="it cannot be loaded .*'left'"):
        engine.search("heat", [query])
    assert [m.slug for m in engine.movies()] == [ALIEN]
    assert [d.slug for d in engine.damaged_movies()] == [HEAT]


def test_an_index_damaged_after_it_was_loaded_is_refused_and_listed(index_dir: Path, query: Path) -> None:
    engine = Engine(Settings(_env_file=None), load_models=False)  # type: ignore[call-arg]
    info = engine.resolve_movie("heat")  # as the bot keeps it, between a user's messages
    assert engine.search(info, [query]).results  # loaded and cached
    heat = index_dir / HEAT
    original = (heat / MANIFEST).read_bytes()
    _manifest(heat, lambda d: _calibration(d, neg_mean=float("nan")))
    with pytest.raises(DamagedIndexError, match="neg_mean should be a finite number"):
        engine.search(info, [query])
    assert [d.slug for d in engine.damaged_movies()] == [HEAT]
    (heat / MANIFEST).write_bytes(original)  # repaired: a movie again
    assert sorted(m.slug for m in engine.movies()) == [ALIEN, HEAT] and engine.damaged_movies() == []


def test_a_calibration_of_vectors_that_are_not_finite_stays_finite() -> None:
    """What the indexer writes never loads as damage: a NaN vector's similarities are left out."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[3] = np.nan
    frames = np.repeat(np.arange(20), 2)
    boxes = np.tile(np.array([[0, 0, 10, 10], [50, 0, 60, 10]], np.float64), (20, 1))
    fitted = calibration.fit(vectors, frames, boxes, np.zeros(40, np.int64))
    # 20 frames of two people side by side: 20 pairs, less the one with the NaN vector.
    assert np.isfinite([fitted.neg_mean, fitted.neg_std]).all() and fitted.negatives == 20 - 1


def test_every_json_the_cli_prints_is_strict() -> None:
    """`--json` goes through one printer that refuses NaN and Infinity."""
    from castfinder.common import print_json

    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        print_json({"score": float("nan")})
    sources = [p for p in (Path(__file__).parents[1] / "castfinder").glob("*.py")]
    dumps = {p.name for p in sources if "json.dumps(" in p.read_text(encoding="utf-8")}
    assert dumps == {"common.py"}
