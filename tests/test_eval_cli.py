"""`castfinder eval` end to end: on a synthetic video with a random YOLO (runs everywhere) and on
the real GoldenEye frames and Titanic clip with the real person detector (needs ../shared).

With the tiny random embedder the numbers say nothing about quality; these tests check the
harness: inputs, the report, the metrics agreeing with the rankings, plots and exit codes."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from castfinder import cli, common, eval_cmd
from core.evaluation import TIE_MODES, score_ranking
from tests.conftest import DATA, PERSON_DETECTOR, TITANIC, requires_shared
from tests.media import make_video

SEGMENTS = [((30, 10, 10), 30), ((40, 230, 240), 20), ((0, 0, 160), 40)]  # BGR; cuts after frames 29 and 49


def run_eval(*argv: str) -> int:
    """`castfinder eval …` through the real CLI. Returns the exit code (argparse's usage errors
    leave cli.main as SystemExit(2))."""
    try:
        return cli.main(["eval", *argv])
    except SystemExit as exc:
        return int(exc.code or 0)


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.verify()
    with Image.open(path) as img:
        assert img.size[0] > 100 and img.size[1] > 100


def check_metrics_match_ranking(character: dict, ks: list[int]) -> None:
    """The report's numbers are what score_ranking gives for the listed ranking (when the
    listing holds the whole ranking and ties keep the engine's order)."""
    ranking = [r["shot_id"] for r in character["ranking"]]
    relevant = {r["shot_id"] for r in character["ranking"] if r["label"] == "relevant"}
    ignored = {r["shot_id"] for r in character["ranking"] if r["label"] == "ignored"}
    missed = character["relevant"] - len(relevant)
    relevant |= {-i for i in range(1, missed + 1)}  # relevant shots never returned
    s = score_ranking(ranking, relevant, ignored, ks=ks)
    assert character["ap"] == pytest.approx(s.ap, abs=1e-4)
    for k in ks:
        assert character["precision"][str(k)] == pytest.approx(s.precision[k], abs=1e-4)
        assert character["recall"][str(k)] == pytest.approx(s.recall[k], abs=1e-4)
    assert character["found"] == s.found and len(character["missed"]) == missed


# =============================================================================================
# Synthetic video, random YOLO: runs everywhere
# =============================================================================================
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory, tiny_dinov2: Path):
    import torch

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("eval-synthetic")
    env = {"INDEX_DIR": str(root / "indexes"), "DETECTOR": "yolov8n.yaml", "DINOV2_MODEL": str(tiny_dinov2),
           "DET_CONF": "0.0001", "DET_IMGSZ": "160", "MIN_PERSON_PX": "4", "DEVICE": "cpu",
           "CHANNELS": "dinov2", "SHOT_DETECTOR": "content"}  # the tiny DINOv2 alone (the default channels
    # need real weights); PySceneDetect's cuts, which find all three of these solid-colour shots
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(f"CASTFINDER_{key}", value)
        video = make_video(root / "heat.mp4", SEGMENTS)
        assert cli.main(["index", str(video), "--movie", "Heat (1995)", "--fps", "2", "--quiet"]) == 0
        queries = root / "queries"
        queries.mkdir()
        for name, (b, g, r) in zip(("navy", "yellow", "red"), (c for c, _ in SEGMENTS)):
            for i in (1, 2):
                img = np.full((96, 160, 3), (r, g, b), np.uint8)
                img[10 + 20 * i:30 + 20 * i, 40:60] = 255
                Image.fromarray(img).save(queries / f"{name}_{i}.png")
        (queries / "notes.txt").write_text("not an image")
        gt = root / "gt.csv"
        # Frame ranges a little off our cuts (0–29, 30–49, 50–89), as another annotator's would be.
        gt.write_text("character,start_frame,end_frame,label\n"
                      "navy,0,31,1\nyellow,28,50,1\nyellow,60,89,-1\nred,51,89,1\nred,0,10,-1\n"
                      "ghost,0,20,1\n")
        yield SimpleNamespace(root=root, index_dir=root / "indexes", queries=queries, gt=gt)


