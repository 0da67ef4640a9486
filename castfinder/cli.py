"""`castfinder`: index movies, list them, search them by screenshots, run the bot.

Importing this module is cheap: each command imports the engine (and with it FAISS, OpenCV,
torch) when it runs, so `castfinder --help` and a usage error answer at once. What the commands
share is in castfinder/common.py; `castfinder eval` is castfinder/eval_cmd.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

# Libraries print loading bars and banners; on a terminal our own progress bars say enough.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from castfinder import engines_cmd, eval_cmd, identify_cmd  # noqa: E402  (cheap at import time, as is common)
from castfinder.common import (  # noqa: E402
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    aggregation_flag,
    channel_list,
    choices,
    console,
    engine_output_to_stderr,
    fail,
    model_flags,
    print_json,
    search_flags,
)

if TYPE_CHECKING:
    from rich.console import JustifyMethod

    from core import IndexReport, Progress, Settings

STAGE_LABELS = {
    "shots": "Finding shots",
    "index": "People → vectors",
    "write": "Writing index",
    "parts": "Films in parts (Ray)",
    "people": "Finding people",
    "search": "Searching",
}


def build_parser() -> argparse.ArgumentParser:
    from core.settings import CHANNELS, FaissKind

    parser = argparse.ArgumentParser(
        prog="castfinder",
        description="Find the shots of a movie in which a character appears, from screenshots.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    flags = model_flags()
    searching = search_flags()

    p = sub.add_parser("index", parents=[flags], help="index a movie (a video file or a frames folder)",
                       description="Build the index of a movie. Re-indexing replaces the old index "
                                   "only once the new one is complete.")
    p.add_argument("sources", type=Path, nargs="+", metavar="SOURCE",
                   help="video file (mp4, mkv, avi, webm, mov) or frames folder; several with --ray")
    p.add_argument("--movie", action="append",
                   help='the movie\'s name, e.g. "Losing Ground" (required; with --ray and several sources, once '
                        "per source in the same order, or never: each is named after its file)")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="index on a Ray cluster (pip install 'castfinder[scale]'): host:port of its head, or "
                        "nothing to start Ray on this machine (CASTFINDER_RAY_ADDRESS); films at once, long "
                        "films in parts of CASTFINDER_RAY_PART_S seconds")
    p.add_argument("--fps", type=float, dest="sample_fps",
                   help="frames sampled per second inside shots (default 1; CASTFINDER_SAMPLE_FPS)")
    p.add_argument("--frames-fps", type=float, dest="frames_fps",
                   help="frame rate that a frames folder's frames were taken at (default 5)")
    p.add_argument("--faiss", choices=choices(FaissKind), dest="faiss_index", help="FAISS index type")
    p.add_argument("--no-dedup", action="store_false", dest="dedup", default=None,
                   help="keep near-duplicate crops inside a shot")
    p.add_argument("--dedup-threshold", type=float, help="cosine similarity above which a crop is a duplicate")
    p.add_argument("--channels", help=f"comma list from {', '.join(CHANNELS)} (CASTFINDER_CHANNELS)")
    p.add_argument("--replace", action="store_true",
                   help="replace the index of another movie whose name gives the same folder (slug), "
                        'e.g. "Titanic" when indexing "Titanic!"; without it that is refused')
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("movies", parents=[flags], help="list indexed movies")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("search", parents=[flags, searching], help="find the shots a character appears in",
                       description="Search a movie with one or more screenshots of a character.")
    p.add_argument("images", nargs="*", type=Path, help="screenshots of the character")
    p.add_argument("--movie", required=True, help="name, slug or unambiguous prefix")
    p.add_argument("--cast", type=int, metavar="N",
                   help="search from cast member N (as numbered by `castfinder cast`) instead of screenshots")
    p.add_argument("--top", type=int, default=5, help="number of shots to return (default 5)")
    aggregation_flag(p)
    p.add_argument("--people", default="main",
                   help='whom to search for in each image: "main" (the most prominent person, default), '
                        '"all", or 1-based numbers such as "1,3" (see `castfinder people`)')
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument("--timeline", type=Path, metavar="PNG",
                   help="also write the character's screen-time timeline over the whole film here (PNG)")
    p.add_argument("--not", type=int, action="append", default=[], dest="not_shots", metavar="SHOT",
                   help="feedback: the person found in this shot (a number as printed) is not the one searched "
                        "for; the shot leaves the results and look-alikes go down (repeatable)")
    p.add_argument("--yes", type=int, action="append", default=[], dest="yes_shots", metavar="SHOT",
                   help="feedback: the person found in this shot is the one; their views in it join the query "
                        "(repeatable)")

    p = sub.add_parser("cast", parents=[flags], help="the movie's main people, found at index time",
                       description="The people of a movie, found by clustering its faces when it was indexed: "
                                   "screen time, share of the film, shots, first appearance.")
    p.add_argument("--movie", required=True, help="name, slug or unambiguous prefix")
    p.add_argument("--top", type=int, default=12, help="how many people to list (default 12; the most screen time)")
    p.add_argument("--save", type=Path, help="write a contact sheet of them here (JPEG)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")

    p = sub.add_parser("people", parents=[flags], help="number the people in a screenshot")
    p.add_argument("image", type=Path)
    p.add_argument("--save", type=Path, help="write the image with numbered boxes here (JPEG)")

    p = sub.add_parser("clip", help="save a shot as a short muted MP4 preview",
                       description="Cut at most 10 s of a shot (480 px on its longer side, H.264) from the video "
                                   "the movie was indexed from; clips are cached in the index folder.")
    p.add_argument("output", type=Path, help="the MP4 file to write, e.g. shot12.mp4")
    p.add_argument("--movie", required=True, help="name, slug or unambiguous prefix")
    p.add_argument("--shot", type=int, required=True, metavar="N", help="the shot's number, as search results show it")
    p.add_argument("--at", type=float, dest="around_s", metavar="SECONDS",
                   help="film time in seconds to centre the clip on (default: the shot's middle; "
                        "search --json gives each result's frame_s)")
    p.add_argument("--index-dir", type=Path, help="where indexes live (CASTFINDER_INDEX_DIR)")  # no model loads
    p.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")

    p = sub.add_parser("models", help="list the models castfinder knows: local or not, size, licence",
                       description="Every registered model: whether it is on this machine and where, its "
                                   "size, licence and source. Never uses the network.")
    p.add_argument("--models-dir", type=Path, help="where model files are looked for (CASTFINDER_MODELS_DIR)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")

    eval_cmd.add_parser(sub, [flags, searching])
    identify_cmd.add_parsers(sub, [flags])
    engines_cmd.add_parser(sub, [flags])
    sub.add_parser("bot", help="run the Telegram bot (long polling, or --webhook URL)", add_help=False)
    return parser


# The flags that override a setting of the same name.
_OVERRIDES = ("index_dir", "detector", "person_classes", "embedder", "dinov2_model", "clip_model", "device",
              "torch_threads", "det_runtime", "sample_fps", "frames_fps", "faiss_index", "dedup", "dedup_threshold",
              "aggregation", "osnet_model", "reid_model", "face_detector", "face_model", "tracks", "expand",
              "channels", "search_k")


def flag_names(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """Each setting a flag of `command` overrides → the flag's name as typed (`sample_fps` →
    `--fps`), so that a bad value is reported in the user's own words."""
    names: dict[str, str] = {}
    for action in parser._actions:  # argparse keeps its sub-commands here, and nowhere public
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            for option in action.choices[command]._actions:
                if option.dest in _OVERRIDES and option.option_strings:
                    names[option.dest] = max(option.option_strings, key=len)
    return names


