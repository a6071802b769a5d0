"""A fake vLLM embeddings server for tests, the demo and benchmarks.

It speaks the HTTP protocol of vLLM's OpenAI-compatible server as a client
sees it (see ``docs/notes/vllm-and-dvd-facts.md``): ``/v1/embeddings``,
``/v1/models``, ``/tokenize``, ``/detokenize``, ``/health``, ``/metrics``,
bearer-key auth on ``/v1/*``, both error shapes, the context-length 400, the
``dimensions`` (Matryoshka) 400, the ``normalize`` 400 - and vLLM's worst
habit: a prompt of *exactly* ``max_model_len`` tokens hangs forever
(vllm#29496) and, by default, stalls every later embedding request while
``/health`` keeps answering 200.

The "model" is ``migrator.testing.embedder``: deterministic feature hashing,
never a real model.  On top of that, tests make the endpoint hostile with
queued faults (``srv.faults.add("status", status=503)`` or, for a server in
another process, ``POST /_admin/faults``).  ``/_admin/*`` exists only here.

``/metrics`` speaks vLLM's Prometheus text format (``vllm:num_requests_waiting
{engine="0",model_name="..."} 0.0``).  The fake itself never queues (every
request runs at once, sharing the capacity), so its own waiting figure is 0;
tests play other tenants of a shared GPU with ``srv.other_waiting`` /
``srv.other_running`` (added to the figures) and ``srv.engines`` (the figures
split over that many ``engine`` label sets, like a data-parallel vLLM), or
``POST /_admin/queue {"waiting": 12, "running": 3, "engines": 2}``.

In-process::

    with FakeVLLM(model="Qwen/Qwen3-Embedding-8B", api_key="k") as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="k")

As a process (the key comes only from the environment)::

    KEY=secret python -m migrator.testing.server --port 0 \\
        --api-key-env KEY --ready-file /tmp/ready
"""

from migrator.testing.server.app import OTHER_MODEL, VLLM_VERSION, FakeVLLM, LoggedRequest
from migrator.testing.server.faults import FAULT_KINDS, Fault, FaultQueue
from migrator.testing.server.process import BANNER, main, serve_until_signalled
from migrator.testing.server.replies import _json_reply
from migrator.testing.server.stats import ServerStats

__all__ = [
    "BANNER",
    "FAULT_KINDS",
    "OTHER_MODEL",
    "VLLM_VERSION",
    "Fault",
    "FaultQueue",
    "FakeVLLM",
    "LoggedRequest",
    "ServerStats",
    "_json_reply",
    "main",
    "serve_until_signalled",
]
