"""Hostile settings and model files: every number out of its range (from a flag, the environment or
`.env`), inf and nan, `--device cuda` without a GPU, an index folder that is a file or under /proc,
a `.env` in UTF-16 or with invalid bytes, and model files given to the wrong setting. Each is one
line naming what the user typed and what is allowed: never a traceback, a hang or a runaway."""

from __future__ import annotations

import codecs
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from annotated_types import Ge, Gt, Le, Lt
from PIL import Image

from bot.settings import BotSettings
from castfinder.cli import _OVERRIDES, build_parser, flag_names, main
from core import Engine, ModelMismatchError, Settings, SettingsError
from core.models.factory import make_model
from core.settings import CPUS, _is_number, load_settings
from tests.conftest import REPO, WEIGHTS
from tests.hostile import no_traceback, offline_env, run_cli

SETTINGS_CLASSES = (Settings, BotSettings)


def _numeric_fields() -> list[tuple[type, str]]:
    return [(cls, name) for cls in SETTINGS_CLASSES for name, info in cls.model_fields.items()
            if _is_number(info.annotation)]


def _env_name(cls: type, field: str) -> str:
    return f"CASTFINDER_{field.upper()}"


def _bounds(cls: Any, field: str) -> tuple[float | None, bool, float | None, bool]:
    """(low, low is inclusive, high, high is inclusive) of a field."""
    low = high = None
    low_in = high_in = True
    for m in cls.model_fields[field].metadata:
        if isinstance(m, Ge):
            low = m.ge
        elif isinstance(m, Gt):
            low, low_in = m.gt, False
        elif isinstance(m, Le):
            high = m.le
        elif isinstance(m, Lt):
            high, high_in = m.lt, False
    return low, low_in, high, high_in


def _outside(cls: Any, field: str) -> list[str]:
    """Values just outside the field's range on both sides, as a user would type them."""
    low, low_in, high, high_in = _bounds(cls, field)
    is_int = cls.model_fields[field].annotation is int
    assert low is not None and high is not None
    step = 1 if is_int else max(abs(high) * 1e-3, 1e-6)
    values = [low - step if low_in else low, high + step if high_in else high]
    return [str(int(v)) if is_int else repr(float(v)) for v in values]


def _fmt(bound: float) -> str:
    return f"{bound:g}"


# -- every numeric setting has a range ------------------------------------------------------------

@pytest.mark.parametrize(("cls", "field"), _numeric_fields(), ids=lambda v: getattr(v, "__name__", v))
def test_every_numeric_setting_has_a_lower_and_an_upper_bound(cls: Any, field: str) -> None:
    """A setting added without a range fails here."""
    low, _, high, _ = _bounds(cls, field)
    assert low is not None and high is not None, f"{cls.__name__}.{field} needs Field(ge=…, le=…)"
    assert cls.model_config.get("allow_inf_nan") is False
    default = cls.model_fields[field].default
    if default is not None:  # the ranges hold the defaults: nothing that worked is refused
        assert low <= default <= high
    assert _env_name(cls, field) in (REPO / ".env.example").read_text(encoding="utf-8")


def test_the_thread_limit_is_the_machines_cpu_count() -> None:
    assert _bounds(Settings, "torch_threads")[2] == CPUS


# -- out of range from the environment ------------------------------------------------------------