def test_eval_json_report_on_a_synthetic_video(synthetic, tmp_path: Path, capsys) -> None:
    plots = tmp_path / "plots"
    rc = run_eval("--movie", "heat", "--ground-truth", str(synthetic.gt), "--queries", str(synthetic.queries),
                  "--top", "3", "--ties", "order", "--json", "--plots", str(plots), "-q")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(captured.out)  # exactly one JSON object on stdout
    assert report["movie"]["name"] == "Heat (1995)" and report["movie"]["shots"] == 3
    assert list(report["characters"]) == ["navy", "red", "yellow"]
    assert {n: (c["relevant"], c["ignored"]) for n, c in report["characters"].items()} == {
        "navy": (1, 0), "red": (1, 1), "yellow": (1, 1)}
    assert report["ground_truth"]["forms"] == {"frames": 6, "seconds": 0, "shot": 0}
    cfg = report["config"]
    assert (cfg["aggregation"], cfg["people"], cfg["ties"], cfg["top"], cfg["depth"]) == ("max", "main", "order", 3, 3)
    assert cfg["ks"] == [3, 5, 10, 20] and cfg["settings"]["det_conf"] == 0.0001
    assert cfg["index_manifest"]["build_id"] == report["movie"]["build_id"]
    # The index's manifest as it is on disk, key for key.
    assert cfg["index_manifest"] == json.loads((Path(report["movie"]["path"]) / "manifest.json").read_text())
    assert report["command"].startswith("castfinder eval --movie heat ")
    assert any("ghost: ground truth but no query images" in w for w in report["warnings"])
    for name, character in report["characters"].items():
        assert len(character["queries"]) == 2 and all(Path(q).is_absolute() for q in character["queries"])
        assert 0.0 <= character["ap"] <= 1.0
        assert [r["rank"] for r in character["ranking"]] == list(range(1, len(character["ranking"]) + 1))
        check_metrics_match_ranking(character, cfg["ks"])
        assert_png(Path(report["plots"][name]))
        assert Path(report["plots"][name]).name == f"{name}_pr.png"
    aps = [c["ap"] for c in report["characters"].values()]
    assert report["summary"]["map"] == pytest.approx(sum(aps) / 3, abs=1e-4)
    assert report["summary"]["characters_scored"] == 3
    assert sorted(p.name for p in plots.iterdir()) == ["navy_pr.png", "red_pr.png", "yellow_pr.png"]
    assert "Saved" in captured.err and "warning: ghost" in captured.err


RANKED_SHOT_KEYS = {"rank", "shot", "scene", "shot_id", "start_s", "end_s", "score", "similarity", "confidence",
                    "label"}
CHARACTER_KEYS = {"queries", "query_crops", "whole_image_queries", "relevant", "ignored", "retrieved",
                  "ignored_retrieved", "found", "first_relevant_rank", "ap", "precision", "recall", "relevant_shots",
                  "missed", "ranking", "search_s"}


def check_annotated_view(character: dict, ks: list[int], shot_units: dict[str, str | None]) -> None:
    """The annotated view's numbers are what score_annotated gives for the listed ranking."""
    from core.evaluation import score_annotated

    a = character["annotated"]
    assert [r["shot_id"] for r in a["ranking"]] == [r["shot_id"] for r in character["ranking"]]
    units = {r["shot_id"]: r["annotated_shot"] for r in a["ranking"]}
    names = {r["shot_id"]: str(r["shot"]) for r in character["ranking"]}
    assert all(shot_units[names[i]] == unit for i, unit in units.items())
    relevant = set(a["relevant_shots"])
    ignored = {r["annotated_shot"] for r in a["ranking"] if r["label"] == "ignored"}
    s = score_annotated(list(units), units, relevant, ignored, ks=ks)
    assert a["ap"] == pytest.approx(s.ap, abs=1e-4) and a["first_rank"] == s.first_relevant_rank
    for k in ks:
        assert a["precision"][str(k)] == pytest.approx(s.precision[k], abs=1e-4)
        assert a["recall"][str(k)] == pytest.approx(s.recall[k], abs=1e-4)
    assert (a["found"], a["duplicates"], a["relevant"]) == (s.found, s.duplicates, len(relevant))
    labels = {"relevant": 0, "duplicate": 0, "ignored": 0, "absent": 0}
    for r in a["ranking"]:
        labels[r["label"]] += 1
    assert labels["relevant"] == s.found and labels["duplicate"] == s.duplicates


