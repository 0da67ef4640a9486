"""The product's contract for a new user: the default channels, found in CASTFINDER_MODELS_DIR,
index and search with no network; `castfinder models` answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA, PERSON_DETECTOR, REPO, TITANIC, WEIGHTS, requires_shared

pytestmark = [requires_shared, pytest.mark.slow]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "castfinder", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=900)


@pytest.fixture(scope="module")
def contract_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTFINDER_")}
    env.update({
        # Exactly the three settings of the contract; the rest are the product's defaults.
        "CASTFINDER_MODELS_DIR": str(WEIGHTS), "CASTFINDER_DETECTOR": str(PERSON_DETECTOR),
        "CASTFINDER_PERSON_CLASSES": "0,1",
        # A fresh user cache, and no way out to the network: a download attempt would fail loudly.
        "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "",
        "HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(home / "yolo"),
    })
    return env


def test_index_and_search_run_the_default_channels_offline(contract_env: dict[str, str], tmp_path: Path) -> None:
    cwd_index = tmp_path / "indexes"
    env = {**contract_env, "CASTFINDER_INDEX_DIR": str(cwd_index)}
    done = _cli(["index", str(TITANIC), "--movie", "Titanic", "--fps", "1", "--quiet", "--json"], env)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((cwd_index / "titanic" / "manifest.json").read_text())
    assert set(manifest["channels"]) == {"face", "reid"}
    assert manifest["channels"]["face"]["model"] == "scrfd_2.5g+edgeface_xs"
    assert manifest["channels"]["reid"]["model"] == "reid_0277"
    assert manifest["channels"]["face"]["vectors"] > 0  # faces were found and embedded
    rose = str(DATA / "titanic" / "portrait_rose.jpg")
    found = _cli(["search", "--movie", "titanic", "--top", "3", "--json", rose], env)
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)["results"]
    assert len(results) == 3 and {r["shot"] for r in results} == {1, 2, 3}
    assert "download" not in (done.stderr + found.stderr).lower()


def test_models_lists_every_model_and_exits_0(contract_env: dict[str, str]) -> None:
    done = _cli(["models", "--json"], contract_env)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for name in ("scrfd_2.5g", "edgeface_xs", "reid_0277", "osnet_x0_25"):
        assert name in text
