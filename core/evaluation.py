"""Measured retrieval quality: ground truth, query sets and ranking metrics (no CLI, no I/O
beyond reading the ground-truth CSV and listing the query folder).

Conventions, fixed here and tested in tests/test_evaluation.py:

Ground truth (`load_ground_truth`)
- A CSV with a header (names case-insensitive, surrounding spaces ignored; `,` `;` or tab).
  Columns: `character` (required), `label` (optional, default 1: 1 = present, -1 = ambiguous,
  ignore it, 0 = absent, the same as leaving the shot out), `movie` (optional), and one way to
  name the shot, per row, tried in this order:
    1. `start_frame,end_frame`: a frame range, inclusive, 0-based frame numbers of the source;
    2. `start_s,end_s`: a time range in seconds, [start, end);
    3. `shot` (with `scene` when the file has it): the shot's id as the index knows it
       (`Shot.number`, and `Shot.scene` when a scene is given).
  A row may leave the cells of a form empty to use the next one; a file such as Titanic's that
  has both `shot` and frame ranges is matched by frames, since shot numbers of a video index
  come from our own cut detection and need not agree with someone else's.
- Ranges go to the ONE indexed shot with the largest overlap (frames counted inclusively;
  seconds as lengths), earliest shot on equal overlap, so a slightly different cut does not
  break scoring. A range that overlaps no indexed shot, or a shot id the index lacks, is an
  error (the ground truth is for another cut or another movie). A match that covers less than
  half of the range is kept with a warning.
- Two rows that land on the same shot for the same character combine as: present (1) beats
  ambiguous (-1) beats absent (0). "Present in part of the shot" makes the shot a correct
  answer; this is also what happens when the index merges two annotated shots. A conflict
  between 1 and -1 is reported as a warning.
- With a `movie` column and a movie filter, rows of other movies are skipped; without a
  filter every row counts.
- Character names keep the spelling of their first row; rows and queries are matched to
  them case-insensitively.

Metrics (`score_ranking`)
- The ranking is the engine's list of shot ids, best first. Repeated ids count once (first
  place). Ignored shots are taken out before anything else: they are neither hits nor misses
  and do not take a rank, so the shots after them move up.
- Ties: with `keys` (one sort key per ranked shot, e.g. the engine's (score, similarity)),
  shots with equal keys are a tie; `ties="pessimistic"` (the default) puts the non-relevant
  shots of each tie first, so a lucky tie-break (say by shot id) never raises a number;
  `ties="order"` keeps the given order. Without keys the given order is used as is.
- precision@k = relevant shots in the first k / k, also when fewer than k shots were
  returned (the missing places count as misses).
- recall@k = relevant shots in the first k / all relevant shots.
- AP = (sum over relevant shots found at rank r of precision@r) / all relevant shots, found or
  not: a relevant shot never returned adds 0.
- A character with no relevant shot has no recall and no AP (None): it is left out of MAP and
  of the mean precision/recall, with a warning.
- MAP = mean AP over the characters that have one.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadInputError
from .naming import slugify
from .types import Shot

DEFAULT_KS = (5, 10, 20)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".heic"})
PRESENT, ABSENT, IGNORE = 1, 0, -1
TIE_MODES = ("pessimistic", "order")
_LABEL_RANK = {ABSENT: 0, IGNORE: 1, PRESENT: 2}  # which label wins when rows meet on one shot
_OVERFLOW = "\0overflow"  # key of a row's cell count when it has more cells than the header


class GroundTruthError(BadInputError):
    """A ground-truth file that cannot be used; the message names the file and the line."""


class QueryFolderError(BadInputError):
    """A query folder with no usable images."""


# ---------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------
@dataclass
class CharacterTruth:
    name: str
    relevant: set[int] = field(default_factory=set)  # Shot.id
    ignored: set[int] = field(default_factory=set)  # Shot.id
    rows: int = 0


class GroundTruth(dict):
    """`{character: CharacterTruth}` plus what was noticed while reading the file."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.warnings: list[str] = []
        self.forms: dict[str, int] = {"frames": 0, "seconds": 0, "shot": 0}
        self.skipped_rows = 0  # rows of other movies

    def get_character(self, name: str) -> CharacterTruth | None:
        key = name.casefold()
        return next((t for n, t in self.items() if n.casefold() == key), None)


