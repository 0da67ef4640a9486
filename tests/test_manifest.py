"""`manifest.json` as typed models: indexes written before the models existed keep loading, new
builds write the same JSON as before, and a damaged manifest is never loaded nor crashes a listing:
it is listed as damaged, with the reason.

`tests/data/format2-index/synthetic-movie/` is an index built by the code of commit c9c07ee (the
manifest a free dict) with `_build_like_the_fixture` below, kept byte for byte: its manifest,
database, FAISS files and thumbnails."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from castfinder.cli import main
from core import DamagedIndexError, IndexCorruptError
from core.store import (
    MANIFEST,
    ChannelSpec,
    IndexCatalog,
    IndexDamage,
    Listing,
    Manifest,
    MovieIndex,
    list_indexes,
    read_manifest,
)
from tests.media import make_video

LEGACY = Path(__file__).parent / "data" / "format2-index"
LEGACY_MANIFEST = LEGACY / "synthetic-movie" / MANIFEST
LEGACY_ROOT = "/tmp/h1m/run1"  # where the fixture was built: its paths start with this

# What `movie_info` gave for the fixture before the manifest was typed (path aside).
LEGACY_INFO = dict(
    slug="synthetic-movie", name="Synthetic Movie", duration_s=3.7500000000000004, shots=3, frames=21, vectors=3,
    embedder="dinov2", embedder_model=f"{LEGACY_ROOT}/dinov2", dim=32, source=f"{LEGACY_ROOT}/synthetic.mp4",
    built_at="2026-12-02T21:55:00+00:00", build_id="c0b946dfaa504db6ad2e12ee2acefdd0", channels=("dinov2", "clip"),
)


@pytest.fixture
def legacy_dir(tmp_path: Path) -> Path:
    """A copy of the fixture's index folder (tests may damage it)."""
    index_dir = tmp_path / "indexes"
    shutil.copytree(LEGACY, index_dir)
    return index_dir


def test_an_index_written_before_the_typed_manifest_lists_with_the_same_figures(legacy_dir: Path) -> None:
    [info] = list_indexes(legacy_dir)
    assert info.path == legacy_dir / "synthetic-movie"
    assert {key: getattr(info, key) for key in LEGACY_INFO} == LEGACY_INFO


def test_an_index_written_before_the_typed_manifest_loads(legacy_dir: Path) -> None:
    index = MovieIndex(legacy_dir / "synthetic-movie")
    assert len(index.shots) == 3 and len(index.crop_shot) == 3
    assert {name: index.faiss[name].ntotal for name in index.faiss} == {"dinov2": 3, "clip": 3}
    clip = index.channel("clip")
    assert (clip.dim, clip.file, clip.vectors, clip.faiss, clip.kind) == (24, "clip.faiss", 3, "flat", "body")
    assert clip.model == f"{LEGACY_ROOT}/clip"
    assert index.calibration["dinov2"].b == -6.0  # the body link stored in the manifest, not the default -3
    with pytest.raises(KeyError):
        index.channel("face")


