"""core.evaluation: the metrics on hand-computed cases, ground-truth parsing in its three forms
(matched against synthetic shot lists) and the two query-folder layouts. No models involved."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from core import BadInputError, CastfinderError, Shot
from core.evaluation import (
    AnnotatedShot,
    CharacterTruth,
    GroundTruthError,
    QueryFolderError,
    collect_queries,
    load_ground_truth,
    map_to_annotated,
    mean_average_precision,
    resolve_ties,
    score_annotated,
    score_ranking,
)

# =============================================================================================
# Metrics
# =============================================================================================


def test_all_relevant_at_the_top_scores_one_and_precision_divides_by_k_when_fewer_results() -> None:
    s = score_ranking([1, 2, 3, 4, 5], relevant={1, 2})
    assert s.ap == 1.0 and s.found == 2 and s.first_relevant_rank == 1
    assert s.precision == {5: pytest.approx(2 / 5), 10: pytest.approx(2 / 10), 20: pytest.approx(2 / 20)}
    assert s.recall == {5: 1.0, 10: 1.0, 20: 1.0}
    # Only 2 results returned: P@5 still divides by 5 (the empty places are misses).
    short = score_ranking([1, 2], relevant={1, 2})
    assert short.precision[5] == pytest.approx(0.4) and short.precision[20] == pytest.approx(0.1)
    assert short.ap == 1.0 and short.retrieved == 2


def test_nothing_relevant_retrieved_scores_zero() -> None:
    s = score_ranking([4, 5, 6], relevant={1, 2})
    assert s.ap == 0.0 and s.found == 0 and s.first_relevant_rank is None
    assert all(v == 0.0 for v in s.precision.values()) and all(v == 0.0 for v in s.recall.values())
    empty = score_ranking([], relevant={1})
    assert empty.ap == 0.0 and empty.precision[5] == 0.0 and empty.recall[5] == 0.0
    assert empty.pr_points() == [] and empty.interpolated_pr() == [(0.0, 0.0)]


def test_hand_computed_precision_recall_and_ap() -> None:
    # Relevant 1, 3, 6 found at ranks 1, 3, 6; relevant 9 never returned.
    s = score_ranking([1, 2, 3, 4, 5, 6], relevant={1, 3, 6, 9})
    assert s.ap == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 4)  # 0.541666…
    assert s.precision[5] == pytest.approx(2 / 5) and s.recall[5] == pytest.approx(2 / 4)
    assert s.precision[10] == pytest.approx(3 / 10) and s.recall[10] == pytest.approx(3 / 4)
    assert (s.relevant, s.found, s.first_relevant_rank) == (4, 3, 1)
    assert s.pr_points() == [(0.25, 1.0), (0.5, pytest.approx(2 / 3)), (0.75, 0.5)]
    assert s.interpolated_pr() == [(0.0, 1.0), (0.25, 1.0), (0.5, pytest.approx(2 / 3)), (0.75, 0.5)]


def test_ap_is_normalised_by_all_relevant_shots_found_or_not() -> None:
    assert score_ranking([1], relevant={1, 99}).ap == pytest.approx(0.5)
    assert score_ranking([7, 1], relevant={1, 98, 99}).ap == pytest.approx((1 / 2) / 3)


def test_interpolated_precision_is_the_best_precision_at_that_recall_or_beyond() -> None:
    s = score_ranking([2, 1, 3, 4], relevant={1, 3, 4})  # hits at ranks 2, 3, 4: 1/2, 2/3, 3/4
    assert [p for _, p in s.pr_points()] == pytest.approx([1 / 2, 2 / 3, 3 / 4])
    assert s.interpolated_pr() == [(0.0, 0.75), (pytest.approx(1 / 3), 0.75), (pytest.approx(2 / 3), 0.75), (1.0, 0.75)]


def test_ignored_shots_are_neither_hits_nor_misses_and_take_no_rank() -> None:
    s = score_ranking([7, 1, 8, 2], relevant={1, 2}, ignored={7})
    assert s.ranking == (1, 8, 2) and s.ignored_retrieved == 1
    assert s.ap == pytest.approx((1 / 1 + 2 / 3) / 2)  # without removal it would be (1/2 + 2/4) / 2
    assert s.precision[5] == pytest.approx(2 / 5) and s.first_relevant_rank == 1
    # An ignored shot that is not returned changes nothing; relevant beats ignored for one shot.
    assert score_ranking([1, 2], relevant={1}, ignored={50}).ap == 1.0
    both = score_ranking([1, 2], relevant={2}, ignored={2})
    assert both.ranking == (1, 2) and both.ap == pytest.approx(0.5)


def test_only_ignored_retrieved_scores_zero() -> None:
    s = score_ranking([7, 8], relevant={1}, ignored={7, 8})
    assert s.ranking == () and s.ap == 0.0 and s.ignored_retrieved == 2


def test_ties_are_scored_pessimistically_by_default_or_in_the_given_order() -> None:
    ranking, keys = [1, 2, 3], [(0.9, 0.9), (0.9, 0.9), (0.5, 0.5)]
    pessimistic = score_ranking(ranking, relevant={1}, keys=keys)
    assert pessimistic.ranking == (2, 1, 3) and pessimistic.ap == pytest.approx(0.5)
    ordered = score_ranking(ranking, relevant={1}, keys=keys, ties="order")
    assert ordered.ranking == (1, 2, 3) and ordered.ap == 1.0
    # Without keys there are no known ties: the given order counts.
    assert score_ranking(ranking, relevant={1}).ap == 1.0
    # Equal scores but different secondary keys are not a tie.
    assert score_ranking(ranking, relevant={1}, keys=[(0.9, 0.95), (0.9, 0.9), (0.5, 0.5)]).ap == 1.0


def test_ties_only_reorder_runs_of_equal_keys_and_keep_order_inside_groups() -> None:
    ranking = [1, 2, 3, 4, 5, 6]
    keys = [3, 2, 2, 2, 2, 1]
    assert resolve_ties(ranking, keys, relevant={2, 4}) == [1, 3, 5, 2, 4, 6]
    assert resolve_ties(ranking, keys, relevant={2, 4}, mode="order") == ranking
    # A tie made only of relevant (or only non-relevant) shots changes nothing.
    assert resolve_ties([1, 2], [5, 5], relevant={1, 2}) == [1, 2]
    # Equal keys that are not adjacent are not one tie (the list is taken as sorted).
    assert resolve_ties([1, 2, 3], [5, 4, 5], relevant={1}) == [1, 2, 3]
    # Ignored shots leave the ranking before ties are resolved: keys stay aligned.
    s = score_ranking([5, 1, 2], relevant={1}, ignored={5}, keys=[0.9, 0.8, 0.8])
    assert s.ranking == (2, 1) and s.ap == pytest.approx(0.5)
    # A whole tie: the relevant shot lands last of all.
    assert score_ranking([1, 2, 3, 4], relevant={1}, keys=[0.0] * 4).ap == pytest.approx(1 / 4)


def test_repeated_shots_count_once_at_their_first_place() -> None:
    s = score_ranking([1, 1, 2], relevant={2})
    assert s.ranking == (1, 2) and s.ap == pytest.approx(0.5)


def test_a_character_without_relevant_shots_has_no_ap_and_is_left_out_of_map() -> None:
    s = score_ranking([1, 2], relevant=set(), ignored={1})
    assert s.ap is None and s.recall[5] is None and s.precision[5] == 0.0 and s.relevant == 0
    assert s.pr_points() == [] and s.interpolated_pr() == [(0.0, 0.0)]
    assert mean_average_precision([0.5, None, 1.0]) == pytest.approx(0.75)
    assert mean_average_precision([None, None]) is None and mean_average_precision([]) is None


def test_custom_cutoffs_and_bad_arguments() -> None:
    s = score_ranking([1, 2, 3], relevant={3}, ks=(1, 3))
    assert s.precision == {1: 0.0, 3: pytest.approx(1 / 3)} and s.recall == {1: 0.0, 3: 1.0}
    with pytest.raises(ValueError):
        score_ranking([1], relevant={1}, ks=(0,))
    with pytest.raises(ValueError):
        score_ranking([1], relevant={1}, keys=[1, 2])
    with pytest.raises(ValueError):
        score_ranking([1], relevant={1}, keys=[1], ties="optimistic")


# =============================================================================================
# Ground truth
# =============================================================================================
FPS = 24000 / 1001


def video_shots() -> list[Shot]:
    """Like the Titanic clip as our cut detector sees it: frames 0–56, 57–211, 212–481."""
    cuts = [(0, 56), (57, 211), (212, 481)]
    return [Shot(i, i, None, a, b, a / FPS, (b + 1) / FPS) for i, (a, b) in enumerate(cuts, start=1)]


def frames_folder_shots() -> list[Shot]:
    """Two scenes of a frames folder; shot numbers restart in scene 2; ids are internal."""
    specs = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 4)]
    return [Shot(i, number, scene, 3 * (i - 1), 3 * (i - 1) + 2, 3 * (i - 1) / 5, 3 * i / 5)
            for i, (scene, number) in enumerate(specs, start=1)]


def write(tmp_path: Path, text: str, name: str = "gt.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_scene_shot_form_maps_to_internal_ids_with_labels(tmp_path: Path) -> None:
    gt = write(tmp_path, "movie,character,scene,shot,label\n"
                         "m,boris,1,2,1\nm,boris,2,4,1\nm,boris,2,1,-1\nm,natalya,1,3,1\nm,natalya,1,1,0\n")
    truth = load_ground_truth(gt, frames_folder_shots())
    assert list(truth) == ["boris", "natalya"]
    assert truth["boris"].relevant == {2, 5} and truth["boris"].ignored == {4}
    assert truth["natalya"].relevant == {3} and truth["natalya"].ignored == set()  # label 0 = absent
    assert truth.forms == {"frames": 0, "seconds": 0, "shot": 5} and truth.warnings == []
    assert isinstance(truth["boris"], CharacterTruth) and truth["boris"].rows == 3


def test_headers_are_case_insensitive_and_bom_semicolons_and_blank_lines_are_fine(tmp_path: Path) -> None:
    gt = tmp_path / "gt.csv"
    gt.write_bytes("\ufeff Character ;SCENE; Shot ;Label\n\nBoris;1;2;1\n\n".encode("utf-8"))
    truth = load_ground_truth(gt, frames_folder_shots())
    assert truth["Boris"].relevant == {2}
    assert truth.get_character("BORIS") is truth["Boris"]


def test_shot_without_scene_matches_the_number_alone_or_asks_for_the_scene(tmp_path: Path) -> None:
    truth = load_ground_truth(write(tmp_path, "character,shot\nx,3\nx,4\n"), frames_folder_shots())
    assert truth["x"].relevant == {3, 5}  # no label column: every row is "present"
    with pytest.raises(GroundTruthError, match="several scenes.*scene"):
        load_ground_truth(write(tmp_path, "character,shot\nx,1\n"), frames_folder_shots())


def test_a_shot_id_not_in_the_index_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GroundTruthError, match=r"gt\.csv:3: shot 1/7 is not in the index"):
        load_ground_truth(write(tmp_path, "character,scene,shot\nx,1,1\nx,1,7\n"), frames_folder_shots())
    with pytest.raises(GroundTruthError, match="shot 3/1 is not in the index"):
        load_ground_truth(write(tmp_path, "character,scene,shot\nx,3,1\n"), frames_folder_shots())


def test_frame_ranges_match_the_shot_with_the_largest_overlap(tmp_path: Path) -> None:
    # The annotator's cuts (0–57, 58–210, 211–481) differ by a frame or two from ours.
    gt = write(tmp_path, "movie,character,shot,start_frame,end_frame,label\n"
                         "titanic,jack,1,0,57,1\ntitanic,jack,2,58,210,1\ntitanic,rose,3,211,481,1\n"
                         "titanic,rose,2,100,230,-1\n")
    truth = load_ground_truth(gt, video_shots())
    assert truth["jack"].relevant == {1, 2}
    assert truth["rose"].relevant == {3} and truth["rose"].ignored == {2}  # 100–230: 112 frames in shot 2, 19 in 3
    assert truth.forms["frames"] == 4 and truth.forms["shot"] == 0
    # The `shot` cell names the annotated shot: rose's row calls 100–230 shot 2, which jack's row
    # gives as 58–210; one annotated shot spanning both, said once.
    assert truth.warnings == ["gt.csv:5: annotated shot 2 has the range frames 100–230 here but frames 58–210 "
                              "on line 3; counted as one shot spanning both."]
    two = truth.units[("named", "frames", None, "2")]
    assert (two.start, two.end) == (58, 230)


def test_frame_ranges_win_over_shot_numbers_and_equal_overlaps_go_to_the_earlier_shot(tmp_path: Path) -> None:
    shots = [Shot(i + 1, i + 1, None, 10 * i, 10 * i + 9, i, i + 1.0) for i in range(3)]  # 0–9, 10–19, 20–29
    # `shot` 42 does not exist: with frame ranges present it is not used.
    gt = write(tmp_path, "character,shot,start_frame,end_frame\na,42,5,14\nb,42,3,26\n")
    truth = load_ground_truth(gt, shots)
    assert truth["a"].relevant == {1}  # 5 frames in shot 1, 5 in shot 2
    assert truth["b"].relevant == {2}  # 7, 10, 7: shot 2 holds only 10 of 24 frames
    warning, named = truth.warnings
    assert "gt.csv:3" in warning and "42%" in warning and "shot 2" in warning
    assert "annotated shot 42" in named  # only a name here, given to two different ranges


def test_time_ranges_match_by_overlap_in_seconds(tmp_path: Path) -> None:
    gt = write(tmp_path, "character,start_s,end_s,label\njack,0,2.5,1\njack,2.3,8.9,1\nrose,8.5,20.0,1\n"
                         "rose,0.5,1.0,-1\n")
    truth = load_ground_truth(gt, video_shots())  # shots at 0–2.378, 2.378–8.842, 8.842–20.104 s
    assert truth["jack"].relevant == {1, 2} and truth["rose"].relevant == {3} and truth["rose"].ignored == {1}
    assert truth.forms["seconds"] == 4


def test_each_row_uses_the_first_form_whose_cells_it_fills(tmp_path: Path) -> None:
    gt = write(tmp_path, "character,scene,shot,start_frame,end_frame,start_s,end_s\n"
                         "x,,,0,2,,\nx,,,,,1.2,1.8\nx,2,4,,,,\n")
    truth = load_ground_truth(gt, frames_folder_shots())
    assert truth["x"].relevant == {1, 3, 5}
    assert truth.forms == {"frames": 1, "seconds": 1, "shot": 1}
    with pytest.raises(GroundTruthError, match="gt.csv:2: the row names no shot"):
        load_ground_truth(write(tmp_path, "character,shot,start_frame,end_frame\nx,,,\n"), frames_folder_shots())


def test_a_range_outside_the_index_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(GroundTruthError, match=r"frames 500–600 overlap none of the indexed shots.*0–481"):
        load_ground_truth(write(tmp_path, "character,start_frame,end_frame\nx,500,600\n"), video_shots())
    with pytest.raises(GroundTruthError, match="overlap none"):
        load_ground_truth(write(tmp_path, "character,start_s,end_s\nx,30,31\n"), video_shots())


def test_present_beats_ignore_when_rows_meet_on_one_shot(tmp_path: Path) -> None:
    # Explicit contradiction, either order, and two annotated shots merged into one indexed shot.
    gt = write(tmp_path, "character,scene,shot,label\na,1,2,-1\na,1,2,1\nb,1,2,1\nb,1,2,-1\nc,1,3,0\nc,1,3,-1\n")
    truth = load_ground_truth(gt, frames_folder_shots())
    assert truth["a"].relevant == {2} and truth["a"].ignored == set()
    assert truth["b"].relevant == {2} and truth["b"].ignored == set()
    assert truth["c"].relevant == set() and truth["c"].ignored == {3}  # ignore beats absent
    assert len(truth.warnings) == 2 and all("counted as present" in w for w in truth.warnings)
    merged = write(tmp_path, "character,start_frame,end_frame,label\nd,60,150,1\nd,151,211,-1\n", "m.csv")
    truth = load_ground_truth(merged, video_shots())  # both annotated shots lie inside our shot 2
    assert truth["d"].relevant == {2} and truth["d"].ignored == set()
    assert truth.warnings == ["d: shot 2 gets rows labelled both present (1) and ignore (-1); counted as present."]


def test_character_names_merge_case_insensitively_keeping_the_first_spelling(tmp_path: Path) -> None:
    truth = load_ground_truth(write(tmp_path, "character,scene,shot\nBoris,1,1\nboris,1,2\n"), frames_folder_shots())
    assert list(truth) == ["Boris"] and truth["Boris"].relevant == {1, 2}


def test_movie_column_filters_only_when_a_movie_is_given(tmp_path: Path) -> None:
    gt = write(tmp_path, "movie,character,scene,shot\ngoldeneye,x,1,1\ntitanic,x,1,2\n,x,1,3\n")
    everything = load_ground_truth(gt, frames_folder_shots())
    assert everything["x"].relevant == {1, 2, 3} and everything.skipped_rows == 0
    # "goldeneye" in the file, "GoldenEye (1995)" / "goldeneye-1995" in the index; a blank cell applies.
    only = load_ground_truth(gt, frames_folder_shots(), movie=["golden", "GoldenEye (1995)", "goldeneye-1995"])
    assert only["x"].relevant == {1, 3} and only.skipped_rows == 1
    assert load_ground_truth(gt, frames_folder_shots(), movie="Titanic")["x"].relevant == {2, 3}
    with pytest.raises(GroundTruthError, match="no rows for 'Heat'.*'goldeneye', 'titanic'"):
        load_ground_truth(write(tmp_path, "movie,character,scene,shot\ngoldeneye,x,1,1\ntitanic,x,1,2\n", "h.csv"),
                          frames_folder_shots(), movie="Heat")
    # Without a movie column the filter has nothing to act on.
    assert load_ground_truth(write(tmp_path, "character,scene,shot\nx,1,1\n", "n.csv"), frames_folder_shots(),
                             movie="Heat")["x"].relevant == {1}


def test_shots_can_be_a_list_a_mapping_or_an_index(tmp_path: Path) -> None:
    gt = write(tmp_path, "character,scene,shot\nx,2,4\n")
    shots = frames_folder_shots()
    mapping = {s.id: s for s in shots}
    for given in (shots, mapping, SimpleNamespace(shots=mapping), tuple(reversed(shots))):
        assert load_ground_truth(gt, given)["x"].relevant == {5}
    with pytest.raises(GroundTruthError, match="no shots"):
        load_ground_truth(gt, [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("\n\n", "the file is empty"),
        ("character,scene,shot,label\n", "no rows under it"),
        ("name,scene,shot\nx,1,1\n", "no 'character' column.*name, scene, shot"),
        ("character,label\nx,1\n", "no column that names shots"),
        ("character,start_frame\nx,1\n", "'start_frame' column needs a 'end_frame' column"),
        ("character,start_s,end_frame\nx,1,2\n", "needs a"),
        ("character,scene,shot\nx,1,abc\n", r"gt\.csv:2: shot 'abc' is not a number"),
        ("character,scene,shot\nx,1,1.5\n", "not a whole number"),
        ("character,scene,shot\nx,1,nan\n", "not a finite number"),
        ("character,scene,shot,label\nx,1,1,2\n", "label 2 is not 1"),
        ("character,scene,shot,label\nx,1,1,yes\n", "label 'yes' is not a number"),
        ("character,scene,shot\n,1,1\n", "gt.csv:2: the character cell is empty"),
        ("character,start_frame,end_frame\nx,9,3\n", "end_frame 3 is not after start_frame 9"),
        ("character,start_s,end_s\nx,2,2\n", "end_s 2 is not after"),
        ("character,start_frame,end_frame\nx,-3,3\n", "must not be negative"),
        ("character,start_frame,end_frame\nx,1,\n", "the 'end_frame' cell is empty"),
        ("character,scene,shot\nx,1,1,extra\n", "gt.csv:2: 4 cells but the header has 3 columns"),
        ("character,scene,shot,shot\nx,1,1,1\n", "'shot' appears twice"),
        ("# some notes\nmore text, here\n", "no 'character' column"),
    ],
)
def test_unusable_ground_truth_gets_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(GroundTruthError, match=message):
        load_ground_truth(write(tmp_path, text), frames_folder_shots())


def test_ground_truth_errors_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such ground-truth file"):
        load_ground_truth(tmp_path / "missing.csv", frames_folder_shots())
    with pytest.raises(CastfinderError, match="is a folder"):
        load_ground_truth(tmp_path, frames_folder_shots())
    binary = tmp_path / "gt.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(GroundTruthError, match="not a UTF-8"):
        load_ground_truth(binary, frames_folder_shots())


def test_the_shared_ground_truth_files_parse(tmp_path: Path) -> None:
    """The two files in ../shared/data, copied here verbatim so this runs everywhere."""
    golden = write(tmp_path, "movie,character,scene,shot,label\n" + "".join(
        f"goldeneye,boris,1,{n},1\n" for n in (3, 5, 7, 9, 11, 13, 15, 17, 18, 19, 21)) +
        "goldeneye,boris,1,20,-1\n" + "".join(f"goldeneye,natalya,1,{n},1\n" for n in (3, 5, 7, 9, 11, 17)) +
        "goldeneye,natalya,1,13,-1\n", "golden.csv")
    shots = [Shot(k, k, 1, 3 * (k - 1), 3 * (k - 1) + 2, 3 * (k - 1) / 5, 3 * k / 5) for k in range(1, 23)]
    truth = load_ground_truth(golden, shots, movie=["goldeneye", "GoldenEye (1995)", "goldeneye-1995"])
    assert len(truth["boris"].relevant) == 11 and truth["boris"].ignored == {20}
    assert len(truth["natalya"].relevant) == 6 and truth["natalya"].ignored == {13}
    titanic = write(tmp_path, "movie,character,shot,start_frame,end_frame,label\n"
                              "titanic,jack,1,0,57,1\ntitanic,jack,2,58,210,1\ntitanic,jack,3,211,481,1\n"
                              "titanic,rose,1,0,57,1\ntitanic,rose,2,58,210,1\ntitanic,rose,3,211,481,1\n", "t.csv")
    truth = load_ground_truth(titanic, video_shots(), movie="Titanic")
    assert truth["jack"].relevant == truth["rose"].relevant == {1, 2, 3}


# =============================================================================================
# The annotated view: each result counts for the annotated shot it overlaps most
# =============================================================================================
def timed_shots(*bounds: float, fps: float = 30.0) -> list[Shot]:
    """Indexed shots cut at the given times (the first starts at 0), at `fps`."""
    edges = [0.0, *bounds]
    return [Shot(i, i, None, round(a * fps), round(b * fps) - 1, a, b)
            for i, (a, b) in enumerate(zip(edges, edges[1:]), start=1)]


def both_views(truth, name: str, ranking, **kw):
    t = truth[name]
    return (score_ranking(ranking, t.relevant, t.ignored, **kw),
            score_annotated(ranking, truth.shot_units, t.relevant_units, t.ignored_units, **kw))


def test_a_merged_indexed_shot_counts_once_per_indexed_shot_but_misses_an_annotated_shot(tmp_path: Path) -> None:
    # Annotated shots 1 (0–2 s) and 2 (2–4 s) show x; our cut merged them into indexed shot 1 (0–4 s).
    gt = write(tmp_path, "character,shot,start_s,end_s,label\nx,1,0,2,1\nx,2,2,4,1\ny,3,4,6,1\n")
    truth = load_ground_truth(gt, timed_shots(4, 6))
    assert truth["x"].relevant == {1} and len(truth["x"].relevant_units) == 2 and len(truth.units) == 3
    indexed, annotated = both_views(truth, "x", [1, 2])
    assert indexed.ap == 1.0 and indexed.relevant == 1 and indexed.recall[5] == 1.0
    # Indexed shot 1 counts for annotated shot 1 (equal overlap: the earlier); shot 2 is missed.
    assert annotated.ap == pytest.approx(0.5) and annotated.ap < 1.0
    assert annotated.relevant == 2 and annotated.found == 1 and annotated.recall[5] == pytest.approx(0.5)
    assert annotated.first_relevant_rank == 1 and annotated.units[0] == ("named", "seconds", None, "1")


def test_a_result_whose_annotated_shot_was_already_found_is_a_duplicate_miss() -> None:
    # Our cut split annotated shot A (indexed 1 and 2); D is relevant too, N is another's shot.
    units = {1: "A", 2: "A", 3: "N", 4: "D"}
    s = score_annotated([1, 2, 4, 3], units, relevant_units={"A", "D"})
    assert s.labels == (True, False, True, False) and s.duplicates == 1 and s.found == 2
    assert s.ap == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert s.precision[5] == pytest.approx(2 / 5) and s.recall[5] == 1.0
    # A duplicate takes a rank: the same hits without it score higher.
    assert score_annotated([1, 4, 3], units, relevant_units={"A", "D"}).ap == 1.0
    # Only duplicates after the first: the first relevant result is still rank 1.
    assert score_annotated([2, 1], units, relevant_units={"A"}).first_relevant_rank == 1


def test_results_counting_for_an_ignored_annotated_shot_take_no_rank() -> None:
    units = {1: "I", 2: "A", 3: "I", 4: None, 5: "B"}
    s = score_annotated([1, 2, 3, 4, 5], units, relevant_units={"A", "B"}, ignored_units={"I"})
    assert s.ranking == (2, 4, 5) and s.ignored_retrieved == 2 and s.first_relevant_rank == 1
    assert s.ap == pytest.approx((1 + 2 / 3) / 2)
    # Relevant beats ignored for one annotated shot; a shot counting for no annotated shot is a miss.
    assert score_annotated([4, 2], units, relevant_units={"A"}, ignored_units={"A"}).ap == pytest.approx(0.5)
    assert score_annotated([1], units, relevant_units={"A"}, ignored_units={"I"}).ap == 0.0


def test_annotated_ties_put_misses_then_duplicates_before_new_hits() -> None:
    units = {1: "A", 2: "A", 3: None, 4: "B"}
    tied = [0.5] * 3
    s = score_annotated([1, 2, 3], units, relevant_units={"A"}, keys=tied)
    assert s.ranking == (3, 1, 2) and s.labels == (False, True, False) and s.ap == pytest.approx(1 / 2)
    # Two new annotated shots in one tie: all of the one with more results first, so that the
    # second hit lands as low as it can (ranks 1 and 3, not 1 and 2).
    s = score_annotated([4, 1, 2], units, relevant_units={"A", "B"}, keys=tied)
    assert s.ranking == (1, 2, 4) and s.labels == (True, False, True) and s.ap == pytest.approx((1 + 2 / 3) / 2)
    assert score_annotated([1, 2, 3], units, relevant_units={"A"}, keys=tied, ties="order").ap == 1.0
    # A shot found before the tie makes its repeat inside the tie a duplicate, placed before new hits.
    s = score_annotated([1, 2, 4], units, relevant_units={"A", "B"}, keys=[0.9, 0.5, 0.5])
    assert s.ranking == (1, 2, 4) and s.ap == pytest.approx((1 + 2 / 3) / 2)
    s = score_annotated([1, 4, 2], units, relevant_units={"A", "B"}, keys=[0.9, 0.5, 0.5])
    assert s.ranking == (1, 2, 4) and s.ap == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError):
        score_annotated([1], units, {"A"}, ties="optimistic")
    with pytest.raises(ValueError):
        score_annotated([1], units, {"A"}, keys=[1, 2])


def test_shot_id_ground_truth_gives_the_same_numbers_in_both_views(tmp_path: Path) -> None:
    """GoldenEye: a frames folder whose shot ids are the annotated shots."""
    golden = write(tmp_path, "movie,character,scene,shot,label\n" + "".join(
        f"goldeneye,boris,1,{n},1\n" for n in (3, 5, 7, 9, 11, 13, 15, 17, 18, 19, 21)) +
        "goldeneye,boris,1,20,-1\n" + "".join(f"goldeneye,natalya,1,{n},1\n" for n in (3, 5, 7, 9, 11, 17)) +
        "goldeneye,natalya,1,13,-1\ngoldeneye,natalya,1,1,0\n", "golden.csv")
    shots = [Shot(k, k, 1, 3 * (k - 1), 3 * (k - 1) + 2, 3 * (k - 1) / 5, 3 * k / 5) for k in range(1, 23)]
    truth = load_ground_truth(golden, shots)
    assert truth.shot_units == {k: (("shot", k) if k in (1, 3, 5, 7, 9, 11, 13, 15, 17, 18, 19, 20, 21) else None)
                                for k in range(1, 23)}
    import random

    rng = random.Random(7)
    for _ in range(50):
        ranking = rng.sample(range(1, 23), rng.randint(0, 22))
        keys = [rng.choice((0.1, 0.2, 0.3)) for _ in ranking]
        keys.sort(reverse=True)
        for name in ("boris", "natalya"):
            for kw in ({}, {"keys": keys}, {"keys": keys, "ties": "order"}):
                if "keys" in kw:
                    kw = {**kw, "keys": keys + keys[:3]}
                indexed, annotated = both_views(truth, name, ranking + ranking[:3], **kw)  # repeats count once
                assert annotated.ap == pytest.approx(indexed.ap)
                assert annotated.precision == pytest.approx(indexed.precision)
                assert annotated.recall == pytest.approx(indexed.recall)
                assert annotated.first_relevant_rank == indexed.first_relevant_rank
                assert (annotated.ranking, annotated.labels) == (indexed.ranking, indexed.labels)
                assert annotated.duplicates == 0


def test_rows_of_several_characters_naming_one_shot_are_one_annotated_shot(tmp_path: Path) -> None:
    gt = write(tmp_path, "character,shot,start_s,end_s,label\n"
                         "jim,6,9.467,12.067,1\nmichael,6,9.467,12.067,-1\nmichael,05,7.067,9.467,1\n"
                         "pam,5.0,7.067,9.467,0\n")
    truth = load_ground_truth(gt, timed_shots(7.067, 12.067, 20))  # our shot 2 merges annotated 5 and 6
    assert sorted(u.name for u in truth.units.values()) == ["5", "6"]
    assert all(isinstance(u, AnnotatedShot) and u.form == "seconds" for u in truth.units.values())
    six, five = ("named", "seconds", None, "6"), ("named", "seconds", None, "5")
    assert truth["jim"].relevant_units == {six} and truth["michael"].ignored_units == {six}
    assert truth["michael"].relevant_units == {five} and truth["pam"].absent_units == {five}
    assert truth.shot_units == {1: None, 2: six, 3: None}  # 2.6 s of 6 beats 2.4 s of 5
    # Per indexed shot michael is present in shot 2 (present beats ignored); per annotated shot
    # our shot 2 is his ignored shot 6, so it takes no rank and his shot 5 is missed.
    indexed, annotated = both_views(truth, "michael", [2, 1])
    assert indexed.ap == 1.0 and annotated.ap == 0.0 and annotated.ignored_retrieved == 1
    assert both_views(truth, "jim", [2])[1].ap == 1.0


def test_indexed_shots_mostly_of_unannotated_footage_count_for_no_annotated_shot() -> None:
    units = [AnnotatedShot(("u", 1), "1", "seconds", 0.0, 2.0), AnnotatedShot(("u", 2), "2", "seconds", 3.0, 5.0)]
    # Our cuts a few frames off the annotator's: 1.9–3.1 s is mostly footage no row covers.
    shots = timed_shots(1.9, 3.1, 5.0)
    assert map_to_annotated(shots, units) == {1: ("u", 1), 2: None, 3: ("u", 2)}
    # A shot holding more of an annotated shot than of any uncovered stretch counts for it.
    assert map_to_annotated(timed_shots(1.5, 4.5, 5.0), units) == {1: ("u", 1), 2: ("u", 2), 3: ("u", 2)}
    # Overlapping no annotated shot at all.
    assert map_to_annotated(timed_shots(5.0, 9.0), units)[2] is None


def test_frame_ranges_map_to_annotated_shots_by_their_frames(tmp_path: Path) -> None:
    gt = write(tmp_path, "movie,character,shot,start_frame,end_frame,label\n"
                         "titanic,jack,1,0,57,1\ntitanic,jack,2,58,210,1\ntitanic,jack,3,211,481,1\n"
                         "titanic,rose,1,0,57,1\ntitanic,rose,2,58,210,1\ntitanic,rose,3,211,481,1\n")
    truth = load_ground_truth(gt, video_shots())  # our cuts: 0–56, 57–211, 212–481
    assert len(truth.units) == 3
    assert truth.shot_units == {i: ("named", "frames", None, str(i)) for i in (1, 2, 3)}
    indexed, annotated = both_views(truth, "rose", [3, 1, 2])
    assert indexed.ap == annotated.ap == 1.0
    # Without a `shot` column each distinct range is an annotated shot.
    plain = load_ground_truth(write(tmp_path, "character,start_frame,end_frame\na,0,57\nb,0,57\nb,58,481\n", "p.csv"),
                              video_shots())
    assert sorted(u.name for u in plain.units.values()) == ["frames 0–57", "frames 58–481"]
    assert plain.shot_units == {1: ("range", "frames", 0, 57), 2: ("range", "frames", 58, 481),
                                3: ("range", "frames", 58, 481)}
    s = score_annotated([2, 3, 1], plain.shot_units, plain["b"].relevant_units)
    assert s.labels == (True, False, True) and s.duplicates == 1 and s.ap == pytest.approx((1 + 2 / 3) / 2)


# =============================================================================================
# Queries
# =============================================================================================
def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_flat_layout_groups_files_by_the_name_before_the_first_underscore(tmp_path: Path) -> None:
    for name in ("boris_2.jpg", "boris_1.jpg", "boris_fur_hood.PNG", "natalya_1.jpeg", "jack.webp",
                 "notes.txt", "README.md", ".hidden_1.jpg", "natalya_x.gif"):
        touch(tmp_path / name)
    found = collect_queries(tmp_path)
    assert list(found) == ["boris", "jack", "natalya"]
    assert [p.name for p in found["boris"]] == ["boris_1.jpg", "boris_2.jpg", "boris_fur_hood.PNG"]
    assert [p.name for p in found["natalya"]] == ["natalya_1.jpeg"]
    assert [p.name for p in found["jack"]] == ["jack.webp"]


def test_folder_layout_and_mixed_layouts_merge_case_insensitively(tmp_path: Path) -> None:
    touch(tmp_path / "Rose" / "b.png")
    touch(tmp_path / "Rose" / "a_1.jpg")
    touch(tmp_path / "Rose" / "notes.txt")
    touch(tmp_path / "Rose" / "deeper" / "c.jpg")  # not recursive
    touch(tmp_path / "rose_3.jpg")
    touch(tmp_path / "jack" / "portrait.JPG")
    (tmp_path / "empty").mkdir()
    (tmp_path / ".cache").mkdir()
    touch(tmp_path / ".cache" / "x.jpg")
    found = collect_queries(tmp_path)
    assert list(found) == ["jack", "Rose"]
    assert [p.relative_to(tmp_path).as_posix() for p in found["Rose"]] == ["Rose/a_1.jpg", "Rose/b.png", "rose_3.jpg"]
    assert [p.name for p in found["jack"]] == ["portrait.JPG"]


def test_a_query_folder_without_images_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(QueryFolderError, match="no such query folder"):
        collect_queries(tmp_path / "missing")
    touch(tmp_path / "notes.txt")
    (tmp_path / "boris").mkdir()
    with pytest.raises(QueryFolderError, match="no query images.*<character>_<n>.jpg"):
        collect_queries(tmp_path)
    assert issubclass(QueryFolderError, BadInputError)