def test_json_keeps_its_keys_and_adds_the_annotated_view(synthetic, capsys) -> None:
    rc = run_eval("--movie", "heat", "--ground-truth", str(synthetic.gt), "--queries", str(synthetic.queries),
                  "--top", "3", "--ties", "order", "--json", "-q")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(captured.out)
    summary, ks = report["summary"], report["config"]["ks"]
    assert {"map", "characters_scored", "mean_precision", "mean_recall"} <= set(summary)
    assert {"map_annotated", "annotated", "first_in_top3"} <= set(summary)
    assert summary["annotated"]["map"] == summary["map_annotated"]
    assert set(summary["annotated"]) == {"map", "characters_scored", "mean_precision", "mean_recall", "first_in_top3"}
    gt = report["ground_truth"]
    assert gt["annotated_shots"] == 6 and set(gt["indexed_to_annotated"]) == {"1", "2", "3"}
    for c in report["characters"].values():
        assert CHARACTER_KEYS <= set(c) and {"first_rank", "annotated"} <= set(c)
        assert c["first_rank"] == c["first_relevant_rank"]
        assert all(set(r) == RANKED_SHOT_KEYS for r in c["ranking"])  # the ranking's fields, unchanged
        assert {"ap", "precision", "recall", "relevant", "first_rank", "found", "duplicates", "missed",
                "relevant_shots", "ranking"} <= set(c["annotated"])
        check_annotated_view(c, ks, gt["indexed_to_annotated"])
    aps = [c["annotated"]["ap"] for c in report["characters"].values()]
    assert summary["map_annotated"] == pytest.approx(sum(aps) / len(aps), abs=1e-4)
    assert summary["first_in_top3"] == sum(1 for c in report["characters"].values() if c["first_rank"] <= 3)


def test_annotated_shots_merged_by_our_cut_count_as_missed(synthetic, tmp_path: Path, capsys) -> None:
    """Our shot 3 (frames 50–89) holds two annotated shots of red: per indexed shot it is one
    relevant shot; per annotated shot the second one is missed, so AP halves."""
    gt = tmp_path / "gt.csv"
    gt.write_text("character,shot,start_frame,end_frame,label\n"
                  "red,5,50,69,1\nred,6,70,89,1\nnavy,1,0,29,1\nnavy,2,30,49,-1\nyellow,2,30,49,1\n")
    rc = run_eval("--movie", "heat", "--ground-truth", str(gt), "--queries", str(synthetic.queries),
                  "--ties", "order", "--json", "-q")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(captured.out)
    mapping = report["ground_truth"]["indexed_to_annotated"]
    assert mapping["1"] == "1" and mapping["2"] == "2" and mapping["3"] in ("5", "6")  # 20 frames of each, ± our cut
    red = report["characters"]["red"]
    assert red["relevant"] == 1 and red["annotated"]["relevant"] == 2
    missed = "6" if mapping["3"] == "5" else "5"
    assert red["annotated"]["missed"] == [missed] and red["annotated"]["relevant_shots"] == ["5", "6"]
    assert red["annotated"]["ap"] == pytest.approx(red["ap"] / 2, abs=1e-4) and red["annotated"]["ap"] < 1
    assert red["annotated"]["first_rank"] == red["first_rank"]
    # navy: shot 2 is ignored in both views, so both agree.
    navy = report["characters"]["navy"]
    assert navy["annotated"]["ap"] == navy["ap"] and navy["annotated"]["ignored"] == 1
    assert report["summary"]["map_annotated"] < report["summary"]["map"]
    rc = run_eval("--movie", "heat", "--ground-truth", str(gt), "--queries", str(synthetic.queries), "-q")
    out = capsys.readouterr().out
    assert rc == 0 and out.count("MAP") == 2 and f"annotated shots missed: {missed}" in out


