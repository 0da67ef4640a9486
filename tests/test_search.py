"""The online stage's joins: per-stage seconds, each query image decoded once, one crop rule for
index and query."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import core.engine
from core import Engine
from core.geometry import crop_box
from core.search.images import crop
from tests.conftest import DATA


def test_a_box_covers_every_pixel_it_touches_and_stays_inside_the_picture() -> None:
    assert crop_box((10.2, 5.7, 20.1, 30.0), 100, 50) == (10, 5, 21, 30)
    assert crop_box((-3.0, -1.5, 500.0, 80.0), 100, 50) == (0, 0, 100, 50)
    # A degenerate box (zero width, or past the edge) still gives one pixel to embed.
    assert crop_box((40.0, 10.0, 40.0, 10.0), 100, 50) == (40, 10, 41, 11)
    assert crop_box((120.0, 60.0, 130.0, 70.0), 100, 50) == (99, 49, 100, 50)


def test_the_query_is_cropped_by_the_index_rule() -> None:
    image = Image.fromarray(np.arange(50 * 100 * 3, dtype=np.uint8).reshape(50, 100, 3))
    cut = crop(image, (10.6, 5.5, 20.4, 30.5))
    # floor of the top-left, ceiling of the bottom-right: as the indexer cuts people from frames
    assert cut.size == (11, 26)
    assert np.array_equal(np.asarray(cut), np.asarray(image)[5:31, 10:21])


@pytest.fixture
def rose() -> list:
    """Two screenshots of Rose, from ../shared (the Titanic engine skips without it)."""
    return [DATA / "titanic" / "body_rose.jpg", DATA / "titanic" / "portrait_rose.jpg"]


def test_a_search_reports_its_seconds_per_stage(titanic_engine: Engine, rose: list) -> None:
    response = titanic_engine.search("titanic", rose, top=3)
    assert set(response.speed) == {"people", "embed", "search", "rank"}
    assert all(v >= 0 for v in response.speed.values())
    assert response.speed["people"] > 0 and response.speed["embed"] > 0  # the detector and a channel ran
    assert sum(response.speed.values()) <= response.elapsed_s
    assert "speed" not in response.to_json()  # the JSON contract of `search --json` is unchanged


def test_each_query_image_is_decoded_once(titanic_engine: Engine, rose: list,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = []
    real = core.engine.load_image

    def counting(source, **kwargs):
        decoded.append(source)
        return real(source, **kwargs)

    monkeypatch.setattr(core.engine, "load_image", counting)
    titanic_engine.search("titanic", rose, top=3)
    assert decoded == rose
