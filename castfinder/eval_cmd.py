"""`castfinder eval`: measured retrieval quality of an indexed movie against ground truth.

    castfinder eval --movie goldeneye --ground-truth ../shared/data/goldeneye/ground_truth.csv \\
                    --queries ../shared/data/goldeneye/queries --top 20 [--json] [--plots DIR]

For each character that has both query images and ground truth, all of its images are searched
at once (as a user sending an album would) with `Engine.search`, asking for every shot of the
index (depth = max(--top, number of shots)), so AP sees the whole ranking the engine returns.
Precision and recall are reported at k = 5, 10, 20 and at k = --top; --top also sets how many
ranked shots per character are listed (table and JSON). The precision–recall plots use the
whole ranking. Metric definitions: core/evaluation.py. Ties are resolved with the engine's
(score, similarity) as the sort key; listed rankings show the engine's own order, with ignored
shots marked (they take no rank in the metrics).

The JSON report (`--json`, one object on stdout) holds everything needed to reproduce a number:
`command` (the equivalent command line, every option explicit), `argv` (the actual one when run
as `castfinder eval`), `config` (aggregation, people, channels, ties, depth, cut-offs, the
engine settings, the index manifest, library versions), per-character metrics, rankings and
missed shots, `summary` (MAP, mean P@k/R@k), `warnings` and `plots`.

Two views of the same rankings (definitions: core/evaluation.py): per indexed shot (the ground
truth mapped onto our cut; `characters.<name>.ap/precision/recall/relevant/first_rank`,
`summary.map`) and per annotated shot (each result counts for the annotated shot it overlaps
most; annotated shots merged by our cut into another count as missed, repeats as misses;
`characters.<name>.annotated.{ap, precision, recall, relevant, first_rank, found, duplicates,
missed, ranking}`, `summary.map_annotated`, `summary.annotated`). `first_rank` is the rank of
the first relevant result (ignored shots take no rank); `summary.first_in_top3` counts the
characters whose first relevant result is in the top 3. `ground_truth.indexed_to_annotated`
says which annotated shot each indexed shot counts for.

Importing this module is cheap (stdlib only): `castfinder.cli` imports it to build its parser.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from castfinder.common import EXIT_USAGE, channel_list, console, engine_output_to_stderr, fail

TIE_CHOICES = ("pessimistic", "order")  # = core.evaluation.TIE_MODES (kept here: no heavy import)
REPORT_FORMAT = 1


def add_parser(subparsers, parents: Sequence[argparse.ArgumentParser]) -> None:
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
    p.add_argument("--aggregation", choices=["max", "frequency", "rrf"], help="how hits make a shot's score")
    p.add_argument("--people", choices=["main", "all"], default="main",
                   help='whom to search for in each query image: "main" (the most prominent person, default) or "all"')
    p.add_argument("--ties", choices=TIE_CHOICES, default="pessimistic",
                   help="shots with equal scores: count the non-relevant ones first (pessimistic, default) "
                        "or keep the engine's order")
    p.add_argument("--search-k", type=int, dest="search_k", help="FAISS hits per query crop (CASTFINDER_SEARCH_K)")
    p.add_argument("--json", action="store_true", help="print the report as exactly one JSON object")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write <character>_pr.png precision–recall curves here")


def run(args: argparse.Namespace, settings) -> int:
    from core import BadInputError, Engine, QueryImage
    from core.evaluation import (
        DEFAULT_KS,
        collect_queries,
        load_ground_truth,
        mean_average_precision,
        score_annotated,
        score_ranking,
    )
    from core.versions import library_versions

    started = time.perf_counter()
    if args.top < 1:
        return fail("--top must be at least 1", EXIT_USAGE)
    if args.search_k is not None:
        if args.search_k < 1:
            return fail("--search-k must be at least 1", EXIT_USAGE)
        settings = settings.model_copy(update={"search_k": args.search_k})
    ks = tuple(sorted(set(DEFAULT_KS) | {args.top}))
    quiet = args.quiet

    queries = collect_queries(args.queries)
    with engine_output_to_stderr():
        engine = Engine(settings, load_models=False)
        info = engine.resolve_movie(args.movie)  # before loading models: fail fast on a typo
        index = engine.open_index(info)
    truth = load_ground_truth(args.ground_truth, index.shots, movie=[args.movie, info.name, info.slug])

    warnings = list(truth.warnings)
    pairs = []
    for name, paths in queries.items():
        t = truth.get_character(name)
        if t is None:
            warnings.append(f"{name}: query images but no ground truth; not scored.")
        else:
            pairs.append((t.name, paths, t))
    with_queries = {name.casefold() for name in queries}
    for name in truth:
        if name.casefold() not in with_queries:
            warnings.append(f"{name}: ground truth but no query images in {args.queries}; not scored.")
    if not pairs:
        raise BadInputError(
            f"No character has both query images and ground truth (queries: {', '.join(queries)}; "
            f"ground truth: {', '.join(truth) or 'none'})."
        )
    plot_dir = None
    if args.plots is not None:
        plot_dir = _prepare_plots(args.plots)

    method = args.aggregation or settings.aggregation
    search_options = {}
    channels = channel_list(args.search_channels)
    if channels:
        search_options["channels"] = channels
    depth = max(args.top, len(index.shots))
    shots = index.shots
    characters: dict[str, dict] = {}
    scored = {}
    annotated = {}
    progress = None if quiet else _progress(len(pairs))
    try:
        for name, paths, t in pairs:
            if progress is not None:
                progress.set_postfix_str(name, refresh=True)
            with engine_output_to_stderr():
                response = engine.search(info, [QueryImage(p, select=args.people, name=str(p)) for p in paths],
                                         top=depth, aggregation=method, **search_options)
            ranking = [r.shot_id for r in response.results]
            keys = [(r.score, r.similarity) for r in response.results]
            s = score_ranking(ranking, t.relevant, t.ignored, ks=ks, keys=keys, ties=args.ties)
            a = score_annotated(ranking, truth.shot_units, t.relevant_units, t.ignored_units, ks=ks, keys=keys,
                                ties=args.ties)
            scored[name] = s
            annotated[name] = a
            if s.ap is None:
                warnings.append(f"{name}: no relevant shot in the ground truth; AP undefined, left out of MAP.")
            characters[name] = _character_report(name, paths, t, s, response, shots, args.top, ks)
            characters[name]["annotated"] = _annotated_report(t, a, response, truth, ks, args.top)
            if progress is not None:
                progress.update(1)
    finally:
        if progress is not None:
            progress.close()

    defined = [s for s in scored.values() if s.ap is not None]
    summary = {
        "map": _round(mean_average_precision(s.ap for s in defined)),
        "characters_scored": len(defined),
        "mean_precision": {str(k): _round(_mean([s.precision[k] for s in defined])) for k in ks},
        "mean_recall": {str(k): _round(_mean([s.recall[k] for s in defined])) for k in ks},
        "first_in_top3": sum(1 for s in defined if s.first_relevant_rank is not None and s.first_relevant_rank <= 3),
    }
    defined_a = [a for a in annotated.values() if a.ap is not None]
    summary["map_annotated"] = _round(mean_average_precision(a.ap for a in defined_a))
    summary["annotated"] = {
        "map": summary["map_annotated"],
        "characters_scored": len(defined_a),
        "mean_precision": {str(k): _round(_mean([a.precision[k] for a in defined_a])) for k in ks},
        "mean_recall": {str(k): _round(_mean([a.recall[k] for a in defined_a])) for k in ks},
        "first_in_top3": sum(1 for a in defined_a if a.first_relevant_rank is not None and a.first_relevant_rank <= 3),
    }
    report = {
        "format": REPORT_FORMAT,
        "movie": {"name": info.name, "slug": info.slug, "build_id": info.build_id, "built_at": info.built_at,
                  "path": str(info.path), "shots": len(shots)},
        "command": _command_line(args, settings, method),
        "argv": sys.argv[1:] if sys.argv[1:2] == ["eval"] else None,
        "config": {
            "aggregation": method, "people": args.people, "top": args.top, "depth": depth, "ks": list(ks),
            "channels": channels or list(index.manifest.get("channels", {})),
            "ties": args.ties, "search_k": settings.search_k,
            "settings": settings.model_dump(mode="json"),
            "index_manifest": index.manifest,
            "versions": library_versions(),
        },
        "ground_truth": {"path": str(Path(args.ground_truth).resolve()), "forms": truth.forms,
                         "rows_of_other_movies": truth.skipped_rows,
                         "characters": sorted(truth),
                         "annotated_shots": len(truth.units),
                         # which annotated shot each indexed shot counts for (null: none)
                         "indexed_to_annotated": {
                             _shot_name(shots[i]): (truth.units[u].name if u is not None else None)
                             for i, u in sorted(truth.shot_units.items(),
                                                key=lambda kv: (shots[kv[0]].start_frame, kv[0]))}},
        "queries": {"path": str(Path(args.queries).resolve()),
                    "characters": {n: [str(p.resolve()) for p in ps] for n, ps in queries.items()}},
        "characters": characters,
        "summary": summary,
        "warnings": warnings,
        "plots": {},
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if plot_dir is not None:
        for name, s in scored.items():
            if s.ap is None:
                continue
            path = plot_dir / f"{_safe_name(name, report['plots'])}_pr.png"
            _plot_pr(path, name, s, info.name, method, annotated.get(name))
            report["plots"][name] = str(path.resolve())
    report["elapsed_s"] = round(time.perf_counter() - started, 3)

    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        for w in warnings:
            print(f"castfinder: warning: {w}", file=sys.stderr)
        for path in report["plots"].values():
            print(f"Saved {path}", file=sys.stderr)
        return 0
    _print_table(console(), report, scored, shots, ks, args.top)
    return 0


# -- report pieces -----------------------------------------------------------------------------
def _round(value, digits: int = 4):
    return None if value is None else round(float(value), digits)


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _shot_name(shot) -> str:
    return f"{shot.scene}/{shot.number}" if shot.scene is not None else str(shot.number)


def _character_report(name, paths, truth, s, response, shots, top, ks) -> dict:
    found = set(s.ranking)
    listed = []
    for r in response.results[:top]:
        label = "relevant" if r.shot_id in truth.relevant else "ignored" if r.shot_id in truth.ignored else "absent"
        listed.append({"rank": r.rank, "shot": r.shot, "scene": r.scene, "shot_id": r.shot_id,
                       "start_s": round(r.start_s, 3), "end_s": round(r.end_s, 3), "score": round(r.score, 4),
                       "similarity": _round(r.similarity),
                       "confidence": _round(r.confidence), "label": label})
    ordered = sorted(truth.relevant, key=lambda i: (shots[i].start_frame, i))
    return {
        "queries": [str(p.resolve()) for p in paths],
        "query_crops": response.query_crops,
        "whole_image_queries": response.whole_image_queries,
        "relevant": s.relevant,
        "ignored": len(truth.ignored),
        "retrieved": s.retrieved,  # after taking ignored shots out
        "ignored_retrieved": s.ignored_retrieved,
        "found": s.found,
        "first_relevant_rank": s.first_relevant_rank,
        "first_rank": s.first_relevant_rank,  # rank of the first relevant shot (ignored shots take none)
        "ap": _round(s.ap),
        "precision": {str(k): _round(s.precision[k]) for k in ks},
        "recall": {str(k): _round(s.recall[k]) for k in ks},
        "relevant_shots": [_shot_name(shots[i]) for i in ordered],
        "missed": [_shot_name(shots[i]) for i in ordered if i not in found],
        "ranking": listed,
        "search_s": round(response.elapsed_s, 3),
    }


def _unit_order(truth, key):
    u = truth.units[key]
    return (u.form, u.start, u.end, u.name)


def _annotated_report(t, a, response, truth, ks, top) -> dict:
    """The annotated view of one character: metrics over the annotated shots, which of them were
    missed, and what each listed indexed shot counted for."""
    counted = dict(zip(a.ranking, zip(a.units, a.labels)))
    listed = []
    for r in response.results[:top]:
        unit = truth.shot_units.get(r.shot_id)
        if unit is not None and unit in t.ignored_units and unit not in t.relevant_units:
            label = "ignored"
        elif r.shot_id in counted and counted[r.shot_id][1]:
            label = "relevant"
        elif unit is not None and unit in t.relevant_units:
            label = "duplicate"
        else:
            label = "absent"
        listed.append({"rank": r.rank, "shot_id": r.shot_id,
                       "annotated_shot": truth.units[unit].name if unit is not None else None, "label": label})
    found = {u for u, hit in zip(a.units, a.labels) if hit}
    ordered = sorted(t.relevant_units, key=lambda k: _unit_order(truth, k))
    return {
        "ap": _round(a.ap),
        "precision": {str(k): _round(a.precision[k]) for k in ks},
        "recall": {str(k): _round(a.recall[k]) for k in ks},
        "relevant": a.relevant,
        "ignored": len(t.ignored_units - t.relevant_units),
        "retrieved": a.retrieved,
        "ignored_retrieved": a.ignored_retrieved,
        "found": a.found,
        "duplicates": a.duplicates,
        "first_rank": a.first_relevant_rank,
        "relevant_shots": [truth.units[k].name for k in ordered],
        "missed": [truth.units[k].name for k in ordered if k not in found],
        "ranking": listed,
    }


def _command_line(args, settings, method: str) -> str:
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




def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="Evaluating", unit="character", file=sys.stderr, dynamic_ncols=True)


# -- plots -------------------------------------------------------------------------------------
def _prepare_plots(folder: Path) -> Path:
    from core import CastfinderError

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


def _safe_name(name: str, taken: dict) -> str:
    base = re.sub(r"[^\w.-]+", "_", name).strip("._") or "character"
    used = {Path(p).name for p in taken.values()}
    candidate, n = base, 2
    while f"{candidate}_pr.png" in used:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def _plot_pr(path: Path, name: str, s, movie: str, method: str, annotated=None) -> None:
    """The interpolated precision–recall curve (solid, stepped) over the precision after each
    relevant shot found (dots); AP in the title. Agg canvas: no display, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from core import CastfinderError

    fig = Figure(figsize=(5.5, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    curve = s.interpolated_pr()
    ax.plot([r for r, _ in curve], [p for _, p in curve], drawstyle="steps-pre", linewidth=2,
            label="interpolated precision")
    raw = s.pr_points()
    if raw:
        ax.plot([r for r, _ in raw], [p for _, p in raw], "o", markersize=4, alpha=0.6,
                label="precision at each relevant shot")
    if annotated is not None and annotated.ap is not None:
        curve = annotated.interpolated_pr()
        ax.plot([r for r, _ in curve], [p for _, p in curve], drawstyle="steps-pre", linewidth=1.5,
                linestyle="--", label=f"per annotated shot (AP {annotated.ap:.3f})")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"recall ({s.found} of {s.relevant} relevant shots found)")
    ax.set_ylabel("precision")
    ax.set_title(f"{name}: AP {s.ap:.3f}\n{movie} · {method}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise CastfinderError(f"{path}: cannot write the plot ({exc.strerror or exc}).") from None


# -- table -------------------------------------------------------------------------------------
def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _rank(value) -> str:
    return "–" if value is None else str(value)


def _print_table(console, report: dict, scored: dict, shots, ks, top: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    cfg = report["config"]
    table = Table(title=f"{report['movie']['name']}: retrieval quality ({cfg['aggregation']}, "
                        f"{'+'.join(cfg['channels']) or '?'}, "
                        f"people {cfg['people']}, ties {cfg['ties']})")
    table.add_column("character", no_wrap=True)
    for col in ("images", "relevant", "ignored", "found"):
        table.add_column(col, justify="right")
    for k in ks:
        table.add_column(f"P@{k}", justify="right")
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    table.add_column("AP", justify="right")
    table.add_column("1st", justify="right")
    table.add_column("ann. found", justify="right")
    table.add_column("ann. AP", justify="right")
    table.add_column("ann. 1st", justify="right")
    for name, c in report["characters"].items():
        a = c["annotated"]
        table.add_row(escape(name), str(len(c["queries"])), str(c["relevant"]), str(c["ignored"]),
                      f"{c['found']}/{c['relevant']}",
                      *[_fmt(c["precision"][str(k)]) for k in ks], *[_fmt(c["recall"][str(k)]) for k in ks],
                      _fmt(c["ap"]), _rank(c["first_rank"]), f"{a['found']}/{a['relevant']}", _fmt(a["ap"]),
                      _rank(a["first_rank"]))
    summary = report["summary"]
    table.add_section()
    table.add_row(f"mean ({summary['characters_scored']})", "", "", "", "",
                  *[_fmt(summary["mean_precision"][str(k)]) for k in ks],
                  *[_fmt(summary["mean_recall"][str(k)]) for k in ks],
                  f"[bold]MAP {_fmt(summary['map'])}[/]", f"≤3: {summary['first_in_top3']}", "",
                  f"[bold]MAP {_fmt(summary['map_annotated'])}[/]", f"≤3: {summary['annotated']['first_in_top3']}")
    console.print(table)
    marks = {"relevant": "[bold green]{}✓[/]", "ignored": "[dim]{}?[/]", "absent": "{}"}
    for name, c in report["characters"].items():
        listed = " ".join(marks[r["label"]].format(escape(f"{r['scene']}/{r['shot']}" if r["scene"] is not None
                                                          else str(r["shot"]))) for r in c["ranking"])
        missed = f"  [red]missed: {escape(', '.join(c['missed']))}[/]" if c["missed"] else ""
        console.print(f"[bold]{escape(name)}[/] top {top}: {listed or '(nothing returned)'}{missed}")
        a = c["annotated"]
        if a["missed"] or a["duplicates"]:
            console.print(f"  annotated shots missed: {escape(', '.join(a['missed'])) or 'none'}; "
                          f"duplicates: {a['duplicates']}", highlight=False)
    console.print("[dim]✓ relevant, ? ignored (takes no rank). AP over the whole ranking, "
                  "normalised by all relevant shots, per indexed shot (the ground truth mapped onto our cut); "
                  "ann.: per annotated shot (each result counts for the annotated shot it overlaps most; annotated "
                  "shots our cut merged into another count as missed, repeats as misses). 1st: rank of the first "
                  "relevant result; ≤3: characters with it in the top 3.[/]")
    for w in report["warnings"]:
        console.print(f"[yellow]warning: {escape(w)}[/]")
    for path in report["plots"].values():
        console.print(f"Saved {escape(path)}", highlight=False)
