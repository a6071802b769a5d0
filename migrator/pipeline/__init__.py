"""A migration's work, in its order: scan, re-embed and stage, check, swap, finalize.

- :mod:`~migrator.pipeline.scan`: find the databases under the roots and size each one up;
- :mod:`~migrator.pipeline.runner`: re-embed the texts and write each staged database;
- :mod:`~migrator.pipeline.readback`: read a staged file back and check it against its source;
- :mod:`~migrator.pipeline.gate`: the quality gate over the staged databases, before any cutover;
- :mod:`~migrator.pipeline.swap`: cutover and rollback, atomically, with backups;
- :mod:`~migrator.pipeline.backups`: what ``finalize`` deletes once a migration is kept.

Nothing here imports :mod:`migrator.commands` or :mod:`migrator.cli`.
"""