def make_settings(args: argparse.Namespace, flags: dict[str, str] | None = None) -> Settings:
    """The settings, the flags given over the environment and `.env`. Out-of-range values exit
    with one line naming each: 2 when a flag was wrong (a usage error), 1 for the environment."""
    from core import Settings, SettingsError
    from core.settings import load_settings

    overrides = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k, None) is not None}
    try:
        return load_settings(Settings, flags=flags or {}, **overrides)
    except SettingsError as exc:
        raise SystemExit(fail(str(exc), EXIT_USAGE if exc.from_flags else EXIT_ERROR)) from None


class _Bars:
    """Draws the engine's progress events as tqdm bars, one per stage, on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars: dict[str, Any] = {}  # tqdm bars, by stage

    def __call__(self, event: Progress) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(event.stage)
        if bar is None:
            # Film time: the message says it as a clock, with the speed and the time left.
            fmt = "{desc}: {percentage:3.0f}%|{bar}|{postfix}" if event.unit == "s" else None
            bar = tqdm(total=event.total, desc=STAGE_LABELS.get(event.stage, event.stage), unit=event.unit,
                       file=sys.stderr, dynamic_ncols=True, leave=True, bar_format=fmt)
            self.bars[event.stage] = bar
        if event.total is not None and bar.total != event.total:
            bar.total = event.total
        bar.n = event.done
        if event.message:
            bar.set_postfix_str(event.message, refresh=False)
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _index_targets(args: argparse.Namespace, settings: Settings) -> tuple[str | None, list[tuple[Path, str]]]:
    """The Ray address (None: one process, as ever) and each (source, movie name)."""
    sources: list[Path] = list(args.sources)
    address = args.ray
    if address is not None and Path(address).expanduser().exists():
        sources.insert(0, Path(address))  # `--ray film.mp4 ...`: a film, not an address
        address = "local"
    if address is None and settings.ray_address:
        address = settings.ray_address
    movies: list[str] = args.movie or []
    if address is None and len(sources) > 1:
        raise SystemExit(fail(f"{len(sources)} sources given: index one at a time, or several at once with --ray.",
                              EXIT_USAGE))
    if not movies and len(sources) == 1:
        raise SystemExit(fail("the following arguments are required: --movie", EXIT_USAGE))
    if movies and len(movies) != len(sources):
        raise SystemExit(fail(f"{len(sources)} source(s) and {len(movies)} --movie name(s): give one name per "
                              "source, in the same order (or, with --ray and several sources, none).", EXIT_USAGE))
    names = movies or [p.stem if p.suffix else p.name for p in sources]
    return address, list(zip(sources, names))


def _report_json(report: IndexReport) -> dict[str, Any]:
    m = report.movie
    return {
        "movie": m.name, "slug": m.slug, "path": str(m.path), "duration_s": round(m.duration_s, 3),
        "shots": report.shots, "frames_sampled": report.frames_sampled, "frames_still": report.frames_still,
        "persons_detected": report.persons_detected, "crops_kept": report.crops_kept,
        "duplicates_dropped": report.duplicates_dropped, "shots_without_people": report.shots_without_people,
        "seconds": {k: round(v, 3) for k, v in report.seconds.items()}, "warnings": report.warnings,
        "resumed_at_s": report.resumed_at_s,
    }


def _print_report(report: IndexReport) -> None:
    from core import format_ts

    m = report.movie
    print(f"Indexed {m.name!r} → {m.path}")
    if report.resumed_at_s is not None:
        print(f"  resumed from a checkpoint at {format_ts(report.resumed_at_s, decimals=1)}")
    still = f" ({report.frames_still} more skipped as still)" if report.frames_still else ""
    print(f"  {report.shots} shots over {format_ts(m.duration_s, decimals=1)}, "
          f"{report.frames_sampled} frames sampled{still}")
    print(f"  {report.persons_detected} people found, {report.crops_kept} kept, "
          f"{report.duplicates_dropped} near-duplicate{'' if report.duplicates_dropped == 1 else 's'} dropped")
    if report.shots_without_people:
        print(f"  {report.shots_without_people} shot(s) with nobody in them (not searchable)")
    for warning in report.warnings:
        print(f"  warning: {warning}")
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items() if v >= 0.05)
    print(f"  time: {stages}")


def _interrupted(settings: Settings) -> int:
    print(f"\ninterrupted; the previous index, if any, is unchanged. Run the same command again to go on "
          f"from the last checkpoint (one every {settings.checkpoint_s:g} s of film).", file=sys.stderr)
    return EXIT_INTERRUPTED


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    from core import Engine

    address, targets = _index_targets(args, settings)
    if address is not None:
        return _index_on_ray(args, settings, address, targets)
    source, movie = targets[0]
    bars = _Bars(not args.quiet)
    with engine_output_to_stderr():
        engine = Engine(settings, load_models=False)  # index() loads the channels it builds
        try:
            report = engine.index(source, movie, progress=bars, replace=args.replace)
        except KeyboardInterrupt:
            bars.close()
            return _interrupted(settings)
        finally:
            bars.close()
    if args.json:
        print_json(_report_json(report))
        return 0
    _print_report(report)
    return 0


def _index_on_ray(args: argparse.Namespace, settings: Settings, address: str, targets: list[tuple[Path, str]]) -> int:
    """Every film on a Ray cluster; a film that fails is told on its own line, the others indexed."""
    from core import Engine
    from core.indexing.distributed import Film
    from core.indexing.ray_runner import RayRunner

    bars = _Bars(not args.quiet)
    with engine_output_to_stderr():
        engine = Engine(settings, load_models=False)  # the driver loads no model: the workers do
        try:
            with RayRunner(settings, address) as runner:
                outcomes = engine.index_films([Film(src, name) for src, name in targets], runner,
                                              replace=args.replace, progress=bars)
        except KeyboardInterrupt:
            bars.close()
            return _interrupted(settings)
        finally:
            bars.close()
    failed = [o for o in outcomes if o.error is not None]
    for o in failed:
        message = str(o.error)  # most name their file already; the others are told whose they are
        fail(message if o.film.source.name in message else f"{o.film.source}: {message}")
    reports = [o.report for o in outcomes if o.report is not None]
    if args.json:
        if len(outcomes) == 1 and reports:
            print_json(_report_json(reports[0]))
        else:
            print_json({"movies": [_report_json(r) for r in reports],
                        "failed": [{"source": str(o.film.source), "movie": o.film.movie, "error": str(o.error)}
                                   for o in failed]})
    else:
        for report in reports:
            _print_report(report)
    return EXIT_ERROR if failed else 0


def cmd_movies(args: argparse.Namespace, settings: Settings) -> int:
    from core import Engine, format_ts

    engine = Engine(settings, load_models=False)
    movies, damaged = engine.movies(), engine.damaged_movies()
    if args.json:
        print_json({"movies": [{
            "name": m.name, "slug": m.slug, "duration_s": round(m.duration_s, 3), "shots": m.shots,
            "frames": m.frames, "vectors": m.vectors, "embedder": m.embedder, "model": m.embedder_model,
            "built_at": m.built_at, "path": str(m.path)} for m in movies],
            "damaged": [{"name": d.name, "slug": d.slug, "path": str(d.path), "reason": d.reason,
                         "reindex": d.reindex} for d in damaged]})
        return 0
    if not movies:
        print(f"No {'searchable ' if damaged else ''}movies indexed in {settings.index_dir.resolve()}. "
              "Index one with: castfinder index MOVIE.mp4 --movie \"Name\"")
    else:
        from rich.table import Table

        table = Table(title=f"Indexed movies ({settings.index_dir})")
        columns: tuple[tuple[str, JustifyMethod], ...] = (
            ("movie", "left"), ("slug", "left"), ("duration", "right"), ("shots", "right"), ("frames", "right"),
            ("vectors", "right"), ("embedder", "left"), ("built", "left"))
        for col, justify in columns:
            table.add_column(col, justify=justify, no_wrap=col != "movie", overflow="fold")
        for m in movies:
            table.add_row(m.name, m.slug, format_ts(m.duration_s, decimals=0), str(m.shots), str(m.frames),
                          str(m.vectors), f"{m.embedder} ({m.dim}-d)", m.built_at.replace("T", " ")[:16])
        console().print(table)
    if damaged:
        # Plain print: a reason quotes file contents and names, which rich would read as markup.
        print(f"\nDamaged indexes ({len(damaged)}), not searchable until re-indexed:")
        for d in damaged:
            print(f"  {d.name} ({d.path}): {d.reason}\n    re-index: {d.reindex}")
    return 0


def _parse_people(value: str) -> Literal["main", "all"] | tuple[int, ...]:
    value = value.strip().lower()
    if value == "main":
        return "main"
    if value == "all":
        return "all"
    try:
        picked = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        picked = ()
    if not picked or min(picked) < 1:
        raise SystemExit(fail(f'--people takes "main", "all" or numbers like 1,3; got {value!r}', EXIT_USAGE))
    return picked


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from castfinder.output import OutputError, check_target
    from core import Engine, QueryImage, format_ts

    if args.top < 1:
        return fail("--top must be at least 1", EXIT_USAGE)
    if (args.cast is None) == (not args.images):
        return fail("give images of the character (screenshots), or --cast N (a number of `castfinder cast`), not both",
                    EXIT_USAGE)
    select = _parse_people(args.people)
    if args.timeline:
        try:
            check_target(args.timeline, "--timeline")  # before any model loads: a typo fails at once
        except OutputError as exc:
            return fail(str(exc))
    bars = _Bars(not args.quiet)
    with engine_output_to_stderr():
        engine = Engine(settings, load_models=False)
        # Before any model loads: fail fast on a typo. The index's own channels load on demand;
        # the engine checks the images (how many, regular files) before any work.
        info = engine.resolve_movie(args.movie)
        feedback = (engine.feedback_for(info, yes=args.yes_shots, no=args.not_shots)
                    if args.yes_shots or args.not_shots else None)
        channels = channel_list(args.search_channels) or None
        try:
            if args.cast is not None:
                response = engine.search_identity(info, _cast_member(engine, info, args.cast).identity, top=args.top,
                                                  aggregation=args.aggregation, channels=channels, progress=bars,
                                                  feedback=feedback)
            else:
                response = engine.search(info, [QueryImage(p, select=select, name=str(p)) for p in args.images],
                                         top=args.top, aggregation=args.aggregation, channels=channels,
                                         progress=bars, feedback=feedback)
        finally:
            bars.close()
    saved: list[str] = []  # what to say about the timeline: after the table, or on stderr beside --json
    if args.timeline:
        try:
            saved = _save_timeline(engine, response, args.timeline)
        except OutputError as exc:
            return fail(str(exc))
    if args.json:
        for line in saved:  # stdout holds the one JSON object
            print(line, file=sys.stderr)
        print_json(response.to_json())
        return 0
    from rich.table import Table

    out = console()
    if response.whole_image_queries:
        out.print(f"[yellow]No person found in {response.whole_image_queries} image(s): searched the whole image.[/]")
    if not response.results:
        out.print(f"No shots of {response.movie!r} matched.")
        for line in saved:
            print(line)
        return 0
    table = Table(title=f"{response.movie}: best shots ({response.aggregation})")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("#", "right"), ("shot", "right"), ("start–end", "left"), ("score", "right"), ("thumbnail", "left"))
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=col != "thumbnail", overflow="fold")
    for r in response.results:
        shot = f"{r.scene}/{r.shot}" if r.scene is not None else str(r.shot)
        score = f"{r.score:.3f}" + (" (weak)" if r.low_confidence else "")
        table.add_row(str(r.rank), shot, f"{format_ts(r.start_s)}–{format_ts(r.end_s)}", score,
                      r.thumbnail or "(no thumbnail: its file is missing or damaged)")
    # Where the time went (the first search of a process includes loading the models).
    table.caption = " · ".join(f"{stage} {seconds:.2f} s" for stage, seconds in response.speed.items())
    out.print(table)
    for line in saved:
        print(line)
    return 0


def _cast_member(engine: Any, info: Any, number: int) -> Any:
    """Cast member `number` (1-based, as `castfinder cast` prints them); exit 1 when there is none."""
    members = engine.cast(info)
    if not 1 <= number <= len(members):
        raise SystemExit(fail(f"{info.name!r} has no cast member {number}; its cast has {len(members)} "
                              f"(see castfinder cast --movie {info.slug})."))
    return members[number - 1]


def cmd_cast(args: argparse.Namespace, settings: Settings) -> int:
    from castfinder.output import OutputError, check_target, write_file
    from core import Engine, format_ts
    from core.engine import format_duration

    if args.top < 1:
        return fail("--top must be at least 1", EXIT_USAGE)
    try:
        if args.save:
            check_target(args.save, "--save")
    except OutputError as exc:
        return fail(str(exc))
    engine = Engine(settings, load_models=False)  # the cast was found at index time: no model runs
    info = engine.resolve_movie(args.movie)
    members = engine.cast(info)
    shown = members[: args.top]
    if args.save:
        try:
            write_file(args.save, engine.cast_sheet(info, shown), "--save")
        except OutputError as exc:
            return fail(str(exc))
    if args.json:
        print_json({"movie": info.name, "duration_s": round(info.duration_s, 3), "members": len(members),
                    "cast": [m.to_json() for m in shown], "sheet": str(args.save) if args.save else None})
        return 0
    if not members:
        print(f"No face was found in {info.name!r}: it has no cast.")
        return 0
    from rich.table import Table

    table = Table(title=f"{info.name}: the cast ({len(members)} people; the first {len(shown)})")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("#", "right"), ("screen time", "right"), ("share", "right"), ("shots", "right"), ("first seen", "left"))
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=True)
    for m in shown:
        table.add_row(str(m.number), format_duration(m.screen_s), f"{m.share:.0%}", str(len(m.shots)),
                      format_ts(m.first_s, decimals=1))
    table.caption = "search from one: castfinder search --movie NAME --cast N"
    console().print(table)
    if args.save:
        print(f"Saved {args.save}")
    return 0


def _save_timeline(engine: Any, response: Any, path: Path) -> list[str]:
    """Write the timeline picture (OutputError when it cannot be); the lines that say so."""
    from castfinder.output import write_file
    from core.search.timeline import summary_line

    write_file(path, engine.timeline_png(response), "--timeline")
    lines = []
    if response.timeline is not None:
        lines.append(f"Screen time: {summary_line(response.timeline)} (the matched shots' lengths added up)")
    return [*lines, f"Saved {path}"]


def cmd_people(args: argparse.Namespace, settings: Settings) -> int:
    from castfinder.output import OutputError, check_target, write_file
    from core import Engine

    try:
        if args.save:
            check_target(args.save, "--save")  # before the detector loads: a typo fails at once
    except OutputError as exc:
        return fail(str(exc))
    with engine_output_to_stderr():
        engine = Engine(settings, load_models=False)
        people = engine.find_people(args.image)
    if not people:
        print("No person found; a search would use the whole image.")
    for p in people:
        x1, y1, x2, y2 = (round(v) for v in p.bbox)
        print(f"{p.index}: box ({x1}, {y1})–({x2}, {y2}), confidence {p.score:.2f}, "
              f"{p.area_fraction:.0%} of the image")
    if args.save:
        try:
            write_file(args.save, engine.annotate_people(args.image, people), "--save")
        except OutputError as exc:
            return fail(str(exc))
        print(f"Saved {args.save}")
    return 0


def cmd_clip(args: argparse.Namespace, settings: Settings) -> int:
    from castfinder.output import OutputError, check_target, write_file
    from core import Engine

    try:
        check_target(args.output, "output")  # before the index loads: a typo fails at once
    except OutputError as exc:
        return fail(str(exc))
    with engine_output_to_stderr():
        engine = Engine(settings, load_models=False)  # cutting needs no model
        clip = engine.clip(args.movie, args.shot, args.around_s)
    try:
        write_file(args.output, clip.path.read_bytes(), "output")
    except OutputError as exc:
        return fail(str(exc))
    print(f"Saved {args.output}: {clip.caption} · {clip.width}×{clip.height} · {_size(clip.size_bytes)}"
          f"{' (from the cache)' if clip.cached else ''}")
    return 0


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from core.models import registry

    if args.models_dir is not None:
        settings = settings.model_copy(update={"models_dir": args.models_dir})
    statuses = [registry.model_status(spec, settings) for spec in registry.REGISTRY.values()]
    models_dir, cache = registry.models_dir(settings), registry.user_cache_models_dir()
    if args.json:
        print_json({
            "models_dir": str(models_dir), "cache_dir": str(cache), "offline": registry.offline(),
            "models": [{
                "name": st.spec.name, "kind": st.spec.kind, "available": st.available, "where": st.where or None,
                "path": str(st.path) if st.path else None, "size": st.size, "licence": st.spec.licence,
                "commercial_use": st.spec.commercial_use, "source": st.spec.source,
                "description": st.spec.description, "managed_by": st.spec.managed_by, "problem": st.problem or None,
                "files": [{"filename": f.filename, "size": f.size, "sha256": f.sha256, "urls": list(f.urls)}
                          for f in st.spec.files],
                "derived_from": None if st.spec.derived_from is None else {
                    "filename": st.spec.derived_from.source.filename, "size": st.spec.derived_from.source.size,
                    "sha256": st.spec.derived_from.source.sha256, "urls": list(st.spec.derived_from.source.urls),
                    "note": st.spec.derived_from.note},
            } for st in statuses]})
        return 0
    from rich.table import Table

    labels = {"models dir": "yes", "cache": "yes", "ultralytics": "yes", "huggingface cache": "yes",
              "convertible": "yes (converts on first use)", "mismatch": "[red]wrong file[/]"}
    table = Table(title=f"Models (models dir {models_dir}; cache {cache})")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("model", "left"), ("kind", "left"), ("local", "left"), ("where", "left"), ("size", "right"),
        ("licence", "left"), ("commercial", "left"), ("source", "left"))
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=col in ("model", "kind", "size", "commercial"),
                         overflow="fold")
    for st in statuses:
        local = labels.get(st.where, "yes") if st.available or st.where == "mismatch" else "no"
        where = (f"{st.where}: {st.path}" if st.path
                 else "not here (offline)" if registry.offline() else "downloads on first use")
        table.add_row(st.spec.name, st.spec.kind, local, where, _size(st.size), st.spec.licence,
                      "yes" if st.spec.commercial_use else "[yellow]no[/]", st.spec.source)
    out = console()
    out.print(table)
    for st in statuses:
        if st.problem:
            out.print(f"[red]{st.spec.name}[/]: {st.problem}")
    return 0


COMMANDS = {"index": cmd_index, "movies": cmd_movies, "search": cmd_search, "cast": cmd_cast, "people": cmd_people,
            "models": cmd_models, "eval": eval_cmd.run, "clip": cmd_clip, "identify": identify_cmd.run_identify,
            "catalog": identify_cmd.run_catalog, "engines": engines_cmd.run}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bot"]:
        from bot.app import run as run_bot

        return run_bot(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    from core import CastfinderError

    try:
        settings = make_settings(args, flag_names(parser, args.command))
        return COMMANDS[args.command](args, settings)
    except CastfinderError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("\ninterrupted; nothing was changed.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        return int(exc.code or 0)


if __name__ == "__main__":
    sys.exit(main())
