"""Shared tools of the hostile-input tests (tests/test_hostile_*.py): run the CLI as a user would,
in its own process with a deadline, and prove that the indexes on disk were left exactly as they were."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def offline_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI subprocess: offline, no developer CASTFINDER_* or bot token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTFINDER_") and k != "BOT_TOKEN"}
    env.update(HF_HUB_OFFLINE="1", YOLO_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    env.update(extra or {})
    return env


def run_cli(args: list[str], env: Mapping[str, str] | None = None, timeout: float = 300,
            **kwargs: object) -> subprocess.CompletedProcess[str]:
    """`castfinder <args>` in a fresh process. A hang fails the test (TimeoutExpired) instead of the suite."""
    return subprocess.run([sys.executable, "-m", "castfinder", *args], capture_output=True, text=True,
                          timeout=timeout, env=offline_env(env), cwd=REPO, **kwargs)  # type: ignore[call-overload]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) → the sha256 of its bytes; equal snapshots mean
    nothing was added, removed or changed."""
    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def no_traceback(proc: subprocess.CompletedProcess[str]) -> bool:
    """The user saw a message, not Python's insides."""
    return "Traceback (most recent call last)" not in proc.stderr + proc.stdout


def tiny_cli_env(monkeypatch: object, index_dir: Path, tiny_dinov2: Path, **extra: str) -> dict[str, str]:
    """The CLI settings of a tiny build (random YOLO, the tiny DINOv2), set in this process's
    environment (for `main`) and returned (for `run_cli` in another process). `extra`: more
    settings without the CASTFINDER_ prefix, e.g. CHECKPOINT_S="0.5"."""
    import torch

    torch.manual_seed(0)
    values = {"INDEX_DIR": str(index_dir), "DETECTOR": "yolov8n.yaml", "DINOV2_MODEL": str(tiny_dinov2),
              "DET_CONF": "0.0001", "DET_IMGSZ": "160", "MIN_PERSON_PX": "4", "DEVICE": "cpu", "CHANNELS": "dinov2",
              **extra}
    env = {f"CASTFINDER_{key}": value for key, value in values.items()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # type: ignore[attr-defined]
    return env