def test_movies_json_keeps_its_model_field_for_an_old_index(legacy_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CASTFINDER_INDEX_DIR", str(legacy_dir))
    assert main(["movies", "--json"]) == 0
    [movie] = json.loads(capsys.readouterr().out)["movies"]
    assert (movie["model"], movie["embedder"], movie["vectors"]) == (f"{LEGACY_ROOT}/dinov2", "dinov2", 3)


def test_the_old_manifest_reads_back_to_the_same_json() -> None:
    """Every key of today's manifest is a typed field (none left to `extra`), and writing a read
    manifest gives back the file's keys, in their order, with their values."""
    manifest = read_manifest(LEGACY_MANIFEST.parent)
    assert manifest is not None
    on_disk = json.loads(LEGACY_MANIFEST.read_text(encoding="utf-8"))
    assert json.dumps(manifest.to_json()) == json.dumps(on_disk)
    parts = [manifest, manifest.source, manifest.detector, manifest.counts, *manifest.channels.values()]
    assert all(not part.model_extra for part in parts)
    assert manifest.seconds.root["detect"] == on_disk["seconds"]["detect"]


def _build_like_the_fixture(root: Path) -> Path:
    """The fixture's build: tiny seeded DINOv2 and CLIP, a random seeded YOLO, the synthetic video."""
    import torch
    from transformers import (
        BitImageProcessor,
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        Dinov2Config,
        Dinov2Model,
    )

    from core import Engine, Settings

    dinov2, clip = root / "dinov2", root / "clip"
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             image_size=56, patch_size=14)).save_pretrained(dinov2)
    BitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}, do_center_crop=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(dinov2)
    CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                   num_attention_heads=2, image_size=32, patch_size=8,
                                                   projection_dim=24)).save_pretrained(clip)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(clip)
    video = make_video(root / "synthetic.mp4", [((30, 10, 10), 30), ((40, 230, 240), 20), ((0, 0, 160), 40)])
    torch.manual_seed(0)
    settings = Settings(_env_file=None, index_dir=root / "indexes", detector="yolov8n.yaml",
                        dinov2_model=str(dinov2), clip_model=str(clip), device="cpu",
                        channels=["dinov2", "clip"], det_conf=1e-4, det_imgsz=160, min_person_px=4, sample_fps=4.0)
    return Engine(settings).index(video, "Synthetic Movie").movie.path


def test_a_new_build_writes_the_manifest_the_old_code_wrote(tmp_path: Path) -> None:
    """Same build, same JSON: keys in the same order and the same values, except what differs from
    one build to the next (id, time, timings) or with the machine (library versions), and the
    timings of stages added since the fixture was written (`describe`: the frame descriptors
    that `castfinder identify` matches)."""
    path = _build_like_the_fixture(tmp_path)
    new = json.loads((path / MANIFEST).read_text(encoding="utf-8").replace(str(tmp_path), LEGACY_ROOT))
    old = json.loads(LEGACY_MANIFEST.read_text(encoding="utf-8"))
    assert len(new["build_id"]) == 32 and new["build_id"] != old["build_id"]
    assert new["built_at"].endswith("+00:00") and new["elapsed_s"] > 0
    assert list(new["versions"]) == list(old["versions"])
    assert new["seconds"].pop("describe") >= 0  # a stage of its own, timed like the others
    for manifest in (new, old):
        manifest["build_id"] = manifest["built_at"] = manifest["elapsed_s"] = manifest["versions"] = None
        manifest["seconds"] = dict.fromkeys(manifest["seconds"])
    assert json.dumps(new, indent=1) == json.dumps(old, indent=1)


