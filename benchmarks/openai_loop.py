"""Contender (c): the plain script a user would write with the openai SDK.

For each ``database.json``: load it, strip DVD's time prefix from each
caption, call ``client.embeddings.create(model=..., input=batch)`` for one
batch of N texts after another (SDK defaults: it asks for base64 and decodes
it), then write a new NanoVectorDB at the new dimension with the same records
and ids, and rename it over the old file.  Sequential: one request in flight.

Usage: python benchmarks/openai_loop.py --root DIR --endpoint URL --model M --dim D [--batch N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from migrator.apps.dvd import DVD_PREFIX
from migrator.testing.corpus import NanoVectorDB


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args(argv)
    import openai

    client = openai.OpenAI(base_url=args.endpoint, api_key=os.environ.get("OPENAI_API_KEY", "EMPTY"))
    paths = sorted(Path(args.root).glob("*/database.json"))
    records = 0
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        rows = doc["data"]
        texts = [DVD_PREFIX.sub("", r["caption"], count=1) for r in rows]
        vectors = []
        for i in range(0, len(texts), args.batch):
            resp = client.embeddings.create(model=args.model, input=texts[i : i + args.batch])
            vectors.extend(d.embedding for d in sorted(resp.data, key=lambda d: d.index))
        tmp = path.with_name(path.name + ".new")
        new = NanoVectorDB(args.dim, storage_file=str(tmp))
        new.upsert([{**r, "__vector__": np.array(v, dtype=np.float32)} for r, v in zip(rows, vectors)])
        if doc.get("additional_data"):
            new.store_additional_data(**doc["additional_data"])
        new.save()
        os.replace(tmp, path)
        records += len(rows)
    print(json.dumps({"databases": len(paths), "records": records}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
