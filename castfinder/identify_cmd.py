"""`castfinder identify` (which movie is this screenshot from?) and `castfinder catalog rebuild`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from castfinder.common import EXIT_USAGE, console, engine_output_to_stderr, fail, print_json

if TYPE_CHECKING:
    from core import Settings


def add_parsers(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("identify", parents=parents, help="which indexed movie (and shot) is this screenshot from?",
                       description="Match a screenshot, or a crop of a person, against every indexed movie: "
                                   "the whole frame and the people in it.")
    p.add_argument("image", type=Path, help="a screenshot or a crop of a person")
    p.add_argument("--top", type=int, default=3, help="shots of the movie found to list (default 3)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")

    p = sub.add_parser("catalog", help="the catalogue of every movie that identify searches",
                       description="The catalogue is updated by every `castfinder index` and caught up by "
                                   "`identify`; `rebuild` builds it afresh from the indexes.")
    p.add_argument("--index-dir", type=Path, help="where indexes live (CASTFINDER_INDEX_DIR)")
    p.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    # (a plain word, checked by run_catalog: argparse choices are kept for the settings' Literals)
    p.add_argument("action", metavar="{rebuild,sync}", help="rebuild: afresh; sync: bring it up to date")


def run_identify(args: argparse.Namespace, settings: Settings) -> int:
    from core import Engine, format_ts

    if args.top < 1:
        return fail("--top must be at least 1", EXIT_USAGE)
    with engine_output_to_stderr():
        engine = Engine(settings, load_models=False)
        response = engine.identify(args.image, top=args.top)
    if args.json:
        print_json(response.to_json())
        return 0
    out = console()
    if response.movie is None:
        print(f"Not in the catalogue: no indexed movie matches (best {response.confidence:.0%}; "
              f"{response.movies_searched} movie(s) searched).")
        for c in response.candidates:
            print(f"  closest: {c.name} ({c.confidence:.0%})")
    else:
        best = response.shots[0] if response.shots else None
        where = (f", shot {_shot(best.shot, best.scene)} at {format_ts(best.frame_s, decimals=0)}"
                 if best is not None else "")
        print(f"Looks like {response.movie}{where} ({response.confidence:.0%} sure)")
        from rich.table import Table

        table = Table()
        for col in ("#", "shot", "start–end", "at", "confidence", "found by", "thumbnail"):
            table.add_column(col, no_wrap=col != "thumbnail", overflow="fold")
        for rank, s in enumerate(response.shots, start=1):
            table.add_row(str(rank), _shot(s.shot, s.scene), f"{format_ts(s.start_s)}–{format_ts(s.end_s)}",
                          format_ts(s.frame_s), f"{s.confidence:.0%}", s.evidence, s.thumbnail or "-")
        out.print(table)
        for c in response.candidates:
            print(f"  also possible: {c.name} ({c.confidence:.0%})")
    if response.without_descriptors:
        print(f"Found by their people only (re-index them to match whole frames too): "
              f"{', '.join(response.without_descriptors)}", file=sys.stderr)
    return 0


def run_catalog(args: argparse.Namespace, settings: Settings) -> int:
    from core import Engine

    if args.action not in _CATALOG_ACTIONS:
        return fail(f"catalog takes {' or '.join(_CATALOG_ACTIONS)}, not {args.action!r}", EXIT_USAGE)
    engine = Engine(settings, load_models=False)

    def say(name: str) -> None:
        print(f"reading {name} …", file=sys.stderr)

    report = engine.rebuild_catalog(say) if args.action == "rebuild" else engine.sync_catalog(say)
    print(f"Catalogue {engine.catalog.uri}: {len(engine.movies())} movie(s); {len(report.added)} read, "
          f"{len(report.removed)} removed.")
    if report.without_descriptors:
        print(f"  found by their people only (re-index to match whole frames): {', '.join(report.without_descriptors)}")
    for failure in report.failed:
        print(f"  skipped {failure}")
    return 0


_CATALOG_ACTIONS = ("rebuild", "sync")


def _shot(number: int, scene: int | None) -> str:
    return f"{scene}/{number}" if scene is not None else str(number)