def test_the_reported_command_reproduces_the_numbers(synthetic, capsys) -> None:
    assert run_eval("--movie", "Heat", "--ground-truth", str(synthetic.gt), "--queries", str(synthetic.queries),
                    "--aggregation", "rrf", "--people", "all", "--json", "-q") == 0
    first = json.loads(capsys.readouterr().out)
    argv = shlex.split(first["command"])
    assert argv[:2] == ["castfinder", "eval"] and "--people" in argv and "rrf" in argv
    assert run_eval(*argv[2:], "-q") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["command"] == first["command"]
    assert {n: c["ap"] for n, c in again["characters"].items()} == {n: c["ap"] for n, c in first["characters"].items()}
    assert again["config"]["aggregation"] == "rrf" and again["config"]["people"] == "all"


def test_eval_table_on_stdout(synthetic, tmp_path: Path, capsys) -> None:
    rc = run_eval("--movie", "heat", "--ground-truth", str(synthetic.gt), "--queries", str(synthetic.queries),
                  "--plots", str(tmp_path), "-q")
    out = capsys.readouterr().out
    assert rc == 0
    for text in ("navy", "yellow", "red", "P@5", "R@20", "AP", "MAP", "top 20:", "warning: ghost",
                 str(tmp_path / "navy_pr.png")):
        assert text in out


def test_a_character_with_only_ignored_shots_is_left_out_of_map(synthetic, tmp_path: Path, capsys) -> None:
    gt = tmp_path / "gt.csv"
    gt.write_text("character,start_frame,end_frame,label\nnavy,0,29,1\nred,50,89,-1\n")
    rc = run_eval("--movie", "heat", "--ground-truth", str(gt), "--queries", str(synthetic.queries), "--json", "-q",
                  "--plots", str(tmp_path / "plots"))
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert report["characters"]["red"]["ap"] is None and report["characters"]["red"]["recall"]["5"] is None
    assert report["summary"]["map"] == report["characters"]["navy"]["ap"]
    assert report["summary"]["characters_scored"] == 1
    assert any("red: no relevant shot" in w for w in report["warnings"])
    assert any("yellow: query images but no ground truth" in w for w in report["warnings"])
    assert list(report["plots"]) == ["navy"]


@pytest.mark.parametrize(
    ("gt_text", "extra", "code", "message"),
    [
        ("name,shot\nnavy,1\n", [], 1, "no 'character' column"),
        ("character,label\nnavy,1\n", [], 1, "no column that names shots"),
        ("", [], 1, "the file is empty"),
        ("character,shot\nnavy,9\n", [], 1, "shot 9 is not in the index"),
        ("character,start_frame,end_frame\nnavy,500,600\n", [], 1, "overlap none of the indexed shots"),
        ("character,shot\nnobody,1\n", [], 1, "No character has both query images and ground truth"),
        ("character,shot\nnavy,1\n", ["--top", "0"], 2, "--top must be at least 1"),
        ("character,shot\nnavy,1\n", ["--search-k", "0"], 2, "--search-k 0: must be a whole number from 1 to"),
        ("character,shot\nnavy,1\n", ["--people", "1,2"], 2, "invalid choice"),
        ("character,shot\nnavy,1\n", ["--movie", "Titanic"], 1, "No indexed movie matches 'Titanic'"),
    ],
)
def test_bad_inputs_exit_with_a_message(synthetic, tmp_path: Path, capsys, gt_text, extra, code, message) -> None:
    gt = tmp_path / "gt.csv"
    gt.write_text(gt_text)
    argv = ["--movie", "heat", "--ground-truth", str(gt), "--queries", str(synthetic.queries), "--json", "-q"]
    if "--movie" in extra:
        argv[1] = extra[1]
        extra = []
    assert run_eval(*argv, *extra) == code
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


