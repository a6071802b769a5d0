"""Benchmark corpora: DVD video-database trees, cached and shared read-only.

A tree looks like what DVD's ``build_database.py`` leaves behind::

    <root>/<video_id>/captions/captions.json
    <root>/<video_id>/database.json        (3072 dims, written by nano-vectordb)
    <root>/<video_id>/frames/

Captions come from ``migrator.testing.corpus.make_captions`` (English scene
descriptions of 50-300 tokens).  The *old* vectors only have to be valid
3072-dim rows, so they are cheap Gaussian rows (float64, as DVD passes them)
rather than the stand-in model's; nano-vectordb normalises them and derives
the record ids (md5 of the vector) exactly as it does for DVD.

Records per database follow a *shape* (``SHAPES``): ``flat`` (the default, the
benchmark's original corpora: records spread +-50% around a given mean) or the
record counts of DVD's evaluation benchmarks, one record per 10-second clip:
``long`` (LVBench), ``medium`` (Video-MME), ``short`` (EgoSchema) and
``mixed`` (a third of the databases from each).

Each tree is built once under ``<work>/corpora/<key>/`` with a manifest, its
files made read-only, and every contender gets a copy made of hard links
(``link_copy``).  None of the three contenders writes a file in place (each
writes a new file and renames it, or deletes and re-creates), so the shared
inodes never change; read-only modes turn a mistake into an error rather than
a corrupted cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import shutil
import stat
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from migrator.testing.corpus import NanoVectorDB, caption_text, dvd_time, make_captions, video_ids
from migrator.testing.embedder import prompt_words

OLD_DIM = 3072
MANIFEST = "bench-manifest.json"
FORMAT = 2  # bump when the layout or the text generator changes


# ----------------------------------------------------------------- DVD text
def clip_texts(captions: dict) -> list[tuple[float, float, str]]:
    """(start, end, bare caption) for each caption DVD would embed, in file order."""
    out = []
    for key, info in captions.items():
        if key in ("subject_registry", "character_registry"):
            continue
        text = info.get("caption")
        if not text:
            continue
        if isinstance(text, list):
            text = text[0]
        start, end = (float(x) for x in key.split("_"))
        out.append((start, end, str(text)))
    return out


# ------------------------------------------------------------------ layout
def split_records(
    total: int, databases: int, rng: random.Random, spread: tuple[float, float] = (0.5, 1.5)
) -> list[int]:
    """Records per database: around the mean, at least 1 each, summing to *total*."""
    if databases < 1 or total < databases:
        raise ValueError("need at least one record per database")
    mean = total / databases
    lo, hi = max(1, int(mean * spread[0])), max(1, int(round(mean * spread[1])))
    counts = [rng.randint(lo, hi) for _ in range(databases)]
    # nudge to the exact total, one record at a time, never below 1
    diff = total - sum(counts)
    i = 0
    while diff:
        j = i % databases
        if diff > 0:
            counts[j] += 1
            diff -= 1
        elif counts[j] > 1:
            counts[j] -= 1
            diff += 1
        i += 1
    return counts


# ------------------------------------------------------------------ shapes
#: DVD makes one record per 10-second clip (config.CLIP_SECS): an hour is 360 records.
CLIP_SECS = 10


def _triangular(rng: random.Random, lo: int, hi: int, mode: float) -> int:
    """An integer in [lo, hi] from a triangular distribution peaking at *mode*."""
    return min(hi, max(lo, int(rng.triangular(lo - 0.5, hi + 0.5, mode) + 0.5)))


def _draw_long(rng: random.Random) -> int:
    # LVBench: 103 videos, 117 hours, 4,101 s (68 min, 410 clips) on average, none
    # under half an hour, a few of several hours. A log-normal (median 300 clips, sigma
    # 0.55), redrawn until it falls in 200-1,500 (33 min to 4.2 h), is right-skewed like
    # that: mean about 405 records, median about 350, 90th percentile about 650, and
    # about 1.6% of databases at 1,000 records or more.
    while True:
        n = int(round(rng.lognormvariate(math.log(300), 0.55)))
        if 200 <= n <= 1500:
            return n


def _draw_medium(rng: random.Random) -> int:
    # Video-MME has three equal duration classes: short (< 2 min), medium (4-15 min,
    # 516 s on average) and long (30-60 min, 2,467 s on average). This shape is its
    # medium and long classes (the short class is about what `short` is): half the
    # databases are 24-90 records peaking at 40 (mean about 51, 8.6 min), half are
    # 180-360 peaking at 210 (mean about 250, 41.7 min). Bimodal, as Video-MME is,
    # with both class means matched; about 150 records per database over all.
    if rng.random() < 0.5:
        return _triangular(rng, 24, 90, 40)
    return _triangular(rng, 180, 360, 210)


def _draw_short(rng: random.Random) -> int:
    # EgoSchema: every clip is 3 minutes, 18 records of 10 s. 16-20 (peaking at 18)
    # leaves room for clips cut a little shorter or longer and DVD's rounding of
    # the last clip.
    return _triangular(rng, 16, 20, 18)


SHAPES_VERSION = 1  # bump when a shape's distribution changes (cached shaped corpora are rebuilt)


@dataclass(frozen=True)
class Shape:
    """How many records each database of a tree gets."""

    name: str
    lo: int  # fewest records a database of this shape gets (flat: none fixed)
    hi: int  # most
    about: str
    draw: Optional[Callable[[random.Random], int]] = None  # one database's records
    parts: tuple[str, ...] = ()  # mixed: the shapes it takes equal numbers of databases from
    speech: Optional[float] = None  # captions end with DVD's transcript, this share of them spoken


SHAPES: dict[str, Shape] = {
    "flat": Shape("flat", 1, 10**9, "records spread +-50% around a given mean (the original corpora: 22 per database)"),
    "long": Shape("long", 200, 1500, "LVBench-like: 200-1,500 records (33 min to 4.2 h), mean about 405", _draw_long),
    "medium": Shape(
        "medium",
        24,
        360,
        "Video-MME-like: 24-90 and 180-360 records (4-15 and 30-60 min), mean about 150",
        _draw_medium,
    ),
    "short": Shape("short", 16, 20, "EgoSchema-like: 16-20 records (3-minute clips), mean 18", _draw_short),
    # DVD's full mode appends each clip's transcript to its caption ("Transcript during this
    # video clip: ..."). On talk-heavy long videos (lectures, vlogs, interviews) most clips
    # have speech, and a caption runs to several hundred tokens: 61-738 here, mean about 270.
    "talk": Shape(
        "talk",
        200,
        1500,
        "long videos with DVD's transcripts: LVBench-like counts, 70% of captions carry 20-450 tokens of speech",
        _draw_long,
        speech=0.7,
    ),
    # A third of the databases from each of long, medium and short (by count, exactly as
    # near as the count allows, in shuffled order): what a DVD user who ran all three of
    # its benchmarks keeps. By records it is about 70% long, 26% medium, 3% short.
    "mixed": Shape(
        "mixed",
        16,
        1500,
        "a third of the databases each from long, medium and short",
        parts=("long", "medium", "short"),
    ),
}


def shape_spec(name: str) -> str:
    """What identifies a shape's distribution in a manifest (a cache built with other rules is rebuilt)."""
    sh = get_shape(name)
    spoken = "" if sh.speech is None else f":speech{sh.speech}"
    return f"{sh.name}:{sh.lo}-{sh.hi}:{'+'.join(sh.parts)}{spoken}:v{SHAPES_VERSION}"


