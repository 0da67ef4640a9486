import numpy as np
import pytest

from core.search.ranking import aggregate

# Crops 0-1 belong to shot 10, crops 2-3 to shot 20, crop 4 to shot 30.
CROP_SHOT = np.array([10, 10, 20, 20, 30])


def test_max_scores_each_shot_by_its_best_similarity_over_all_query_crops() -> None:
    sims = np.array([[0.9, 0.8, 0.5], [0.95, 0.4, 0.3]], dtype=np.float32)
    ids = np.array([[2, 0, 4], [1, 3, -1]])
    ranked = aggregate(sims, ids, CROP_SHOT, "max")
    assert [(r.shot_id, round(r.score, 2), r.best_crop) for r in ranked] == [(10, 0.95, 1), (20, 0.9, 2), (30, 0.5, 4)]


def test_frequency_counts_the_share_of_hits_per_shot() -> None:
    sims = np.array([[0.9, 0.8, 0.7, 0.6]], dtype=np.float32)
    ids = np.array([[4, 2, 3, 0]])
    ranked = aggregate(sims, ids, CROP_SHOT, "frequency")
    assert [r.shot_id for r in ranked] == [20, 30, 10]  # 30 and 10 tie on one hit: 30 has the better similarity
    assert ranked[0].score == pytest.approx(0.5)
    assert ranked[0].similarity == pytest.approx(0.8)


def test_rrf_rewards_shots_ranked_high_by_every_query_crop() -> None:
    sims = np.array([[0.9, 0.8], [0.9, 0.8]], dtype=np.float32)
    ids = np.array([[0, 2], [4, 3]])  # crop 1: shot 10 then 20; crop 2: shot 30 then 20
    ranked = aggregate(sims, ids, CROP_SHOT, "rrf", rrf_k=60)
    scores = {r.shot_id: r.score for r in ranked}
    top = 2 / 61
    assert scores[20] == pytest.approx((1 / 62 + 1 / 62) / top)
    assert scores[10] == pytest.approx((1 / 61) / top)
    assert ranked[0].shot_id == 20


def test_rrf_gives_one_to_a_shot_first_for_every_query() -> None:
    ranked = aggregate(np.array([[0.5]]), np.array([[0]]), CROP_SHOT, "rrf")
    assert ranked[0].score == pytest.approx(1.0)


def test_padding_and_empty_hits_give_no_results() -> None:
    assert aggregate(np.array([[0.0, 0.0]]), np.array([[-1, -1]]), CROP_SHOT, "max") == []


def test_unknown_aggregation_is_refused() -> None:
    with pytest.raises(ValueError, match="max, frequency or rrf"):
        aggregate(np.zeros((1, 1)), np.zeros((1, 1), int), CROP_SHOT, "mean")


def test_frequency_counts_only_likely_matches_when_given_a_floor() -> None:
    # Shot 10 has two weak hits, shot 20 one strong one: without a floor, 10 "appears" more.
    sims = np.array([[0.9, 0.3, 0.2]], dtype=np.float32)
    ids = np.array([[2, 0, 1]])
    assert [r.shot_id for r in aggregate(sims, ids, CROP_SHOT, "frequency")] == [10, 20]
    ranked = aggregate(sims, ids, CROP_SHOT, "frequency", count_from=0.5)
    assert [(r.shot_id, r.score) for r in ranked] == [(20, 1.0), (10, 0.0)]
