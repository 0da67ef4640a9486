"""The cast on the development clips: how pure its identities are, how many ground-truth characters
get one of their own, across clustering thresholds; and searching from a cast entry against
searching from the query screenshots (AP, side by side). docs/EVALUATION.md, "The cast".

    CASTFINDER_MODELS_DIR=../shared/weights CASTFINDER_DETECTOR=../shared/weights/person_yolov8s_falldet.pt \\
    CASTFINDER_PERSON_CLASSES=0,1 CASTFINDER_INDEX_DIR=/tmp/c2cast/idx python benchmarks/bench_cast.py

with the clips indexed into that folder first (`castfinder index CLIP --movie office --fps 2`, likewise
supernatural, goldeneye (the frames folder) and titanic). The threshold is chosen on all clips
together: the most characters with an identity of their own, then the best balance of purity
and completeness (their harmonic mean).

Purity is measured per face track against the annotators' list of who is clearly visible in each
shot (`shots.csv`'s `who` for office and supernatural; the ground truth's characters for goldeneye
and titanic): an identity's majority person is the one present in the most of its tracks' shots,
and a track counts as pure when that person is in its shot. A shot with two people lets either
count, so purity is an upper bound where people share shots; single-person shots dominate the
clips. A character "gets its own identity" when an identity with at least 2 tracks has it as its
majority person with purity >= 0.5.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from core import Engine
from core.cast import find_identities
from core.evaluation import load_ground_truth, score_ranking
from core.search.images import QueryImage
from core.store.reader import _faiss_ids
from core.types import CastMember

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")
CLIPS = {"office": "office", "supernatural": "supernatural", "goldeneye": "goldeneye", "titanic": "titanic"}
THRESHOLDS = [0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9]
TITANIC_QUERIES = {"jack": ["portrait_jack.jpg", "body_jack.jpg"],
                   "rose": ["portrait_rose.jpg", "body_rose.jpg", "face_rose.jpg"]}


def visible(clip: str, index, truth) -> dict[int, set[str]]:
    """Shot.id -> who is clearly visible in it."""
    who: dict[int, set[str]] = {s: set() for s in index.shots}
    for name, t in truth.items():
        for shot in t.relevant:
            who[shot].add(name)
    table = DATA / clip / "shots.csv"
    if table.exists():
        with open(table, newline="") as fh:
            rows = list(csv.DictReader(fh))
        for shot in index.shots.values():
            best = max(rows, key=lambda r: min(shot.end_s, float(r["end_s"])) - max(shot.start_s, float(r["start_s"])))
            who[shot.id] |= {w.strip() for w in best["who"].replace(";", " ").replace(",", " ").split() if w.strip()}
    return who


def measure(identities, index, who: dict[int, set[str]], characters: list[str]) -> dict:
    first_crop = {}
    for crop, track in enumerate(index.crop_track.tolist()):
        first_crop.setdefault(track, crop)
    pure = labelled = 0
    owners: dict[str, list[tuple[int, float]]] = {c: [] for c in characters}
    sizes = []
    for n, ident in enumerate(identities):
        shots = [int(index.crop_shot[first_crop[t]]) for t in ident.tracks]
        seen = [who[s] for s in shots if who[s]]
        sizes.append(len(ident.tracks))
        if not seen:
            continue
        counts = Counter(p for people in seen for p in people)
        major, _ = counts.most_common(1)[0]
        ok = sum(major in people for people in seen)
        pure += ok
        labelled += len(seen)
        if major in owners and len(ident.tracks) >= 2:
            owners[major].append((n, ok / len(seen)))
    own = [c for c, found in owners.items() if any(p >= 0.5 for _, p in found)]
    # Completeness: of a character's tracks in shots showing only them, the share in the one
    # identity holding most of them (1: never split).
    together = alone = 0
    split: dict[str, int] = {}
    for c in characters:
        where = Counter(n for n, ident in enumerate(identities) for t in ident.tracks
                        if who[int(index.crop_shot[first_crop[t]])] == {c})
        if where:
            together += where.most_common(1)[0][1]
            alone += sum(where.values())
            split[c] = len(where)
    return {"identities": len(identities), "multi": sum(s >= 2 for s in sizes), "purity": pure / max(labelled, 1),
            "own": own, "owners": owners, "pure": pure, "labelled": labelled, "together": together, "alone": alone,
            "split": split}


def members_of(identities, index) -> list[CastMember]:
    """In-memory cast members (as the index would store them at this threshold)."""
    out = []
    for n, ident in enumerate(identities, start=1):
        mine = np.isin(index.crop_track, ident.tracks)
        shots = tuple(int(s) for s in np.unique(index.crop_shot[mine]))
        screen = sum(index.shots[s].duration_s for s in shots)
        out.append(CastMember(n, n, screen, 0.0, shots, float(index.crop_time[mine].min()), len(ident.tracks),
                              tuple(int(c) for c in ident.face_crops), None))
    return out


def main() -> int:
    engine = Engine(load_models=False)
    per_clip = {}
    for clip, movie in CLIPS.items():
        index = engine.open_index(movie)
        gt = DATA / clip / "ground_truth.csv"
        truth = load_ground_truth(gt, index, movie=clip)
        ids = np.unique(_faiss_ids(index.faiss["face"]))
        vecs = index.vectors("face", ids)
        per_clip[clip] = (index, truth, ids, vecs, visible(clip, index, truth))
    print("threshold | identities (>=2 tracks) | purity | completeness | characters with their own identity")
    best = None
    for t in THRESHOLDS:
        own, pure, labelled, idents, multi, together, alone = [], 0, 0, 0, 0, 0, 0
        for clip, (index, truth, ids, vecs, who) in per_clip.items():
            m = measure(find_identities(vecs, ids, index.crop_track, t), index, who, sorted(truth))
            own += [f"{clip}/{c}" for c in m["own"]]
            pure, labelled = pure + m["pure"], labelled + m["labelled"]
            idents, multi = idents + m["identities"], multi + m["multi"]
            together, alone = together + m["together"], alone + m["alone"]
        purity, completeness = pure / max(labelled, 1), together / max(alone, 1)
        print(f"{t:.2f} | {idents} ({multi}) | {purity:.3f} | {completeness:.3f} | {len(own)}/10 "
              f"{' '.join(sorted(own))}")
        # The most characters with an identity of their own, then the best balance of purity
        # (never two people in one) and completeness (never one person in two).
        key = (len(own), round(2 * purity * completeness / max(purity + completeness, 1e-9), 3))
        if best is None or key > best[0]:
            best = (key, t)
    assert best is not None
    chosen = float(sys.argv[1]) if len(sys.argv) > 1 else best[1]
    print(f"\nchosen threshold {chosen}\n")
    print("clip | character | AP from the query images | AP from its cast entry (identity: tracks, purity)")
    for clip, (index, truth, ids, vecs, who) in per_clip.items():
        identities = find_identities(vecs, ids, index.crop_track, chosen)
        m = measure(identities, index, who, sorted(truth))
        members = members_of(identities, index)
        index.cast = lambda members=members: members  # searched as if stored at this threshold
        for name, t in sorted(truth.items()):
            depth = len(index.shots)
            if clip == "titanic":
                images = [DATA / "titanic" / f for f in TITANIC_QUERIES[name]]
            elif (DATA / clip / "queries" / name).is_dir():
                images = sorted((DATA / clip / "queries" / name).iterdir())
            else:
                images = sorted((DATA / clip / "queries").glob(f"{name}_*.jpg"))
            if images:
                r = engine.search(index.info, [QueryImage(p) for p in images], top=depth)
                ap_q = score_ranking([x.shot_id for x in r.results], t.relevant, t.ignored).ap
            else:
                ap_q = None
            found = sorted(m["owners"][name], key=lambda o: -len(identities[o[0]].tracks))
            if found:
                n, purity = found[0]
                r = engine.search_identity(index.info, members[n].identity, top=depth)
                ap_c = score_ranking([x.shot_id for x in r.results], t.relevant, t.ignored).ap
                cast = f"{ap_c:.3f} ({len(identities[n].tracks)} tracks, purity {purity:.2f})"
            else:
                cast = "no identity of its own"
            print(f"{clip} | {name} | {'-' if ap_q is None else f'{ap_q:.3f}'} | {cast} | "
                  f"split over {m['split'].get(name, 0)} identities")
    return 0


if __name__ == "__main__":
    sys.exit(main())
