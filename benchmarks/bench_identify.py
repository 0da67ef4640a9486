"""Which movie is this? `Engine.identify` measured on the development clips (../shared/data).

The four clips (Titanic, GoldenEye's frames, The Office, Supernatural) are indexed once into
INDEX_DIR (each a distractor for the others), with the settings of the environment (the real
detector and the default face+reid channels: CASTFINDER_MODELS_DIR=../shared/weights,
CASTFINDER_DETECTOR=…/person_yolov8s_falldet.pt, CASTFINDER_PERSON_CLASSES=0,1). Test images are
frames at random times (not the sampled ones), as sent (JPEG q90), recompressed at JPEG q40,
resized to 50 %, with black and grey borders added, and crops of the most prominent person of a
frame where the face channel finds a face. Reported: top-1 movie accuracy and the right shot in
the top 3. Then each clip is left out of the catalogue in turn (an index folder of the other three):
its frames should be "not in the catalogue".

    PYTHONPATH=. python benchmarks/bench_identify.py --index-dir /tmp/c1/idx --per-clip 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.media import recompressed  # noqa: E402  (the tests' own JPEG round-trip)

DATA = REPO.parent / "shared" / "data"
CLIPS = {  # movie name → (source to index, how to draw test frames)
    "Titanic": DATA / "titanic" / "titanic_20s.mp4",
    "GoldenEye": DATA / "goldeneye" / "frames",
    "The Office": DATA / "office" / "office_edit.mp4",
    "Supernatural": DATA / "supernatural" / "supernatural_edit.mp4",
}


@dataclass
class Probe:
    movie: str
    image: Image.Image
    time_s: float | None  # a video frame's time (its shot from the index), or
    shot: int | None  # a frames folder frame's shot number


def video_frames(path: Path, count: int, rng: random.Random) -> list[tuple[float, Image.Image]]:
    with av.open(str(path)) as container:
        frames = [(float(f.time), f.to_image()) for f in container.decode(video=0) if f.time is not None]
    # Not the first or last half second: the clips end on logo cards and begin mid-fade.
    usable = [f for f in frames if 0.5 <= f[0] <= frames[-1][0] - 0.5]
    return sorted(rng.sample(usable, min(count, len(usable))), key=lambda f: f[0])


def probes(count: int, seed: int) -> list[Probe]:
    rng = random.Random(seed)
    out = []
    for movie, source in CLIPS.items():
        if source.is_dir():
            files = sorted(source.glob("*.jpg"))
            for path in rng.sample(files, min(count, len(files))):
                shot = int(path.stem.split("shot_")[1].split("-")[0])
                out.append(Probe(movie, Image.open(path).convert("RGB"), None, shot))
        else:
            out += [Probe(movie, image, t, None) for t, image in video_frames(source, count, rng)]
    return out


def bordered(image: Image.Image) -> Image.Image:
    """Letterboxed into a 16:9 player with black bars, inside a dark grey window frame."""
    w, h = image.size
    inner = Image.new("RGB", (max(w, int(h * 16 / 9)), int(h * 1.3)), (0, 0, 0))
    inner.paste(image, ((inner.width - w) // 2, (inner.height - h) // 2))
    outer = Image.new("RGB", (inner.width + 40, inner.height + 60), (32, 32, 32))
    outer.paste(inner, (20, 40))
    return outer


VARIANTS = {
    "full frame (JPEG q90)": lambda im: recompressed(im, 90),
    "JPEG q40": lambda im: recompressed(im, 40),
    "resized to 50%": lambda im: recompressed(im.resize((im.width // 2, im.height // 2),
                                                        Image.Resampling.BILINEAR), 80),
    "black borders added": lambda im: recompressed(bordered(im), 80),
}


def ensure_indexed(engine, index_dir: Path) -> None:  # type: ignore[no-untyped-def]
    have = {m.name for m in engine.movies()}
    for movie, source in CLIPS.items():
        if movie not in have:
            print(f"indexing {movie} …", file=sys.stderr)
            engine.index(source, movie)


def true_shot(engine, probe: Probe) -> int | None:  # type: ignore[no-untyped-def]
    """The shot number a probe is from (None: unknown, for the shared query crops)."""
    if probe.shot is not None or probe.time_s is None:
        return probe.shot
    index = engine.open_index(probe.movie)
    return next(s.number for s in index.shots.values() if s.start_s <= probe.time_s < s.end_s)  # type: ignore[operator]


def person_crop(engine, image: Image.Image) -> Image.Image | None:  # type: ignore[no-untyped-def]
    """The most prominent person of `image`, when the face channel finds a face in the crop."""
    from core.search.images import crop

    people = engine.find_people(image)
    if not people:
        return None
    main = max(people, key=lambda p: p.score * p.area_fraction**0.5)
    cut = crop(image, main.bbox)
    face = engine.channel_for("face", engine.settings.model_for("face"))
    return cut if len(face.encode([cut]).rows) else None


def score(engine, cases: list[tuple[Probe, Image.Image]]) -> dict:  # type: ignore[no-untyped-def]
    top1 = shot3 = known = 0
    times = []
    confidences = []
    misses = []
    for probe, image in cases:
        started = time.perf_counter()
        response = engine.identify(image, top=3)
        times.append(time.perf_counter() - started)
        right = response.movie == probe.movie
        top1 += right
        confidences.append(response.confidence)
        shot = true_shot(engine, probe)
        known += shot is not None
        if right and shot is not None and shot in [s.shot for s in response.shots]:
            shot3 += 1
        if not right:
            misses.append({"movie": probe.movie, "time_s": probe.time_s, "shot": probe.shot,
                           "answer": response.movie, "confidence": round(response.confidence, 3),
                           "candidates": [c.name for c in response.candidates]})
    n = max(len(cases), 1)
    return {"n": len(cases), "top1": top1 / n, "shot_top3": shot3 / known if known else None,
            "median_s": float(np.median(times or [0])),
            "median_confidence": float(np.median(confidences or [0])), "misses": misses}


def left_out(engine, index_dir: Path, probes_: list[Probe]) -> dict:  # type: ignore[no-untyped-def]
    """Each clip's full frames against a catalogue of the other three: "not in the catalogue"?"""
    from core import Engine

    rejected = total = 0
    wrong = []
    for movie in CLIPS:
        with tempfile.TemporaryDirectory(prefix="castfinder-leave-out-") as tmp:
            for m in engine.movies():
                if m.name != movie:
                    (Path(tmp) / m.slug).symlink_to(m.path.resolve())
            other = Engine(engine.settings.model_copy(update={"index_dir": Path(tmp)}), load_models=False)
            other._models = engine._models  # the same loaded models
            try:
                for probe in (p for p in probes_ if p.movie == movie):
                    response = other.identify(recompressed(probe.image, 90))
                    total += 1
                    rejected += response.movie is None
                    if response.movie is not None:
                        wrong.append({"movie": movie, "answer": response.movie,
                                      "confidence": round(response.confidence, 3)})
            finally:
                other.catalog.close()
    return {"n": total, "rejected": rejected / max(total, 1), "false_answers": wrong}


