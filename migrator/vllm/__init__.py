"""Talking to vLLM: the model catalogue, the endpoint, a pool of them, and how hard to push.

- :mod:`~migrator.vllm.endpoint`: the OpenAI-compatible ``/v1/embeddings`` client and its probe;
- :mod:`~migrator.vllm.pool`: several endpoints behind one object shaped like one;
- :mod:`~migrator.vllm.tuning`: how many requests to keep in flight, by measuring;
- :mod:`~migrator.vllm.steering`: throttle files and the server's ``/metrics`` queue;
- :mod:`~migrator.vllm.serve`: ``--serve``, a vLLM started for the migration and stopped after.
"""
