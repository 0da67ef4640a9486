"""Ground truth: which shots each character is in, read from a CSV and mapped onto the index's
shots (and onto the annotator's own shots, for the annotated view: annotated.py).

Conventions, fixed here and tested in tests/test_evaluation.py:

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
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import BadInputError
from ..naming import slugify
from ..types import Shot
from .annotated import AnnotatedShot, Form, UnitDraft, UnitKey, add_unit, map_to_annotated
from .shots import ShotsLike, shot_label, shot_list

PRESENT, ABSENT, IGNORE = 1, 0, -1
_LABEL_RANK = {ABSENT: 0, IGNORE: 1, PRESENT: 2}  # which label wins when rows meet on one shot
_OVERFLOW = "\0overflow"  # key of a row's cell count when it has more cells than the header
_FORMS: tuple[tuple[Form, tuple[str, ...]], ...] = (
    ("frames", ("start_frame", "end_frame")), ("seconds", ("start_s", "end_s")), ("shot", ("shot",)))
_COLUMNS = dict(_FORMS)  # the columns that name a shot in each form, in the order tried


class GroundTruthError(BadInputError):
    """A ground-truth file that cannot be used; the message names the file and the line."""


@dataclass
class CharacterTruth:
    name: str
    relevant: set[int] = field(default_factory=set)  # Shot.id
    ignored: set[int] = field(default_factory=set)  # Shot.id
    rows: int = 0
    # The same rows as annotated shots (`AnnotatedShot.key`), for the annotated view:
    relevant_units: set[UnitKey] = field(default_factory=set)
    ignored_units: set[UnitKey] = field(default_factory=set)
    absent_units: set[UnitKey] = field(default_factory=set)  # rows labelled 0


class GroundTruth(dict[str, CharacterTruth]):
    """`{character: CharacterTruth}` plus what was noticed while reading the file."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.warnings: list[str] = []
        self.forms: dict[str, int] = {"frames": 0, "seconds": 0, "shot": 0}
        self.skipped_rows = 0  # rows of other movies
        self.units: dict[UnitKey, AnnotatedShot] = {}  # every annotated shot of the rows read
        self.shot_units: dict[int, UnitKey | None] = {}  # Shot.id → the annotated shot it counts for

    def get_character(self, name: str) -> CharacterTruth | None:
        key = name.casefold()
        return next((t for n, t in self.items() if n.casefold() == key), None)


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



def _real(path: Path, line: int, column: str, value: str) -> float:
    if value == "":
        raise GroundTruthError(f"{path}:{line}: the {column!r} cell is empty.")
    try:
        number = float(value)
    except ValueError:
        raise GroundTruthError(f"{path}:{line}: {column} {value!r} is not a number.") from None
    if not math.isfinite(number):
        raise GroundTruthError(f"{path}:{line}: {column} {value!r} is not a finite number.")
    return number


def _whole(path: Path, line: int, column: str, value: str) -> int:
    number = _real(path, line, column, value)
    if number != int(number):
        raise GroundTruthError(f"{path}:{line}: {column} {value!r} is not a whole number.")
    return int(number)


def _movie_matches(value: str, wanted: Sequence[str]) -> bool:
    if not value.strip():
        return True  # a row that names no movie applies to the one being evaluated
    slug = slugify(value)
    for name in wanted:
        other = slugify(name)
        if slug == other or other.startswith(slug + "-") or slug.startswith(other + "-"):
            return True
    return False


