import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import BadInputError
from core.search.images import load_image


def _jpeg(size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def test_a_jpeg_decodes_to_rgb() -> None:
    img = load_image(_jpeg(), max_pixels=10**7)
    assert img.mode == "RGB" and img.size == (64, 48)


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "empty"), (b"%PDF-1.7 not an image", "not an image"), (_jpeg()[:200], "damaged or truncated")],
)
def test_bad_images_get_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        load_image(data, max_pixels=10**7)


def test_huge_images_are_refused_before_decoding() -> None:
    out = io.BytesIO()
    Image.new("RGB", (4000, 3000)).save(out, "PNG")
    with pytest.raises(BadInputError, match="too large"):
        load_image(out.getvalue(), max_pixels=1_000_000)


def test_large_images_are_downscaled_for_search() -> None:
    img = load_image(_jpeg((3000, 1000)), max_pixels=10**8, max_side=1000)
    assert max(img.size) == 1000 and img.size[0] / img.size[1] == pytest.approx(3, rel=0.01)


def test_missing_file_and_phone_rotation(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file"):
        load_image(tmp_path / "nope.jpg", max_pixels=10**7)
    rotated = Image.new("RGB", (40, 20))
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "phone.jpg"
    rotated.save(path, exif=exif)
    assert load_image(path, max_pixels=10**7).size == (20, 40)