def get_shape(name: str) -> Shape:
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(f"unknown corpus shape {name!r} (one of {', '.join(SHAPES)})") from None


@functools.lru_cache(maxsize=None)
def shape_mean(name: str) -> float:
    """Mean records per database of a shape (from 20,000 draws with a fixed seed)."""
    sh = get_shape(name)
    if sh.parts:
        return sum(shape_mean(p) for p in sh.parts) / len(sh.parts)
    if sh.draw is None:
        raise ValueError("the flat shape has no mean of its own: it is given one")
    rng = random.Random(12345)
    return sum(sh.draw(rng) for _ in range(20_000)) / 20_000


def databases_for(shape: str, records: int, minimum: int = 1) -> int:
    """How many databases of *shape* hold about *records* records in all."""
    return max(minimum, int(round(records / shape_mean(shape))))


def shape_layout(shape: str, databases: int, rng: random.Random) -> list[tuple[str, int]]:
    """(shape each database is drawn from, its records) for a shaped tree."""
    sh = get_shape(shape)
    if sh.parts:
        kinds = [sh.parts[i % len(sh.parts)] for i in range(databases)]
        rng.shuffle(kinds)
    else:
        kinds = [shape] * databases
    return [(k, get_shape(k).draw(rng)) for k in kinds]


