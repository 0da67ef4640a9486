"""Versions of what produced an index or a report, recorded so that numbers can be reproduced."""

from __future__ import annotations

import importlib.metadata as md
import platform

PACKAGES = ("castfinder", "torch", "transformers", "ultralytics", "faiss-cpu", "scenedetect", "onnxruntime",
            "dlib-bin", "numpy")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
