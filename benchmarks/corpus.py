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

Each tree is built once under ``<work>/corpora/<key>/`` with a manifest, its
files made read-only, and every contender gets a copy made of hard links
(``link_copy``).  None of the three contenders writes a file in place (each
writes a new file and renames it, or deletes and re-creates), so the shared
inodes never change; read-only modes turn a mistake into an error rather than
a corrupted cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator, Optional

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


def _build_one(args: tuple) -> tuple[int, int, int]:
    """Write one video folder; returns (records, tokens, chars)."""
    video_dir, n_clips, seed = args
    video_dir = Path(video_dir)
    rng = random.Random(seed)
    captions = make_captions(rng, n_clips)
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


def corpus_key(databases: int, records: int, seed: int) -> str:
    return f"dvd-{databases}db-{records}rec-s{seed}-v{FORMAT}"


def ensure_corpus(
    work: Path, databases: int, records: int, *, seed: int = 0, jobs: Optional[int] = None, log=print
) -> dict:
    """Build (or reuse) a tree of *databases* DVD databases holding *records*
    records in all; returns its manifest (with ``root``)."""
    base = work / "corpora" / corpus_key(databases, records, seed)
    man_path = base / MANIFEST
    if man_path.exists():
        man = json.loads(man_path.read_text())
        man["root"] = str(base / "video_database")
        return man
    if base.exists():
        _make_writable(base)
        shutil.rmtree(base)
    root = base / "video_database"
    root.mkdir(parents=True)
    rng = random.Random(seed)
    counts = split_records(records, databases, rng)
    ids = video_ids(rng, databases)
    tasks = [(str(root / vid), n, rng.getrandbits(63)) for vid, n in zip(ids, counts)]
    log(f"building corpus {base.name}: {databases} databases, {records} records ...")
    t0 = time.monotonic()
    jobs = jobs or max(1, min(os.cpu_count() or 1, 4))
    totals = [0, 0, 0]
    if jobs == 1 or databases < 8:
        results = map(_build_one, tasks)
    else:
        pool = ProcessPoolExecutor(jobs)
        results = pool.map(_build_one, tasks, chunksize=max(1, databases // (jobs * 16)))
    for r in results:
        for i in range(3):
            totals[i] += r[i]
    if jobs != 1 and databases >= 8:
        pool.shutdown()
    for p in root.rglob("*.json"):
        os.chmod(p, 0o444)
    man = {
        "key": base.name,
        "format": FORMAT,
        "databases": databases,
        "records": totals[0],
        "tokens": totals[1],
        "chars": totals[2],
        "seed": seed,
        "old_dim": OLD_DIM,
        "bytes": sum(p.stat().st_size for p in root.glob("*/database.json")),
        "build_seconds": round(time.monotonic() - t0, 1),
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