def _build_one(args: tuple) -> tuple[int, int, int]:
    """Write one video folder; returns (records, tokens, chars)."""
    video_dir, n_clips, seed, speech = args
    video_dir = Path(video_dir)
    rng = random.Random(seed)
    captions = make_captions(rng, n_clips, speech=speech)
    (video_dir / "captions").mkdir(parents=True, exist_ok=True)
    (video_dir / "frames").mkdir(exist_ok=True)
    with open(video_dir / "captions" / "captions.json", "w") as fh:
        json.dump(captions, fh, indent=4)
    clips = clip_texts(captions)
    vecs = np.random.default_rng(seed).standard_normal((len(clips), OLD_DIM))
    records = [
        {"__vector__": vecs[i], "time_start_secs": s, "time_end_secs": e, "caption": caption_text(s, e, text)}
        for i, (s, e, text) in enumerate(clips)
    ]
    db = NanoVectorDB(OLD_DIM, storage_file=str(video_dir / "database.json"))
    db.upsert(records)
    ends = [float(k.split("_")[1]) for k in captions if "_" in k and k[0].isdigit()]
    db.store_additional_data(
        subject_registry=captions.get("subject_registry"),
        video_length=dvd_time(max(ends)),
        video_file_root=os.path.abspath(video_dir),
        fps=2,
    )
    db.save()
    tokens = sum(prompt_words(t)[1] for _, _, t in clips)
    chars = sum(len(t) for _, _, t in clips)
    return len(clips), tokens, chars


def corpus_key(databases: int, records: Optional[int], seed: int, shape: str = "flat") -> str:
    if shape == "flat":  # the original key, so corpora cached before shapes existed are reused
        return f"dvd-{databases}db-{records}rec-s{seed}-v{FORMAT}"
    return f"dvd-{shape}-{databases}db-s{seed}-v{FORMAT}"


