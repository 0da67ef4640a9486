from pathlib import Path

import pytest
from pydantic import ValidationError

from core import Settings, format_ts, slugify


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Amélie (2001)", "amelie-2001"),
        ("Lock, Stock and Two Smoking Barrels", "lock-stock-and-two-smoking-barrels"),
        ("Face/Off", "face-off"),
        ("../../etc/passwd", "etc-passwd"),
        ("  Heat  ", "heat"),
    ],
)
def test_slug_is_readable_and_filesystem_safe(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_slug_of_names_without_ascii_is_stable_and_distinct() -> None:
    a, b = slugify("🎬🍿"), slugify("千と千尋の神隠し")
    assert a.startswith("movie-") and b.startswith("movie-") and a != b
    assert slugify("🎬🍿") == a
    for s in (a, b):
        assert "/" not in s and ".." not in s and s.isascii()


def test_long_names_are_cut_but_stay_distinct() -> None:
    base = "A Very Long Title " * 10
    a, b = slugify(base + "Part One"), slugify(base + "Part Two")
    assert len(a) <= 64 and len(b) <= 64 and a != b


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "00:00:00.000"), (2.419086, "00:00:02.419"), (3723.4567, "01:02:03.456"), (8.8, "00:00:08.800")],
)
def test_timestamps_are_hh_mm_ss_mmm(seconds: float, text: str) -> None:
    assert format_ts(seconds) == text


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASTFINDER_PERSON_CLASSES", "0, 1")
    monkeypatch.setenv("CASTFINDER_EMBEDDER", "clip")
    monkeypatch.setenv("CASTFINDER_INDEX_DIR", "/srv/indexes")
    s = Settings(_env_file=None)
    assert s.person_classes == [0, 1]
    assert s.embedder == "clip" and s.model_for(s.embedder) == "openai/clip-vit-base-patch16"
    assert s.index_dir == Path("/srv/indexes")


def test_settings_read_dotenv_and_flags_override_it(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("CASTFINDER_DETECTOR=models/people.pt\nCASTFINDER_SAMPLE_FPS=2\n")
    s = Settings(_env_file=env)
    assert s.detector == "models/people.pt" and s.sample_fps == 2
    assert Settings(_env_file=env, sample_fps=7).sample_fps == 7


@pytest.mark.parametrize(("key", "value"), [("CASTFINDER_EMBEDDER", "resnet"), ("CASTFINDER_PERSON_CLASSES", "person"),
                                            ("CASTFINDER_SAMPLE_FPS", "0")])
def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


def test_env_example_documents_every_setting() -> None:
    from bot.settings import BotSettings

    text = (Path(__file__).parents[1] / ".env.example").read_text()
    names = [*Settings.model_fields, *(n for n in BotSettings.model_fields if n != "bot_token")]
    missing = [f"CASTFINDER_{name.upper()}" for name in names if f"CASTFINDER_{name.upper()}=" not in text]
    assert not missing and "BOT_TOKEN=" in text


def test_auto_device_is_the_cpu_without_importing_torch_when_no_gpu_driver_is_loaded(monkeypatch) -> None:
    import subprocess
    import sys

    import core.settings

    code = ("import sys; from core.settings import Settings, _gpu_driver_present\n"
            "print(_gpu_driver_present(), Settings(_env_file=None).resolve_device(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    driver, device, imported = out.stdout.split()
    if driver == "True":
        pytest.skip("this machine has a GPU driver")
    assert (device, imported) == ("cpu", "False")
    # With a driver present, torch is asked (and says whether CUDA works).
    monkeypatch.setattr(core.settings, "_gpu_driver_present", lambda: True)
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert core.settings.Settings(_env_file=None).resolve_device() == expected
