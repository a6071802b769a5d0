"""The vectors of an answer: made unit length, and sent as vLLM sends them.

``float`` and ``base64`` answers are JSON, each vector in its ``data`` item.
``bytes`` (vLLM 0.11.1 and later) sends the raw arrays back to back as
``application/octet-stream`` with a JSON ``metadata`` header holding ``id``,
``created``, ``model``, ``data`` (each input's ``index``, ``embed_dtype``,
``endianness``, byte ``start`` and ``end`` and ``shape``) and ``usage``;
``bytes_only`` (0.13 and later) is the same body with no header at all.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from migrator.testing.server.replies import _json_reply, _Reply

JSON_FORMATS = ("float", "base64")
BYTES_FORMATS = ("bytes", "bytes_only")
#: embed_dtype values vLLM knows; numpy can write the first two (bfloat16 and fp8 it cannot)
EMBED_DTYPES = ("float32", "float16", "bfloat16", "fp8_e4m3", "fp8_e5m2")
WRITABLE_DTYPES = {"float32": "f4", "float16": "f2"}
ENDIANNESS = ("native", "big", "little")


@dataclass(frozen=True)
class Wire:
    """How the request asked for its vectors."""

    format: str = "float"
    embed_dtype: str = "float32"
    endianness: str = "native"

    def dtype(self) -> np.dtype:
        order = {"little": "<", "big": ">", "native": "="}[self.endianness]
        return np.dtype(order + WRITABLE_DTYPES[self.embed_dtype])


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return (v / norm).astype(np.float32) if norm > 0 else v.astype(np.float32)


def _encode(v: np.ndarray, wire: Wire) -> Any:
    if wire.format == "base64":
        return base64.b64encode(np.asarray(v, dtype=wire.dtype()).tobytes()).decode("ascii")
    return np.asarray(v, dtype=np.float32).tolist()


def embeddings_reply(
    vectors: list[np.ndarray],
    wire: Wire,
    model: str,
    tokens: int,
    mangle: Optional[Callable[[list[dict]], list[dict]]] = None,
) -> _Reply:
    """The 200 answer to an embeddings request, in the format it asked for. ``mangle`` may
    reorder, drop or duplicate the per-input items (the faults tests queue)."""
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    rid, created = f"embd-{uuid.uuid4().hex}", int(time.time())
    if wire.format in BYTES_FORMATS:
        dtype = wire.dtype()
        body, items, offset = [], [], 0
        for i, v in enumerate(vectors):
            raw = np.asarray(v, dtype=dtype).tobytes()
            items.append(
                {
                    "index": i,
                    "embed_dtype": wire.embed_dtype,
                    "endianness": wire.endianness,
                    "start": offset,
                    "end": offset + len(raw),
                    "shape": [len(v)],
                }
            )
            body.append(raw)
            offset += len(raw)
        if mangle is not None:
            items = mangle(items)
        headers = {}
        if wire.format == "bytes":
            meta = {"id": rid, "created": created, "model": model, "data": items, "usage": usage}
            headers["metadata"] = json.dumps(meta)
        return _Reply(200, b"".join(body), "application/octet-stream", headers)
    data = [{"index": i, "object": "embedding", "embedding": _encode(v, wire)} for i, v in enumerate(vectors)]
    if mangle is not None:
        data = mangle(data)
    return _json_reply(
        200,
        {
            "id": rid,
            "object": "list",
            "created": created,
            "model": model,
            "data": data,
            "usage": {**usage, "completion_tokens": 0, "prompt_tokens_details": None},
        },
    )
