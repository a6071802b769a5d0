"""Contender (b): what a DVD user does today to change embedding model.

Delete each ``database.json`` and build it again from ``captions/captions.json``
the way DeepVideoDiscovery's ``dvd/build_database.py`` does (see
``docs/notes/vllm-and-dvd-facts.md``):

* per video: read the captions, skip empty ones, cut them into batches of
  128, and embed the batches in a fresh ``multiprocessing.Pool`` of
  ``os.cpu_count() // 2`` workers with ``imap_unordered``;
* each batch is one ``requests.post`` of ``{"input": [...]}`` with no
  ``encoding_format`` (so the server answers float JSON), parsed with
  ``response.json()``; no session, so one new connection per request;
* the records get the ``[From t1 to t2 seconds]\\n`` prefix and
  ``np.array(embedding)`` vectors, then ``NanoVectorDB.upsert``,
  ``store_additional_data`` and ``save``.

DVD talks to Azure OpenAI; here the URL is vLLM's ``/v1/embeddings`` and the
payload names the model (vLLM needs it or takes the served one).  The retry
wrapper DVD puts around the call is left out: the benchmark server does not
fail.  On a one-core machine ``cpu_count() // 2`` is 0 and DVD would crash;
this keeps one worker.

Usage: python benchmarks/dvd_rebuild.py --root DIR --endpoint URL --model M --dim D
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np

# DVD's record layout and time format, and nano-vectordb imported without its INFO logging
from migrator.testing.corpus import NanoVectorDB, caption_text, dvd_time

_URL = None
_MODEL = None
BATCH = 128


def _init_worker(url: str, model: str) -> None:
    global _URL, _MODEL
    _URL, _MODEL = url, model


def embed_batch(batch: list) -> list:
    """One worker task: POST the batch's captions, return (times, info, embedding) rows."""
    import requests

    times, infos = [b[0] for b in batch], [b[2] for b in batch]
    payload = {"input": [b[1] for b in batch], "model": _MODEL}
    resp = requests.post(_URL, headers={"Content-Type": "application/json"}, data=json.dumps(payload), timeout=600)
    resp.raise_for_status()
    data = resp.json()["data"]
    if len(data) != len(batch):
        raise RuntimeError(f"asked for {len(batch)} embeddings, got {len(data)}")
    return list(zip(times, infos, [d["embedding"] for d in data]))


def read_scripts(captions_path: Path) -> list:
    with open(captions_path) as fh:
        captions = json.load(fh)
    captions.pop("subject_registry", None)
    captions.pop("character_registry", None)
    scripts = []
    for key, info in captions.items():
        cap = info.get("caption")
        if cap is None or len(cap) == 0:
            continue
        if isinstance(cap, list):
            info["caption"] = cap[0]
        elif not isinstance(cap, str):
            info["caption"] = str(cap)
        scripts.append((list(map(float, key.split("_"))), info["caption"], info))
    return scripts


def build_video(captions_path: Path, db_path: Path, dim: int, url: str, model: str) -> int:
    scripts = read_scripts(captions_path)
    batches = [scripts[i : i + BATCH] for i in range(0, len(scripts), BATCH)]
    rows: list = []
    with multiprocessing.Pool(
        max(1, (os.cpu_count() or 1) // 2), initializer=_init_worker, initargs=(url, model)
    ) as pool:
        for result in pool.imap_unordered(embed_batch, batches):
            rows.extend(result)
    vdb = NanoVectorDB(dim, storage_file=str(db_path))
    data = []
    for (t1, t2), info, emb in rows:
        data.append(
            {
                "__vector__": np.array(emb),
                "time_start_secs": t1,
                "time_end_secs": t2,
                "caption": caption_text(t1, t2, info["caption"]),
            }
        )
    vdb.upsert(data)
    with open(captions_path) as fh:
        captions = json.load(fh)
    registry = captions.pop("subject_registry", captions.pop("character_registry", None))
    length = max(float(k.split("_")[1]) for k in captions)
    vdb.store_additional_data(
        subject_registry=registry, video_length=dvd_time(length), video_file_root=str(db_path.parent), fps=2
    )
    vdb.save()
    return len(data)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--endpoint", required=True, help="base URL ending in /v1")
    ap.add_argument("--model", required=True)
    ap.add_argument("--dim", type=int, required=True)
    args = ap.parse_args(argv)
    url = args.endpoint.rstrip("/") + "/embeddings"
    records = 0
    videos = sorted(p for p in Path(args.root).iterdir() if (p / "captions" / "captions.json").exists())
    for video in videos:
        db_path = video / "database.json"
        if db_path.exists():
            os.remove(db_path)  # the user deletes the old database ...
        records += build_video(
            video / "captions" / "captions.json", db_path, args.dim, url, args.model
        )  # ... and DVD builds it again
    print(json.dumps({"databases": len(videos), "records": records}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
