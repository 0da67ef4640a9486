"""Feedback on an answer ("✓ that's them" / "✗ not them"): the query's vectors kept with its
result page, the taps turned into a `core.Feedback`, and the page re-ranked by the engine
(`Engine.refine`) without the screenshots. The handler is bot/handlers/feedback.py."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from core import Feedback, Mark, SearchResponse

from .storage import FeedbackTap, ResultPage, StoredResult

# Query vectors kept per channel, at most (evenly through them): 32 rows of a 768-d channel in
# float16 are 48 kB; an album of ten screenshots of everyone in them stays bounded.
MAX_STORED_ROWS = 32


def pack(vectors: dict[str, np.ndarray]) -> bytes | None:
    """The query's vectors as stored with its page (float16, at most MAX_STORED_ROWS per channel);
    None when there are none."""
    kept: dict[str, np.ndarray] = {}
    for name, rows in vectors.items():
        rows = np.asarray(rows)
        if rows.ndim != 2:
            continue
        if len(rows) > MAX_STORED_ROWS:
            rows = rows[np.linspace(0, len(rows) - 1, MAX_STORED_ROWS).astype(int)]
        kept[name] = rows.astype(np.float16)
    if not kept:
        return None
    buffer = io.BytesIO()
    save: Any = np.savez  # numpy's stubs type **arrays as its own keyword flags
    save(buffer, allow_pickle=False, **kept)
    return buffer.getvalue()


def unpack(data: bytes) -> dict[str, np.ndarray] | None:
    """Stored vectors back as float32; None when they do not read (never pickles)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            return {name: np.asarray(stored[name], dtype=np.float32) for name in stored.files}
    except (OSError, ValueError, KeyError, EOFError):
        return None


def stored_results(response: SearchResponse, first_rank: int = 1) -> list[StoredResult]:
    return [
        StoredResult(rank, r.shot, r.scene, r.start_s, r.end_s, r.confidence, r.thumbnail or "", r.low_confidence,
                     r.shot_id, r.crop, r.frame_s)
        for rank, r in enumerate(response.results, start=first_rank)
    ]


def feedback_of(taps: Sequence[FeedbackTap]) -> Feedback:
    """The taps as engine feedback: a shot's last tap counts (a ✓ after a ✗ takes the ✗ back)."""
    last: dict[int, FeedbackTap] = {}
    for tap in taps:
        last.pop(tap.shot_id, None)
        last[tap.shot_id] = tap
    marks = {v: tuple(Mark(t.shot_id, t.crop if t.crop >= 0 else None) for t in last.values() if t.verdict == v)
             for v in ("yes", "no")}
    return Feedback(positives=marks["yes"], negatives=marks["no"])


def counts(taps: Sequence[FeedbackTap]) -> tuple[int, int]:
    """Shots judged "that's them" and "not them", as they stand after the taps."""
    feedback = feedback_of(taps)
    return len(feedback.positives), len(feedback.negatives)


def refreshed(page: ResultPage, response: SearchResponse) -> ResultPage:
    """The page with the re-ranked results, one version later."""
    return replace(page, results=stored_results(response), version=page.version + 1)
