"""The model registry: resolving names and paths, verified downloads, `castfinder models`.

No test here uses the network: downloads come from a local HTTP server on 127.0.0.1, and the
tests that must not download at all forbid every socket connection."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from castfinder.cli import main
from core import ModelNotFoundError, Settings
from core.models import registry
from core.models.registry import Derivation, ModelFile, ModelSpec, models_dir, resolve_model
from tests.conftest import WEIGHTS
from tests.net import free_port

SETTING = "CASTFINDER_FACE_DETECTOR"
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: several chunks
SHARED_WEIGHTS = pytest.mark.skipif(not (WEIGHTS / "scrfd_2.5g_kps.onnx").is_file(),
                                    reason=f"needs the real weights in {WEIGHTS} (only on the project's machines)")


class _Server:
    """Serves files from a folder; /cut/<name> sends half of a file then closes the connection,
    /slow/<name> sends it in slow pieces. Counts requests per path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest's output clean
                pass

            def do_GET(self) -> None:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                mode, _, name = self.path.lstrip("/").partition("/")
                path = server.root / name
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if mode == "cut":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                elif mode == "slow":
                    for i in range(0, len(data), len(data) // 8):
                        self.wfile.write(data[i:i + len(data) // 8])
                        self.wfile.flush()
                        time.sleep(0.05)
                else:
                    self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str, mode: str = "file") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{mode}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private user cache, and downloads allowed (conftest turns HF_HUB_OFFLINE on)."""
    path = tmp_path / "user-cache"
    monkeypatch.setattr(registry, "user_cache_models_dir", lambda: path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("CASTFINDER_OFFLINE", raising=False)
    return path


@pytest.fixture
def server(tmp_path: Path):
    root = tmp_path / "served"
    root.mkdir()
    (root / "fake.onnx").write_bytes(PAYLOAD)
    srv = _Server(root)
    yield srv
    srv.close()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"network used: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _register(monkeypatch: pytest.MonkeyPatch, *urls: str, sha256: str | None = None, size: int | None = None,
              name: str = "fake_det", filename: str = "fake.onnx", derived: Derivation | None = None) -> ModelSpec:
    spec = ModelSpec(
        name=name, kind="face_detector",
        files=(ModelFile(filename, tuple(urls), sha256 or hashlib.sha256(PAYLOAD).hexdigest(),
                         len(PAYLOAD) if size is None else size),),
        licence="MIT", commercial_use=True, source="test", description="a fake model", derived_from=derived)
    monkeypatch.setitem(registry.REGISTRY, name, spec)
    return spec


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.part")) if folder.exists() else []


# --- downloads ----------------------------------------------------------------------------------

def test_download_is_verified_and_then_cached(tmp_path, cache, server, monkeypatch) -> None:
    _register(monkeypatch, server.url("fake.onnx"))
    models = tmp_path / "models"
    path = resolve_model("fake_det", setting=SETTING, settings_or_models_dir=models)
    assert path == models / "fake.onnx" and path.read_bytes() == PAYLOAD
    assert _leftovers(models) == []
    # Found the second time: no new request.
    assert resolve_model("fake_det", setting=SETTING, settings_or_models_dir=models) == path
    assert server.hits == {"/file/fake.onnx": 1}


def test_download_goes_to_the_user_cache_without_a_models_dir(cache, server, monkeypatch) -> None:
    _register(monkeypatch, server.url("fake.onnx"))
    path = resolve_model("fake_det", setting=SETTING, settings_or_models_dir=Settings(_env_file=None))
    assert path == cache / "fake.onnx" and path.read_bytes() == PAYLOAD


def test_checksum_mismatch_is_an_error_and_leaves_no_file(tmp_path, cache, server, monkeypatch) -> None:
    _register(monkeypatch, server.url("fake.onnx"), sha256="0" * 64)
    models = tmp_path / "models"
    with pytest.raises(ModelNotFoundError, match="checksum mismatch") as info:
        resolve_model("fake_det", setting=SETTING, settings_or_models_dir=models)
    assert "fake.onnx" in str(info.value) and SETTING in str(info.value)
    assert not (models / "fake.onnx").exists() and _leftovers(models) == []


def test_a_cut_download_leaves_no_partial_file_and_the_next_call_retries(tmp_path, cache, server,
                                                                        monkeypatch) -> None:
    _register(monkeypatch, server.url("fake.onnx", "cut"))
    models = tmp_path / "models"
    with pytest.raises(ModelNotFoundError, match="could not download fake.onnx"):
        resolve_model("fake_det", setting=SETTING, settings_or_models_dir=models)
    assert not (models / "fake.onnx").exists() and _leftovers(models) == []
    # The server is fixed: the next call downloads again and succeeds.
    _register(monkeypatch, server.url("fake.onnx"))
    path = resolve_model("fake_det", setting=SETTING, settings_or_models_dir=models)
    assert path.read_bytes() == PAYLOAD and server.hits["/cut/fake.onnx"] == 1


def test_the_next_url_is_tried_when_one_fails(tmp_path, cache, server, monkeypatch) -> None:
    _register(monkeypatch, server.url("gone.onnx"), server.url("fake.onnx", "cut"), server.url("fake.onnx"))
    path = resolve_model("fake_det", setting=SETTING, settings_or_models_dir=tmp_path / "models")
    assert path.read_bytes() == PAYLOAD
    assert set(server.hits) == {"/file/gone.onnx", "/cut/fake.onnx", "/file/fake.onnx"}


def test_ctrl_c_during_a_download_leaves_nothing(tmp_path, cache, monkeypatch) -> None:
    import urllib.request

    class Interrupted:
        headers = {"Content-Length": str(len(PAYLOAD))}
        calls = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

        def read(self, n: int) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise KeyboardInterrupt
            return PAYLOAD[:n]

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Interrupted())
    _register(monkeypatch, "http://127.0.0.1:9/fake.onnx")
    models = tmp_path / "models"
    with pytest.raises(KeyboardInterrupt):
        resolve_model("fake_det", setting=SETTING, settings_or_models_dir=models)
    assert list(models.iterdir()) == []


def test_threads_loading_at_once_download_once(tmp_path, cache, server, monkeypatch) -> None:
    _register(monkeypatch, server.url("fake.onnx", "slow"))
    models = tmp_path / "models"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(
        resolve_model("fake_det", setting=SETTING, settings_or_models_dir=models))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [models / "fake.onnx"] * 4
    assert server.hits == {"/slow/fake.onnx": 1}


def test_a_network_failure_says_what_to_do(tmp_path, cache, monkeypatch) -> None:
    port = free_port()  # a port nothing listens on
    _register(monkeypatch, f"http://127.0.0.1:{port}/fake.onnx")
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("fake_det", setting=SETTING, settings_or_models_dir=tmp_path / "models")
    message = str(info.value)
    assert "\n" not in message
    assert all(s in message for s in ("fake_det", "fake.onnx", SETTING, "CASTFINDER_MODELS_DIR"))


# --- offline, unknown names, local paths --------------------------------------------------------

@pytest.mark.parametrize("env", ["HF_HUB_OFFLINE", "CASTFINDER_OFFLINE"])
def test_offline_and_not_cached_names_model_file_and_setting(tmp_path, cache, server, no_network,
                                                             monkeypatch, env) -> None:
    monkeypatch.setenv(env, "1")
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("scrfd_2.5g", setting=SETTING, settings_or_models_dir=tmp_path / "models")
    message = str(info.value)
    assert "\n" not in message and "offline" in message
    assert all(s in message for s in ("'scrfd_2.5g'", "scrfd_2.5g_kps.onnx", SETTING, "CASTFINDER_MODELS_DIR"))
    assert not (tmp_path / "models" / "scrfd_2.5g_kps.onnx").exists()


def test_download_false_never_downloads(tmp_path, cache, server, monkeypatch) -> None:
    _register(monkeypatch, server.url("fake.onnx"))
    with pytest.raises(ModelNotFoundError, match="fake.onnx"):
        resolve_model("fake_det", setting=SETTING, settings_or_models_dir=tmp_path, download=False)
    assert server.hits == {}


def test_an_unknown_name_lists_the_choices_of_its_kind(tmp_path, cache, no_network) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("scrfd_10g", setting=SETTING, settings_or_models_dir=tmp_path)
    message = str(info.value)
    assert "'scrfd_10g'" in message and SETTING in message
    assert "scrfd_2.5g, scrfd_500m, yunet" in message and "edgeface_xs" not in message
    with pytest.raises(ModelNotFoundError, match="reid_0277, osnet_x0_25"):
        resolve_model("models/missing.xml", setting="CASTFINDER_REID_MODEL", settings_or_models_dir=tmp_path)


def test_a_local_file_or_folder_is_used_without_network(tmp_path, cache, no_network) -> None:
    own = tmp_path / "my_detector.onnx"
    own.write_bytes(b"anything")
    assert resolve_model(str(own), setting=SETTING, settings_or_models_dir=None) == own
    # A folder: the registry file of the setting's kind in it (the default first) ...
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in ("scrfd_500m_kps.onnx", "face_detection_yunet.onnx", "osnet_x0_25_msmt17.onnx"):
        (folder / name).write_bytes(b"user's own file")
    assert resolve_model(str(folder), setting=SETTING, settings_or_models_dir=None) == folder / "scrfd_500m_kps.onnx"
    assert (resolve_model(str(folder), setting="CASTFINDER_OSNET_MODEL", settings_or_models_dir=None)
            == folder / "osnet_x0_25_msmt17.onnx")
    # ... or its one model file; several unknown ones are ambiguous.
    single = tmp_path / "single"
    single.mkdir()
    (single / "detector.onnx").write_bytes(b"x")
    assert resolve_model(str(single), setting=SETTING, settings_or_models_dir=None) == single / "detector.onnx"
    (single / "other.onnx").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="several"):
        resolve_model(str(single), setting=SETTING, settings_or_models_dir=None)


def test_an_openvino_xml_needs_its_bin(tmp_path, cache, no_network) -> None:
    xml = tmp_path / "reid.xml"
    xml.write_text("<net/>")
    with pytest.raises(ModelNotFoundError, match="reid.bin"):
        resolve_model(str(xml), setting="CASTFINDER_REID_MODEL", settings_or_models_dir=None)
    xml.with_suffix(".bin").write_bytes(b"")
    assert resolve_model(str(xml), setting="CASTFINDER_REID_MODEL", settings_or_models_dir=None) == xml


def test_a_wrong_file_in_the_models_dir_is_refused(tmp_path, cache, server, monkeypatch) -> None:
    _register(monkeypatch, server.url("fake.onnx"))
    models = tmp_path / "models"
    models.mkdir()
    (models / "fake.onnx").write_bytes(b"not the model")
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("fake_det", setting=SETTING, settings_or_models_dir=models)
    assert str(models / "fake.onnx") in str(info.value) and "not the expected file" in str(info.value)
    assert server.hits == {} and (models / "fake.onnx").read_bytes() == b"not the model"


def test_models_dir_setting_or_the_user_cache(tmp_path, cache, monkeypatch) -> None:
    assert models_dir(Settings(_env_file=None)) == cache
    assert models_dir(Settings(_env_file=None, models_dir=tmp_path / "m")) == tmp_path / "m"
    monkeypatch.setenv("CASTFINDER_MODELS_DIR", str(tmp_path / "env"))
    assert models_dir(Settings(_env_file=None)) == tmp_path / "env"
    monkeypatch.setenv("CASTFINDER_MODELS_DIR", "")
    assert models_dir(Settings(_env_file=None)) == cache


def test_registry_entries_are_complete() -> None:
    for name in ("scrfd_2.5g", "scrfd_500m", "edgeface_xs", "reid_0277", "osnet_x0_25", "yunet", "yolov8s.pt",
                 "facebook/dinov2-small", "openai/clip-vit-base-patch16"):
        spec = registry.REGISTRY[name]
        assert spec.kind in registry.KINDS and spec.licence and spec.source
        if spec.managed_by == "castfinder":
            for mf in (*spec.files, *([spec.derived_from.source] if spec.derived_from else [])):
                assert len(mf.sha256 or "") == 64 and mf.size
            assert spec.derived_from or all(mf.urls for mf in spec.files)
    assert [mf.filename for mf in registry.REGISTRY["reid_0277"].files] == [
        "person-reidentification-retail-0277.xml", "person-reidentification-retail-0277.bin"]
    assert not registry.REGISTRY["scrfd_2.5g"].commercial_use and not registry.REGISTRY["edgeface_xs"].commercial_use


@SHARED_WEIGHTS
def test_the_shared_weights_folder_resolves_every_model_without_network(cache, no_network, monkeypatch) -> None:
    monkeypatch.setenv("CASTFINDER_OFFLINE", "1")
    settings = Settings(_env_file=None, models_dir=WEIGHTS)
    for spec in registry.REGISTRY.values():
        if spec.managed_by != "castfinder":
            continue
        setting = next(s for s, (kind, _) in registry.SETTING_KINDS.items() if kind == spec.kind)
        path = resolve_model(spec.name, setting=setting, settings_or_models_dir=settings)
        assert path == WEIGHTS / spec.main.filename
        assert all((path.parent / mf.filename).is_file() for mf in spec.files)


# --- conversions ----------------------------------------------------------------------------------

def _fake_convert(source: Path, output: Path) -> None:
    output.write_bytes(source.read_bytes()[::-1])


def test_a_derived_model_is_converted_once_and_recorded(tmp_path, cache, server, monkeypatch) -> None:
    source = ModelFile("fake.onnx", (server.url("fake.onnx"),), hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD))
    derived = Derivation(source, "tests.test_registry:_fake_convert", "reversed")
    _register(monkeypatch, name="fake_emb", filename="fake_emb.onnx", sha256="1" * 64, derived=derived)
    models = tmp_path / "models"
    path = resolve_model("fake_emb", setting=SETTING, settings_or_models_dir=models)
    assert path == models / "fake_emb.onnx" and path.read_bytes() == PAYLOAD[::-1]
    record = json.loads((models / "fake_emb.onnx.provenance.json").read_text())
    assert record["source_sha256"] == source.sha256 and record["sha256"] == hashlib.sha256(PAYLOAD[::-1]).hexdigest()
    assert _leftovers(models) == []
    monkeypatch.setattr("tests.test_registry._fake_convert", lambda *a: pytest.fail("converted twice"))
    assert resolve_model("fake_emb", setting=SETTING, settings_or_models_dir=models) == path
    assert server.hits == {"/file/fake.onnx": 1}
    # A converted file changed afterwards no longer matches its record.
    path.write_bytes(b"tampered")
    with pytest.raises(ModelNotFoundError, match="not the expected file"):
        resolve_model("fake_emb", setting=SETTING, settings_or_models_dir=models)


def test_a_missing_convert_extra_says_what_to_install(tmp_path, cache, no_network, monkeypatch) -> None:
    from core.models.convert import ConversionUnavailable

    def unavailable(source: Path, output: Path) -> None:
        raise ConversionUnavailable("converting needs timm: pip install 'castfinder[convert]'")

    monkeypatch.setattr("tests.test_registry._fake_convert", unavailable)
    (tmp_path / "fake.onnx").write_bytes(PAYLOAD)
    source = ModelFile("fake.onnx", (), hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD))
    _register(monkeypatch, name="fake_emb", filename="fake_emb.onnx", sha256="1" * 64,
              derived=Derivation(source, "tests.test_registry:_fake_convert", "reversed"))
    with pytest.raises(ModelNotFoundError, match=r"castfinder\[convert\].*fake_emb.onnx"):
        resolve_model("fake_emb", setting=SETTING, settings_or_models_dir=tmp_path)
    assert not (tmp_path / "fake_emb.onnx").exists() and _leftovers(tmp_path) == []


@pytest.mark.skipif(not (WEIGHTS / "edgeface_xs_q.pt").is_file(), reason=f"needs {WEIGHTS}/edgeface_xs_q.pt")
def test_edgeface_is_converted_from_the_official_checkpoint(tmp_path, cache, no_network, monkeypatch) -> None:
    pytest.importorskip("timm", reason="the convert extra (timm) is not installed")
    pytest.importorskip("onnx", reason="the convert extra (onnx) is not installed")
    import onnxruntime as ort

    monkeypatch.setenv("CASTFINDER_OFFLINE", "1")
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(WEIGHTS / "edgeface_xs_q.pt", models / "edgeface_xs_q.pt")  # only the official file
    path = resolve_model("edgeface_xs", setting="CASTFINDER_FACE_MODEL", settings_or_models_dir=models)
    assert path == models / "edgeface_xs_q_fp32.onnx"

    ours = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape[1:]) for i in ours.get_inputs()] == [("input", [3, 112, 112])]
    assert [o.name for o in ours.get_outputs()] == ["embedding"]
    assert "edgeface_xs_q.pt" in ours.get_modelmeta().custom_metadata_map["source"]
    reference = ort.InferenceSession(str(WEIGHTS / "edgeface_xs_q_fp32.onnx"), providers=["CPUExecutionProvider"])
    faces = np.random.default_rng(0).uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32)
    a, b = ours.run(None, {"input": faces})[0], reference.run(None, {"input": faces})[0]
    assert a.shape == (4, 512)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.999, cosine
    # Found, with its provenance, the next time.
    assert resolve_model("edgeface_xs", setting="CASTFINDER_FACE_MODEL", settings_or_models_dir=models) == path


# --- `castfinder models` ----------------------------------------------------------------------------

def test_models_command_json_reports_each_model(tmp_path, cache, no_network, monkeypatch, capsys) -> None:
    import huggingface_hub.constants

    # A cached Hugging Face model and a cached ultralytics detector, laid out as those libraries do.
    hub = tmp_path / "hub"
    snapshot = hub / "models--facebook--dinov2-small" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"w")
    (hub / "models--facebook--dinov2-small" / "refs").mkdir()
    (hub / "models--facebook--dinov2-small" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    yolo_config = tmp_path / "yolo"
    (yolo_config / "Ultralytics").mkdir(parents=True)
    (yolo_config / "Ultralytics" / "settings.json").write_text(json.dumps({"weights_dir": str(tmp_path / "w")}))
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "yolov8s.pt").write_bytes(b"weights")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(yolo_config))
    models = tmp_path / "models"
    models.mkdir()
    (models / "face_detection_yunet.onnx").write_bytes(b"wrong bytes")

    assert main(["models", "--json", "--models-dir", str(models)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["models_dir"] == str(models) and data["cache_dir"] == str(cache)
    by_name = {m["name"]: m for m in data["models"]}
    assert set(registry.REGISTRY) == set(by_name)
    assert by_name["scrfd_2.5g"]["available"] is False and by_name["scrfd_2.5g"]["commercial_use"] is False
    assert by_name["scrfd_2.5g"]["size"] == 3_291_017 and "non-commercial" in by_name["scrfd_2.5g"]["licence"]
    assert by_name["reid_0277"]["commercial_use"] is True and len(by_name["reid_0277"]["files"]) == 2
    assert by_name["edgeface_xs"]["derived_from"]["filename"] == "edgeface_xs_q.pt"
    assert by_name["yunet"]["where"] == "mismatch" and by_name["yunet"]["available"] is False
    assert by_name["facebook/dinov2-small"]["available"] is True
    assert by_name["facebook/dinov2-small"]["path"] == str(snapshot)
    assert by_name["openai/clip-vit-base-patch16"]["available"] is False
    assert by_name["yolov8s.pt"]["where"] == "ultralytics" and by_name["yolov8n.pt"]["available"] is False


@SHARED_WEIGHTS
def test_models_command_table_with_the_shared_weights(cache, no_network, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CASTFINDER_MODELS_DIR", str(WEIGHTS))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("scrfd_2.5g", "edgeface_xs", "reid_0277", "osnet_x0_25", "yunet", "yolov8s.pt",
                 "facebook/dinov2-small"):
        assert name in out
    assert "licence" in out and "commercial" in out and str(WEIGHTS) in out.replace("\n", "").replace("│", "")
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert all(m["available"] for m in data["models"] if m["managed_by"] == "castfinder")