def test_missing_inputs_exit_1(synthetic, tmp_path: Path, capsys) -> None:
    base = ["--movie", "heat", "--json", "-q"]
    assert run_eval(*base, "--ground-truth", str(tmp_path / "none.csv"), "--queries", str(synthetic.queries)) == 1
    assert "no such ground-truth file" in capsys.readouterr().err
    assert run_eval(*base, "--ground-truth", str(synthetic.gt), "--queries", str(tmp_path / "none")) == 1
    assert "no such query folder" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("x")
    assert run_eval(*base, "--ground-truth", str(synthetic.gt), "--queries", str(synthetic.queries),
                    "--plots", str(tmp_path / "a_file")) == 1
    assert "plots" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "navy_1.jpg").write_bytes(b"not a jpeg")
    assert run_eval(*base, "--ground-truth", str(synthetic.gt), "--queries", str(broken)) == 1
    err = capsys.readouterr().err
    assert "navy_1.jpg" in err and "not an image" in err


def test_channels_and_tracks_options_reach_the_engine(synthetic, capsys) -> None:
    import inspect

    from core import Engine

    base = ["--movie", "heat", "--ground-truth", str(synthetic.gt), "--queries", str(synthetic.queries), "--json", "-q"]
    rc = run_eval(*base, "--channels", "DINOv2", "--no-tracks")
    captured = capsys.readouterr()
    if "channels" not in inspect.signature(Engine.search).parameters:  # a single-channel engine
        assert rc == 1 and "--channels" in captured.err
        return
    assert rc == 0, captured.err
    report = json.loads(captured.out)
    assert report["config"]["channels"] == ["dinov2"] and report["config"]["settings"]["tracks"] is False
    assert "--channels dinov2" in report["command"] and "--no-tracks" in report["command"]
    assert run_eval(*base, "--channels", "face") == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "no 'face' channel" in captured.err


def test_parser_registration_and_tie_modes_agree() -> None:
    import argparse

    assert eval_cmd.TIE_CHOICES == TIE_MODES
    parser = argparse.ArgumentParser(prog="castfinder")
    sub = parser.add_subparsers(dest="command")
    eval_cmd.add_parser(sub, [common.model_flags(), common.search_flags()])
    args = parser.parse_args(["eval", "--movie", "m", "--ground-truth", "g.csv", "--queries", "q",
                              "--embedder", "clip", "--aggregation", "frequency"])
    assert (args.command, args.top, args.people, args.ties, args.json, args.plots) == ("eval", 20, "main",
                                                                                      "pessimistic", False, None)
    assert args.embedder == "clip" and args.aggregation == "frequency" and args.search_k is None
    assert args.search_channels is None and args.tracks is None
    settings = cli.make_settings(args)  # --aggregation reaches the engine's settings too
    assert settings.aggregation == "frequency" and settings.embedder == "clip"


