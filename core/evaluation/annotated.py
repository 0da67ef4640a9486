"""Annotated shots: the shots as the ground truth's annotator cut them, and which of them each
indexed shot counts for (the annotated view of `castfinder eval`; rules in ground_truth.py).

A row named by shot id is that indexed shot; a range row with a `shot` cell is the annotated
shot of that name (and `scene`), one for every character whose rows name it; a range row
without one is the annotated shot of exactly that range.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..types import Shot
from .shots import ShotsLike, shot_label, shot_list

Form = Literal["frames", "seconds", "shot"]
# An annotated shot's identity: ("shot", Shot.id), ("named", form, scene, shot) or ("range", form, start, end).
UnitKey = tuple[Hashable, ...]


@dataclass(frozen=True)
class AnnotatedShot:
    """One annotated shot: a distinct range (or shot id) of the ground truth.

    `form` is how the rows name it: "frames" (`start`–`end`, inclusive frame numbers),
    "seconds" ([`start`, `end`) in seconds) or "shot" (an indexed shot named by its id:
    `start` == `end` == `Shot.id`). `name` is what reports show: the file's `scene/shot` when
    it has a `shot` column, else the range."""

    key: UnitKey
    name: str
    form: str
    start: float
    end: float


@dataclass
class UnitDraft:
    """An annotated shot while the rows are read: its range grows when rows disagree."""

    form: Form
    start: float
    end: float
    name: str
    line: int  # the first row that named it
    first_range: tuple[float, float]  # that row's range

    def done(self, key: UnitKey) -> AnnotatedShot:
        return AnnotatedShot(key, self.name, self.form, self.start, self.end)


def name_cell(value: str) -> str:
    """A `shot`/`scene` cell as a unit name: "05", "5" and "5.0" are the same shot."""
    try:
        number = float(value)
    except ValueError:
        return value.casefold()
    return str(int(number)) if math.isfinite(number) and number == int(number) else value


def range_name(form: str, a: float, b: float) -> str:
    return f"frames {a}–{b}" if form == "frames" else f"{a:g}–{b:g} s"


def add_unit(path: Path, line: int, row: dict[str, str], form: Form, a: float, b: float, shot: Shot,
             units: dict[UnitKey, UnitDraft], warnings: list[str]) -> UnitKey:
    """The annotated shot a row names (added to `units` when new); returns its key.

    A row named by shot id is the indexed shot itself. A range row with a `shot` cell is the
    annotated shot of that name (with its `scene`): rows of several characters naming it are one
    unit, and if their ranges differ the unit spans them all (with a warning). A range row
    without a `shot` cell is the annotated shot of exactly that range."""
    key: UnitKey
    if form == "shot":
        key, name = ("shot", shot.id), shot_label(shot)
    elif row.get("shot", "") != "":
        scene = name_cell(row.get("scene", "")) if row.get("scene", "") != "" else None
        number = name_cell(row["shot"])
        key = ("named", form, scene, number)
        name = f"{scene}/{number}" if scene is not None else number
    else:
        key, name = ("range", form, a, b), range_name(form, a, b)
    unit = units.get(key)
    if unit is None:
        units[key] = UnitDraft(form, a, b, name, line, (a, b))
    elif unit.first_range != (a, b):
        warnings.append(f"{path.name}:{line}: annotated shot {name} has the range {range_name(form, a, b)} "
                        f"here but {range_name(form, *unit.first_range)} on line {unit.line}; "
                        "counted as one shot spanning both.")
        unit.start, unit.end = min(unit.start, a), max(unit.end, b)
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


def map_to_annotated(shots: ShotsLike, units: Iterable[AnnotatedShot]) -> dict[int, UnitKey | None]:
    """`{Shot.id: AnnotatedShot.key or None}`: the annotated shot each indexed shot counts for.

    An indexed shot counts for the annotated shot it overlaps most (by time; the earlier one on
    equal overlap). Time that no annotated shot of the file covers is unknown footage: when the
    longest uncovered stretch inside the indexed shot is longer than its overlap with any
    annotated shot, or it overlaps none, it counts for no annotated shot (None), so that a cut a
    few frames off the annotator's does not make a shot of unknown people count for a known one.
    """
    ordered_shots = shot_list(shots)
    by_form: dict[str, list[AnnotatedShot]] = {}
    for unit in units:
        by_form.setdefault(unit.form, []).append(unit)
    # Per range form, units sorted by start and the running maximum of their ends: the units
    # that can touch [lo, hi] are those after the last prefix whose ends all lie before lo.
    index: dict[str, tuple[list[AnnotatedShot], list[float], list[float]]] = {}
    for form, group in by_form.items():
        group.sort(key=lambda u: (u.start, u.end))
        starts: list[float] = []
        max_ends: list[float] = []
        top = -math.inf
        for u in group:
            top = max(top, u.end)
            starts.append(u.start)
            max_ends.append(top)
        index[form] = (group, starts, max_ends)
    out: dict[int, UnitKey | None] = {}
    for shot in ordered_shots:
        spans: list[tuple[float, float, AnnotatedShot]] = []
        for form, (group, starts, max_ends) in index.items():
            lo: float
            hi: float
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
        best: AnnotatedShot | None = None
        best_overlap = 0.0
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
