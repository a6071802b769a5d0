"""Test and demo support for migrator - never used by a real migration.

* ``embedder``: a deterministic stand-in for an embedding model and its
  tokenizer (feature hashing; not a real model).
* ``server``: ``FakeVLLM``, a protocol-faithful fake of vLLM's
  OpenAI-compatible embeddings server, with fault injection.
* ``corpus``: builds DeepVideoDiscovery-shaped NanoVectorDB trees.
* ``jobtable``: job-table rows built by hand (no scan), for tests and benchmarks.

Nothing in the migrator proper imports this subpackage.
"""