def _shot_list(shots) -> list[Shot]:
    """Accepts a list of Shot, the `{id: Shot}` of a MovieIndex, or anything with `.shots`."""
    if hasattr(shots, "shots") and not isinstance(shots, (Mapping, list, tuple)):
        shots = shots.shots
    if isinstance(shots, Mapping):
        shots = shots.values()
    return sorted(shots, key=lambda s: (s.start_frame, s.id))


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise GroundTruthError(f"{path}: no such ground-truth file.") from None
    except IsADirectoryError:
        raise GroundTruthError(f"{path}: is a folder; give the ground-truth CSV file.") from None
    except UnicodeDecodeError:
        raise GroundTruthError(f"{path}: not a UTF-8 text (CSV) file.") from None
    except OSError as exc:
        raise GroundTruthError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if not first:
        raise GroundTruthError(f"{path}: the file is empty; expected a CSV header such as "
                               "`character,scene,shot,label`.")
    delimiter = max(",;\t", key=first.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        if header is None:
            header = [c.strip().lower() for c in row]
            dupes = sorted({c for c in header if c and header.count(c) > 1})
            if dupes:
                raise GroundTruthError(f"{path}: column {dupes[0]!r} appears twice in the header.")
            continue
        cells = {k: v.strip() for k, v in zip(header, row) if k}
        if len(row) > len(header) and any(v.strip() for v in row[len(header):]):
            cells[_OVERFLOW] = str(len(row))  # reported once the header itself is known to be usable
        rows.append((line, cells))
    assert header is not None
    return header, rows


def _number(path: Path, line: int, column: str, value: str, kind=int):
    if value == "":
        raise GroundTruthError(f"{path}:{line}: the {column!r} cell is empty.")
    try:
        number = float(value)
    except ValueError:
        raise GroundTruthError(f"{path}:{line}: {column} {value!r} is not a number.") from None
    if not math.isfinite(number):
        raise GroundTruthError(f"{path}:{line}: {column} {value!r} is not a finite number.")
    if kind is int:
        if number != int(number):
            raise GroundTruthError(f"{path}:{line}: {column} {value!r} is not a whole number.")
        return int(number)
    return number


def _movie_matches(value: str, wanted: Sequence[str]) -> bool:
    if not value.strip():
        return True  # a row that names no movie applies to the one being evaluated
    slug = slugify(value)
    for name in wanted:
        other = slugify(name)
        if slug == other or other.startswith(slug + "-") or slug.startswith(other + "-"):
            return True
    return False


def load_ground_truth(path: Path | str, shots, *, movie: str | Sequence[str] | None = None) -> GroundTruth:
    """Read a ground-truth CSV and map every row to an indexed shot's `Shot.id`.

    `shots`: the index's shots (a list of `Shot`, `MovieIndex.shots`, or a `MovieIndex`).
    `movie`: a name or several names of the same movie (display name, slug, what the user
    typed); with a `movie` column, rows naming another movie are skipped. Names match by slug,
    or when one slug extends the other by whole words ("goldeneye" ~ "goldeneye-1995").
    See the module docstring for the rules.
    """
    path = Path(path)
    header, rows = _read_rows(path)
    shot_list = _shot_list(shots)
    if not shot_list:
        raise GroundTruthError("The index has no shots to match the ground truth against.")
    columns = set(header)
    if "character" not in columns:
        raise GroundTruthError(f"{path}: no 'character' column (the header has: {', '.join(c for c in header if c)}).")
    forms = [f for f, cols in (("frames", ("start_frame", "end_frame")), ("seconds", ("start_s", "end_s")),
                                ("shot", ("shot",))) if all(c in columns for c in cols)]
    for a, b in (("start_frame", "end_frame"), ("start_s", "end_s")):
        if (a in columns) != (b in columns):
            have, lack = (a, b) if a in columns else (b, a)
            raise GroundTruthError(f"{path}: a {have!r} column needs a {lack!r} column.")
    if not forms:
        raise GroundTruthError(
            f"{path}: no column that names shots; give `scene,shot` (or `shot`), `start_frame,end_frame` "
            f"or `start_s,end_s` (the header has: {', '.join(c for c in header if c)})."
        )
    if not rows:
        raise GroundTruthError(f"{path}: the header has no rows under it.")

    wanted = [movie] if isinstance(movie, str) else list(movie or [])
    truth = GroundTruth(path)
    by_number: dict[int, list[Shot]] = {}
    for s in shot_list:
        by_number.setdefault(s.number, []).append(s)
    labels: dict[tuple[str, int], int] = {}  # (character key, shot id) → label
    conflicts: dict[tuple[str, int], list[int]] = {}
    movies_seen: set[str] = set()
    width = len(header)
    for line, row in rows:
        if _OVERFLOW in row:
            raise GroundTruthError(f"{path}:{line}: {row[_OVERFLOW]} cells but the header has {width} columns.")
    for line, row in rows:
        if wanted and "movie" in columns:
            movies_seen.add(row.get("movie", ""))
            if not _movie_matches(row.get("movie", ""), wanted):
                truth.skipped_rows += 1
                continue
        name = row.get("character", "")
        if not name:
            raise GroundTruthError(f"{path}:{line}: the character cell is empty.")
        label = _number(path, line, "label", row["label"]) if row.get("label", "") != "" else PRESENT
        if label not in _LABEL_RANK:
            raise GroundTruthError(f"{path}:{line}: label {label} is not 1 (present), -1 (ignore) or 0 (absent).")
        shot_id, form = _match_row(path, line, row, forms, shot_list, by_number, truth.warnings)
        truth.forms[form] += 1
        char = truth.get_character(name)
        if char is None:
            char = truth[name] = CharacterTruth(name)
        char.rows += 1
        key = (char.name, shot_id)
        previous = labels.get(key)
        if previous is not None and previous != label and {previous, label} == {PRESENT, IGNORE}:
            conflicts.setdefault(key, [])
        if previous is None or _LABEL_RANK[label] > _LABEL_RANK[previous]:
            labels[key] = label
    if wanted and "movie" in columns and not truth:
        seen = ", ".join(sorted(repr(m) for m in movies_seen))
        raise GroundTruthError(f"{path}: no rows for {wanted[0]!r}; the file has rows for {seen}.")
    for (name, shot_id), label in labels.items():
        if label == PRESENT:
            truth[name].relevant.add(shot_id)
        elif label == IGNORE:
            truth[name].ignored.add(shot_id)
    by_id = {s.id: s for s in shot_list}
    for name, shot_id in sorted(conflicts):
        truth.warnings.append(
            f"{name}: shot {_shot_label(by_id[shot_id])} gets rows labelled both present (1) and ignore (-1); "
            "counted as present."
        )
    return truth


def _shot_label(shot: Shot) -> str:
    return f"{shot.scene}/{shot.number}" if shot.scene is not None else str(shot.number)


def _match_row(path, line, row, forms, shots, by_number, warnings) -> tuple[int, str]:
    for form in forms:
        if form == "frames":
            cells = (row.get("start_frame", ""), row.get("end_frame", ""))
        elif form == "seconds":
            cells = (row.get("start_s", ""), row.get("end_s", ""))
        else:
            cells = (row.get("shot", ""),)
        if all(c == "" for c in cells):
            continue  # this row uses a later form
        if form == "shot":
            return _match_shot_id(path, line, row, by_number), form
        kind = int if form == "frames" else float
        a_col, b_col = ("start_frame", "end_frame") if form == "frames" else ("start_s", "end_s")
        a = _number(path, line, a_col, cells[0], kind)
        b = _number(path, line, b_col, cells[1], kind)
        if a < 0 or b < 0:
            raise GroundTruthError(f"{path}:{line}: {a_col}/{b_col} must not be negative.")
        if b < a or (form == "seconds" and b == a):
            raise GroundTruthError(f"{path}:{line}: {b_col} {cells[1]} is not after {a_col} {cells[0]}.")
        return _match_range(path, line, form, a, b, shots, warnings), form
    raise GroundTruthError(f"{path}:{line}: the row names no shot (its shot and range cells are empty).")


def _overlap(form: str, a, b, shot: Shot) -> float:
    if form == "frames":
        return max(0, min(b, shot.end_frame) - max(a, shot.start_frame) + 1)
    return max(0.0, min(b, shot.end_s) - max(a, shot.start_s))


def _match_range(path, line, form, a, b, shots: list[Shot], warnings: list[str]) -> int:
    best, best_overlap = None, 0.0
    for shot in shots:  # in time order: the earliest shot wins equal overlaps
        overlap = _overlap(form, a, b, shot)
        if overlap > best_overlap:
            best, best_overlap = shot, overlap
    if best is None:
        if form == "frames":
            what, cover = f"frames {a}–{b}", f"frames {shots[0].start_frame}–{max(s.end_frame for s in shots)}"
        else:
            what, cover = f"{a:g}–{b:g} s", f"{shots[0].start_s:g}–{max(s.end_s for s in shots):g} s"
        raise GroundTruthError(f"{path}:{line}: {what} overlap none of the indexed shots (the index covers "
                               f"{cover}); is this ground truth for another cut of the movie?")
    length = (b - a + 1) if form == "frames" else (b - a)
    if best_overlap < 0.5 * length:
        unit = "frames" if form == "frames" else "s"
        warnings.append(f"{path.name}:{line}: the range {a:g}–{b:g} {unit} is split between indexed shots; "
                        f"matched to shot {_shot_label(best)}, which covers {best_overlap / length:.0%} of it.")
    return best.id


def _match_shot_id(path, line, row, by_number) -> int:
    number = _number(path, line, "shot", row["shot"])
    scene_cell = row.get("scene", "")
    candidates = by_number.get(number, [])
    if scene_cell != "":
        scene = _number(path, line, "scene", scene_cell)
        found = [s for s in candidates if s.scene == scene]
        shown = f"{scene}/{number}"
    else:
        found, shown = candidates, str(number)
    if not found:
        raise GroundTruthError(f"{path}:{line}: shot {shown} is not in the index; is this ground truth for "
                               "another movie or another cut of it?")
    if len(found) > 1:
        scenes = ", ".join(str(s.scene) for s in found)
        raise GroundTruthError(f"{path}:{line}: shot {number} exists in several scenes ({scenes}); "
                               "add a `scene` column.")
    return found[0].id


# ---------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------
def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def collect_queries(folder: Path | str) -> dict[str, list[Path]]:
    """Query images per character, from either layout (both may be mixed):

    - `<folder>/<character>_<anything>.<ext>` (or `<folder>/<character>.<ext>`): the character is
      the part of the file name before the first `_`;
    - `<folder>/<character>/<anything>.<ext>`: every image in the sub-folder (not recursive).

    All images of a character form one query. Names keep their spelling; two spellings that
    differ only in case are the same character (the first one, in sorted order, is kept).
    Extensions: .jpg .jpeg .png .webp .bmp .heic, any case; other files and hidden files are
    ignored. Paths are sorted, so the result is the same on every run.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise QueryFolderError(f"{folder}: no such query folder.")
    found: dict[str, list[Path]] = {}
    keys: dict[str, str] = {}

    def add(name: str, path: Path) -> None:
        name = name.strip()
        if not name:
            return
        display = keys.setdefault(name.casefold(), name)
        found.setdefault(display, []).append(path)

    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            for image in sorted(entry.iterdir()):
                if _is_image(image):
                    add(entry.name, image)
        elif _is_image(entry):
            add(entry.stem.split("_", 1)[0], entry)
    if not found:
        raise QueryFolderError(
            f"{folder}: no query images; name them <character>_<n>.jpg (or .png), or put each "
            "character's images in a <character>/ sub-folder."
        )
    return {name: sorted(paths) for name, paths in sorted(found.items(), key=lambda kv: kv[0].casefold())}


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scores:
    """The metrics of one character's ranking. `ranking` is the scored list (ignored shots
    removed, ties resolved); `labels` marks each of its places as relevant or not."""

    ranking: tuple[int, ...]
    labels: tuple[bool, ...]
    relevant: int
    found: int  # relevant shots anywhere in the ranking
    ignored_retrieved: int  # ignored shots that were taken out of the ranking
    precision: dict[int, float]
    recall: dict[int, float | None]
    ap: float | None
    first_relevant_rank: int | None

    @property
    def retrieved(self) -> int:
        return len(self.ranking)

    def pr_points(self) -> list[tuple[float, float]]:
        """(recall, precision) after each relevant shot found, in rank order."""
        points, hits = [], 0
        if not self.relevant:
            return points
        for rank, is_rel in enumerate(self.labels, start=1):
            if is_rel:
                hits += 1
                points.append((hits / self.relevant, hits / rank))
        return points

    def interpolated_pr(self) -> list[tuple[float, float]]:
        """The interpolated curve: at each recall level reached, the best precision at that
        recall or beyond (p_interp(r) = max_{r' >= r} p(r')); starts at recall 0."""
        points = self.pr_points()
        if not points:
            return [(0.0, 0.0)]
        out, best = [], 0.0
        for recall, precision in reversed(points):
            best = max(best, precision)
            out.append((recall, best))
        out.reverse()
        return [(0.0, out[0][1]), *out]


def resolve_ties(ranking: Sequence[int], keys: Sequence[Hashable], relevant: set[int],
                 mode: str = "pessimistic") -> list[int]:
    """Reorder runs of adjacent equal `keys`: "pessimistic" puts the non-relevant shots of a
    run before its relevant ones (each group keeping its order); "order" changes nothing."""
    if mode not in TIE_MODES:
        raise ValueError(f"unknown tie mode {mode!r}; use {' or '.join(TIE_MODES)}")
    if len(keys) != len(ranking):
        raise ValueError("keys must give one key per ranked shot")
    if mode == "order":
        return list(ranking)
    out: list[int] = []
    i = 0
    while i < len(ranking):
        j = i + 1
        while j < len(ranking) and keys[j] == keys[i]:
            j += 1
        run = ranking[i:j]
        out.extend([s for s in run if s not in relevant] + [s for s in run if s in relevant])
        i = j
    return out


def score_ranking(
    ranking: Sequence[int],
    relevant: Iterable[int],
    ignored: Iterable[int] = (),
    *,
    ks: Sequence[int] = DEFAULT_KS,
    keys: Sequence[Hashable] | None = None,
    ties: str = "pessimistic",
) -> Scores:
    """Score one ranked list of shot ids against a character's ground truth (see the module
    docstring for the exact definitions)."""
    relevant = set(relevant)
    ignored = set(ignored) - relevant  # present wins, as in load_ground_truth
    if any(k < 1 for k in ks):
        raise ValueError("cut-offs k must be at least 1")
    if keys is not None and len(keys) != len(ranking):
        raise ValueError("keys must give one key per ranked shot")
    seen: set[int] = set()
    kept: list[int] = []
    kept_keys: list[Hashable] = []
    dropped = 0
    for i, shot in enumerate(ranking):
        if shot in seen:
            continue
        seen.add(shot)
        if shot in ignored:
            dropped += 1
            continue
        kept.append(shot)
        if keys is not None:
            kept_keys.append(keys[i])
    if keys is not None:
        kept = resolve_ties(kept, kept_keys, relevant, ties)
    labels = tuple(s in relevant for s in kept)
    n_rel = len(relevant)
    precision = {k: sum(labels[:k]) / k for k in ks}
    recall = {k: (sum(labels[:k]) / n_rel if n_rel else None) for k in ks}
    hits, total = 0, 0.0
    first = None
    for rank, is_rel in enumerate(labels, start=1):
        if is_rel:
            hits += 1
            total += hits / rank
            first = first or rank
    return Scores(
        ranking=tuple(kept), labels=labels, relevant=n_rel, found=hits, ignored_retrieved=dropped,
        precision=precision, recall=recall, ap=(total / n_rel if n_rel else None), first_relevant_rank=first,
    )


def mean_average_precision(aps: Iterable[float | None]) -> float | None:
    """Mean of the defined APs; None when there is none."""
    values = [a for a in aps if a is not None]
    return sum(values) / len(values) if values else None