@pytest.mark.parametrize(("cls", "field"), _numeric_fields(), ids=lambda v: getattr(v, "__name__", v))
def test_an_out_of_range_environment_variable_is_named_with_its_range(cls: Any, field: str, monkeypatch,
                                                                      tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    low, _, high, _ = _bounds(cls, field)
    values = _outside(cls, field)
    if cls.model_fields[field].annotation is not int:
        values += ["inf", "-inf", "nan"]
    name = _env_name(cls, field)
    for value in values:
        monkeypatch.setenv(name, value)
        with pytest.raises(SettingsError) as err:
            load_settings(cls)
        message = str(err.value)
        assert f"{name}={value}" in message and "(in the environment)" in message, message
        assert _fmt(low) in message and _fmt(high) in message, message  # the range, both ends
        assert not err.value.from_flags
    monkeypatch.delenv(name)


def test_an_out_of_range_value_in_dotenv_names_the_file(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CASTFINDER_DET_IMGSZ=100000\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"CASTFINDER_DET_IMGSZ=100000 \(in .*\.env\): must be a whole "
                                            r"number from 32 to 1920"):
        load_settings(Settings)


# -- out of range from a flag ---------------------------------------------------------------------

_ARGV = {
    "index": ["index", "film.mp4", "--movie", "m"],
    "movies": ["movies"],
    "search": ["search", "--movie", "m", "q.png"],
    "people": ["people", "q.png"],
    "eval": ["eval", "--movie", "m", "--ground-truth", "gt.csv", "--queries", "queries"],
}


def _numeric_flags() -> list[tuple[str, str, str]]:
    parser = build_parser()
    out = []
    for command in _ARGV:
        for field, flag in flag_names(parser, command).items():
            if _is_number(Settings.model_fields[field].annotation):
                out.append((command, field, flag))
    return out


def test_the_numeric_flags_are_found() -> None:
    found = {(field, flag) for _, field, flag in _numeric_flags()}
    assert {("sample_fps", "--fps"), ("frames_fps", "--frames-fps"), ("torch_threads", "--threads"),
            ("dedup_threshold", "--dedup-threshold"), ("search_k", "--search-k")} <= found
    assert all(field in _OVERRIDES for field, _ in found)


@pytest.mark.parametrize(("command", "field", "flag"), _numeric_flags())
def test_an_out_of_range_flag_is_a_usage_error_naming_the_flag_and_range(command: str, field: str, flag: str,
                                                                         capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    low, low_in, high, _ = _bounds(Settings, field)
    assert low is not None
    values = _outside(Settings, field)
    if Settings.model_fields[field].annotation is not int:
        # The hostile run's values; 1e-300 is out only where the lower bound is above it.
        values += ["inf", "nan", "1e9"] + (["1e-300"] if (1e-300 < low if low_in else 1e-300 <= low) else [])
    for value in values:
        assert main([*_ARGV[command], flag, value]) == 2
        err = capsys.readouterr().err
        assert f"castfinder: error: invalid settings: {flag} " in err and err.count("\n") == 1, err
        assert _fmt(low) in err and _fmt(high) in err and "Traceback" not in err
    assert not (tmp_path / "indexes").exists()  # nothing was made


def test_threads_over_the_cpu_count_say_how_many_there_are(capsys) -> None:
    assert main(["movies", "--threads", str(CPUS + 1)]) == 2
    assert f"this machine has {CPUS} CPUs; 0 uses them all" in capsys.readouterr().err


def test_the_hostile_run_in_a_real_process_gets_messages_not_tracebacks(tmp_path: Path) -> None:
    """The reports of the hostile run, as a user meets them: each ends within the deadline."""
    cases = [
        (["index", "film.mp4", "--movie", "m", "--fps", "inf"], {}, 2,
         "--fps inf: must be a number over 0 and at most 30"),
        (["index", "film.mp4", "--movie", "m", "--frames-fps", "1e-300"], {}, 2, "--frames-fps 1e-300"),
        (["movies", "--threads", "100000"], {}, 2, "--threads 100000: must be a whole number from 0 to"),
        (["movies"], {"CASTFINDER_SAMPLE_FPS": "1e9"}, 1, "CASTFINDER_SAMPLE_FPS=1e9 (in the environment)"),
        (["movies"], {"CASTFINDER_DET_IMGSZ": "100000"}, 1, "must be a whole number from 32 to 1920"),
        (["movies"], {"CASTFINDER_DEDUP_THRESHOLD": "nan"}, 1, "CASTFINDER_DEDUP_THRESHOLD=nan"),
    ]
    for args, env, code, message in cases:
        proc = run_cli(args, {"CASTFINDER_INDEX_DIR": str(tmp_path / "indexes"), **env}, timeout=60)
        assert proc.returncode == code and message in proc.stderr and no_traceback(proc), (args, proc.stderr)


# -- the device --------------------------------------------------------------------------------

def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(_has_cuda(), reason="this machine has a CUDA GPU: --device cuda is right here")
def test_device_cuda_without_a_gpu_says_how_to_fall_back(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "q.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    assert main(["people", str(image), "--device", "cuda", "--detector", "yolov8n.yaml"]) == 1
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "--device cpu" in err and "CASTFINDER_DEVICE=auto" in err
    assert "Traceback" not in err and err.count("\n") == 1
    # The engine itself (the bot's door too) refuses it the same way; auto falls back to the CPU.
    with pytest.raises(SettingsError, match="--device cpu"):
        Engine(Settings(_env_file=None, device="cuda", index_dir=tmp_path / "i"), load_models=False)
    assert Engine(Settings(_env_file=None, device="auto", index_dir=tmp_path / "i"), load_models=False).device == "cpu"


# -- the index folder -----------------------------------------------------------------------------

@pytest.mark.parametrize("command", list(_ARGV))
@pytest.mark.parametrize("where", ["file", "proc", "under-a-file"])
def test_an_unusable_index_dir_is_refused_by_every_command(command: str, where: str, tmp_path: Path, capsys,
                                                           monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    path = {"file": afile, "proc": Path("/proc/castfinder-indexes"), "under-a-file": afile / "indexes"}[where]
    expected = {"file": "is a file, not a folder", "proc": "the kernel's own files",
                "under-a-file": "is a file, so no folder can be made inside it"}[where]
    assert main([*_ARGV[command], "--index-dir", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"--index-dir {path}: " in err and expected in err and "Traceback" not in err
    assert afile.read_text() == "mine"
    # The same from the environment, named as the variable.
    monkeypatch.setenv("CASTFINDER_INDEX_DIR", str(path))
    assert main(_ARGV[command]) == 1
    err = capsys.readouterr().err
    assert f"CASTFINDER_INDEX_DIR={path} (in the environment): " in err and expected in err


def test_the_bot_does_not_start_on_an_unusable_index_dir_or_a_bad_number(tmp_path: Path) -> None:
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    for env, code, message in [({"CASTFINDER_INDEX_DIR": str(afile)}, 1, "is a file, not a folder"),
                               ({"CASTFINDER_QUEUE_SIZE": "100000"}, 2, "CASTFINDER_QUEUE_SIZE=100000"),
                               ({"CASTFINDER_ALBUM_WAIT_S": "inf"}, 2, "CASTFINDER_ALBUM_WAIT_S=inf")]:
        proc = subprocess.run([sys.executable, "-m", "bot"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env=offline_env({"BOT_TOKEN": "42:TEST", **env}))
        assert proc.returncode == code and message in proc.stderr and no_traceback(proc), proc.stderr


# -- .env encodings -------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-8-sig", "utf-32"])
def test_a_dotenv_saved_with_a_byte_order_mark_is_read(encoding: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = "BOT_TOKEN=42:from-dotenv\nCASTFINDER_SAMPLE_FPS=2.5\nCASTFINDER_INDEX_DIR=films é\n"
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data
    (tmp_path / ".env").write_bytes(data)
    settings = load_settings(Settings)
    assert settings.sample_fps == 2.5 and settings.index_dir == Path("films é")
    # The first line too: with its mark read as text, BOT_TOKEN would be silently lost.
    assert load_settings(BotSettings).token() == "42:from-dotenv"


@pytest.mark.parametrize(("data", "why"), [(b"CASTFINDER_SAMPLE_FPS=2\n\xff\xfe\x80junk\n", "is not utf-8 text"),
                                           ("CASTFINDER_SAMPLE_FPS=2\n".encode("utf-16-le"), "NUL bytes")])
def test_a_dotenv_that_is_not_text_is_refused_by_name(data: bytes, why: str, tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(data)
    proc = subprocess.run([sys.executable, "-m", "castfinder", "movies"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env=offline_env())
    assert proc.returncode == 1 and no_traceback(proc)
    assert f"{tmp_path / '.env'} " in proc.stderr and why in proc.stderr and "save it as UTF-8" in proc.stderr
    bot = subprocess.run([sys.executable, "-m", "bot"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env=offline_env())
    assert bot.returncode == 2 and why in bot.stderr and no_traceback(bot)


def test_a_utf16_dotenv_out_of_range_is_named(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes("CASTFINDER_SAMPLE_FPS=99\n".encode("utf-16"))
    proc = subprocess.run([sys.executable, "-m", "castfinder", "movies"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env=offline_env())
    assert proc.returncode == 1 and no_traceback(proc)
    assert f"CASTFINDER_SAMPLE_FPS=99 (in {tmp_path / '.env'}): must be a number over 0 and at most 30" in proc.stderr


# -- model files given to the wrong setting ------------------------------------------------------------

needs_weights = pytest.mark.skipif(not (WEIGHTS / "scrfd_2.5g_kps.onnx").is_file(),
                                   reason=f"needs the real weights in {WEIGHTS}")
W = {"osnet": "osnet_x0_25_msmt17.onnx", "reid": "person-reidentification-retail-0277.xml",
     "yunet": "face_detection_yunet.onnx", "scrfd": "scrfd_2.5g_kps.onnx", "edgeface": "edgeface_xs_q_fp32.onnx",
     "yolo": "person_yolov8s_falldet.pt", "edgeface_pt": "edgeface_xs_q.pt"}
# (setting field, the model role it loads as, the env name a message must name)
SLOTS = {"detector": ("detector", "CASTFINDER_DETECTOR"), "reid_model": ("reid", "CASTFINDER_REID_MODEL"),
         "osnet_model": ("osnet", "CASTFINDER_OSNET_MODEL"), "face_detector": ("face", "CASTFINDER_FACE_DETECTOR"),
         "face_model": ("face", "CASTFINDER_FACE_MODEL")}
# What each slot takes; every other file is refused. (The .pt detector loads, slowly: test_models.)
FITS = {"detector": {"yolo"}, "reid_model": {"osnet", "reid"}, "osnet_model": {"osnet", "reid"},
        "face_detector": {"yunet", "scrfd"}, "face_model": {"edgeface"}}
# What the message says the wrong file looks like, where the graph tells.
LOOKS = {"osnet": "person re-identification model", "reid": "person re-identification model",
         "yunet": "YuNet face detector", "scrfd": "SCRFD face detector", "edgeface": "face recognition model"}


def _load(field: str, value: str, tmp_path: Path) -> None:
    role, _ = SLOTS[field]
    settings = Settings(_env_file=None, index_dir=tmp_path / "i", models_dir=WEIGHTS, device="cpu",
                        person_classes=[0, 1], **{field: value})
    make_model(role, settings, "cpu").load()


@needs_weights
@pytest.mark.parametrize("field", list(SLOTS))
@pytest.mark.parametrize("file", [*W, "passwd"])
def test_a_model_file_is_checked_for_the_role_its_setting_gives_it(field: str, file: str, tmp_path: Path) -> None:
    if file in FITS[field] and field == "detector":
        pytest.skip("the right detector loads through an OpenVINO export: test_models covers it")
    path = Path("/etc/passwd") if file == "passwd" else WEIGHTS / W[file]
    if file in FITS[field]:
        _load(field, str(path), tmp_path)  # the right file loads: the check refuses nothing it should take
        return
    with pytest.raises(ModelMismatchError) as err:
        _load(field, str(path), tmp_path)
    message = str(err.value)
    setting = SLOTS[field][1]
    assert message.startswith(f"{setting} names '{path}', which is not a ") and f"Set {setting} to " in message
    assert "\n" not in message
    if file in LOOKS:
        assert f"it looks like a {LOOKS[file]}" in message or f"it looks like an {LOOKS[file]}" in message


@needs_weights
def test_a_wrong_model_file_stops_the_cli_with_its_setting_named(tmp_path: Path) -> None:
    image = tmp_path / "q.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    proc = run_cli(["people", str(image), "--detector", str(WEIGHTS / W["osnet"]), "--index-dir", str(tmp_path / "i")],
                   timeout=120)
    assert proc.returncode == 1 and no_traceback(proc) and proc.stderr.count("\n") == 1
    assert "CASTFINDER_DETECTOR names" in proc.stderr and "person re-identification model" in proc.stderr
    proc = run_cli(["people", str(image), "--detector", "/etc/passwd", "--index-dir", str(tmp_path / "i")], timeout=120)
    assert proc.returncode == 1 and no_traceback(proc) and "not a person detector" in proc.stderr


@needs_weights
def test_indexing_with_a_face_model_as_the_reid_model_leaves_no_index(tmp_path: Path, tiny_dinov2: Path,
                                                                      capsys, monkeypatch) -> None:
    from tests.media import make_video

    monkeypatch.chdir(tmp_path)
    video = make_video(tmp_path / "heat.mp4", [((30, 10, 10), 30), ((0, 0, 160), 30)])
    index_dir = tmp_path / "indexes"
    rc = main(["index", str(video), "--movie", "Heat", "--quiet", "--index-dir", str(index_dir), "--detector",
               "yolov8n.yaml", "--device", "cpu", "--channels", "reid", "--reid-model", str(WEIGHTS / W["edgeface"])])
    err = capsys.readouterr().err
    assert rc == 1 and "CASTFINDER_REID_MODEL names" in err and "face recognition model" in err, err
    assert not (index_dir / "heat").exists()


def test_ranges_hold_for_values_the_tests_and_docs_use() -> None:
    """The bounds are wide enough for what the project itself sets (tests' tiny runs, the
    documented examples): a range that refused them would break working setups."""
    Settings(_env_file=None, det_imgsz=160, det_conf=1e-4, checkpoint_s=0.5, sample_fps=4.0, short_shot_s=0.5,
             frames_fps=5, still_diff=0, min_shot_frames=15, scene_threshold=27, index_dir=Path("indexes"))
    assert math.isfinite(Settings(_env_file=None).checkpoint_s)


def test_a_detector_batch_too_big_for_its_input_size_is_refused(monkeypatch, tmp_path: Path) -> None:
    """Each bound alone holds, but 64 frames at 1920 px would take some 15 GB (8 took 2.4 GB)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CASTFINDER_DET_IMGSZ", "1920")
    monkeypatch.setenv("CASTFINDER_DET_BATCH", "64")
    with pytest.raises(SettingsError, match=r"CASTFINDER_DET_BATCH=64 \(in the environment\): a batch of 64 frames "
                                            r"at 1920 px .* at 1920 px use at most 8"):
        load_settings(Settings)
    monkeypatch.setenv("CASTFINDER_DET_BATCH", "8")
    assert load_settings(Settings).det_batch == 8
    monkeypatch.setenv("CASTFINDER_DET_IMGSZ", "384")
    monkeypatch.setenv("CASTFINDER_DET_BATCH", "64")
    assert load_settings(Settings).det_batch == 64