def ensure_corpus(
    work: Path,
    databases: Optional[int],
    records: Optional[int] = None,
    *,
    seed: int = 0,
    shape: str = "flat",
    jobs: Optional[int] = None,
    log=print,
) -> dict:
    """Build (or reuse) a tree of DVD databases; returns its manifest (with ``root``).

    ``flat`` (the default): *databases* databases holding exactly *records* records
    in all, spread +-50% around the mean.  Any other shape: *databases* databases,
    each with a record count drawn from the shape (*records* is then ignored); with
    *databases* None, as many as hold about *records* records in all.
    """
    sh = get_shape(shape)
    if sh.name != "flat" and not databases:
        if not records:
            raise ValueError("give the number of databases, or the records in all")
        databases = databases_for(shape, records)
    if not databases or databases < 1:
        raise ValueError("need at least one database")
    if sh.name == "flat" and records is None:
        raise ValueError("the flat shape needs the records in all")
    base = work / "corpora" / corpus_key(databases, records, seed, sh.name)
    man_path = base / MANIFEST
    if man_path.exists():
        man = json.loads(man_path.read_text())
        if man.get("shape", "flat") == sh.name and man.get("shape_spec", shape_spec("flat")) == shape_spec(sh.name):
            man.setdefault("shape", "flat")
            man["root"] = str(base / "video_database")
            return man
    if base.exists():
        _make_writable(base)
        shutil.rmtree(base)
    root = base / "video_database"
    root.mkdir(parents=True)
    rng = random.Random(seed)
    if sh.name == "flat":
        counts = split_records(records, databases, rng)
        kinds = ["flat"] * databases
    else:
        kinds, counts = (list(x) for x in zip(*shape_layout(sh.name, databases, rng)))
    ids = video_ids(rng, databases)
    tasks = [(str(root / vid), n, rng.getrandbits(63), get_shape(k).speech) for vid, k, n in zip(ids, kinds, counts)]
    log(f"building corpus {base.name}: {databases} databases, {sum(counts)} records ({sh.name}) ...")
    t0 = time.monotonic()
    jobs = min(jobs or max(1, min(os.cpu_count() or 1, 4)), databases)
    totals = [0, 0, 0]
    pool = None
    if jobs == 1 or (databases < 8 and sum(counts) < 2_000):  # a pool costs more than it saves
        results = map(_build_one, tasks)
    else:
        pool = ProcessPoolExecutor(jobs)
        results = pool.map(_build_one, tasks, chunksize=max(1, databases // (jobs * 16)))
    for r in results:
        for i in range(3):
            totals[i] += r[i]
    if pool is not None:
        pool.shutdown()
    for p in root.rglob("*.json"):
        os.chmod(p, 0o444)
    man = {
        "key": base.name,
        "format": FORMAT,
        "shape": sh.name,
        "shape_spec": shape_spec(sh.name),
        "databases": databases,
        "records": totals[0],
        "tokens": totals[1],
        "chars": totals[2],
        "records_per_db": {"min": min(counts), "max": max(counts), "mean": round(sum(counts) / databases, 1)},
        "databases_by_shape": {k: kinds.count(k) for k in (sh.parts or (sh.name,)) if k in kinds},
        "seed": seed,
        "old_dim": OLD_DIM,
        "bytes": sum(p.stat().st_size for p in root.glob("*/database.json")),
        "build_seconds": round(time.monotonic() - t0, 1),
        # video id -> [shape it was drawn from, records]
        "layout": {vid: [k, n] for vid, k, n in zip(ids, kinds, counts)},
    }
    man_path.write_text(json.dumps(man, indent=2))
    log(
        f"  built in {man['build_seconds']} s: {man['records']} records, {man['tokens']} tokens, "
        f"{man['bytes'] / 1e6:.0f} MB"
    )
    man["root"] = str(root)
    return man


def _make_writable(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            os.chmod(p, stat.S_IRUSR | stat.S_IWUSR)


def link_copy(src: Path, dst: Path) -> None:
    """Copy a tree as hard links (directories are real)."""
    src, dst = Path(src), Path(dst)
    for dirpath, _dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            os.link(Path(dirpath) / name, dst / rel / name)


def remove_tree(path: Path) -> None:
    if Path(path).exists():
        shutil.rmtree(path, ignore_errors=True)


def iter_texts(root: Path) -> Iterator[str]:
    """Every bare caption of a tree, from the captions files."""
    for cap in sorted(Path(root).glob("*/captions/captions.json")):
        for _, _, text in clip_texts(json.loads(cap.read_text())):
            yield text


def corpus_digests(root: Path) -> set[str]:
    """Digests of every text, as bench_server.text_digest computes them."""
    return {
        hashlib.blake2b(" ".join(prompt_words(t)[0]).encode("utf-8"), digest_size=8).hexdigest()
        for t in iter_texts(root)
    }