# =============================================================================================
# Real footage with the real person detector (../shared)
# =============================================================================================
@pytest.fixture(scope="module")
def real_env(tmp_path_factory: pytest.TempPathFactory, tiny_dinov2: Path):
    if not PERSON_DETECTOR.is_file():
        pytest.skip(f"needs {PERSON_DETECTOR}")
    root = tmp_path_factory.mktemp("eval-real")
    env = {"INDEX_DIR": str(root / "indexes"), "DETECTOR": str(PERSON_DETECTOR), "PERSON_CLASSES": "0,1",
           "DINOV2_MODEL": str(tiny_dinov2), "DEVICE": "cpu", "CHANNELS": "dinov2"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(f"CASTFINDER_{key}", value)
        yield root


@pytest.fixture(scope="module")
def goldeneye(real_env: Path) -> Path:
    assert cli.main(["index", str(DATA / "goldeneye" / "frames"), "--movie", "GoldenEye (1995)", "--quiet"]) == 0
    return real_env


@requires_shared
@pytest.mark.shared
@pytest.mark.slow
def test_goldeneye_eval_json_and_plots(goldeneye: Path, tmp_path: Path, capsys) -> None:
    plots = tmp_path / "plots"
    rc = run_eval("--movie", "goldeneye", "--ground-truth", str(DATA / "goldeneye" / "ground_truth.csv"),
                  "--queries", str(DATA / "goldeneye" / "queries"), "--top", "22", "--ties", "order",
                  "--json", "--plots", str(plots), "-q")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(captured.out)
    chars = report["characters"]
    assert set(chars) == {"boris", "natalya"} and report["warnings"] == []
    assert (chars["boris"]["relevant"], chars["boris"]["ignored"]) == (11, 1)
    assert (chars["natalya"]["relevant"], chars["natalya"]["ignored"]) == (6, 1)
    assert chars["boris"]["relevant_shots"][:3] == ["1/3", "1/5", "1/7"]
    assert isinstance(report["summary"]["map"], float) and 0.0 <= report["summary"]["map"] <= 1.0
    assert report["config"]["depth"] == 22 and report["config"]["ks"] == [5, 10, 20, 22]
    for name, character in chars.items():
        assert len(character["queries"]) == 2
        assert all(r["scene"] == 1 and 1 <= r["shot"] <= 22 for r in character["ranking"])
        check_metrics_match_ranking(character, report["config"]["ks"])
        assert_png(Path(report["plots"][name]))
        # Shot ids are the annotated shots: both views agree.
        a = character["annotated"]
        assert (a["ap"], a["precision"], a["recall"], a["relevant"], a["first_rank"]) == (
            character["ap"], character["precision"], character["recall"], character["relevant"],
            character["first_rank"])
    assert report["summary"]["map_annotated"] == report["summary"]["map"]
    assert sorted(p.name for p in plots.iterdir()) == ["boris_pr.png", "natalya_pr.png"]
    assert str(plots / "boris_pr.png") in captured.err


@requires_shared
@pytest.mark.shared
@pytest.mark.slow
def test_goldeneye_eval_table_and_bad_ground_truth(goldeneye: Path, tmp_path: Path, capsys) -> None:
    rc = run_eval("--movie", "goldeneye", "--ground-truth", str(DATA / "goldeneye" / "ground_truth.csv"),
                  "--queries", str(DATA / "goldeneye" / "queries"), "-q")
    out = capsys.readouterr().out
    assert rc == 0 and "boris" in out and "natalya" in out and "MAP" in out
    bad = tmp_path / "gt.csv"
    bad.write_text("movie,character,label\ngoldeneye,boris,1\n")
    assert run_eval("--movie", "goldeneye", "--ground-truth", str(bad),
                    "--queries", str(DATA / "goldeneye" / "queries"), "--json") == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "no column that names shots" in captured.err
    other = tmp_path / "other.csv"
    shutil.copy(DATA / "titanic" / "ground_truth.csv", other)
    assert run_eval("--movie", "goldeneye", "--ground-truth", str(other),
                    "--queries", str(DATA / "goldeneye" / "queries")) == 1
    assert "no rows for 'goldeneye'" in capsys.readouterr().err


@requires_shared
@pytest.mark.shared
@pytest.mark.slow
def test_titanic_frame_range_ground_truth_and_folder_layout(real_env: Path, tmp_path: Path, capsys) -> None:
    """Frame ranges matched to our own cuts of a video; queries in <character>/ folders."""
    assert cli.main(["index", str(TITANIC), "--movie", "Titanic", "--fps", "1", "--quiet"]) == 0
    capsys.readouterr()
    queries = tmp_path / "queries"
    for character in ("jack", "rose"):
        (queries / character).mkdir(parents=True)
        for kind in ("body", "portrait"):
            shutil.copy(DATA / "titanic" / f"{kind}_{character}.jpg", queries / character / f"{kind}.jpg")
    rc = run_eval("--movie", "titanic", "--ground-truth", str(DATA / "titanic" / "ground_truth.csv"),
                  "--queries", str(queries), "--json", "-q")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(captured.out)
    assert report["ground_truth"]["forms"]["frames"] == 6
    for character in report["characters"].values():
        assert character["relevant"] == 3 and character["relevant_shots"] == ["1", "2", "3"]
        assert 0.0 <= character["ap"] <= 1.0 and len(character["queries"]) == 2
