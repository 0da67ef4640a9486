"""Precision–recall curves (report.py's `PrCurve`) drawn as PNG files, one per character.

matplotlib is imported when a folder is prepared or a curve drawn, never at import time. The
figures are drawn on an Agg canvas: no display, no pyplot state.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import CastfinderError
from .report import PrCurve


def prepare_plot_dir(folder: Path) -> Path:
    """Check that plots can be written to `folder` (creating it) before anything is searched."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CastfinderError("--plots needs matplotlib; install it with: pip install matplotlib") from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CastfinderError(f"{folder}: cannot create the plots folder ({exc.strerror or exc}).") from None
    if not folder.is_dir():
        raise CastfinderError(f"{folder}: not a folder.")
    return folder


def write_plots(curves: Iterable[PrCurve], folder: Path) -> dict[str, str]:
    """Draw each curve to `<folder>/<character>_pr.png` (names made safe and distinct); returns
    the absolute paths written, by character."""
    written: dict[str, str] = {}
    for curve in curves:
        path = folder / f"{plot_name(curve.character, written)}_pr.png"
        draw_pr(path, curve)
        written[curve.character] = str(path.resolve())
    return written


def plot_name(name: str, taken: Mapping[str, str]) -> str:
    """A file-name-safe form of a character's name that no path in `taken` uses yet."""
    base = re.sub(r"[^\w.-]+", "_", name).strip("._") or "character"
    used = {Path(p).name for p in taken.values()}
    candidate, n = base, 2
    while f"{candidate}_pr.png" in used:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def draw_pr(path: Path, curve: PrCurve) -> None:
    """The interpolated precision–recall curve (solid, stepped) over the precision after each
    relevant shot found (dots), the annotated view's curve dashed; AP in the title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([r for r, _ in curve.interpolated], [p for _, p in curve.interpolated], drawstyle="steps-pre",
            linewidth=2, label="interpolated precision")
    if curve.points:
        ax.plot([r for r, _ in curve.points], [p for _, p in curve.points], "o", markersize=4, alpha=0.6,
                label="precision at each relevant shot")
    if curve.annotated_ap is not None and curve.annotated_interpolated is not None:
        ax.plot([r for r, _ in curve.annotated_interpolated], [p for _, p in curve.annotated_interpolated],
                drawstyle="steps-pre", linewidth=1.5, linestyle="--",
                label=f"per annotated shot (AP {curve.annotated_ap:.3f})")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"recall ({curve.found} of {curve.relevant} relevant shots found)")
    ax.set_ylabel("precision")
    ax.set_title(f"{curve.character}: AP {curve.ap:.3f}\n{curve.movie} · {curve.aggregation}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise CastfinderError(f"{path}: cannot write the plot ({exc.strerror or exc}).") from None
