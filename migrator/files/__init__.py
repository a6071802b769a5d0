"""Files on disk: the NanoVectorDB format, durable writes, and the names of our own files.

- :mod:`~migrator.files.nvdb`: read a NanoVectorDB file strictly and lazily, write it faithfully;
- :mod:`~migrator.files.durable`: atomic, fsync'd writes, copies and hashes on a shared filesystem;
- :mod:`~migrator.files.layout`: the staged, backup and displaced names beside a live database.

This layer imports nothing else of migrator's but :mod:`migrator.errors` and
:mod:`migrator.crashpoints`.
"""