def load_ground_truth(path: Path | str, shots: ShotsLike, *, movie: str | Sequence[str] | None = None) -> GroundTruth:
    """Read a ground-truth CSV and map every row to an indexed shot's `Shot.id`.

    `shots`: the index's shots (a list of `Shot`, `MovieIndex.shots`, or a `MovieIndex`).
    `movie`: a name or several names of the same movie (display name, slug, what the user
    typed); with a `movie` column, rows naming another movie are skipped. Names match by slug,
    or when one slug extends the other by whole words ("goldeneye" ~ "goldeneye-1995").
    See the module docstring for the rules.
    """
    path = Path(path)
    header, rows = _read_rows(path)
    ordered = shot_list(shots)
    if not ordered:
        raise GroundTruthError("The index has no shots to match the ground truth against.")
    columns = set(header)
    if "character" not in columns:
        raise GroundTruthError(
            f"{path}: no 'character' column (the header has: {', '.join(c for c in header if c)}).")
    forms = [f for f, cols in _FORMS if all(c in columns for c in cols)]
    for start, end in (("start_frame", "end_frame"), ("start_s", "end_s")):
        if (start in columns) != (end in columns):
            have, lack = (start, end) if start in columns else (end, start)
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
    for s in ordered:
        by_number.setdefault(s.number, []).append(s)
    labels: dict[tuple[str, int], int] = {}  # (character key, shot id) → label
    unit_labels: dict[tuple[str, UnitKey], int] = {}  # (character key, annotated shot key) → label
    units: dict[UnitKey, UnitDraft] = {}  # annotated shot key → the annotated shot so far
    by_id = {s.id: s for s in ordered}
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
        label = _whole(path, line, "label", row["label"]) if row.get("label", "") != "" else PRESENT
        if label not in _LABEL_RANK:
            raise GroundTruthError(f"{path}:{line}: label {label} is not 1 (present), -1 (ignore) or 0 (absent).")
        shot_id, form, (a, b) = _match_row(path, line, row, forms, ordered, by_number, truth.warnings)
        truth.forms[form] += 1
        unit_key = add_unit(path, line, row, form, a, b, by_id[shot_id], units, truth.warnings)
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
    truth.units = {key: unit.done(key) for key, unit in units.items()}
    truth.shot_units = map_to_annotated(ordered, truth.units.values())
    for name, shot_id in sorted(conflicts):
        truth.warnings.append(
            f"{name}: shot {shot_label(by_id[shot_id])} gets rows labelled both present (1) and ignore (-1); "
            "counted as present."
        )
    return truth


def _match_row(path: Path, line: int, row: dict[str, str], forms: Sequence[Form], shots: list[Shot],
               by_number: dict[int, list[Shot]], warnings: list[str]) -> tuple[int, Form, tuple[float, float]]:
    for form in forms:
        cells = tuple(row.get(column, "") for column in _COLUMNS[form])
        if all(c == "" for c in cells):
            continue  # this row uses a later form
        if form == "shot":
            shot_id = _match_shot_id(path, line, row, by_number)
            return shot_id, form, (shot_id, shot_id)
        parse: Callable[[Path, int, str, str], float] = _whole if form == "frames" else _real
        a_col, b_col = ("start_frame", "end_frame") if form == "frames" else ("start_s", "end_s")
        a = parse(path, line, a_col, cells[0])
        b = parse(path, line, b_col, cells[1])
        if a < 0 or b < 0:
            raise GroundTruthError(f"{path}:{line}: {a_col}/{b_col} must not be negative.")
        if b < a or (form == "seconds" and b == a):
            raise GroundTruthError(f"{path}:{line}: {b_col} {cells[1]} is not after {a_col} {cells[0]}.")
        return _match_range(path, line, form, a, b, shots, warnings), form, (a, b)
    raise GroundTruthError(f"{path}:{line}: the row names no shot (its shot and range cells are empty).")


def _overlap(form: str, a: float, b: float, shot: Shot) -> float:
    if form == "frames":
        return max(0, min(b, shot.end_frame) - max(a, shot.start_frame) + 1)
    return max(0.0, min(b, shot.end_s) - max(a, shot.start_s))


def _match_range(path: Path, line: int, form: Form, a: float, b: float, shots: list[Shot],
                 warnings: list[str]) -> int:
    best: Shot | None = None
    best_overlap = 0.0
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
                        f"matched to shot {shot_label(best)}, which covers {best_overlap / length:.0%} of it.")
    return best.id


def _match_shot_id(path: Path, line: int, row: dict[str, str], by_number: dict[int, list[Shot]]) -> int:
    number = _whole(path, line, "shot", row["shot"])
    scene_cell = row.get("scene", "")
    candidates = by_number.get(number, [])
    if scene_cell != "":
        scene = _whole(path, line, "scene", scene_cell)
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
