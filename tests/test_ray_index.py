"""`castfinder index --ray`: films indexed in parts on Ray workers give the index one process gives;
a worker killed mid-part, a corrupt film among good ones and Ctrl-C cost only what they must."""

from __future__ import annotations

import builtins
import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from castfinder.cli import main
from tests.conftest import DATA, PERSON_DETECTOR, TITANIC, WEIGHTS, requires_shared

FILMS = [(TITANIC, "Titanic"), (DATA / "office" / "office_edit.mp4", "Office"),
         (DATA / "supernatural" / "supernatural_edit.mp4", "Supernatural")]
QUERIES = [DATA / "titanic" / "body_jack.jpg", *sorted((DATA / "office" / "queries" / "michael").glob("*.jpg"))[:1],
           *sorted((DATA / "supernatural" / "queries" / "crowley").glob("*.jpg"))[:1]]


def test_ray_missing_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    real_import = builtins.__import__

    def no_ray(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    film = tmp_path / "film.mp4"
    film.write_bytes(b"\0" * 64)
    code = main(["index", "--index-dir", str(tmp_path / "idx"), "--ray", "--movie", "Film", str(film)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines() == [
        "castfinder: error: --ray needs Ray, which is not installed: pip install 'castfinder[scale]'"]


@pytest.mark.parametrize("address, says", [("127.0.0.1:1", "no Ray cluster answers there"),
                                           ("nonsense", "is not an address")])
def test_an_unreachable_or_malformed_ray_address_is_one_line(tmp_path: Path, capsys, address: str, says: str) -> None:
    pytest.importorskip("ray", reason="Ray is the optional extra castfinder[scale]")
    film = tmp_path / "film.mp4"
    film.write_bytes(b"\0" * 64)
    code = main(["index", "--index-dir", str(tmp_path / "idx"), "--ray", address, "--movie", "Film", str(film)])
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "idx").exists() or not any((tmp_path / "idx").iterdir())


def test_several_sources_without_ray_or_mismatched_names_are_usage_errors(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    for f in (a, b):
        f.write_bytes(b"\0")
    assert main(["index", "--index-dir", str(tmp_path / "i"), "--movie", "A", str(a), str(b)]) == 2
    assert "several at once with --ray" in capsys.readouterr().err
    assert main(["index", "--index-dir", str(tmp_path / "i"), "--ray", "127.0.0.1:1", "--movie", "A",
                 str(a), str(b)]) == 2
    assert "one name per source" in capsys.readouterr().err


def _content(folder: Path) -> dict[str, Any]:
    """An index's content: its tables (shots, crops with their track ids, faces, frame descriptors),
    each channel's vectors by crop id, and the manifest's counts and calibration."""
    manifest = json.loads((folder / "manifest.json").read_text())
    db = sqlite3.connect(folder / "meta.sqlite")
    tables = {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
              for t in ("shots", "crops", "faces", "frame_descriptors")}
    db.close()
    vectors = {}
    for name, spec in manifest["channels"].items():
        index = faiss.read_index(str(folder / spec["file"]))
        ids = np.sort(faiss.vector_to_array(index.id_map))
        vectors[name] = (ids, np.stack([index.reconstruct(int(i)) for i in ids]))
    return {"manifest": manifest, "tables": tables, "vectors": vectors}


def _tracks(crops: list[tuple]) -> set[frozenset[int]]:
    """Which crops are one tracked person (crops' last column is the track id)."""
    by_track: dict[int, set[int]] = {}
    for row in crops:
        by_track.setdefault(row[-1], set()).add(row[0])
    return {frozenset(ids) for ids in by_track.values()}


def _assert_same_index(single: Path, parts: Path, *, same_track_ids: bool = True) -> None:
    a, b = _content(single), _content(parts)
    if not same_track_ids:
        # A resumed build numbers its tracks on from the checkpoint's next id, one below where an
        # uninterrupted build goes on (it spent that id on the checkpoint): the same tracks, other ids.
        assert _tracks(b["tables"]["crops"]) == _tracks(a["tables"]["crops"])
        for content in (a, b):
            content["tables"]["crops"] = [row[:-1] for row in content["tables"]["crops"]]
    assert b["manifest"]["counts"] == a["manifest"]["counts"]
    assert b["manifest"]["duration_s"] == a["manifest"]["duration_s"]
    assert b["manifest"]["warnings"] == a["manifest"]["warnings"]
    assert b["tables"] == a["tables"]  # the same shots, crops, boxes, track ids, frames
    for name, (ids, vecs) in a["vectors"].items():
        assert b["manifest"]["channels"][name]["vectors"] == a["manifest"]["channels"][name]["vectors"]
        assert np.array_equal(b["vectors"][name][0], ids)
        # A model's arithmetic varies with the batch it runs in (parts batch other frames together):
        # measured at most 2e-6.
        np.testing.assert_allclose(b["vectors"][name][1], vecs, atol=1e-4)
        calib_a, calib_b = (c["channels"][name].get("calibration") for c in (a["manifest"], b["manifest"]))
        assert (calib_a is None) == (calib_b is None)
        if calib_a is not None:
            for key, value in calib_a.items():
                if isinstance(value, float):
                    assert calib_b[key] == pytest.approx(value, abs=1e-4), key


@requires_shared
@pytest.mark.shared
@pytest.mark.slow
def test_three_films_on_ray_with_a_worker_killed_match_one_process(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is the optional extra castfinder[scale]")
    from core import Engine, Settings
    from core.indexing.distributed import Film
    from core.indexing.ray_runner import RayRunner

    def settings(index_dir: Path) -> Settings:
        # The cheapest settings that still run the real detector and a real re-id model, the same
        # for both runs; checkpoints every 5 s of film so that parts (8 s) straddle them.
        return Settings(_env_file=None, index_dir=index_dir, detector=str(PERSON_DETECTOR), person_classes=[0, 1],
                        device="cpu", channels=["osnet"], models_dir=WEIGHTS, det_imgsz=192, sample_fps=0.5,
                        checkpoint_s=5.0, ray_part_s=8.0, torch_threads=1)

    single = Engine(settings(tmp_path / "single"), load_models=False)
    for source, name in FILMS:
        single.index(source, name)

    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    films = [Film(FILMS[0][0], FILMS[0][1]), Film(corrupt, "Corrupt"), *(Film(s, n) for s, n in FILMS[1:])]
    ray_settings = settings(tmp_path / "ray")
    engine = Engine(ray_settings, load_models=False)
    with RayRunner(ray_settings, "local", workers=2, cpus=2) as runner:
        assert [node["NodeManagerAddress"] for node in runner.ray.nodes()] == ["127.0.0.1"]  # loopback only
        pids = [int(name.rsplit(":", 1)[1]) for name in runner.worker_names()]
        assert len(set(pids)) == 2
        handed: list[int] = []

        def kill_second_part_worker(worker: int, _window: object) -> None:
            handed.append(worker)
            if len(handed) == 2:  # the second part, just handed to its worker: lost with that worker
                os.kill(pids[worker], signal.SIGKILL)

        runner.on_dispatch = kill_second_part_worker
        outcomes = engine.index_films(films, runner)
        assert runner.lost >= 1  # the killed worker's part ran again

        by_name = {o.film.movie: o for o in outcomes}
        assert by_name["Corrupt"].report is None
        assert "corrupt.mp4: not a video that can be read" in str(by_name["Corrupt"].error)
        for _, name in FILMS:
            assert by_name[name].error is None, by_name[name].error
        for slug in ("titanic", "office", "supernatural"):
            _assert_same_index(tmp_path / "single" / slug, tmp_path / "ray" / slug)
        assert not (tmp_path / "ray" / "corrupt").exists()

        searched = Engine(ray_settings)
        for query, (_, name) in zip(QUERIES, FILMS):
            want = single.search(name, [query])
            got = searched.search(name, [query])
            assert [r.shot for r in got.results] == [r.shot for r in want.results]
            assert [r.score for r in got.results] == pytest.approx([r.score for r in want.results], abs=1e-4)

        # Ctrl-C while Office is re-indexed, once its first part (8 s, checkpoints every 5 s) is written:
        # the run stops, the index of before is untouched, and the build is kept at its checkpoint,
        # which a single process resumes into the very index it would have built in one go.
        office = tmp_path / "ray" / "office"
        before = {f.name: f.read_bytes() for f in office.iterdir() if f.is_file()}
        runner.on_dispatch = None

        def interrupt(_film: Film, _part: object) -> None:
            raise KeyboardInterrupt  # as Ctrl-C would, once the first part is written

        from core.indexing.distributed import index_films

        with pytest.raises(KeyboardInterrupt):
            index_films(ray_settings, [Film(FILMS[1][0], "Office")], runner, on_part=interrupt)
    assert {f.name: f.read_bytes() for f in office.iterdir() if f.is_file()} == before
    report = Engine(ray_settings, load_models=False).index(FILMS[1][0], "Office")
    assert report.resumed_at_s is not None and report.resumed_at_s >= 5.0
    _assert_same_index(tmp_path / "single" / "office", office, same_track_ids=False)


@requires_shared
@pytest.mark.shared
@pytest.mark.slow
def test_parts_of_a_frames_folder_and_a_vfr_video_match_one_process_without_ray(tmp_path: Path) -> None:
    """The parts path alone (one in-process worker, no Ray): parts of 3 s, checkpoints every 3 s,
    on the two kinds of source the clips above are not: a frames folder and a variable-frame-rate video."""
    from core import Engine, Settings
    from core.indexing.distributed import Film, InProcessRunner

    def settings(index_dir: Path) -> Settings:
        return Settings(_env_file=None, index_dir=index_dir, detector=str(PERSON_DETECTOR), person_classes=[0, 1],
                        device="cpu", channels=["osnet"], models_dir=WEIGHTS, det_imgsz=192, sample_fps=1.0,
                        checkpoint_s=3.0, ray_part_s=3.0, torch_threads=1)

    films = [(DATA / "goldeneye" / "frames", "GoldenEye"), (DATA / "goldeneye" / "goldeneye_10s_vfr.mp4", "VFR")]
    single = Engine(settings(tmp_path / "single"), load_models=False)
    for source, name in films:
        single.index(source, name)
    parted = settings(tmp_path / "parts")
    outcomes = Engine(parted, load_models=False).index_films([Film(s, n) for s, n in films], InProcessRunner(parted))
    assert [o.error for o in outcomes] == [None, None]
    for slug in ("goldeneye", "vfr"):
        _assert_same_index(tmp_path / "single" / slug, tmp_path / "parts" / slug)