def _damage(text: str) -> dict[str, tuple[str, str]]:
    """Manifests that must not load, from the fixture's text → (the manifest, the reason users read)."""
    good = json.loads(text)

    def changed(**parts: object) -> str:
        return json.dumps({**good, **parts})

    deep = "[" * 200_000 + "]" * 200_000
    return {
        "channel spec a string": (changed(channels={**good["channels"], "clip": "clip.faiss"}),
                                  "channels.clip should be an object, not a string"),
        "counts a list": (changed(counts=[3, 21, 0]), "counts should be an object, not a list"),
        "200,000 nested [": (deep, "nested more than 32 levels deep"),
        "200,000 nested [ inside": (text.replace('"warnings": []', f'"warnings": {deep}'),
                                    "nested more than 32 levels deep"),
        "40 nested [ inside": (text.replace('"warnings": []', '"warnings": ' + "[" * 40 + "]" * 40),
                               "nested more than 32 levels deep"),
        "complete as 1": (changed(complete=1), "complete should be true or false, not 1"),
        "another format": (changed(format=1), "built by another version of castfinder (index format 1;"),
        "format as a string": (changed(format="2"), "format should be a whole number, not a string"),
        "embedder not a channel": (changed(embedder="face"), "the embedder 'face' is not one of the channels"),
        "channel without its file": (changed(channels={"dinov2": {**good["channels"]["dinov2"], "file": ""}}),
                                     "channels.dinov2.file: string should have at least 1 character"),
        "channel of unknown kind": (changed(channels={"dinov2": {**good["channels"]["dinov2"], "kind": "ghost"}}),
                                    "channels.dinov2.kind: input should be 'body' or 'face'"),
        "no build id": (json.dumps({k: v for k, v in good.items() if k != "build_id"}), "build_id is missing"),
        "a list": (json.dumps([good]), "manifest.json holds a list, not an object"),
        "truncated": (text[: len(text) // 2], "manifest.json is not valid JSON"),
        "empty": ("", "manifest.json is not valid JSON"),
        "another folder's": (changed(slug="heat"), "its manifest is that of 'heat', not of the folder"),
    }


DAMAGE = list(_damage(LEGACY_MANIFEST.read_text(encoding="utf-8")))


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_manifest_is_a_damaged_index(damage: str, legacy_dir: Path) -> None:
    """Not loaded, not a movie, but listed as damaged with the reason, and refused with it."""
    folder = legacy_dir / "synthetic-movie"
    text, reason = _damage((folder / MANIFEST).read_text(encoding="utf-8"))[damage]
    (folder / MANIFEST).write_text(text, encoding="utf-8")
    with pytest.raises(IndexDamage, match=re.escape(reason)):
        read_manifest(folder)
    listing = IndexCatalog(legacy_dir).scan()
    assert listing.movies == []
    [damaged] = listing.damaged
    assert (damaged.slug, damaged.path) == ("synthetic-movie", folder) and reason in damaged.reason
    with pytest.raises(DamagedIndexError, match=re.escape(reason)) as raised:
        MovieIndex(folder)
    assert "Re-index it: castfinder index " in str(raised.value)


def test_an_incomplete_build_is_no_index_and_no_damage(legacy_dir: Path, caplog) -> None:
    folder = legacy_dir / "synthetic-movie"
    data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    (folder / MANIFEST).write_text(json.dumps({**data, "complete": False}), encoding="utf-8")
    assert read_manifest(folder) is None
    with caplog.at_level(logging.WARNING, logger="core.store.reader"):
        assert IndexCatalog(legacy_dir).scan() == Listing([], [])
        assert list_indexes(legacy_dir) == []
    assert "skipping" not in caplog.text
    with pytest.raises(IndexCorruptError, match="holds no index"):
        MovieIndex(folder)


def test_a_manifest_that_is_not_utf8_is_damage_and_an_absent_one_no_index(legacy_dir: Path, caplog) -> None:
    folder = legacy_dir / "synthetic-movie"
    (folder / MANIFEST).write_bytes(b"\xff\xfe{}")
    with pytest.raises(IndexDamage, match="manifest.json is not UTF-8 text"):
        read_manifest(folder)
    (folder / MANIFEST).unlink()
    assert read_manifest(folder) is None
    with caplog.at_level(logging.WARNING, logger="core.store.reader"):
        assert list_indexes(legacy_dir) == []
    assert "skipping" not in caplog.text  # a folder without a manifest is simply not an index


def test_a_manifest_from_a_newer_writer_keeps_what_it_does_not_know(legacy_dir: Path) -> None:
    folder = legacy_dir / "synthetic-movie"
    data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    data["notes"] = {"by": "a later version"}
    data["channels"]["clip"]["pooling"] = "cls"
    (folder / MANIFEST).write_text(json.dumps(data), encoding="utf-8")
    manifest = read_manifest(folder)
    assert isinstance(manifest, Manifest) and isinstance(manifest.channels["clip"], ChannelSpec)
    assert manifest.to_json() == data
