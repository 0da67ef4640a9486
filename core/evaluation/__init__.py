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
- The same rows also give the *annotated shots* (`GroundTruth.units`, for the annotated view):
  a row named by shot id is that indexed shot; a range row with a `shot` cell is the annotated
  shot of that name (and `scene`), one unit for every character whose rows name it (ranges
  that disagree are joined, with a warning); a range row without one is the annotated shot of
  exactly that range. Labels per character and annotated shot combine as above. Each indexed
  shot counts for the annotated shot it overlaps most by time (`GroundTruth.shot_units`,
  `map_to_annotated`; frame ranges are converted with the indexed shot's frame rate), or for
  none: when it overlaps no annotated shot, or footage no row covers (unknown shots: the
  file lists only shots that someone is in) is its largest part.

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

Two views (`castfinder eval` reports both)
- Per indexed shot (`score_ranking` over `CharacterTruth.relevant/ignored`): the ground truth
  is mapped onto our cut, so where our cut merged annotated shots the merged shot is one
  relevant shot and the others are not asked for.
- Per annotated shot (`score_annotated` over `CharacterTruth.relevant_units/ignored_units` and
  `GroundTruth.shot_units`), the planners' measure: each ranked indexed shot counts for the one
  annotated shot it overlaps most. It is a hit if that annotated shot is relevant and not found
  higher up; a *duplicate* (a miss that takes a rank) if it was; it takes no rank if that
  annotated shot is ignored; otherwise it is a miss (another character's shot, a shot labelled
  0, or footage the file does not cover). AP, P@k and R@k are normalised by the relevant
  annotated shots, so annotated shots that our cut merged into another count as missed.
  Pessimistic ties put misses first, then the results of each newly found annotated shot
  together, the one with most results first. When the ground truth
  names indexed shots by id (frames folders), both views give the same numbers.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInputError
from ..naming import slugify
from ..types import Shot

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
    # The same rows as annotated shots (`AnnotatedShot.key`), for the annotated view:
    relevant_units: set[tuple] = field(default_factory=set)
    ignored_units: set[tuple] = field(default_factory=set)
    absent_units: set[tuple] = field(default_factory=set)  # rows labelled 0


@dataclass(frozen=True)
class AnnotatedShot:
    """One annotated shot: a distinct range (or shot id) of the ground truth.

    `form` is how the rows name it: "frames" (`start`–`end`, inclusive frame numbers),
    "seconds" ([`start`, `end`) in seconds) or "shot" (an indexed shot named by its id:
    `start` == `end` == `Shot.id`). `name` is what reports show: the file's `scene/shot` when
    it has a `shot` column, else the range."""

    key: tuple
    name: str
    form: str
    start: float
    end: float


class GroundTruth(dict):
    """`{character: CharacterTruth}` plus what was noticed while reading the file."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.warnings: list[str] = []
        self.forms: dict[str, int] = {"frames": 0, "seconds": 0, "shot": 0}
        self.skipped_rows = 0  # rows of other movies
        self.units: dict[tuple, AnnotatedShot] = {}  # every annotated shot of the rows read
        self.shot_units: dict[int, tuple | None] = {}  # Shot.id → the annotated shot it counts for

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
    unit_labels: dict[tuple[str, tuple], int] = {}  # (character key, annotated shot key) → label
    units: dict[tuple, list] = {}  # annotated shot key → [form, start, end, name, first line, its range]
    by_id = {s.id: s for s in shot_list}
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
        shot_id, form, (a, b) = _match_row(path, line, row, forms, shot_list, by_number, truth.warnings)
        truth.forms[form] += 1
        unit_key = _add_unit(path, line, row, form, a, b, by_id[shot_id], units, truth.warnings)
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
        previous = unit_labels.get((char.name, unit_key))
        if previous is None or _LABEL_RANK[label] > _LABEL_RANK[previous]:
            unit_labels[(char.name, unit_key)] = label
    if wanted and "movie" in columns and not truth:
        seen = ", ".join(sorted(repr(m) for m in movies_seen))
        raise GroundTruthError(f"{path}: no rows for {wanted[0]!r}; the file has rows for {seen}.")
    for (name, shot_id), label in labels.items():
        if label == PRESENT:
            truth[name].relevant.add(shot_id)
        elif label == IGNORE:
            truth[name].ignored.add(shot_id)
    for (name, unit_key), label in unit_labels.items():
        {PRESENT: truth[name].relevant_units, IGNORE: truth[name].ignored_units,
         ABSENT: truth[name].absent_units}[label].add(unit_key)
    truth.units = {key: AnnotatedShot(key, name, form, a, b) for key, (form, a, b, name, *_) in units.items()}
    truth.shot_units = map_to_annotated(shot_list, truth.units.values())
    for name, shot_id in sorted(conflicts):
        truth.warnings.append(
            f"{name}: shot {_shot_label(by_id[shot_id])} gets rows labelled both present (1) and ignore (-1); "
            "counted as present."
        )
    return truth


def _shot_label(shot: Shot) -> str:
    return f"{shot.scene}/{shot.number}" if shot.scene is not None else str(shot.number)


def _name_cell(value: str) -> str:
    """A `shot`/`scene` cell as a unit name: "05", "5" and "5.0" are the same shot."""
    try:
        number = float(value)
    except ValueError:
        return value.casefold()
    return str(int(number)) if math.isfinite(number) and number == int(number) else value


def _range_name(form: str, a, b) -> str:
    return f"frames {a}–{b}" if form == "frames" else f"{a:g}–{b:g} s"


def _add_unit(path: Path, line: int, row: dict[str, str], form: str, a, b, shot: Shot,
              units: dict[tuple, list], warnings: list[str]) -> tuple:
    """The annotated shot a row names (added to `units` when new); returns its key.

    A row named by shot id is the indexed shot itself. A range row with a `shot` cell is the
    annotated shot of that name (with its `scene`): rows of several characters naming it are one
    unit, and if their ranges differ the unit spans them all (with a warning). A range row
    without a `shot` cell is the annotated shot of exactly that range."""
    if form == "shot":
        key, name = ("shot", shot.id), _shot_label(shot)
    elif row.get("shot", "") != "":
        scene = _name_cell(row.get("scene", "")) if row.get("scene", "") != "" else None
        number = _name_cell(row["shot"])
        key = ("named", form, scene, number)
        name = f"{scene}/{number}" if scene is not None else number
    else:
        key, name = ("range", form, a, b), _range_name(form, a, b)
    unit = units.get(key)
    if unit is None:
        units[key] = [form, a, b, name, line, (a, b)]
    elif unit[5] != (a, b):
        warnings.append(f"{path.name}:{line}: annotated shot {name} has the range {_range_name(form, a, b)} "
                        f"here but {_range_name(form, *unit[5])} on line {unit[4]}; "
                        "counted as one shot spanning both.")
        unit[1], unit[2] = min(unit[1], a), max(unit[2], b)
    return key


def _unit_span(unit: AnnotatedShot, shot: Shot) -> tuple[float, float] | None:
    """The part of `shot` that `unit` covers, as times on the shot's own axis; None if none.
    Frame ranges become times through the shot's frames (its duration / its frame count)."""
    if unit.form == "shot":
        return (shot.start_s, shot.end_s) if unit.start == shot.id else None
    if unit.form == "seconds":
        lo, hi = max(unit.start, shot.start_s), min(unit.end, shot.end_s)
        return (lo, hi) if hi > lo else None
    first, last = max(unit.start, shot.start_frame), min(unit.end, shot.end_frame)
    if last < first:
        return None
    per_frame = (shot.end_s - shot.start_s) / (shot.end_frame - shot.start_frame + 1)
    return (shot.start_s + (first - shot.start_frame) * per_frame,
            shot.start_s + (last + 1 - shot.start_frame) * per_frame)


def map_to_annotated(shots, units: Iterable[AnnotatedShot]) -> dict[int, tuple | None]:
    """`{Shot.id: AnnotatedShot.key or None}`: the annotated shot each indexed shot counts for.

    An indexed shot counts for the annotated shot it overlaps most (by time; the earlier one on
    equal overlap). Time that no annotated shot of the file covers is unknown footage: when the
    longest uncovered stretch inside the indexed shot is longer than its overlap with any
    annotated shot, or it overlaps none, it counts for no annotated shot (None), so that a cut a
    few frames off the annotator's does not make a shot of unknown people count for a known one.
    """
    shot_list = _shot_list(shots)
    ordered: list[AnnotatedShot] = []
    by_form: dict[str, list[AnnotatedShot]] = {}
    for unit in units:
        by_form.setdefault(unit.form, []).append(unit)
    # Per range form, units sorted by start and the running maximum of their ends: the units
    # that can touch [lo, hi] are those after the last prefix whose ends all lie before lo.
    index: dict[str, tuple[list[AnnotatedShot], list[float], list[float]]] = {}
    for form, group in by_form.items():
        group.sort(key=lambda u: (u.start, u.end))
        starts, max_ends, top = [], [], -math.inf
        for u in group:
            top = max(top, u.end)
            starts.append(u.start)
            max_ends.append(top)
        index[form] = (group, starts, max_ends)
        ordered.extend(group)
    out: dict[int, tuple | None] = {}
    for shot in shot_list:
        spans: list[tuple[float, float, AnnotatedShot]] = []
        for form, (group, starts, max_ends) in index.items():
            if form == "shot":
                lo, hi = shot.id, shot.id
            elif form == "seconds":
                lo, hi = shot.start_s, shot.end_s
            else:
                lo, hi = shot.start_frame, shot.end_frame
            first = bisect.bisect_right(max_ends, lo if form == "seconds" else lo - 1)
            if form == "seconds":
                last = bisect.bisect_left(starts, hi)
            else:
                last = bisect.bisect_right(starts, hi)
            for unit in group[first:last]:
                span = _unit_span(unit, shot)
                if span is not None:
                    spans.append((*span, unit))
        best, best_overlap = None, 0.0
        for lo, hi, unit in sorted(spans, key=lambda x: (x[0], x[1])):
            if hi - lo > best_overlap:
                best, best_overlap = unit, hi - lo
        gap, reached = 0.0, shot.start_s
        for lo, hi, _ in sorted(spans, key=lambda x: x[0]):
            gap = max(gap, lo - reached)
            reached = max(reached, hi)
        gap = max(gap, shot.end_s - reached)
        out[shot.id] = best.key if best is not None and best_overlap >= gap else None
    return out


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
            shot_id = _match_shot_id(path, line, row, by_number)
            return shot_id, form, (shot_id, shot_id)
        kind = int if form == "frames" else float
        a_col, b_col = ("start_frame", "end_frame") if form == "frames" else ("start_s", "end_s")
        a = _number(path, line, a_col, cells[0], kind)
        b = _number(path, line, b_col, cells[1], kind)
        if a < 0 or b < 0:
            raise GroundTruthError(f"{path}:{line}: {a_col}/{b_col} must not be negative.")
        if b < a or (form == "seconds" and b == a):
            raise GroundTruthError(f"{path}:{line}: {b_col} {cells[1]} is not after {a_col} {cells[0]}.")
        return _match_range(path, line, form, a, b, shots, warnings), form, (a, b)
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
    # Annotated view only (`score_annotated`): the annotated shot each place counts for (None:
    # none), and how many places were relevant annotated shots already found higher up.
    units: tuple[tuple | None, ...] = ()
    duplicates: int = 0

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
    kept, kept_keys, dropped = _first_places(ranking, keys, lambda shot: shot in ignored)
    if keys is not None:
        kept = resolve_ties(kept, kept_keys, relevant, ties)
    labels = tuple(s in relevant for s in kept)
    return Scores(ranking=tuple(kept), labels=labels, ignored_retrieved=dropped,
                  **_rank_metrics(labels, len(relevant), ks))



def _first_places(ranking: Sequence[int], keys: Sequence[Hashable] | None,
                  is_ignored) -> tuple[list[int], list[Hashable], int]:
    """The ranking with repeats removed and ignored shots taken out (they take no rank): the
    shots kept, their keys, and how many ignored shots were retrieved."""
    seen: set[int] = set()
    kept: list[int] = []
    kept_keys: list[Hashable] = []
    dropped = 0
    for i, shot in enumerate(ranking):
        if shot in seen:
            continue
        seen.add(shot)
        if is_ignored(shot):
            dropped += 1
            continue
        kept.append(shot)
        if keys is not None:
            kept_keys.append(keys[i])
    return kept, kept_keys, dropped


def _rank_metrics(labels: Sequence[bool], n_rel: int, ks: Sequence[int]) -> dict:
    """P@k, R@k, AP (normalised by all `n_rel` relevant shots), hits and the first hit's rank."""
    hits, total, first = 0, 0.0, None
    for rank, is_rel in enumerate(labels, start=1):
        if is_rel:
            hits += 1
            total += hits / rank
            first = first or rank
    return {"relevant": n_rel, "found": hits, "first_relevant_rank": first,
            "precision": {k: sum(labels[:k]) / k for k in ks},
            "recall": {k: (sum(labels[:k]) / n_rel if n_rel else None) for k in ks},
            "ap": total / n_rel if n_rel else None}

def score_annotated(
    ranking: Sequence[int],
    shot_units: Mapping[int, tuple | None],
    relevant_units: Iterable[tuple],
    ignored_units: Iterable[tuple] = (),
    *,
    ks: Sequence[int] = DEFAULT_KS,
    keys: Sequence[Hashable] | None = None,
    ties: str = "pessimistic",
) -> Scores:
    """Score a ranking of indexed shot ids against the *annotated* shots (see the module
    docstring): each place counts for the annotated shot `shot_units[shot]` (None: none). A place
    whose annotated shot is relevant and not found higher up is a hit; one whose relevant
    annotated shot was already found is a duplicate (a miss); one whose annotated shot is ignored
    takes no rank; anything else is a miss. AP, P@k and R@k are normalised by the relevant
    annotated shots. `Scores.ranking` holds indexed shot ids, `Scores.units` their annotated shots.
    """
    relevant = set(relevant_units)
    ignored = set(ignored_units) - relevant
    if ties not in TIE_MODES:
        raise ValueError(f"unknown tie mode {ties!r}; use {' or '.join(TIE_MODES)}")
    if any(k < 1 for k in ks):
        raise ValueError("cut-offs k must be at least 1")
    if keys is not None and len(keys) != len(ranking):
        raise ValueError("keys must give one key per ranked shot")
    kept, kept_keys, dropped = _first_places(
        ranking, keys, lambda shot: shot_units.get(shot) is not None and shot_units.get(shot) in ignored)
    if keys is not None and ties == "pessimistic":
        kept = _pessimistic_annotated(kept, kept_keys, shot_units, relevant)
    units = tuple(shot_units.get(s) for s in kept)
    found: set[tuple] = set()
    labels: list[bool] = []
    for unit in units:
        hit = unit is not None and unit in relevant and unit not in found
        if hit:
            found.add(unit)
        labels.append(hit)
    duplicates = sum(1 for u, hit in zip(units, labels) if not hit and u is not None and u in relevant)
    return Scores(ranking=tuple(kept), labels=tuple(labels), ignored_retrieved=dropped, units=units,
                  duplicates=duplicates, **_rank_metrics(labels, len(relevant), ks))


def _pessimistic_annotated(ranking: list[int], keys: list[Hashable], shot_units: Mapping[int, tuple | None],
                           relevant: set[tuple]) -> list[int]:
    """Ties of the annotated view, resolved against us. In each run of equal keys the misses come
    first (including repeats of annotated shots found before the run), then the results of each
    annotated shot newly found in the run, together, the shot with the most results first: every
    hit then lands as low as the run allows (the k-th new hit can be preceded at most by all the
    results of k-1 other annotated shots). Each group keeps its order."""
    out: list[int] = []
    found: set[tuple] = set()
    i = 0
    while i < len(ranking):
        j = i + 1
        while j < len(ranking) and keys[j] == keys[i]:
            j += 1
        misses: list[int] = []
        groups: dict[tuple, list[int]] = {}  # in order of first appearance
        for shot in ranking[i:j]:
            unit = shot_units.get(shot)
            if unit is None or unit not in relevant or unit in found:
                misses.append(shot)
            else:
                groups.setdefault(unit, []).append(shot)
        out.extend(misses)
        for group in sorted(groups.values(), key=len, reverse=True):  # stable: ties keep their order
            out.extend(group)
        found.update(groups)
        i = j
    return out


def mean_average_precision(aps: Iterable[float | None]) -> float | None:
    """Mean of the defined APs; None when there is none."""
    values = [a for a in aps if a is not None]
    return sum(values) / len(values) if values else None
