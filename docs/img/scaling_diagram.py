"""Draws docs/img/scaling.png, the picture of docs/SCALING.md: one machine (the default) beside many.

    .venv/bin/python docs/img/scaling_diagram.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).with_name("scaling.png")
COLOURS = {"bot": "#dbe9f6", "engine": "#fde2c8", "store": "#e3f1dc", "ext": "#eeeeee", "index": "#f3dcef"}


def box(ax, x: float, y: float, w: float, h: float, title: str, body: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                fc=COLOURS[kind], ec="#555555", lw=1.1))
    ax.text(x + w / 2, y + h - 0.17, title, ha="center", va="top", fontsize=10.5, weight="bold")
    if body:
        ax.text(x + w / 2, y + h - 0.5, body, ha="center", va="top", fontsize=8.3, color="#333333",
                linespacing=1.35)


def arrow(ax, a: tuple[float, float], b: tuple[float, float], label: str = "", both: bool = False) -> None:  # type: ignore[no-untyped-def]
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="<|-|>" if both else "-|>", mutation_scale=11, lw=1.1,
                                 color="#444444", shrinkA=2, shrinkB=2))
    if label:
        ax.text((a[0] + b[0]) / 2 + 0.06, (a[1] + b[1]) / 2, label, fontsize=7.8, color="#444444",
                ha="left", va="center", style="italic")


def one_machine(ax) -> None:  # type: ignore[no-untyped-def]
    ax.set_title("One machine (the default: nothing extra to run)", fontsize=12, weight="bold", loc="left")
    box(ax, 0.3, 7.6, 4.4, 0.9, "Telegram", "long polling (getUpdates)", "ext")
    box(ax, 0.3, 4.6, 4.4, 2.3, "castfinder bot", "one process: albums, rate limits,\nqueue in memory\n"
        "engine pool in threads\n(the models loaded once)", "bot")
    box(ax, 5.2, 4.6, 3.6, 2.3, "castfinder index", "one film at a time,\nthe same engine,\n"
        "published atomically", "engine")
    box(ax, 0.3, 0.9, 2.6, 2.7, "SQLite", "chats, result pages,\npicks, feedback,\nquery log\n"
        "(data/castfinder.sqlite3,\nWAL)", "store")
    box(ax, 3.2, 0.9, 2.7, 2.7, "indexes/", "per movie: FAISS\nper channel, SQLite,\nthumbnails,\nmanifest", "index")
    box(ax, 6.2, 0.9, 2.6, 2.7, "catalogue", "Milvus Lite file\n(indexes/.catalog.db):\nframe descriptors,\n"
        "face vectors of\nevery movie", "store")
    arrow(ax, (2.5, 7.6), (2.5, 7.0), both=True)
    arrow(ax, (1.6, 4.6), (1.6, 3.6), both=True)
    arrow(ax, (3.6, 4.6), (4.5, 3.6))
    arrow(ax, (4.4, 4.6), (7.2, 3.6))
    arrow(ax, (6.6, 4.6), (5.3, 3.6))
    arrow(ax, (7.4, 4.6), (7.6, 3.6))


def many_machines(ax) -> None:  # type: ignore[no-untyped-def]
    ax.set_title("Many machines (settings switch each part on)", fontsize=12, weight="bold", loc="left")
    box(ax, 0.3, 7.7, 4.6, 0.9, "Telegram", "webhook: HTTPS POST + secret header", "ext")
    box(ax, 0.3, 6.0, 4.6, 1.1, "HTTPS load balancer", "nginx, a cloud LB …", "ext")
    ax.add_patch(FancyBboxPatch((0.15, 3.55), 4.9, 1.85, boxstyle="round,pad=0.02,rounding_size=0.1",
                                fc="none", ec="#7a9cc6", lw=1.2, ls="--"))
    for i, x in enumerate((0.3, 1.9, 3.5)):
        box(ax, x, 3.7, 1.4, 1.5, f"bot {i + 1}" if i < 2 else "bot N", "--webhook\nno models", "bot")
    box(ax, 5.5, 6.0, 3.3, 2.6, "Redis", "CASTFINDER_REDIS_URL\nrate limits, active\nqueries, album parts,\n"
        "update ids", "store")
    box(ax, 5.5, 3.3, 3.3, 2.1, "PostgreSQL", "CASTFINDER_DATABASE_URL\nchats, result pages,\nfeedback, query log",
        "store")
    box(ax, 0.3, 0.3, 4.0, 2.5, "Ray cluster", "engine workers (actors):\nsearch, identify, cast, clips\n"
                                              "index workers: films and\nruns of shots, GPU or CPU", "engine")
    box(ax, 4.6, 0.3, 2.0, 2.3, "indexes/", "shared storage\nroot (NFS, …)\nLRU per\nprocess", "index")
    box(ax, 6.9, 0.3, 1.9, 2.3, "Milvus", "server:\nCASTFINDER_\nMILVUS_URI\ncatalogue", "store")
    arrow(ax, (2.6, 7.7), (2.6, 7.1))
    for x in (1.0, 2.6, 4.2):
        arrow(ax, (2.6, 6.0), (x, 5.2))
    arrow(ax, (5.05, 5.2), (5.5, 6.6), "every bot", both=True)
    arrow(ax, (5.05, 4.4), (5.5, 4.4), both=True)
    arrow(ax, (2.6, 3.55), (2.3, 2.8), "RemoteEngine", both=True)
    arrow(ax, (4.3, 1.5), (4.6, 1.5), both=True)
    arrow(ax, (3.4, 2.8), (7.4, 2.6), both=True)


def main() -> None:
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.6), dpi=110)
    for ax in axes:
        ax.set_xlim(0, 9)
        ax.set_ylim(0, 9)
        ax.axis("off")
    one_machine(axes[0])
    many_machines(axes[1])
    fig.tight_layout()
    fig.savefig(OUT, facecolor="white")
    print(OUT)


if __name__ == "__main__":
    main()
