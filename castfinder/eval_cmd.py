"""`castfinder eval`: measured retrieval quality of an indexed movie against ground truth.

    castfinder eval --movie goldeneye --ground-truth ../shared/data/goldeneye/ground_truth.csv \\
                    --queries ../shared/data/goldeneye/queries --top 20 [--json] [--plots DIR]

For each character that has both query images and ground truth, all of its images are searched
at once and the ranking scored (core/evaluation/harness.py). Precision and recall are reported
at k = 5, 10, 20 and at k = --top; --top also sets how many ranked shots per character are
listed (table and JSON). The precision–recall plots use the whole ranking. Metric definitions:
core/evaluation/metrics.py; the JSON report's keys: core/evaluation/report.py.

This module is the command's adapter: its arguments, the progress bar, the printed table or
JSON, the equivalent command line, exit codes. Importing it is cheap (no engine, no model
library; core.evaluation's names only): `castfinder.cli` imports it to build its parser.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from castfinder.common import (
    EXIT_USAGE,
    aggregation_flag,
    channel_list,
    choices,
    console,
    engine_output_to_stderr,
    fail,
    print_json,
)
from core.evaluation.harness import PeopleMode
from core.evaluation.metrics import TieMode

if TYPE_CHECKING:
    from rich.console import Console

    from core import Settings
    from core.evaluation.harness import EvalProgress
    from core.evaluation.report import Report

TIE_CHOICES = tuple(choices(TieMode))
PEOPLE_CHOICES = tuple(choices(PeopleMode))


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "eval", parents=list(parents), help="measure retrieval quality against ground truth",
        description="Search an indexed movie with each character's query images and score the rankings "
                    "against ground truth: precision@k and recall@k (k = 5, 10, 20 and --top), AP per "
                    "character (normalised by all relevant shots, found or not) and MAP.",
    )
    p.add_argument("--movie", required=True, help="name, slug or unambiguous prefix of an indexed movie")
    p.add_argument("--ground-truth", required=True, type=Path, dest="ground_truth", metavar="CSV",
                   help="CSV with character, label and scene,shot or start_frame,end_frame or start_s,end_s")
    p.add_argument("--queries", required=True, type=Path, metavar="DIR",
                   help="folder of <character>_*.jpg|png images, or of <character>/ sub-folders")
    p.add_argument("--top", type=int, default=20,
                   help="ranked shots listed per character, and an extra cut-off k (default 20); "
                        "AP always uses the whole ranking")
    aggregation_flag(p)
    p.add_argument("--people", choices=PEOPLE_CHOICES, default="main",
                   help='whom to search for in each query image: "main" (the most prominent person, default) or "all"')
    p.add_argument("--ties", choices=TIE_CHOICES, default="pessimistic",
                   help="shots with equal scores: count the non-relevant ones first (pessimistic, default) "
                        "or keep the engine's order")
    p.add_argument("--search-k", type=int, dest="search_k", help="FAISS hits per query crop (CASTFINDER_SEARCH_K)")
    p.add_argument("--json", action="store_true", help="print the report as exactly one JSON object")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write <character>_pr.png precision–recall curves here")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from core import Engine
    from core.evaluation import collect_queries, load_ground_truth
    from core.evaluation.harness import EvalRequest, evaluate, plan
    from core.evaluation.plots import prepare_plot_dir, write_plots
    from core.evaluation.report import build_report, pr_curves

    started = time.perf_counter()
    if args.top < 1:
        return fail("--top must be at least 1", EXIT_USAGE)
    # --search-k reached the settings with the other flags (castfinder.cli.make_settings), checked there.

    queries = collect_queries(args.queries)
    with engine_output_to_stderr():
        engine = Engine(settings, load_models=False)
        info = engine.resolve_movie(args.movie)  # before loading models: fail fast on a typo
        index = engine.open_index(info)
    truth = load_ground_truth(args.ground_truth, index.shots, movie=[args.movie, info.name, info.slug])
    planned = plan(queries, truth, args.queries)
    plot_dir = prepare_plot_dir(args.plots) if args.plots is not None else None  # before the searches

    method = args.aggregation or settings.aggregation
    request = EvalRequest(ground_truth=Path(args.ground_truth), queries=Path(args.queries), top=args.top,
                          aggregation=method, people=args.people, ties=args.ties,
                          channels=tuple(channel_list(args.search_channels)))
    bar = None if args.quiet else _progress(len(planned.characters))
    try:
        with engine_output_to_stderr():
            evaluation = evaluate(engine, info, index, truth, queries, planned, request,
                                  progress=None if bar is None else _advance(bar))
    finally:
        if bar is not None:
            bar.close()
    plots = write_plots(pr_curves(evaluation), plot_dir) if plot_dir is not None else {}
    report = build_report(evaluation, command=_command_line(args, settings, method),
                          argv=sys.argv[1:] if sys.argv[1:2] == ["eval"] else None, plots=plots,
                          elapsed_s=round(time.perf_counter() - started, 3))

    if args.json:
        print_json(report)
        for w in report["warnings"]:
            print(f"castfinder: warning: {w}", file=sys.stderr)
        for path in report["plots"].values():
            print(f"Saved {path}", file=sys.stderr)
        return 0
    _print_report(console(), report)
    return 0


def _command_line(args: argparse.Namespace, settings: Settings, method: str) -> str:
    """The equivalent command line with every option explicit (settings without a flag are in
    the report's config.settings)."""
    parts = ["castfinder", "eval", "--movie", args.movie,
             "--ground-truth", str(Path(args.ground_truth).resolve()),
             "--queries", str(Path(args.queries).resolve()),
             "--top", str(args.top), "--aggregation", method, "--people", args.people, "--ties", args.ties,
             "--search-k", str(settings.search_k),
             "--index-dir", str(Path(settings.index_dir).resolve()), "--detector", str(settings.detector),
             "--person-classes", ",".join(str(c) for c in settings.person_classes),
             "--embedder", settings.embedder, "--dinov2-model", settings.dinov2_model,
             "--clip-model", settings.clip_model, "--device", settings.device]
    parts += ["--osnet-model", settings.osnet_model, "--face-detector", settings.face_detector]
    channels = channel_list(args.search_channels)
    if channels:
        parts += ["--channels", ",".join(channels)]
    if not settings.tracks:
        parts.append("--no-tracks")
    if args.json:
        parts.append("--json")
    if args.plots is not None:
        parts += ["--plots", str(Path(args.plots).resolve())]
    return shlex.join(parts)


def _progress(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="Evaluating", unit="character", file=sys.stderr, dynamic_ncols=True)


def _advance(bar: Any) -> EvalProgress:
    """The harness's progress as the bar: the character being searched, then one more done."""
    def show(done: int, character: str | None) -> None:
        if character is not None:
            bar.set_postfix_str(character, refresh=True)
        if done > bar.n:
            bar.update(done - bar.n)

    return show


def _print_report(out: Console, report: Report) -> None:
    from rich.markup import escape
    from rich.table import Table

    from core.evaluation.report import quality_table

    quality = quality_table(report)
    table = Table(title=quality.title)
    table.add_column(quality.columns[0], no_wrap=True)
    for col in quality.columns[1:]:
        table.add_column(col, justify="right")
    for row in quality.rows:
        table.add_row(*(escape(cell) for cell in row))
    table.add_section()
    table.add_row(*(f"[bold]{escape(cell)}[/]" if i in quality.total_emphasis else escape(cell)
                    for i, cell in enumerate(quality.total)))
    out.print(table)
    marks = {"relevant": "[bold green]{}✓[/]", "ignored": "[dim]{}?[/]", "absent": "{}"}
    top = report["config"]["top"]
    for name, c in report["characters"].items():
        listed = " ".join(marks[r["label"]].format(escape(f"{r['scene']}/{r['shot']}" if r["scene"] is not None
                                                          else str(r["shot"]))) for r in c["ranking"])
        missed = f"  [red]missed: {escape(', '.join(c['missed']))}[/]" if c["missed"] else ""
        out.print(f"[bold]{escape(name)}[/] top {top}: {listed or '(nothing returned)'}{missed}")
        a = c["annotated"]
        if a["missed"] or a["duplicates"]:
            out.print(f"  annotated shots missed: {escape(', '.join(a['missed'])) or 'none'}; "
                      f"duplicates: {a['duplicates']}", highlight=False)
    out.print("[dim]✓ relevant, ? ignored (takes no rank). AP over the whole ranking, "
              "normalised by all relevant shots, per indexed shot (the ground truth mapped onto our cut); "
              "ann.: per annotated shot (each result counts for the annotated shot it overlaps most; annotated "
              "shots our cut merged into another count as missed, repeats as misses). 1st: rank of the first "
              "relevant result; ≤3: characters with it in the top 3.[/]")
    for w in report["warnings"]:
        out.print(f"[yellow]warning: {escape(w)}[/]")
    for path in report["plots"].values():
        out.print(f"Saved {escape(path)}", highlight=False)
