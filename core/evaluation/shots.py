"""The indexed shots as the ground truth sees them: in time order, and named as reports show them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, Union, runtime_checkable

from ..types import Shot


@runtime_checkable
class HasShots(Protocol):
    """A loaded index (`MovieIndex`), or anything else that carries its shots by id."""

    @property
    def shots(self) -> Mapping[int, Shot]: ...


ShotsLike = Union[Iterable[Shot], Mapping[int, Shot], HasShots]


def shot_list(shots: ShotsLike) -> list[Shot]:
    """Accepts a list of Shot, the `{id: Shot}` of a MovieIndex, or anything with `.shots`."""
    if isinstance(shots, Mapping):
        return _in_time_order(shots.values())
    if isinstance(shots, (list, tuple)) or not isinstance(shots, HasShots):
        return _in_time_order(shots)
    return shot_list(shots.shots)


def _in_time_order(shots: Iterable[Shot]) -> list[Shot]:
    return sorted(shots, key=lambda s: (s.start_frame, s.id))


def shot_label(shot: Shot) -> str:
    """`scene/shot` for a frames folder's shots, the shot number alone for a video's."""
    return f"{shot.scene}/{shot.number}" if shot.scene is not None else str(shot.number)