def example(engine, path: Path) -> None:  # type: ignore[no-untyped-def]
    """A picture for the docs: a letterboxed, recompressed screenshot and what identify answers."""
    from PIL import ImageDraw

    from core import format_ts

    with av.open(str(CLIPS["The Office"])) as container:
        frame = next(f for f in container.decode(video=0) if f.time is not None and f.time >= 9.0).to_image()
    query = recompressed(bordered(frame), 40)
    response = engine.identify(query, top=1)
    best = response.shots[0]
    thumb = Image.open(best.thumbnail).convert("RGB")
    height = 240
    left = query.resize((round(query.width * height / query.height), height))
    right = thumb.resize((round(thumb.width * height / thumb.height), height))
    canvas = Image.new("RGB", (left.width + right.width + 60, height + 70), (255, 255, 255))
    canvas.paste(left, (20, 20))
    canvas.paste(right, (left.width + 40, 20))
    draw = ImageDraw.Draw(canvas)
    draw.text((20, height + 28), "screenshot: letterboxed, JPEG q40", fill=(0, 0, 0))
    draw.text((left.width + 40, height + 28),
              f"Looks like {response.movie}, shot {best.shot} at {format_ts(best.frame_s, decimals=0)}\n"
              f"{response.confidence:.0%} sure, found by {best.evidence}", fill=(0, 0, 0))
    canvas.save(path, "JPEG", quality=80)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--per-clip", type=int, default=20)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--example", type=Path, help="only draw the docs' example picture here (JPEG)")
    args = parser.parse_args()
    from core import Engine, Settings

    engine = Engine(Settings(index_dir=args.index_dir))
    ensure_indexed(engine, args.index_dir)
    if args.example:
        example(engine, args.example)
        engine.catalog.close()
        return 0
    report = engine.rebuild_catalog()
    sample = probes(args.per_clip, args.seed)
    results: dict = {"catalogue": {"movies": len(engine.movies()), "without_descriptors": report.without_descriptors}}
    for name, make in VARIANTS.items():
        results[name] = score(engine, [(p, make(p.image)) for p in sample])
        print(f"{name}: {results[name]['top1']:.3f} top-1, {results[name]['shot_top3']} shot in top 3 "
              f"(n={results[name]['n']})", file=sys.stderr)
    crops = [(p, c) for p in sample if (c := person_crop(engine, recompressed(p.image, 90))) is not None]
    results["person crop with a face"] = score(engine, crops)
    results["person crops of the shared queries"] = score(engine, [
        (Probe("GoldenEye", Image.open(q).convert("RGB"), None, None), Image.open(q).convert("RGB"))
        for q in sorted((DATA / "goldeneye" / "queries").glob("*.jpg"))] + [
        (Probe(movie, Image.open(q).convert("RGB"), None, None), Image.open(q).convert("RGB"))
        for movie, folder in (("The Office", "office"), ("Supernatural", "supernatural"))
        for q in sorted((DATA / folder / "queries").glob("*/*.jpg"))])
    results["left out of the catalogue"] = left_out(engine, args.index_dir, sample)
    engine.catalog.close()
    for name, r in results.items():
        if "top1" in r:
            shot3 = "-" if r["shot_top3"] is None else f"{r['shot_top3']:.3f}"
            print(f"| {name} | {r['n']} | {r['top1']:.3f} | {shot3} | {r['median_s']:.2f} s |")
    lo = results["left out of the catalogue"]
    print(f"left out: {lo['rejected']:.3f} answered 'not in the catalogue' (n={lo['n']})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
